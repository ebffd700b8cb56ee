//! `POST /v1/chat/completions`: JSON, or Server-Sent Events of `chat.completion.chunk`
//! objects ending with `data: [DONE]` when `stream` is true.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use switchboard_proto::llm::v1 as pb;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::ServerSentEvent;
use crate::ratelimit::Group;
use crate::state::AppState;

/// Longest a completion may take across the hops.
const DEADLINE: Duration = Duration::from_secs(300);

/// The only fields the gateway reads; the rest is the LLM service's.
#[derive(Debug, Deserialize)]
struct Peek {
    #[serde(default)]
    stream: Option<bool>,
    /// OpenAI's end-user id: whom a service key acts for.
    #[serde(default)]
    user: Option<String>,
}

/// OpenAI's chat completion request, as documented here. The gateway reads only `stream` and
/// `user` (`Peek`); every field reaches the upstream as sent.
#[derive(ToSchema)]
#[allow(dead_code)]
struct CompletionRequest {
    /// Model id or alias from `/v1/models`.
    model: String,
    /// The conversation so far: `{role, content}` objects (and tool calls and results).
    messages: Vec<serde_json::Value>,
    /// Answer as Server-Sent Events of `chat.completion.chunk` objects, ending `data: [DONE]`.
    stream: Option<bool>,
    /// `{"include_usage": true}` adds a usage chunk to a stream.
    stream_options: Option<serde_json::Value>,
    /// The end user; a service key must name them.
    user: Option<String>,
    /// Tools the model may call.
    tools: Option<Vec<serde_json::Value>>,
    /// Sampling temperature.
    temperature: Option<f64>,
    /// Longest answer in tokens.
    max_tokens: Option<u32>,
}

/// OpenAI's chat completion object, passed back from the upstream with every field it sent.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Completion {
    /// Completion id.
    id: Option<String>,
    /// `chat.completion`.
    object: Option<String>,
    /// Unix seconds.
    created: Option<i64>,
    /// The model that answered.
    model: Option<String>,
    /// The answers: `{index, message, finish_reason, logprobs}`.
    choices: Option<Vec<serde_json::Value>>,
    /// `{prompt_tokens, completion_tokens, total_tokens}`.
    usage: Option<serde_json::Value>,
}

/// Creates a chat completion (OpenAI-compatible).
///
/// JSON, or with `"stream": true` Server-Sent Events of `chat.completion.chunk` objects ending
/// `data: [DONE]`. Every field passes through both ways; `model` maps through the catalogue.
#[utoipa::path(post, path = "/v1/chat/completions", operation_id = "createChatCompletion",
    request_body = CompletionRequest,
    responses((status = 200, description = "The completion; Server-Sent Events when streaming.",
        content((Completion = "application/json"), (ServerSentEvent = "text/event-stream")))))]
#[tracing::instrument(skip_all, fields(stream))]
pub async fn create(State(state): State<AppState>, caller: Caller, body: Bytes) -> Result<Response, ApiError> {
    let peek: Peek = serde_json::from_slice(&body)
        .map_err(|e| ApiError::malformed_json(format!("the body is not a valid JSON object: {e}")))?;
    // A client credential acts as itself; a service key acts for the end user it names in
    // `user`, in its own tenant (or `default`).
    let principal = if caller.0.service {
        let system_id = Some(caller.0.system_id.as_str()).filter(|s| !s.is_empty()).unwrap_or("default");
        let principal = caller.act_as(Some(system_id), peek.user.as_deref(), "body").map_err(|e| {
            let mut e = e.renamed("user_id", &["body", "user"]);
            if e.field() == Some("user") {
                e.message = "a service key acts for an end user: name them in `user`".into();
            }
            e
        })?;
        state.limiter.principal(Group::Chat, &principal.system_id, &principal.user_id).await?;
        principal
    } else {
        caller.act_as(None, None, "body")?
    };
    let stream = peek.stream.unwrap_or(false);
    tracing::Span::current().record("stream", stream);
    let mut request = caller.request(pb::ChatCompletionRequest {
        principal: Some(pb::Principal { system_id: principal.system_id, user_id: principal.user_id }),
        body,
    });
    request.set_timeout(DEADLINE);
    let mut llm = state.llm.clone();
    if !stream {
        let answer = llm.chat_completion(request).await?.into_inner();
        if let Some(account) = &answer.account {
            state.metrics.completion(account);
        }
        return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], answer.body).into_response());
    }
    let mut chunks = llm.stream_chat_completion(request).await?.into_inner();
    let metrics = state.metrics.clone();
    let events = async_stream::stream! {
        loop {
            match chunks.next().await {
                Some(Ok(pb::ChatCompletionChunk { event: Some(pb::chat_completion_chunk::Event::Data(data)) })) => {
                    yield Ok::<_, Infallible>(Event::default().data(String::from_utf8_lossy(&data)));
                }
                Some(Ok(pb::ChatCompletionChunk { event: Some(pb::chat_completion_chunk::Event::Done(account)) })) => {
                    metrics.completion(&account);
                }
                Some(Ok(pb::ChatCompletionChunk { event: None })) => {}
                Some(Err(status)) => {
                    // Headers are gone: the error travels as an event, as OpenAI's does.
                    let error = ApiError::from(status);
                    let body = serde_json::to_string(&error.body(crate::error::Dialect::OpenAi)).unwrap_or_default();
                    yield Ok(Event::default().data(body));
                    break;
                }
                None => break,
            }
        }
        yield Ok(Event::default().data("[DONE]"));
    };
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}
