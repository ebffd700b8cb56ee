//! `GET /cache` (seed 003): the history browser. `?api_key=` opens it with a key, as seed 003
//! documents; the page's script then takes the key out of the address bar
//! (`history.replaceState`), keeps it in the tab's `sessionStorage` and sends it as
//! `X-API-Key` on its calls to `/v1/cache/*`, so it lingers in no history or referrer. Without
//! a key the page asks for one. A service key browses every user of its tenants (filter by
//! system, user and dates), a client key its own conversations.
//!
//! Nobody may frame it (`frame-ancestors 'none'`): it shows other people's conversations.

use askama::Template;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;

use super::i18n::Catalog;
use super::{Kind, PageQuery, assets, html, render, strings_json};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Query of the history page, for the API document: the filters are the page script's (it
/// reads them from the address bar), `api_key` and `lang` are read as every page's are.
#[derive(Debug, Deserialize, IntoParams)]
#[expect(dead_code, reason = "read by the page's script and through PageQuery")]
#[into_params(parameter_in = Query)]
pub struct CachePageQuery {
    /// An API key (a service key of the tenant to browse). Checked before the page is served;
    /// the page then moves it out of the address bar. Without it the page asks for a key.
    api_key: Option<String>,
    /// Pre-filled filter: tenant.
    system_id: Option<String>,
    /// Pre-filled filter: user.
    user_id: Option<String>,
    /// Pre-filled filter: first day (`YYYY-MM-DD`).
    from_date: Option<String>,
    /// Pre-filled filter: last day (`YYYY-MM-DD`).
    to_date: Option<String>,
    /// `en`, `es`, `ko`, `zh` or `ja`; else the browser's language, else English.
    lang: Option<String>,
}

/// The history page.
#[derive(Template)]
#[template(path = "cache.html")]
struct CachePage<'a> {
    t: &'a Catalog,
    strings: String,
    version: &'a str,
}

/// The history browser.
///
/// With `api_key`, the key is checked first: a refused key gets an error page (401).
#[utoipa::path(get, path = "/cache", operation_id = "historyPage", params(CachePageQuery), security(()),
    responses(
        (status = 200, description = "The history page.", content_type = "text/html", body = String),
        (status = 401, description = "The key was refused: an error page.", content_type = "text/html", body = String),
        (status = 429, description = "Too many requests: an error page.", content_type = "text/html", body = String),
    ))]
pub async fn page(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if api_key(&uri).is_some() {
        caller?;
    }
    let t = PageQuery::parse(uri.query()).catalog(headers.get(header::ACCEPT_LANGUAGE));
    let body = render(&CachePage { t: &t, strings: strings_json(&t), version: assets::version() })?;
    Ok(html(StatusCode::OK, body, Kind::Cache.framing(false), &state))
}

/// The page's `?api_key=`, if given.
fn api_key(uri: &Uri) -> Option<String> {
    crate::auth::query_param(uri.query(), "api_key")
}

/// Middleware: on `/cache`, `?api_key=` is presented as `X-API-Key`, so the rate limiter
/// checks and counts it as it does every key (refused keys against the address's quota).
pub async fn key_from_query(mut request: Request, next: Next) -> Response {
    if request.uri().path() == "/cache"
        && !request.headers().contains_key("x-api-key")
        && let Some(value) = api_key(request.uri()).and_then(|k| HeaderValue::from_str(&k).ok())
    {
        request.headers_mut().insert("x-api-key", value);
    }
    next.run(request).await
}
