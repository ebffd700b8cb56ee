//! `GET /chat` and `GET /chat-api` (seed 003): the chat page for `?token=<JWT>`, with
//! `embed=1` for the compact layout the widget frames and `lang=en|es|ko|zh|ja` (else the
//! browser's language, else English). The page lists the user's conversations, opens one,
//! starts a new one and streams answers from `/v1/chat` (`assets/pages/chat.js`), sending the
//! token as `Authorization: Bearer`.
//!
//! The token is checked here first (by the rate limiter's credential check, as every route's),
//! so a wrong or expired link is an error page in the reader's language, not a blank page.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use serde::Deserialize;
use switchboard_kit::auth::Credential;
use utoipa::IntoParams;

use super::i18n::Catalog;
use super::{Kind, PageQuery, assets, html, render, strings_json};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Query of the chat page, for the API document; the handler reads it as the error pages do
/// ([`PageQuery`]).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(dead_code, reason = "read through PageQuery, declared here for the API document")]
pub struct ChatPageQuery {
    /// The user's chat token: a JWT with `system_id`, `user_id` and `exp`, signed with
    /// `CHAT_GATEWAY_JWT_SECRET` (as `/v1/chat-token` issues).
    token: Option<String>,
    /// `1`: the compact layout for an iframe (the widget); only then may other sites frame
    /// the page (`ALLOWED_CHAT_TOKEN_ORIGINS`, or any when unset).
    embed: Option<String>,
    /// `en`, `es`, `ko`, `zh` or `ja`; else the browser's language, else English.
    lang: Option<String>,
}

/// The chat page.
#[derive(Template)]
#[template(path = "chat.html")]
struct ChatPage<'a> {
    t: &'a Catalog,
    strings: String,
    version: &'a str,
    embed: bool,
}

/// The chat page for the user of `token`.
///
/// A refused, expired or missing token gets an error page (401) in the page's language.
#[utoipa::path(get, path = "/chat", operation_id = "chatPage", params(ChatPageQuery), security(()),
    responses(
        (status = 200, description = "The chat page.", content_type = "text/html", body = String),
        (status = 401, description = "The token is missing, refused or expired: an error page.", content_type = "text/html", body = String),
        (status = 429, description = "Too many requests: an error page.", content_type = "text/html", body = String),
    ))]
pub async fn page(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    show(&state, caller, &uri, &headers)
}

/// The chat page (seed 003's other name for it).
///
/// The same page as `/chat`.
#[utoipa::path(get, path = "/chat-api", operation_id = "chatApiPage", params(ChatPageQuery), security(()),
    responses(
        (status = 200, description = "The chat page.", content_type = "text/html", body = String),
        (status = 401, description = "The token is missing, refused or expired: an error page.", content_type = "text/html", body = String),
        (status = 429, description = "Too many requests: an error page.", content_type = "text/html", body = String),
    ))]
pub async fn alias(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    show(&state, caller, &uri, &headers)
}

fn show(
    state: &AppState,
    caller: Result<Caller, ApiError>,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let page = PageQuery::parse(uri.query());
    let caller = caller?;
    // The page's script sends the link's token; a key in a header would leave it with none.
    if !page.token || !matches!(caller.0.credential, Credential::Jwt(_)) {
        return Err(ApiError::unauthenticated("the chat page needs ?token=<JWT>"));
    }
    let t = page.catalog(headers.get(header::ACCEPT_LANGUAGE));
    let body = render(&ChatPage { t: &t, strings: strings_json(&t), version: assets::version(), embed: page.embed })?;
    Ok(html(StatusCode::OK, body, Kind::Chat.framing(page.embed), state))
}
