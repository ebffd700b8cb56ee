//! OpenAI-compatible chat completions (`POST {base}/chat/completions`): OpenAI itself,
//! Ollama, vLLM, llama.cpp and anything else speaking that wire format.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{CompletionOutput, CompletionRequest, ProviderError, TokenUsage, estimate_tokens};
use crate::resilience::{Breaker, EJECT_AFTER, EJECT_FOR, RetryBudget, RetryPolicy};

/// Longest silence inside a stream before it is given up (never more than the upstream
/// timeout, `SWITCHBOARD_UPSTREAM_TIMEOUT_SECS`).
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest unary answer read from an upstream; a larger one is refused, not buffered.
pub(super) const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Largest error body read for its message.
const MAX_ERROR_BYTES: usize = 64 * 1024;
/// Most bytes a stream may carry in all.
pub(super) const MAX_STREAM_BYTES: u64 = 64 * 1024 * 1024;
/// Largest event of a stream: the parser buffers an event whole and rescans it as it grows
/// (quadratic), and real events are a few KiB.
pub(super) const MAX_EVENT_BYTES: usize = 256 * 1024;
/// Most answer text a stream may carry; an upstream that goes on is cut off there.
pub(super) const MAX_STREAM_TEXT: usize = 1024 * 1024;

/// An OpenAI-compatible upstream.
#[derive(Debug, Clone)]
pub struct OpenAi {
    http: reqwest::Client,
    base_url: String,
    /// `{base_url}/chat/completions`, parsed once: not on every request.
    completions_url: reqwest::Url,
    api_key: Option<SecretString>,
    retry: RetryPolicy,
    budget: Arc<RetryBudget>,
    breaker: Arc<Breaker>,
    timeout: Duration,
    idle_timeout: Duration,
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    choices: Vec<WireChunkChoice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChunkChoice {
    #[serde(default)]
    delta: WireDelta,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireDelta {
    content: Option<String>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'a str,
    content: &'a str,
}

#[derive(Deserialize)]
struct WireResponse {
    choices: Vec<WireChoice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireAnswer,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireAnswer {
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: u32,
    completion_tokens: u32,
}

impl OpenAi {
    /// The upstream's breaker.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// A client for `base_url` (e.g. `https://api.openai.com/v1`), retrying as `retry` says.
    pub fn new(
        base_url: String,
        api_key: Option<SecretString>,
        timeout: Duration,
        retry: RetryPolicy,
    ) -> Result<Self, ProviderError> {
        let http = http_client()?;
        let completions_url = reqwest::Url::parse(&format!("{base_url}/chat/completions"))
            .map_err(|e| ProviderError::Setup(format!("base URL {base_url:?}: {e}")))?;
        Ok(Self {
            http,
            completions_url,
            base_url,
            api_key,
            retry,
            budget: Arc::new(RetryBudget::default()),
            breaker: Arc::new(Breaker::new("openai", EJECT_AFTER, EJECT_FOR)),
            timeout,
            idle_timeout: IDLE_TIMEOUT.min(timeout),
        })
    }

    /// One non-streaming completion, retried on 429, 5xx and connect errors.
    pub async fn complete(&self, request: &CompletionRequest) -> Result<CompletionOutput, ProviderError> {
        self.retry.run(&self.budget, "openai", || self.complete_once(request)).await
    }

    fn body<'a>(request: &'a CompletionRequest, stream: bool) -> WireRequest<'a> {
        WireRequest {
            model: &request.model,
            messages: request
                .messages
                .iter()
                .map(|m| WireMessage { role: m.role.as_str(), content: &m.content })
                .collect(),
            temperature: request.temperature,
            max_tokens: request.max_tokens,
            stream,
            stream_options: stream.then_some(StreamOptions { include_usage: true }),
        }
    }

    /// Sends the request; an error status becomes [`ProviderError::Status`].
    async fn send(&self, request: &CompletionRequest, stream: bool) -> Result<reqwest::Response, ProviderError> {
        let mut call = self.http.post(self.completions_url.clone()).json(&Self::body(request, stream));
        if stream {
            call = call.header(reqwest::header::ACCEPT, "text/event-stream");
        } else {
            call = call.timeout(self.timeout);
        }
        if let Some(key) = &self.api_key {
            call = call.bearer_auth(key.expose_secret());
        }
        // A stream has until its first byte (the headers) within the timeout, then the idle
        // timeout between events; a unary call has the timeout for everything.
        send_checked(call, self.timeout).await
    }

    /// The same upstream with a user's own key (its own breaker: a bad user key does not
    /// eject the upstream for everyone).
    pub fn with_key(&self, api_key: SecretString) -> Self {
        Self {
            api_key: Some(api_key),
            breaker: Arc::new(Breaker::new("openai", EJECT_AFTER, EJECT_FOR)),
            ..self.clone()
        }
    }

    /// The model names the upstream lists at `/models`.
    pub async fn list_models(&self) -> Result<Vec<String>, ProviderError> {
        #[derive(Deserialize)]
        struct Listing {
            data: Vec<Listed>,
        }
        #[derive(Deserialize)]
        struct Listed {
            id: String,
        }
        let mut call = self.http.get(format!("{}/models", self.base_url)).timeout(self.timeout);
        if let Some(key) = &self.api_key {
            call = call.bearer_auth(key.expose_secret());
        }
        let body = read_capped(send_checked(call, self.timeout).await?, MAX_BODY_BYTES).await?;
        let listing: Listing =
            serde_json::from_slice(&body).map_err(|e| ProviderError::InvalidResponse(format!("model list: {e}")))?;
        Ok(listing.data.into_iter().map(|m| m.id).collect())
    }

    /// A streamed completion. Opening the stream is retried like a unary call; once the
    /// first byte has arrived nothing is retried, and a silence longer than the idle timeout
    /// ends the stream with [`ProviderError::Timeout`].
    pub async fn stream(&self, request: &CompletionRequest) -> Result<super::EventStream, ProviderError> {
        use eventsource_stream::Eventsource;
        use futures::StreamExt;

        let response = self.retry.run(&self.budget, "openai", || self.send(request, true)).await?;
        let prompt_estimate: u32 = request.messages.iter().map(|m| estimate_tokens(&m.content)).sum();
        let idle = self.idle_timeout;
        let mut events = guarded(response).eventsource();
        Ok(Box::pin(async_stream::try_stream! {
            let mut text_len = 0usize;
            let mut completion_estimate = 0u32;
            let mut usage = None;
            let mut finish_reason = None;
            let mut done = false;
            loop {
                let event = match tokio::time::timeout(idle, events.next()).await {
                    Err(_) => Err(ProviderError::Timeout)?,
                    Ok(None) => break,
                    Ok(Some(Err(e))) => Err(broken(e))?,
                    Ok(Some(Ok(event))) => event,
                };
                if event.data.trim() == "[DONE]" {
                    done = true;
                    break;
                }
                let chunk: WireChunk = serde_json::from_str(&event.data)
                    .map_err(|e| ProviderError::InvalidResponse(format!("unreadable stream chunk: {e}")))?;
                if let Some(u) = chunk.usage {
                    usage = Some(TokenUsage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens });
                }
                for choice in chunk.choices {
                    if let Some(reason) = choice.finish_reason {
                        finish_reason = Some(reason);
                    }
                    if let Some(delta) = choice.delta.content.filter(|d| !d.is_empty()) {
                        text_len += delta.len();
                        if text_len > MAX_STREAM_TEXT {
                            Err(text_cut_off())?;
                        }
                        completion_estimate += estimate_tokens(&delta);
                        yield super::StreamEvent::Delta(delta);
                    }
                }
            }
            if !done && finish_reason.is_none() {
                Err(ProviderError::InvalidResponse(format!("the stream ended early, after {text_len} bytes")))?;
            }
            let usage = usage.unwrap_or(TokenUsage { prompt_tokens: prompt_estimate, completion_tokens: completion_estimate });
            yield super::StreamEvent::Done {
                usage,
                finish_reason: finish_reason.unwrap_or_else(|| "stop".into()),
                upstream_conversation_id: String::new(),
            upstream_message_id: String::new(),
            };
        }))
    }

    /// Sends an OpenAI request body as it is (pass-through); an error status becomes
    /// [`ProviderError::Status`].
    async fn send_raw(&self, body: &bytes::Bytes, stream: bool) -> Result<reqwest::Response, ProviderError> {
        let mut call = self
            .http
            .post(self.completions_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        if stream {
            call = call.header(reqwest::header::ACCEPT, "text/event-stream");
        } else {
            call = call.timeout(self.timeout);
        }
        if let Some(key) = &self.api_key {
            call = call.bearer_auth(key.expose_secret());
        }
        send_checked(call, self.timeout).await
    }

    /// One pass-through completion: `body` is an OpenAI request (its model already the
    /// upstream's name); the answer is the upstream's JSON as it came. Retried like
    /// [`Self::complete`].
    pub async fn complete_raw(&self, body: &bytes::Bytes) -> Result<bytes::Bytes, ProviderError> {
        self.breaker.allow()?;
        let outcome = self
            .retry
            .run(&self.budget, "openai", || async {
                let response = self.send_raw(body, false).await?;
                let answer = read_capped(response, MAX_BODY_BYTES).await?;
                // Passed on as it came, so it must at least be JSON.
                serde_json::from_slice::<serde::de::IgnoredAny>(&answer)
                    .map_err(|e| ProviderError::InvalidResponse(format!("the answer is not JSON: {e}")))?;
                Ok(answer)
            })
            .await;
        self.breaker.record(&outcome);
        outcome
    }

    /// A pass-through stream: the `data:` payloads of the upstream's events, in order, up to
    /// `[DONE]` (not included). Opening is retried; nothing after the first byte is.
    pub async fn stream_raw(&self, body: &bytes::Bytes) -> Result<super::RawStream, ProviderError> {
        use eventsource_stream::Eventsource;
        use futures::StreamExt;

        self.breaker.allow()?;
        let opened = self.retry.run(&self.budget, "openai", || self.send_raw(body, true)).await;
        self.breaker.record(&opened);
        let response = opened?;
        let idle = self.idle_timeout;
        let mut events = guarded(response).eventsource();
        Ok(Box::pin(async_stream::try_stream! {
            let mut text_len = 0usize;
            loop {
                let event = match tokio::time::timeout(idle, events.next()).await {
                    Err(_) => Err(ProviderError::Timeout)?,
                    Ok(None) => Err(ProviderError::InvalidResponse("the stream ended without [DONE]".into()))?,
                    Ok(Some(Err(e))) => Err(broken(e))?,
                    Ok(Some(Ok(event))) => event,
                };
                if event.data.trim() == "[DONE]" {
                    break;
                }
                if event.data.trim().is_empty() {
                    continue; // A keep-alive.
                }
                // Passed on as it came, so it must at least be JSON; its text counts.
                serde_json::from_str::<serde::de::IgnoredAny>(&event.data)
                    .map_err(|e| ProviderError::InvalidResponse(format!("unreadable stream chunk: {e}")))?;
                if let Ok(chunk) = serde_json::from_str::<WireChunk>(&event.data) {
                    text_len += chunk.choices.iter().filter_map(|c| c.delta.content.as_ref()).map(String::len).sum::<usize>();
                    if text_len > MAX_STREAM_TEXT {
                        Err(text_cut_off())?;
                    }
                }
                yield event.data;
            }
        }))
    }

    async fn complete_once(&self, request: &CompletionRequest) -> Result<CompletionOutput, ProviderError> {
        let response = self.send(request, false).await?;
        let body = read_capped(response, MAX_BODY_BYTES).await?;
        let parsed: WireResponse = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::InvalidResponse(format!("the answer is not a chat completion: {e}")))?;
        let choice = parsed
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| ProviderError::InvalidResponse("no choices in the answer".into()))?;
        let content = choice.message.content.unwrap_or_default();
        let usage = parsed
            .usage
            .map(|u| TokenUsage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens })
            .unwrap_or_else(|| TokenUsage {
                prompt_tokens: request.messages.iter().map(|m| estimate_tokens(&m.content)).sum(),
                completion_tokens: estimate_tokens(&content),
            });
        Ok(CompletionOutput {
            content,
            usage,
            finish_reason: choice.finish_reason.unwrap_or_else(|| "stop".into()),
            upstream_conversation_id: String::new(),
            upstream_message_id: String::new(),
        })
    }
}

/// Sends `call` within `timeout` (for the headers); an error status becomes
/// [`ProviderError::Status`] with the upstream's message and `Retry-After`.
pub(super) async fn send_checked(
    call: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<reqwest::Response, ProviderError> {
    // The upstream joins the caller's trace (when traces are exported).
    let mut trace = reqwest::header::HeaderMap::new();
    switchboard_kit::telemetry::inject(&mut trace);
    let call = call.headers(trace);
    let response =
        tokio::time::timeout(timeout, call.send()).await.map_err(|_| ProviderError::Timeout)?.map_err(classify)?;
    let status = response.status();
    if !status.is_success() {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = read_capped(response, MAX_ERROR_BYTES)
            .await
            .map(|body| String::from_utf8_lossy(&body).into_owned())
            .unwrap_or_default();
        return Err(ProviderError::Status { status: status.as_u16(), message: excerpt(&text), retry_after });
    }
    Ok(response)
}

/// The whole body of `response`, refused once it passes `limit` bytes (never buffered
/// beyond that).
pub(super) async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<bytes::Bytes, ProviderError> {
    let too_big = || ProviderError::InvalidResponse(format!("the answer is larger than {} KiB", limit / 1024));
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_big());
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        if body.len() + chunk.len() > limit {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The bytes of a streamed answer, failing once the stream passes [`MAX_STREAM_BYTES`] in
/// all or an event passes [`MAX_EVENT_BYTES`] (which the event parser would buffer whole).
pub(super) fn guarded(
    response: reqwest::Response,
) -> impl futures::Stream<Item = Result<bytes::Bytes, ProviderError>> + Send {
    use futures::StreamExt;
    let mut total = 0u64;
    let mut event = EventSize::default();
    response.bytes_stream().map(move |chunk| {
        let chunk = chunk.map_err(classify)?;
        total += chunk.len() as u64;
        if total > MAX_STREAM_BYTES {
            return Err(ProviderError::InvalidResponse(format!(
                "the stream passed {} MiB; cut off",
                MAX_STREAM_BYTES / 1024 / 1024
            )));
        }
        if event.feed(&chunk) > MAX_EVENT_BYTES {
            return Err(ProviderError::InvalidResponse(format!(
                "a stream event passed {} KiB; cut off",
                MAX_EVENT_BYTES / 1024
            )));
        }
        Ok(chunk)
    })
}

/// The size of the event being received: bytes since the last blank line (`\n`, `\r` or
/// `\r\n` ending an empty line).
#[derive(Default)]
struct EventSize {
    pending: usize,
    at_line_start: bool,
    after_cr: bool,
}

impl EventSize {
    /// Notes `bytes`; the largest size the current event reached in them.
    fn feed(&mut self, bytes: &[u8]) -> usize {
        let mut largest = self.pending;
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    if self.at_line_start {
                        // A blank line: the event is over.
                        largest = largest.max(self.pending);
                        self.pending = 0;
                        continue;
                    }
                    self.at_line_start = true;
                }
                _ => {
                    self.at_line_start = false;
                    self.after_cr = false;
                }
            }
            self.pending += 1;
        }
        largest.max(self.pending)
    }
}

/// A broken stream's error: the guard's own, or the parser's.
pub(super) fn broken(error: eventsource_stream::EventStreamError<ProviderError>) -> ProviderError {
    match error {
        eventsource_stream::EventStreamError::Transport(e) => e,
        other => ProviderError::InvalidResponse(format!("stream broke: {other}")),
    }
}

fn text_cut_off() -> ProviderError {
    ProviderError::InvalidResponse(format!("the answer passed {} KiB of text; cut off", MAX_STREAM_TEXT / 1024))
}

/// An HTTP client for upstreams: `TCP_NODELAY`, a connect timeout, pooled connections.
pub(super) fn http_client() -> Result<reqwest::Client, ProviderError> {
    switchboard_kit::net::install_tls_provider();
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| ProviderError::Setup(e.to_string()))
}

pub(super) fn classify(err: reqwest::Error) -> ProviderError {
    if err.is_timeout() {
        ProviderError::Timeout
    } else if err.is_connect() {
        ProviderError::Connect(err.without_url().to_string())
    } else {
        ProviderError::InvalidResponse(err.without_url().to_string())
    }
}

/// The upstream's error, shortened to one line of at most 200 characters.
pub(super) fn excerpt(text: &str) -> String {
    let message = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message").or_else(|| v.pointer("/message")).and_then(|m| m.as_str()).map(str::to_owned)
        })
        .unwrap_or_else(|| text.to_owned());
    message.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_measured_from_the_last_blank_line_whatever_the_line_endings() {
        let mut size = EventSize::default();
        assert_eq!(size.feed(b"data: 1234\n\n"), 11);
        assert_eq!(size.feed(b"da"), 2);
        assert_eq!(size.feed(b"ta: 5\r\n\r\ndata: 6"), 9);
        assert_eq!(size.feed(b"\r\rdata: 7\r"), 9, "the `\\n` of a blank `\\r\\n` counts to the next event");
        assert_eq!(size.feed(b"data: 8\ndata: 9\n"), 24, "lines without a blank one add up");
    }
}
