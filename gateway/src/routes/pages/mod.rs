//! The browser pages (seed 003): the chat page (`/chat`, `/chat-api`), the history browser
//! (`/cache`), the embeddable widget (`/widget.js`) and their scripts and stylesheet
//! (`/assets/{file}`). Templates (`gateway/templates/`) and assets (`gateway/assets/pages/`)
//! are compiled into the binary: no build step, no CDN, nothing fetched from another host.
//!
//! Every page answers with a strict Content-Security-Policy (scripts, styles and requests to
//! this origin only, no inline script), `Referrer-Policy: no-referrer` and `no-store`; errors
//! (a refused token or key, a rate limit, a service down) are pages in the reader's language,
//! with the same status codes as the API.

pub mod assets;
pub mod cache;
pub mod chat;
pub mod i18n;
pub mod widget;

use askama::Template;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use utoipa::openapi::{Ref, RefOr, ResponseBuilder};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::RouteExt;
use crate::error::ApiError;
use crate::ratelimit::Group;
use crate::state::AppState;
use i18n::Catalog;

/// The pages' routes.
pub fn router(state: &AppState) -> OpenApiRouter<AppState> {
    let mut routes = OpenApiRouter::new()
        .routes(routes!(chat::page).limit(state, Group::Api))
        .routes(routes!(chat::alias).limit(state, Group::Api))
        .routes(routes!(cache::page).limit(state, Group::Api))
        .routes(routes!(widget::script))
        .routes(routes!(assets::file))
        .layer(axum::middleware::from_fn_with_state(state.clone(), html_errors))
        // Before the rate limiter, which then verifies (and counts) the key like any other.
        .layer(axum::middleware::from_fn(cache::key_from_query));
    for (path, item) in &mut routes.get_openapi_mut().paths.paths {
        let page = Kind::of(path) != Kind::Other;
        for operation in super::operations(item) {
            operation.tags = Some(vec!["pages".to_owned()]);
            operation.responses.responses.entry("default".to_owned()).or_insert_with(|| error_response(page));
        }
    }
    routes
}

/// The `default` response of a page (an error page) or of a file (FastAPI's error body).
fn error_response(page: bool) -> RefOr<utoipa::openapi::Response> {
    let (description, content_type, schema) = if page {
        let html = utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::String).build();
        ("An error page, in the reader's language.", "text/html", RefOr::T(utoipa::openapi::Schema::Object(html)))
    } else {
        ("An error, in this API's error shape.", "application/json", RefOr::Ref(Ref::from_schema_name("FastApiError")))
    };
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(content_type, utoipa::openapi::ContentBuilder::new().schema(Some(schema)).build())
            .build(),
    )
}

/// Who may frame a page (`frame-ancestors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Nobody: the history page, which shows every user's conversations.
    Nobody,
    /// This origin only: the full chat page.
    SameOrigin,
    /// The sites of `ALLOWED_CHAT_TOKEN_ORIGINS` (any site when unset, as seed 003 allows):
    /// the chat page with `embed=1`, as the widget opens it.
    ChatSites,
}

/// The Content-Security-Policy of a page.
pub fn content_security_policy(framing: Framing, chat_sites: &str) -> String {
    let ancestors = match framing {
        Framing::Nobody => "'none'",
        Framing::SameOrigin => "'self'",
        Framing::ChatSites => chat_sites,
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
         font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors {ancestors}"
    )
}

/// An HTML page with the headers every page carries.
pub fn html(status: StatusCode, body: String, framing: Framing, state: &AppState) -> Response {
    let csp = content_security_policy(framing, &state.chat_frame_ancestors);
    let mut response = (status, Html(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    match framing {
        Framing::Nobody => {
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        }
        Framing::SameOrigin => {
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
        }
        Framing::ChatSites => {}
    }
    response
}

/// What a page's query says about how to show it.
#[derive(Debug, Default)]
pub struct PageQuery {
    /// `lang`.
    pub lang: Option<String>,
    /// `embed=1` (or `true`).
    pub embed: bool,
    /// Whether a `token` was given.
    pub token: bool,
}

impl PageQuery {
    /// Reads `lang`, `embed` and whether `token` is there; ignores the rest.
    pub fn parse(query: Option<&str>) -> Self {
        let mut page = Self::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match &*key {
                "lang" => page.lang = Some(value.into_owned()),
                "embed" => page.embed = matches!(&*value, "1" | "true"),
                "token" => page.token = !value.trim().is_empty(),
                _ => {}
            }
        }
        page
    }

    /// The page's language (see [`i18n::negotiate`]) and its strings.
    pub fn catalog(&self, accept_language: Option<&HeaderValue>) -> Catalog {
        let accept = accept_language.and_then(|v| v.to_str().ok());
        i18n::catalog(i18n::negotiate(self.lang.as_deref(), accept))
    }
}

/// A catalog as the `data-strings` attribute of a page.
pub fn strings_json(catalog: &Catalog) -> String {
    serde_json::to_string(catalog).unwrap_or_else(|_| "{}".to_owned())
}

/// The error page.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    t: &'a Catalog,
    version: &'a str,
    embed: bool,
    heading: &'a str,
    message: &'a str,
    hint: &'a str,
}

/// Which page a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/chat`, `/chat-api`.
    Chat,
    /// `/cache`.
    Cache,
    /// Not a page: a script or stylesheet.
    Other,
}

impl Kind {
    /// The page at `path`.
    pub fn of(path: &str) -> Self {
        match path {
            "/chat" | "/chat-api" => Self::Chat,
            "/cache" => Self::Cache,
            _ => Self::Other,
        }
    }

    /// Who may frame this page (the chat page's embedded layout, other sites).
    pub fn framing(self, embed: bool) -> Framing {
        match self {
            Self::Chat if embed => Framing::ChatSites,
            Self::Chat => Framing::SameOrigin,
            Self::Cache | Self::Other => Framing::Nobody,
        }
    }
}

/// Middleware: an error on a page (from the rate limiter, the credential check or the
/// handler) is a page in the reader's language, with the same status and headers.
async fn html_errors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let kind = Kind::of(request.uri().path());
    if kind == Kind::Other {
        return next.run(request).await;
    }
    let query = PageQuery::parse(request.uri().query());
    let accept_language = request.headers().get(header::ACCEPT_LANGUAGE).cloned();
    let response = next.run(request).await;
    let Some(error) = response.extensions().get::<ApiError>().cloned() else { return response };
    let t = query.catalog(accept_language.as_ref());
    let s = t.page;
    let (heading, message, hint) = match (error.status, kind) {
        (StatusCode::UNAUTHORIZED, Kind::Chat) if !query.token => (s.error_title, s.token_missing, s.token_hint),
        (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, Kind::Chat) => {
            (s.error_title, s.token_refused, s.token_hint)
        }
        (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => (s.history_title, s.key_refused_page, ""),
        (StatusCode::TOO_MANY_REQUESTS, _) => (s.error_title, s.rate_limited, ""),
        (status, _) if status.is_server_error() => (s.error_title, s.unavailable, ""),
        (_, _) => (s.error_title, error.message.as_str(), ""),
    };
    let heading = if kind == Kind::Cache { s.history_title } else { heading };
    let page = ErrorPage { t: &t, version: assets::version(), embed: query.embed, heading, message, hint };
    let mut fresh = html(error.status, page.render().unwrap_or_default(), kind.framing(query.embed), &state);
    for (name, value) in response.headers() {
        let ours = [header::CONTENT_TYPE, header::CONTENT_LENGTH, header::CONTENT_SECURITY_POLICY];
        if !ours.contains(name) && !fresh.headers().contains_key(name) {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fresh
}

/// Renders `template`; a template that cannot render is a 500 (a bug, never bad input).
pub fn render(template: &impl Template) -> Result<String, ApiError> {
    template.render().map_err(|e| ApiError {
        detail: Some(format!("rendering a page: {e}")),
        ..ApiError::from(tonic::Status::internal("a page could not be rendered"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_has_a_catalog() {
        for lang in i18n::LANGUAGES {
            let catalog = i18n::catalog(lang);
            assert_eq!(catalog.lang, lang);
            let json = serde_json::to_value(&catalog).unwrap();
            for (key, value) in json.as_object().unwrap() {
                assert!(value.as_str().is_some_and(|v| !v.trim().is_empty()), "{lang}.{key} is empty");
            }
        }
        assert_eq!(i18n::catalog("fr").lang, "en");
    }

    #[test]
    fn the_language_is_the_query_then_the_browser_then_english() {
        assert_eq!(i18n::negotiate(Some("ko"), Some("ja")), "ko");
        assert_eq!(i18n::negotiate(Some("zh-TW"), None), "zh");
        assert_eq!(i18n::negotiate(Some("fr"), Some("fr-FR, es;q=0.8, ja;q=0.9")), "ja");
        assert_eq!(i18n::negotiate(None, Some("de, ko-KR;q=0.5")), "ko");
        assert_eq!(i18n::negotiate(None, Some("ja;q=0, es")), "es");
        assert_eq!(i18n::negotiate(None, Some("de")), "en");
        assert_eq!(i18n::negotiate(None, None), "en");
    }

    #[test]
    fn pages_allow_no_inline_script_and_framing_follows_the_page() {
        let cache = content_security_policy(Framing::Nobody, "*");
        assert!(cache.contains("script-src 'self';") && !cache.contains("unsafe"), "{cache}");
        assert!(cache.ends_with("frame-ancestors 'none'"), "{cache}");
        let chat = content_security_policy(Framing::ChatSites, "https://drillquiz.example http://localhost:8080");
        assert!(chat.ends_with("frame-ancestors https://drillquiz.example http://localhost:8080"), "{chat}");
        assert!(content_security_policy(Framing::SameOrigin, "*").ends_with("frame-ancestors 'self'"));
    }
}
