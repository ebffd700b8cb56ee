//! A mock OpenAI-compatible upstream.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::oneshot;

#[derive(Default)]
struct Knobs {
    fail_next: VecDeque<u16>,
    always_fail: Option<u16>,
    delay: Duration,
    cut_stream_after: Option<usize>,
    chunk_delay: Duration,
    requests: Vec<Value>,
    authorizations: Vec<Option<String>>,
    traceparents: Vec<Option<String>>,
    accepted_keys: Option<Vec<String>>,
    /// Keep no request (a benchmark's mock answers millions).
    forgetful: bool,
}

#[derive(Default)]
struct Shared {
    calls: AtomicUsize,
    /// Calls whose client went away before the answer.
    abandoned: Arc<AtomicUsize>,
    knobs: Mutex<Knobs>,
}

impl Shared {
    fn knobs(&self) -> std::sync::MutexGuard<'_, Knobs> {
        self.knobs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running mock upstream; stops when dropped.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: oneshot::Sender<()>,
}

impl MockUpstream {
    /// Starts the server on a free loopback port.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts the server on `addr` (`127.0.0.1:0` for a free port).
    pub async fn start_on(addr: &str) -> Self {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/models", get(models))
            // Real upstreams take prompts of many megabytes.
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(shared.clone());
        let (addr, stop) = crate::serve_on(addr, app, "mock upstream").await;
        Self { addr, shared, _stop: stop }
    }

    /// Base URL to use as `OPENAI_BASE_URL`, e.g. `http://127.0.0.1:41234/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Keeps no request or authorization from now on: [`Self::requests`] stays empty, and
    /// memory flat under a benchmark's load.
    pub fn forget_requests(&self) {
        self.shared.knobs().forgetful = true;
    }

    /// The next calls answer these HTTP statuses, in order, before answering normally.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.shared.knobs().fail_next.extend(statuses);
    }

    /// Every call answers this status (`None` to stop failing).
    pub fn always_fail(&self, status: Option<u16>) {
        self.shared.knobs().always_fail = status;
    }

    /// Waits this long before answering.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.knobs().delay = delay;
    }

    /// Waits this long before each streamed chunk.
    pub fn set_chunk_delay(&self, delay: Duration) {
        self.shared.knobs().chunk_delay = delay;
    }

    /// Streams end abruptly after this many content chunks.
    pub fn cut_stream_after(&self, chunks: Option<usize>) {
        self.shared.knobs().cut_stream_after = chunks;
    }

    /// Only these bearer keys are accepted (401 otherwise); `None` accepts anything.
    pub fn accept_only(&self, keys: Option<&[&str]>) {
        self.shared.knobs().accepted_keys = keys.map(|k| k.iter().map(|s| (*s).to_owned()).collect());
    }

    /// Number of chat-completion calls received.
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// Calls whose client hung up before the answer was ready (the server dropped them).
    pub fn abandoned(&self) -> usize {
        self.shared.abandoned.load(Ordering::SeqCst)
    }

    /// Bodies of the chat-completion calls received, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.knobs().requests.clone()
    }

    /// W3C `traceparent` headers of the calls received, in order.
    pub fn traceparents(&self) -> Vec<Option<String>> {
        self.shared.knobs().traceparents.clone()
    }

    /// `Authorization` headers of the calls received, in order.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.shared.knobs().authorizations.clone()
    }
}

/// The deterministic answer: `upstream reply to: <last user message>`, or after a tool's
/// result, `tool said: <result>`.
pub fn answer_for(body: &Value) -> String {
    if let Some(result) = tool_result(body) {
        return format!("tool said: {result}");
    }
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default();
    format!("upstream reply to: {last}")
}

/// The content of the last message when it is a tool's result.
fn tool_result(body: &Value) -> Option<String> {
    let last = body["messages"].as_array()?.last()?;
    (last["role"] == "tool").then(|| last["content"].as_str().unwrap_or_default().to_owned())
}

/// A call of the first tool offered, when tools are offered and none has answered yet.
fn tool_call(body: &Value) -> Option<Value> {
    let name = body["tools"].as_array()?.first()?.pointer("/function/name")?.as_str()?;
    if tool_result(body).is_some() {
        return None;
    }
    let arguments = json!({"query": answer_for(body)}).to_string();
    Some(json!([{"id": "call_mock_1", "type": "function", "function": {"name": name, "arguments": arguments}}]))
}

fn refused(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let accepted = shared.knobs().accepted_keys.clone()?;
    let presented =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|a| a.strip_prefix("Bearer "));
    if presented.is_some_and(|p| accepted.iter().any(|k| k == p)) {
        return None;
    }
    let error = json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}});
    Some((StatusCode::UNAUTHORIZED, Json(error)).into_response())
}

async fn chat_completions(State(shared): State<Arc<Shared>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    shared.calls.fetch_add(1, Ordering::SeqCst);
    if let Some(refusal) = refused(&shared, &headers) {
        shared
            .knobs()
            .authorizations
            .push(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned));
        return refusal;
    }
    let (failure, delay, cut) = {
        let mut knobs = shared.knobs();
        if !knobs.forgetful {
            knobs.requests.push(body.clone());
            let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
            knobs.authorizations.push(auth);
            knobs.traceparents.push(headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned));
        }
        let failure = knobs.fail_next.pop_front().or(knobs.always_fail);
        (failure, knobs.delay, (knobs.cut_stream_after, knobs.chunk_delay))
    };
    if !delay.is_zero() {
        // Counted as abandoned unless the wait ends: the server drops this future when the
        // client hangs up.
        struct Waiting(Arc<AtomicUsize>, bool);
        impl Drop for Waiting {
            fn drop(&mut self) {
                if !self.1 {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        let mut waiting = Waiting(shared.abandoned.clone(), false);
        tokio::time::sleep(delay).await;
        waiting.1 = true;
    }
    if let Some(status) = failure {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let error = json!({"error": {"message": format!("mock failure {}", status.as_u16()), "type": "server_error"}});
        return (status, Json(error)).into_response();
    }
    let model = body["model"].as_str().unwrap_or("unknown").to_owned();
    let answer = answer_for(&body);
    let prompt_tokens: usize = body["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["content"].as_str()).map(|c| c.split_whitespace().count()).sum())
        .unwrap_or(0);
    let completion_tokens = answer.split_whitespace().count();
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                       "total_tokens": prompt_tokens + completion_tokens});
    if body["stream"].as_bool().unwrap_or(false) {
        let usage =
            body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false).then_some(usage);
        return stream(model, answer, usage, cut.0, cut.1);
    }
    let logprobs = body["logprobs"].as_bool().unwrap_or(false).then(|| json!({"content": []}));
    let (message, finish_reason) = match tool_call(&body) {
        Some(calls) => (json!({"role": "assistant", "content": null, "tool_calls": calls}), "tool_calls"),
        None => (json!({"role": "assistant", "content": answer}), "stop"),
    };
    Json(json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish_reason}],
        "usage": usage
    }))
    .into_response()
}

fn stream(model: String, answer: String, usage: Option<Value>, cut: Option<usize>, chunk_delay: Duration) -> Response {
    use futures::StreamExt;
    let words: Vec<String> = answer.split_inclusive(' ').map(str::to_owned).collect();
    let total = words.len();
    let events = async_stream(model, words, usage, cut, total).then(move |frame| async move {
        if !chunk_delay.is_zero() {
            tokio::time::sleep(chunk_delay).await;
        }
        frame
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(events))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn async_stream(
    model: String,
    words: Vec<String>,
    usage: Option<Value>,
    cut: Option<usize>,
    total: usize,
) -> impl futures::Stream<Item = Result<String, std::io::Error>> {
    let mut frames = Vec::new();
    for (i, word) in words.into_iter().enumerate() {
        if cut == Some(i) {
            frames.push(Err(std::io::Error::other("stream cut")));
            break;
        }
        let chunk = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": model,
            "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": null}]});
        frames.push(Ok(format!("data: {chunk}\n\n")));
    }
    if cut.is_none_or(|c| c >= total) {
        let last = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        frames.push(Ok(format!("data: {last}\n\n")));
        if let Some(usage) = usage {
            let chunk = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": model,
                "choices": [], "usage": usage});
            frames.push(Ok(format!("data: {chunk}\n\n")));
        }
        frames.push(Ok("data: [DONE]\n\n".to_owned()));
    }
    futures::stream::iter(frames)
}

async fn models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(refusal) = refused(&shared, &headers) {
        return refusal;
    }
    Json(json!({"object": "list", "data": [
        {"id": "gpt-test", "object": "model", "owned_by": "mock"},
        {"id": "gpt-test-mini", "object": "model", "owned_by": "mock"}
    ]}))
    .into_response()
}
