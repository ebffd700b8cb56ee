//! `POST /v1/sync` (seed 003): pull every known user's conversations and messages from the
//! Dify upstream into the store (upsert). Needs a service key; `system_id` (query or body)
//! limits it to one tenant. Run it from cron; it is safe to repeat.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_proto::conversation::v1 as pb;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ValidQuery, parse_json};
use crate::state::AppState;

/// Query (and body) of a sync.
#[derive(Debug, Default, Deserialize)]
pub struct SyncQuery {
    system_id: Option<String>,
}

/// Runs a sync and answers what it did.
pub async fn run(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(query): ValidQuery<SyncQuery>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: SyncQuery =
        if body.iter().all(u8::is_ascii_whitespace) { SyncQuery::default() } else { parse_json(&body)? };
    let system_id = query.system_id.or(body.system_id).unwrap_or_default();
    let mut request = caller.request(pb::SyncRequest { system_id });
    request.set_timeout(std::time::Duration::from_secs(600));
    let answer = state.conversations.clone().sync(request).await?.into_inner();
    Ok(Json(json!({"users": answer.users, "conversations": answer.conversations, "messages": answer.messages})))
}
