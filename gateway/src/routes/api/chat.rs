//! `POST /api/chat` (seed 001): one chat turn for `userId`, in the `{success, message, data}`
//! envelope, camelCase, with whole-number `conversationId` and `messageId` (custom-GPT
//! Actions declare them as integers).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use switchboard_proto::conversation::v1 as pb;
use utoipa::ToSchema;

use super::{Envelope, act_for, conversation_by_number};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ValidJson;
use crate::ratelimit::Group;
use crate::state::AppState;

/// Body of `POST /api/chat`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = GptsChatRequest)]
pub struct ChatBody {
    /// The user the turn is for (a service key names anyone; other credentials themselves).
    user_id: String,
    /// The user's message; not blank.
    message: String,
    /// One of the user's conversations to continue; a new one when absent.
    #[schema(minimum = 1)]
    conversation_id: Option<u64>,
    /// The model; the default one when absent.
    model: Option<String>,
    /// Sampling temperature, 0 to 2.
    #[schema(minimum = 0, maximum = 2)]
    temperature: Option<f32>,
    /// Most tokens to answer with, 1 to 4000.
    #[schema(minimum = 1, maximum = 4000)]
    max_tokens: Option<u32>,
}

/// Token usage, camelCase.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = GptsUsage)]
pub struct UsageBody {
    /// Tokens sent.
    prompt_tokens: u32,
    /// Tokens answered.
    completion_tokens: u32,
    /// Their sum.
    total_tokens: u32,
}

/// `data` of the answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = GptsChatData)]
pub struct ChatData {
    /// The conversation's number.
    conversation_id: u64,
    /// The answer's number in it.
    message_id: u64,
    /// The model's answer.
    response: String,
    /// Its token usage.
    usage: UsageBody,
}

/// Sends a message for `userId`.
///
/// Runs a turn: a new conversation unless `conversationId` names one of the user's.
#[utoipa::path(post, path = "/api/chat", operation_id = "sendApiChat", request_body = ChatBody,
    responses((status = 200, description = "The model's answer.", body = Envelope<ChatData>)))]
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    ValidJson(body): ValidJson<ChatBody>,
) -> Result<Json<Envelope<ChatData>>, ApiError> {
    let principal = act_for(&caller, &body.user_id, "body")?;
    state.limiter.principal(Group::Chat, &principal.system_id, &principal.user_id).await?;
    if body.message.trim().is_empty() {
        return Err(ApiError::invalid(&["body", "message"], "string_too_short", "must not be empty"));
    }
    if body.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        return Err(ApiError::invalid(&["body", "temperature"], "value_error", "must be between 0 and 2"));
    }
    if body.max_tokens.is_some_and(|n| !(1..=4000).contains(&n)) {
        return Err(ApiError::invalid(&["body", "maxTokens"], "value_error", "must be between 1 and 4000"));
    }
    let conversation_id = match body.conversation_id {
        Some(0) => return Err(ApiError::invalid(&["body", "conversationId"], "value_error", "must be positive")),
        Some(number) => {
            let owner = Some(pb::Principal::from(&principal));
            conversation_by_number(&state, &caller, owner, number, "Conversation not found").await?.id
        }
        None => String::new(),
    };
    let mut request = caller.request(pb::SendMessageRequest {
        principal: Some(pb::Principal { system_id: principal.system_id, user_id: principal.user_id }),
        message: body.message,
        conversation_id,
        model: body.model.unwrap_or_default(),
        key_id: caller.key_id().to_owned(),
        temperature: body.temperature,
        max_tokens: body.max_tokens,
        ..Default::default()
    });
    request.set_timeout(crate::routes::v1::TURN_DEADLINE);
    let answer = state.conversations.clone().send_message(request).await?.into_inner();
    let reply = answer.assistant_message.unwrap_or_default();
    let usage = reply.usage.unwrap_or_default();
    Ok(Json(Envelope::ok(
        "Chat response generated successfully",
        ChatData {
            conversation_id: answer.conversation_number,
            message_id: reply.number,
            response: reply.content,
            usage: UsageBody {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                total_tokens: usage.total_tokens,
            },
        },
    )))
}
