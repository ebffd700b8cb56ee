//! What seed 001's routes share: the `{success, message, data}` envelope, whom a request acts
//! for (`userId`), and conversations named by their whole-number alias.

use serde::Serialize;
use switchboard_proto::conversation::v1 as pb;

use crate::auth::{Caller, Principal};
use crate::error::ApiError;
use crate::state::AppState;

/// A successful answer.
#[derive(Debug, Serialize)]
pub struct Envelope<T> {
    success: bool,
    message: String,
    data: T,
}

impl<T> Envelope<T> {
    /// `{success: true, message, data}`.
    pub fn ok(message: impl Into<String>, data: T) -> Self {
        Self { success: true, message: message.into(), data }
    }
}

/// The principal of a seed-001 request: a service key (`API_SECRET_KEY`, or an issued one)
/// acts for `userId` in its tenant (`default` for keys of every tenant); other credentials
/// act as themselves and may only name themselves.
pub fn act_for(caller: &Caller, user_id: &str, root: &str) -> Result<Principal, ApiError> {
    let renamed = |e: ApiError| e.renamed("user_id", &[root, "userId"]);
    if caller.0.service {
        let system_id = Some(caller.0.system_id.as_str()).filter(|s| !s.is_empty()).unwrap_or("default");
        caller.act_as(Some(system_id), Some(user_id), root).map_err(renamed)
    } else {
        caller.act_as(None, Some(user_id), root).map_err(renamed)
    }
}

/// The conversation `number` of `principal`; 404 when it is missing or someone else's.
pub async fn conversation_by_number(
    state: &AppState,
    caller: &Caller,
    principal: &Principal,
    number: u64,
) -> Result<pb::Conversation, ApiError> {
    let request = caller.request(pb::GetConversationRequest {
        principal: Some(pb::Principal { system_id: principal.system_id.clone(), user_id: principal.user_id.clone() }),
        conversation_id: String::new(),
        number,
    });
    let answer = state.conversations.clone().get_conversation(request).await.map_err(|status| {
        let mut err = ApiError::from(status);
        if err.status == axum::http::StatusCode::NOT_FOUND {
            err.message = "Conversation not found".into();
        }
        err
    })?;
    answer.into_inner().conversation.ok_or_else(|| ApiError::not_found("Conversation not found"))
}
