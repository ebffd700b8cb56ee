//! The OpenAI chat-completions wire format, passed through. A request body is read only for
//! what routing needs (`model`, `messages`, the token cap, `stream_options`); every other
//! field reaches an OpenAI-compatible upstream untouched, and its answer comes back whole.
//! Providers that speak another format (mock, Dify) answer in this one.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::LlmError;
use crate::providers::{ChatMessage, Role, TokenUsage, estimate_tokens};

/// A parsed `POST /chat/completions` body.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    body: Map<String, Value>,
    /// Model as asked (name or alias); empty for the principal's choice or the default.
    pub model: String,
    /// The client's cap on completion tokens (`max_completion_tokens` or `max_tokens`).
    pub max_tokens: Option<u32>,
    /// Whether a streaming client asked for the final usage chunk.
    pub include_usage: bool,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> LlmError {
    LlmError::InvalidArgument { field, reason: reason.into() }
}

impl ChatRequest {
    /// Reads a request body, refusing what no upstream could take.
    pub fn parse(raw: &[u8]) -> Result<Self, LlmError> {
        let body: Map<String, Value> =
            serde_json::from_slice(raw).map_err(|e| invalid("body", format!("is not a JSON object: {e}")))?;
        let model = match body.get("model") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.trim().to_owned(),
            Some(_) => return Err(invalid("model", "must be a string")),
        };
        let Some(Value::Array(messages)) = body.get("messages") else {
            return Err(invalid("messages", "is required: a non-empty array of {role, content}"));
        };
        if messages.is_empty() {
            return Err(invalid("messages", "must not be empty"));
        }
        if messages.iter().any(|m| !m.get("role").is_some_and(Value::is_string)) {
            return Err(invalid("messages", "every message needs a string `role`"));
        }
        let cap = |name: &str| match body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if n > 0 => Ok(Some(n)),
                _ => Err(()),
            },
        };
        let max_tokens = match (cap("max_completion_tokens"), cap("max_tokens")) {
            (Err(()), _) => return Err(invalid("max_completion_tokens", "must be a whole number of at least 1")),
            (_, Err(())) => return Err(invalid("max_tokens", "must be a whole number of at least 1")),
            (Ok(a), Ok(b)) => a.or(b),
        };
        let include_usage =
            body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
        Ok(Self { body, model, max_tokens, include_usage })
    }

    /// The body for an OpenAI-compatible upstream that knows the model as `upstream_model`.
    /// A stream always asks for usage, which is how its cost is known.
    pub fn upstream_body(&mut self, upstream_model: &str, stream: bool) -> Result<Bytes, LlmError> {
        self.body.insert("model".into(), Value::String(upstream_model.to_owned()));
        if stream {
            self.body.insert("stream".into(), Value::Bool(true));
            let options = self.body.entry("stream_options").or_insert_with(|| json!({}));
            match options.as_object_mut() {
                Some(options) => {
                    options.insert("include_usage".into(), Value::Bool(true));
                }
                None => return Err(invalid("stream_options", "must be an object")),
            }
        } else {
            self.body.remove("stream");
            self.body.remove("stream_options");
        }
        serde_json::to_vec(&self.body).map(Bytes::from).map_err(|e| invalid("body", e.to_string()))
    }

    /// The prompt as plain text, for providers that are not OpenAI-compatible. Features only
    /// such an upstream has are refused rather than dropped.
    pub fn plain_messages(&self, model: &str) -> Result<Vec<ChatMessage>, LlmError> {
        let unsupported = |field: &'static str| {
            invalid(field, format!("model {model:?} does not support it; use an OpenAI-compatible model"))
        };
        if self.body.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty()) {
            return Err(unsupported("tools"));
        }
        if self.body.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
            return Err(unsupported("n"));
        }
        let messages = self.body.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        Ok(messages
            .iter()
            .map(|m| {
                let role = match m.get("role").and_then(Value::as_str) {
                    Some("system" | "developer") => Role::System,
                    Some("assistant") => Role::Assistant,
                    _ => Role::User,
                };
                ChatMessage { role, content: text_of(m.get("content")) }
            })
            .collect())
    }

    /// `temperature`, when given as a number.
    pub fn temperature(&self) -> Option<f32> {
        self.body.get("temperature").and_then(Value::as_f64).map(|t| t as f32)
    }

    /// The estimated prompt size, for upstreams that report no usage.
    pub fn prompt_estimate(&self) -> u32 {
        let messages = self.body.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        messages.iter().map(|m| estimate_tokens(&text_of(m.get("content")))).sum()
    }
}

/// A message's text: a string, or the text parts of a content array.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    }
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: u32,
    completion_tokens: u32,
}

#[derive(Deserialize)]
struct UsageOnly {
    usage: Option<WireUsage>,
}

/// The usage an upstream's `chat.completion` reports.
pub fn usage_of(answer: &[u8]) -> Option<TokenUsage> {
    let parsed: UsageOnly = serde_json::from_slice(answer).ok()?;
    parsed.usage.map(|u| TokenUsage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens })
}

fn usage_json(usage: TokenUsage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens.saturating_add(usage.completion_tokens),
    })
}

/// Identity of an answer made here (not by an OpenAI-compatible upstream).
#[derive(Debug, Clone)]
pub struct Made {
    /// `chatcmpl-…` id.
    pub id: String,
    /// Unix seconds.
    pub created: i64,
    /// Model name to report.
    pub model: String,
}

impl Made {
    /// A fresh id, now, for `model`.
    pub fn new(model: &str) -> Self {
        Self {
            id: format!("chatcmpl-{}", uuid::Uuid::now_v7().simple()),
            created: switchboard_kit::time::now_ms() / 1000,
            model: model.to_owned(),
        }
    }

    /// A whole `chat.completion`.
    pub fn completion(&self, content: &str, finish_reason: &str, usage: TokenUsage) -> Bytes {
        let body = json!({
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": null},
                         "logprobs": null, "finish_reason": finish_reason}],
            "usage": usage_json(usage),
        });
        Bytes::from(body.to_string())
    }

    /// One `chat.completion.chunk`: the first carries the role, the last the finish reason;
    /// a usage chunk has no choices.
    pub fn chunk(&self, delta: Option<&str>, first: bool, finish_reason: Option<&str>) -> String {
        let mut d = Map::new();
        if first {
            d.insert("role".into(), json!("assistant"));
        }
        if let Some(text) = delta {
            d.insert("content".into(), json!(text));
        }
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": d, "logprobs": null, "finish_reason": finish_reason}],
        })
        .to_string()
    }

    /// The final usage chunk (`stream_options.include_usage`).
    pub fn usage_chunk(&self, usage: TokenUsage) -> String {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "system_fingerprint": null, "choices": [], "usage": usage_json(usage),
        })
        .to_string()
    }
}

#[derive(Deserialize)]
struct ChunkPeek {
    #[serde(default)]
    choices: Vec<ChoicePeek>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct ChoicePeek {
    #[serde(default)]
    delta: Option<DeltaPeek>,
}

#[derive(Deserialize)]
struct DeltaPeek {
    content: Option<String>,
}

/// Follows a passed-through stream for its usage: the upstream's count when it sends one,
/// else an estimate from the text seen.
#[derive(Debug)]
pub struct StreamTally {
    include_usage: bool,
    completion_estimate: u32,
    prompt_estimate: u32,
    usage: Option<TokenUsage>,
}

impl StreamTally {
    /// A tally for a request; `include_usage` is whether its client wants the usage chunk.
    pub fn new(request: &ChatRequest) -> Self {
        Self {
            include_usage: request.include_usage,
            completion_estimate: 0,
            prompt_estimate: request.prompt_estimate(),
            usage: None,
        }
    }

    /// Notes one `data:` payload; `false` when it is the usage chunk the client did not ask
    /// for (it was asked for here, to know the cost).
    pub fn observe(&mut self, data: &str) -> bool {
        let Ok(chunk) = serde_json::from_str::<ChunkPeek>(data) else { return true };
        for choice in &chunk.choices {
            if let Some(text) = choice.delta.as_ref().and_then(|d| d.content.as_deref()) {
                self.completion_estimate = self.completion_estimate.saturating_add(estimate_tokens(text));
            }
        }
        match chunk.usage {
            Some(u) => {
                self.usage =
                    Some(TokenUsage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens });
                self.include_usage || !chunk.choices.is_empty()
            }
            None => true,
        }
    }

    /// Whether the client asked for the usage chunk.
    pub fn wants_usage(&self) -> bool {
        self.include_usage
    }

    /// The usage of the whole stream.
    pub fn usage(&self) -> TokenUsage {
        self.usage
            .unwrap_or(TokenUsage { prompt_tokens: self.prompt_estimate, completion_tokens: self.completion_estimate })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_but_the_model_reaches_the_upstream_unchanged() {
        let raw = br#"{"model":"fast","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function"}],
                       "seed":7,"n":2,"logprobs":true,"response_format":{"type":"json_object"},"user":"u1","stream":false}"#;
        let mut request = ChatRequest::parse(raw).unwrap();
        assert_eq!(request.model, "fast");
        let sent: Value = serde_json::from_slice(&request.upstream_body("gpt-4o", false).unwrap()).unwrap();
        assert_eq!(sent["model"], "gpt-4o");
        for field in ["tools", "seed", "n", "logprobs", "response_format", "user", "messages"] {
            assert_eq!(sent[field], serde_json::from_slice::<Value>(raw).unwrap()[field], "{field}");
        }
        let streamed: Value = serde_json::from_slice(&request.upstream_body("gpt-4o", true).unwrap()).unwrap();
        assert_eq!(streamed["stream"], true);
        assert_eq!(streamed["stream_options"]["include_usage"], true);
    }

    #[test]
    fn bodies_no_upstream_could_take_are_refused_naming_the_field() {
        let field = |raw: &str| match ChatRequest::parse(raw.as_bytes()) {
            Err(LlmError::InvalidArgument { field, .. }) => field,
            other => panic!("{raw}: {other:?}"),
        };
        assert_eq!(field("[1]"), "body");
        assert_eq!(field(r#"{"model":"m"}"#), "messages");
        assert_eq!(field(r#"{"messages":[]}"#), "messages");
        assert_eq!(field(r#"{"messages":[{"content":"x"}]}"#), "messages");
        assert_eq!(field(r#"{"model":3,"messages":[{"role":"user"}]}"#), "model");
        assert_eq!(field(r#"{"messages":[{"role":"user"}],"max_tokens":0}"#), "max_tokens");
    }

    #[test]
    fn a_usage_chunk_the_client_did_not_ask_for_is_counted_and_held_back() {
        let request = ChatRequest::parse(br#"{"messages":[{"role":"user","content":"hello there"}]}"#).unwrap();
        let mut tally = StreamTally::new(&request);
        assert!(tally.observe(r#"{"choices":[{"delta":{"content":"abcdefgh"}}]}"#));
        assert_eq!(tally.usage().completion_tokens, 2, "estimated until the upstream counts");
        assert!(!tally.observe(r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":9}}"#));
        assert_eq!(tally.usage(), TokenUsage { prompt_tokens: 5, completion_tokens: 9 });
    }
}
