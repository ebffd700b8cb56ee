//! `GET /assets/{file}`: the pages' scripts and stylesheet, compiled into the binary. Pages
//! link them as `/assets/<file>?v=<version>`, a digest of every asset, so a browser may keep
//! them for a year and still never runs an old script against a new page.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, FastApiError};

/// `(name, content type, bytes)` of every asset.
const FILES: [(&str, &str, &str); 3] = [
    ("pages.css", "text/css; charset=utf-8", include_str!("../../../assets/pages/pages.css")),
    ("chat.js", "text/javascript; charset=utf-8", include_str!("../../../assets/pages/chat.js")),
    ("cache.js", "text/javascript; charset=utf-8", include_str!("../../../assets/pages/cache.js")),
];

static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut digest = Sha256::new();
    for (name, _, body) in FILES {
        digest.update(name.as_bytes());
        digest.update(body.as_bytes());
    }
    hex::encode(&digest.finalize()[..6])
});

/// The assets' version, for their links.
pub fn version() -> &'static str {
    &VERSION
}

/// A script or the stylesheet of the pages.
#[utoipa::path(get, path = "/assets/{file}", operation_id = "pageAsset", security(()),
    params(("file" = String, Path, description = "`pages.css`, `chat.js` or `cache.js`.")),
    responses(
        (status = 200, description = "The file.", content_type = "text/plain", body = String),
        (status = 404, description = "No such file.", body = FastApiError),
    ))]
pub async fn file(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (_, content_type, body) =
        FILES.into_iter().find(|(name, ..)| *name == file).ok_or_else(|| ApiError::not_found("Not Found"))?;
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(response)
}
