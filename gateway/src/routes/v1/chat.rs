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
use serde_json::{Value, json};
use switchboard_kit::time::timestamp_rfc3339;
use switchboard_proto::conversation::v1 as pb;

use super::{TURN_DEADLINE, UsageBody};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ValidJson;
use crate::ratelimit::Group;
use crate::state::AppState;

/// Request body.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    system_id: Option<String>,
    user_id: Option<String>,
    message: String,
    conversation_id: Option<String>,
    model: Option<String>,
    lang: Option<String>,
    stream: Option<bool>,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
}

/// Answer body.
#[derive(Debug, Serialize)]
pub struct ChatResponse {
    conversation_id: String,
    message_id: String,
    answer: String,
    model: String,
    usage: UsageBody,
    created_at: Option<String>,
}

/// Runs one turn and answers with the stored reply.
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
    let ids = json!({"conversation_id": body.conversation_id, "message_id": body.message_id});
    let mut delta = ids.clone();
    delta["delta"] = Value::from(body.answer.clone());
    let events = vec![
        Ok::<_, Infallible>(
            Event::default().event("start").data(
                json!({"conversation_id": body.conversation_id, "user_message_id": user_message_id,
                   "message_id": body.message_id, "model": body.model})
                .to_string(),
            ),
        ),
        Ok(Event::default().event("delta").data(delta.to_string())),
        Ok(Event::default().event("done").data(serde_json::to_string(&body).unwrap_or_default())),
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
    let ids = json!({"conversation_id": started.conversation_id, "message_id": started.assistant_message_id});
    let sse = async_stream::stream! {
        yield Ok::<_, Infallible>(Event::default().event("start").data(json!({
            "conversation_id": started.conversation_id,
            "user_message_id": started.user_message_id,
            "message_id": started.assistant_message_id,
            "model": started.model,
        }).to_string()));
        loop {
            match events.message().await {
                Ok(Some(pb::StreamMessageResponse { event: Some(Turn::Delta(delta)) })) => {
                    let mut data = ids.clone();
                    data["delta"] = Value::from(delta);
                    yield Ok(Event::default().event("delta").data(data.to_string()));
                }
                Ok(Some(pb::StreamMessageResponse { event: Some(Turn::Completed(done)) })) => {
                    let body = serde_json::to_string(&chat_response(done)).unwrap_or_default();
                    yield Ok(Event::default().event("done").data(body));
                    break;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(status) => {
                    let error = ApiError::from(status);
                    let mut data = ids.clone();
                    data["status"] = Value::from(error.status.as_u16());
                    data["detail"] = Value::from(error.message);
                    yield Ok(Event::default().event("error").data(data.to_string()));
                    break;
                }
            }
        }
    };
    Ok(Sse::new(sse).keep_alive(KeepAlive::default()).into_response())
}
