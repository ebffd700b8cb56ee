//! Seed 002's chat: `POST /chat/simple` (a turn in the signed-in user's running conversation,
//! so their history is the context) and `GET /chat/history` (that history). FastAPI errors.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use switchboard_kit::time::timestamp_rfc3339;
use switchboard_proto::conversation::v1 as pb;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ValidJson;
use crate::ratelimit::Group;
use crate::state::AppState;

/// Body of `POST /chat/simple`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SimpleChat {
    /// The user's message; not blank.
    message: String,
}

/// Answer of `POST /chat/simple`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SimpleChatResponse)]
pub struct ChatResponse {
    /// The model's answer.
    response: String,
    /// Its token usage.
    usage: super::v1::UsageBody,
}

/// One message of the history.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ChatHistoryItem)]
pub struct HistoryItem {
    /// The signed-in user's name.
    username: String,
    /// `user` or `assistant`.
    role: &'static str,
    /// The text.
    content: String,
    /// RFC 3339.
    timestamp: Option<String>,
}

/// Answer of `GET /chat/history`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ChatHistory)]
pub struct HistoryResponse {
    /// The messages, oldest first.
    history: Vec<HistoryItem>,
}

/// Sends a message in the user's running conversation.
///
/// A turn in the running conversation (a new one for the first message), so the user's
/// history is the context.
#[utoipa::path(post, path = "/chat/simple", operation_id = "simpleChat", request_body = SimpleChat,
    responses((status = 200, description = "The model's answer.", body = ChatResponse)))]
pub async fn simple(
    State(state): State<AppState>,
    caller: Caller,
    ValidJson(body): ValidJson<SimpleChat>,
) -> Result<Json<ChatResponse>, ApiError> {
    let principal = caller.act_as(None, None, "body")?;
    state.limiter.principal(Group::Chat, &principal.system_id, &principal.user_id).await?;
    if body.message.trim().is_empty() {
        return Err(ApiError::invalid(&["body", "message"], "string_too_short", "must not be empty"));
    }
    let conversation_id = super::classic::running(&state, &caller, &principal).await?.unwrap_or_default();
    let mut request = caller.request(pb::SendMessageRequest {
        principal: Some(pb::Principal::from(&principal)),
        message: body.message,
        conversation_id,
        key_id: caller.key_id().to_owned(),
        ..Default::default()
    });
    request.set_timeout(super::v1::TURN_DEADLINE);
    let answer = state.conversations.clone().send_message(request).await?.into_inner();
    let reply = answer.assistant_message.unwrap_or_default();
    let usage = reply.usage.unwrap_or_default();
    Ok(Json(ChatResponse { response: reply.content, usage: usage.into() }))
}

/// The user's history.
///
/// The running conversation, oldest first (the last 500 messages); empty before the first
/// message.
#[utoipa::path(get, path = "/chat/history", operation_id = "getChatHistory",
    responses((status = 200, description = "The history.", body = HistoryResponse)))]
pub async fn history(State(state): State<AppState>, caller: Caller) -> Result<Json<HistoryResponse>, ApiError> {
    let principal = caller.act_as(None, None, "query")?;
    state.limiter.principal(Group::Api, &principal.system_id, &principal.user_id).await?;
    let Some(conversation_id) = super::classic::running(&state, &caller, &principal).await? else {
        return Ok(Json(HistoryResponse { history: Vec::new() }));
    };
    let request = caller.request(pb::ListMessagesRequest {
        principal: Some(pb::Principal::from(&principal)),
        conversation_id,
        page_size: 500,
        page_token: String::new(),
    });
    let page = state.conversations.clone().list_messages(request).await?.into_inner();
    let username = switchboard_kit::principal::username(&principal.user_id).unwrap_or(&principal.user_id).to_owned();
    let history = page
        .messages
        .into_iter()
        .filter(|m| !m.content.is_empty())
        .map(|m| HistoryItem {
            username: username.clone(),
            role: if m.role == pb::Role::Assistant as i32 { "assistant" } else { "user" },
            timestamp: timestamp_rfc3339(m.created_at.as_ref()),
            content: m.content,
        })
        .collect();
    Ok(Json(HistoryResponse { history }))
}
