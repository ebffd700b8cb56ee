//! `POST /v1/sync` (seed 003): pull every known user's conversations and messages from the
//! Dify upstream into the store (upsert). Needs a service key; `system_id` (query or body)
//! limits it to one tenant. Run it from cron; it is safe to repeat.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use switchboard_proto::conversation::v1 as pb;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ValidQuery, parse_json};
use crate::state::AppState;

/// Query (and body) of a sync.
#[derive(Debug, Default, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct SyncQuery {
    /// Only this tenant; every tenant the key may act for when absent.
    system_id: Option<String>,
}

/// What a sync did.
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncReport {
    /// Users whose history was pulled.
    users: u32,
    /// Conversations written.
    conversations: u32,
    /// Messages written.
    messages: u32,
}

/// Pulls conversations from the Dify upstream into the store.
///
/// Every known user's conversations and messages, upserted; safe to repeat. Needs a service key.
#[utoipa::path(post, path = "/v1/sync", operation_id = "sync", params(SyncQuery),
    request_body(content = Option<SyncQuery>, description = "Optional; `system_id` here or in the query."),
    responses((status = 200, description = "What was pulled.", body = SyncReport)))]
pub async fn run(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(query): ValidQuery<SyncQuery>,
    body: axum::body::Bytes,
) -> Result<Json<SyncReport>, ApiError> {
    let body: SyncQuery =
        if body.iter().all(u8::is_ascii_whitespace) { SyncQuery::default() } else { parse_json(&body)? };
    let system_id = query.system_id.or(body.system_id).unwrap_or_default();
    let mut request = caller.request(pb::SyncRequest { system_id });
    request.set_timeout(std::time::Duration::from_secs(600));
    let answer = state.conversations.clone().sync(request).await?.into_inner();
    Ok(Json(SyncReport { users: answer.users, conversations: answer.conversations, messages: answer.messages }))
}
