//! `GET /widget.js`: the chat widget a site adds with one tag (seed 003's DrillQuiz widget):
//!
//! ```html
//! <script src="https://chat.example.com/widget.js" data-token-url="/chat-token" data-lang="ko" async></script>
//! ```
//!
//! It draws a launcher button that opens the chat page (`/chat?token=…&embed=1&lang=…`) in an
//! iframe, with its shell's strings (the ones `/v1/chat-token?lang=` answers) compiled in for
//! the five languages. The token comes from `data-token`, or from `data-token-url` (the site's
//! own endpoint, answering as `/v1/chat-token` does), so no API key ever reaches the browser.

use std::sync::LazyLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::i18n;

const SOURCE: &str = include_str!("../../../assets/pages/widget.js");

/// The script: its shell strings, then `assets/pages/widget.js`, in one function scope.
static SCRIPT: LazyLock<String> = LazyLock::new(|| {
    let strings: serde_json::Map<String, serde_json::Value> = i18n::LANGUAGES
        .into_iter()
        .map(|lang| {
            let t = i18n::catalog(lang);
            let shell = serde_json::json!({
                "title": t.title, "close": t.close, "open": t.open, "tokenError": t.token_error, "loading": t.loading,
            });
            (lang.to_owned(), shell)
        })
        .collect();
    let strings = serde_json::Value::Object(strings);
    format!("(() => {{\n'use strict';\nconst STRINGS = {strings};\n{SOURCE}\n}})();\n")
});

/// The embeddable chat widget.
///
/// Add `<script src="…/widget.js" data-token-url="…" data-lang="ko" async></script>` to a page.
#[utoipa::path(get, path = "/widget.js", operation_id = "chatWidget", security(()),
    responses((status = 200, description = "The widget's script.", content_type = "text/javascript", body = String)))]
pub async fn script() -> Response {
    let mut response = ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT.as_str()).into_response();
    let headers = response.headers_mut();
    // Sites embed it by this name, so it cannot carry a version: re-checked every 5 minutes.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Loaded by other sites' pages, including ones that isolate themselves (COEP).
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
    response
}
