//! `GET /v1/cache/conversations` and `GET /v1/cache/conversations/{id}/messages` (seed 003):
//! in seed 003 a local cache of the Dify upstream; here the store is that cache (`/v1/sync`
//! fills it), so these read what `/v1/conversations` reads.

use axum::Json;
use axum::extract::{Path, State};

use super::ListBody;
use super::conversations::{self, ConversationBody, ListQuery, MessageBody, MessagesQuery};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ValidQuery;
use crate::state::AppState;

/// Lists the user's stored conversations, newest first.
///
/// The same as `GET /v1/conversations`.
#[utoipa::path(get, path = "/v1/cache/conversations", operation_id = "listCachedConversations", params(ListQuery),
    responses((status = 200, description = "A page of conversations.", body = ListBody<ConversationBody>)))]
pub async fn list(
    state: State<AppState>,
    caller: Caller,
    query: ValidQuery<ListQuery>,
) -> Result<Json<ListBody<ConversationBody>>, ApiError> {
    conversations::list(state, caller, query).await
}

/// Lists a stored conversation's messages, oldest first.
///
/// The same as `GET /v1/conversations/{id}/messages`.
#[utoipa::path(get, path = "/v1/cache/conversations/{id}/messages", operation_id = "listCachedMessages",
    params(("id" = String, Path, description = "Conversation id."), MessagesQuery),
    responses((status = 200, description = "A page of messages.", body = ListBody<MessageBody>)))]
pub async fn messages(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    query: ValidQuery<MessagesQuery>,
) -> Result<Json<ListBody<MessageBody>>, ApiError> {
    conversations::messages(state, caller, id, query).await
}
