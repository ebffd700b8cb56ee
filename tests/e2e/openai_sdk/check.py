"""Drives Switchboard's OpenAI-compatible API with the official `openai` package, as a user's
application would. Usage: check.py BASE_URL API_KEY MODEL. Exits non-zero on the first
failed expectation; prints one line per check."""

import json
import sys

import openai

base_url, api_key, model = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)


def check(name, condition, detail=""):
    if not condition:
        print(f"FAIL {name}: {detail}")
        sys.exit(1)
    print(f"ok {name}")


# A completion.
answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello sdk"}])
check("completion", answer.choices[0].message.content == "upstream reply to: hello sdk", answer)
check("completion usage", answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens > 0, answer.usage)
check("finish_reason", answer.choices[0].finish_reason == "stop", answer.choices[0])
check("system_fingerprint", answer.system_fingerprint == "fp_mock", answer.system_fingerprint)

# A streamed completion with usage.
pieces, usage = [], None
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "stream to me please"}],
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.usage is not None:
        usage = chunk.usage
check("stream pieces", len(pieces) > 1, pieces)
check("stream text", "".join(pieces) == "upstream reply to: stream to me please", pieces)
check("stream usage", usage is not None and usage.completion_tokens > 0, usage)

# A tool call round trip.
tools = [{
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Looks a word up.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}]
messages = [{"role": "user", "content": "what is a switchboard?"}]
first = client.chat.completions.create(model=model, messages=messages, tools=tools, tool_choice="auto", seed=7)
call = first.choices[0].message.tool_calls[0] if first.choices[0].message.tool_calls else None
check("tool call", call is not None and call.function.name == "lookup", first)
check("tool call finish_reason", first.choices[0].finish_reason == "tool_calls", first.choices[0])
arguments = json.loads(call.function.arguments)
messages.append(first.choices[0].message.model_dump(exclude_none=True))
messages.append({"role": "tool", "tool_call_id": call.id, "content": "a panel that connects calls"})
second = client.chat.completions.create(model=model, messages=messages, tools=tools)
check("tool result", second.choices[0].message.content == "tool said: a panel that connects calls", second)
check("tool arguments", "query" in arguments, arguments)

# Models.
ids = [m.id for m in client.models.list()]
check("models", model in ids, ids)

# A bad key.
bad = openai.OpenAI(base_url=base_url, api_key="sb_000000000000_" + "0" * 64, max_retries=0)
try:
    bad.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    check("bad key", False, "no error")
except openai.AuthenticationError as e:
    check("bad key", e.status_code == 401 and e.body and e.body.get("type") == "authentication_error", e.body)

# A bad request names the field.
try:
    client.chat.completions.create(model=model, messages=[])
    check("bad request", False, "no error")
except openai.BadRequestError as e:
    check("bad request", e.status_code == 400 and e.body and e.body.get("param") == "messages", e.body)

print("all checks passed")
