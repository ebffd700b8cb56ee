//! `GET /v1/chat-token`: a 24-hour JWT for the chat page, with widget strings when `lang`
//! is given (seed 003). Needs a key that may act for the user; the browser's `Origin` must be
//! in `ALLOWED_CHAT_TOKEN_ORIGINS` when that is set.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use switchboard_proto::auth::v1 as pb;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ValidQuery;
use crate::ratelimit::Group;
use crate::state::AppState;

/// Query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// Tenant of the user (a service key names it).
    system_id: Option<String>,
    /// The user (likewise).
    user_id: Option<String>,
    /// `en`, `es`, `ko`, `zh` or `ja`: the answer then carries the chat widget's strings.
    lang: Option<String>,
}

/// A chat-page token.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatToken {
    /// A JWT for the user, valid 24 hours: `/chat?token=…`.
    token: String,
    /// The chat widget's strings in `lang`, when it was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    ui: Option<WidgetStrings>,
}

/// The chat widget's strings in one language.
#[derive(Debug, Serialize, ToSchema)]
pub struct WidgetStrings {
    /// Window title.
    title: String,
    /// The close button.
    close: String,
    /// The launcher button.
    open: String,
    /// Shown when the token is refused.
    #[serde(rename = "tokenError")]
    token_error: String,
    /// Shown while loading.
    loading: String,
}

/// Issues a 24-hour JWT for the chat page; the browser's `Origin` must be allowed.
#[utoipa::path(get, path = "/v1/chat-token", operation_id = "issueChatToken", params(TokenQuery),
    responses((status = 200, description = "The token.", body = ChatToken)))]
pub async fn issue(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ValidQuery(query): ValidQuery<TokenQuery>,
) -> Result<Json<ChatToken>, ApiError> {
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
    let ui = answer.ui.map(|ui| WidgetStrings {
        title: ui.title,
        close: ui.close,
        open: ui.open,
        token_error: ui.token_error,
        loading: ui.loading,
    });
    Ok(Json(ChatToken { token: answer.token, ui }))
}

/// The auth service names body fields; here they are query parameters.
fn query_field(mut err: ApiError) -> ApiError {
    if let Some(loc) = err.loc.as_mut().filter(|l| l.first().is_some_and(|r| r == "body")) {
        loc[0] = "query".into();
    }
    err
}
