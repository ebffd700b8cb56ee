//! `POST /v1/chat`: one chat turn. With `"stream": true` or `Accept: text/event-stream` the
//! answer is Server-Sent Events as it is produced: `start` (the ids), `delta` (text, in
//! order), then `done` (the stored answer, shaped like the JSON answer) or `error`.

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use switchboard_kit::time::timestamp_rfc3339;
use switchboard_proto::conversation::v1 as pb;
use utoipa::ToSchema;

use super::{TURN_DEADLINE, UsageBody};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ValidJson;
use crate::openapi::ServerSentEvent;
use crate::ratelimit::Group;
use crate::state::AppState;

/// Request body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatRequest {
    /// Tenant of the user (a service key names it; other credentials are their own).
    system_id: Option<String>,
    /// The user the turn is for (likewise).
    user_id: Option<String>,
    /// The user's message.
    message: String,
    /// Continue this conversation; a new one when absent.
    conversation_id: Option<String>,
    /// Model id or alias; the tenant's default when absent.
    model: Option<String>,
    /// Language of the answer (`en`, `es`, `ko`, `zh`, `ja`).
    lang: Option<String>,
    /// Answer as Server-Sent Events (so does `Accept: text/event-stream`).
    stream: Option<bool>,
    /// Sampling temperature, passed to the model.
    temperature: Option<f32>,
    /// Longest answer in tokens, passed to the model.
    max_tokens: Option<u32>,
}

/// Answer body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatResponse {
    /// The conversation (new or continued).
    conversation_id: String,
    /// The stored answer's id.
    message_id: String,
    /// The answer.
    answer: String,
    /// The model that answered.
    model: String,
    /// Tokens used.
    usage: UsageBody,
    /// When the answer was stored (RFC 3339).
    created_at: Option<String>,
}

/// The `start` event of a streamed turn.
#[derive(Debug, Serialize)]
struct StartEvent<'a> {
    conversation_id: &'a str,
    user_message_id: &'a str,
    message_id: &'a str,
    model: &'a str,
}

/// A `delta` event: the next piece of the answer.
#[derive(Debug, Serialize)]
struct DeltaEvent<'a> {
    conversation_id: &'a str,
    message_id: &'a str,
    delta: &'a str,
}

/// An `error` event: the turn failed after it started.
#[derive(Debug, Serialize)]
struct ErrorEvent<'a> {
    conversation_id: &'a str,
    message_id: &'a str,
    status: u16,
    detail: &'a str,
}

fn event(name: &'static str, data: &impl Serialize) -> Event {
    Event::default().event(name).data(serde_json::to_string(data).unwrap_or_default())
}

/// Sends a message and answers with the model's stored reply.
///
/// A new conversation unless `conversation_id` names one. With `"stream": true` (or
/// `Accept: text/event-stream`) the answer is Server-Sent Events: `start`, `delta`s, then `done`
/// or `error`. With an `Idempotency-Key` a retry gets the first answer.
#[utoipa::path(post, path = "/v1/chat", operation_id = "chat", request_body = ChatRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key returns the first answer.")),
    responses(
        (status = 200, description = "The stored answer; Server-Sent Events when streaming.",
            content((ChatResponse = "application/json"), (ServerSentEvent = "text/event-stream"))),
    ))]
#[tracing::instrument(skip_all, fields(system_id, conversation_id))]
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ValidJson(body): ValidJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let principal = caller.act_as(body.system_id.as_deref(), body.user_id.as_deref(), "body")?;
    state.limiter.principal(Group::Chat, &principal.system_id, &principal.user_id).await?;
    tracing::Span::current().record("system_id", principal.system_id.as_str());
    if body.message.trim().is_empty() {
        return Err(ApiError::invalid(&["body", "message"], "string_too_short", "must not be empty"));
    }
    let wants_events = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    let streaming = body.stream.unwrap_or(wants_events);
    let mut request = caller.request(pb::SendMessageRequest {
        principal: Some(pb::Principal { system_id: principal.system_id, user_id: principal.user_id }),
        message: body.message,
        conversation_id: body.conversation_id.unwrap_or_default(),
        model: body.model.unwrap_or_default(),
        lang: body.lang.unwrap_or_default(),
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(|k| k.trim().trim_matches('"').to_owned())
            .unwrap_or_default(),
        key_id: caller.key_id().to_owned(),
        temperature: body.temperature,
        max_tokens: body.max_tokens,
    });
    request.set_timeout(TURN_DEADLINE);
    if streaming && request.get_ref().idempotency_key.is_empty() {
        return stream(state, request).await;
    }
    let answer = state
        .conversations
        .clone()
        .send_message(request)
        .await
        .map_err(|s| ApiError::from(s).renamed("idempotency_key", &["header", "Idempotency-Key"]))?
        .into_inner();
    tracing::Span::current().record("conversation_id", answer.conversation_id.as_str());
    if streaming {
        // With an Idempotency-Key the turn is run (or replayed) whole, so a retry gets exactly
        // the first answer; it is then sent as the same events, in one delta.
        return Ok(replayed_as_events(answer));
    }
    Ok(Json(chat_response(answer)).into_response())
}

fn chat_response(answer: pb::SendMessageResponse) -> ChatResponse {
    let assistant = answer.assistant_message.unwrap_or_default();
    ChatResponse {
        conversation_id: answer.conversation_id,
        message_id: assistant.id,
        answer: assistant.content,
        model: assistant.model,
        usage: assistant.usage.unwrap_or_default().into(),
        created_at: timestamp_rfc3339(assistant.created_at.as_ref()),
    }
}

/// A finished turn as the events a stream would have sent.
fn replayed_as_events(answer: pb::SendMessageResponse) -> Response {
    let user_message_id = answer.user_message.as_ref().map(|m| m.id.clone()).unwrap_or_default();
    let body = chat_response(answer);
    let (conversation_id, message_id) = (body.conversation_id.as_str(), body.message_id.as_str());
    let start = StartEvent { conversation_id, user_message_id: &user_message_id, message_id, model: &body.model };
    let events = vec![
        Ok::<_, Infallible>(event("start", &start)),
        Ok(event("delta", &DeltaEvent { conversation_id, message_id, delta: &body.answer })),
        Ok(event("done", &body)),
    ];
    Sse::new(futures::stream::iter(events)).into_response()
}

/// The turn as Server-Sent Events. Failures before the first event are ordinary error
/// responses; later ones are an `error` event. When the client goes away the stream is
/// dropped, and the conversation service keeps what was delivered as a `partial` answer.
async fn stream(state: AppState, request: tonic::Request<pb::SendMessageRequest>) -> Result<Response, ApiError> {
    use pb::stream_message_response::Event as Turn;

    let mut events = state.conversations.clone().stream_message(request).await?.into_inner();
    let started = match events.message().await? {
        Some(pb::StreamMessageResponse { event: Some(Turn::Started(started)) }) => started,
        _ => return Err(ApiError::from(tonic::Status::unavailable("the turn did not start"))),
    };
    tracing::Span::current().record("conversation_id", started.conversation_id.as_str());
    let sse = async_stream::stream! {
        let (conversation_id, message_id) = (started.conversation_id.as_str(), started.assistant_message_id.as_str());
        yield Ok::<_, Infallible>(event("start", &StartEvent {
            conversation_id,
            user_message_id: &started.user_message_id,
            message_id,
            model: &started.model,
        }));
        loop {
            match events.message().await {
                Ok(Some(pb::StreamMessageResponse { event: Some(Turn::Delta(delta)) })) => {
                    yield Ok(event("delta", &DeltaEvent { conversation_id, message_id, delta: &delta }));
                }
                Ok(Some(pb::StreamMessageResponse { event: Some(Turn::Completed(done)) })) => {
                    yield Ok(event("done", &chat_response(done)));
                    break;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(status) => {
                    let error = ApiError::from(status);
                    let status = error.status.as_u16();
                    yield Ok(event("error", &ErrorEvent { conversation_id, message_id, status, detail: &error.message }));
                    break;
                }
            }
        }
    };
    Ok(Sse::new(sse).keep_alive(KeepAlive::default()).into_response())
}
