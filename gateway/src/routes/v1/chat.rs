//! `POST /v1/chat`: one chat turn.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
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
    ValidJson(body): ValidJson<ChatRequest>,
) -> Result<Json<ChatResponse>, ApiError> {
    let principal = caller.act_as(body.system_id.as_deref(), body.user_id.as_deref(), "body")?;
    state.limiter.principal(Group::Chat, &principal.system_id, &principal.user_id).await?;
    tracing::Span::current().record("system_id", principal.system_id.as_str());
    if body.message.trim().is_empty() {
        return Err(ApiError::invalid(&["body", "message"], "string_too_short", "must not be empty"));
    }
    if body.stream == Some(true) {
        return Err(ApiError {
            status: axum::http::StatusCode::NOT_IMPLEMENTED,
            ..ApiError::invalid(&["body", "stream"], "not_implemented", "streaming answers are not available yet")
        });
    }
    let mut request = caller.request(pb::SendMessageRequest {
        principal: Some(pb::Principal { system_id: principal.system_id, user_id: principal.user_id }),
        message: body.message,
        conversation_id: body.conversation_id.unwrap_or_default(),
        model: body.model.unwrap_or_default(),
        lang: body.lang.unwrap_or_default(),
        idempotency_key: String::new(),
        key_id: caller.key_id().to_owned(),
        temperature: body.temperature,
        max_tokens: body.max_tokens,
    });
    request.set_timeout(TURN_DEADLINE);
    let answer = state.conversations.clone().send_message(request).await?.into_inner();
    tracing::Span::current().record("conversation_id", answer.conversation_id.as_str());
    let assistant = answer.assistant_message.unwrap_or_default();
    Ok(Json(ChatResponse {
        conversation_id: answer.conversation_id,
        message_id: assistant.id,
        answer: assistant.content,
        model: assistant.model,
        usage: assistant.usage.unwrap_or_default().into(),
        created_at: timestamp_rfc3339(assistant.created_at.as_ref()),
    }))
}
