//! `GET /v1/chat-token`: a 24-hour JWT for the chat page, with widget strings when `lang`
//! is given (seed 003). Needs a key that may act for the user; the browser's `Origin` must be
//! in `ALLOWED_CHAT_TOKEN_ORIGINS` when that is set.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_proto::auth::v1 as pb;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ValidQuery;
use crate::ratelimit::Group;
use crate::state::AppState;

/// Query.
#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    system_id: Option<String>,
    user_id: Option<String>,
    lang: Option<String>,
}

/// Issues the token.
pub async fn issue(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ValidQuery(query): ValidQuery<TokenQuery>,
) -> Result<Json<Value>, ApiError> {
    let principal = caller.act_as(query.system_id.as_deref(), query.user_id.as_deref(), "query")?;
    state.limiter.principal(Group::Api, &principal.system_id, &principal.user_id).await?;
    let origin = headers.get("origin").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let request = caller.request(pb::IssueChatTokenRequest {
        system_id: principal.system_id,
        user_id: principal.user_id,
        lang: query.lang.unwrap_or_default(),
        origin,
    });
    let answer = state.auth.clone().issue_chat_token(request).await.map_err(|s| query_field(s.into()))?.into_inner();
    Ok(Json(match answer.ui {
        Some(ui) => json!({"token": answer.token, "ui": {
            "title": ui.title, "close": ui.close, "open": ui.open, "tokenError": ui.token_error, "loading": ui.loading
        }}),
        None => json!({"token": answer.token}),
    }))
}

/// The auth service names body fields; here they are query parameters.
fn query_field(mut err: ApiError) -> ApiError {
    if let Some(loc) = err.loc.as_mut().filter(|l| l.first().is_some_and(|r| r == "body")) {
        loc[0] = "query".into();
    }
    err
}
