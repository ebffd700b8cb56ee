//! The documentation routes of the ops family: `GET /openapi.json` (OpenAPI 3.1, generated from
//! the handlers), `GET /docs` (Swagger UI) and `GET /redoc` (ReDoc). Both pages work offline:
//! Swagger UI is compiled in by `utoipa-swagger-ui` (its `vendored` build), ReDoc's bundle is
//! vendored in `gateway/assets/redoc/`, every asset is served from `/docs/…`, and a
//! Content-Security-Policy keeps the pages from loading anything from another host.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use utoipa::openapi::OpenApi;
use utoipa::openapi::server::Server;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::Config;

use super::Family;
use crate::error::{ApiError, Dialect};
use crate::state::AppState;

const REDOC_JS: &[u8] = include_bytes!("../../assets/redoc/redoc.standalone.js");

/// Same origin only (inline styles and scripts of the bundles allowed): Swagger UI's spec
/// validator and ReDoc's logo would otherwise be fetched from their vendors.
const CSP: &str = "default-src 'self' data: blob: 'unsafe-inline'; frame-ancestors 'self'";

const REDOC_HTML: &str = r#"<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Switchboard API</title>
  </head>
  <body>
    <redoc spec-url="/openapi.json"></redoc>
    <script src="/docs/redoc.standalone.js"></script>
  </body>
</html>
"#;

/// What the documentation routes serve.
struct Docs {
    spec: OpenApi,
    swagger: Arc<Config<'static>>,
}

/// The documentation routes, serving `spec` with their own operations added to it.
pub fn router(mut spec: OpenApi) -> axum::Router<AppState> {
    let routes = OpenApiRouter::<Arc<Docs>>::new()
        .routes(routes!(openapi_json))
        .routes(routes!(swagger_ui))
        .routes(routes!(redoc))
        // Assets: OpenAPI has no catch-all path parameter, so this one stays undocumented.
        .route("/docs/{*file}", get(asset));
    let (router, own) = Family { tag: "ops", dialect: Dialect::FastApi }.serve(routes).split_for_parts();
    spec.merge(own);
    let swagger = Config::new(["/openapi.json"])
        .validator_url("none")
        .persist_authorization(true)
        .display_operation_id(true)
        .try_it_out_enabled(true);
    router.with_state(Arc::new(Docs { spec, swagger: Arc::new(swagger) }))
}

/// This OpenAPI 3.1 document.
///
/// `servers` names the host the client reached, as a custom-GPT Action needs.
#[utoipa::path(get, path = "/openapi.json", operation_id = "getOpenApi", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", content_type = "application/json",
        body = Object)))]
async fn openapi_json(State(docs): State<Arc<Docs>>, headers: HeaderMap) -> Response {
    let mut spec = docs.spec.clone();
    spec.servers = Some(vec![Server::new(server_url(&headers))]);
    axum::Json(spec).into_response()
}

/// `scheme://host` as the client sees it (behind a proxy: `X-Forwarded-Proto`, `X-Forwarded-Host`);
/// `/` when the request does not say.
fn server_url(headers: &HeaderMap) -> String {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let host = first("x-forwarded-host").or_else(|| first(header::HOST.as_str()));
    let valid_host =
        |h: &&str| h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    match host.filter(valid_host) {
        Some(host) => {
            let scheme = match first("x-forwarded-proto") {
                Some("https") => "https",
                _ => "http",
            };
            format!("{scheme}://{host}")
        }
        None => "/".to_owned(),
    }
}

fn page(html: impl IntoResponse) -> Response {
    let mut response = html.into_response();
    response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    response
}

/// Swagger UI.
#[utoipa::path(get, path = "/docs", operation_id = "swaggerUi", security(()),
    responses((status = 200, description = "Swagger UI: browse and try the API.", content_type = "text/html",
        body = String)))]
async fn swagger_ui(State(docs): State<Arc<Docs>>) -> Result<Response, ApiError> {
    let index = swagger_file("index.html", &docs)?;
    // The page's assets are relative to `/docs/`.
    let html = String::from_utf8_lossy(&index.bytes).replacen("<head>", "<head>\n    <base href=\"/docs/\">", 1);
    Ok(page(Html(html)))
}

/// ReDoc.
#[utoipa::path(get, path = "/redoc", operation_id = "redoc", security(()),
    responses((status = 200, description = "ReDoc: the API reference.", content_type = "text/html", body = String)))]
async fn redoc() -> Response {
    page(Html(REDOC_HTML))
}

/// The pages' scripts, styles and images.
async fn asset(State(docs): State<Arc<Docs>>, Path(file): Path<String>) -> Result<Response, ApiError> {
    if file == "redoc.standalone.js" {
        return Ok(([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], REDOC_JS).into_response());
    }
    let found = swagger_file(&file, &docs)?;
    let content_type = HeaderValue::from_str(&found.content_type).unwrap_or(HeaderValue::from_static("text/plain"));
    Ok(([(header::CONTENT_TYPE, content_type)], found.bytes.into_owned()).into_response())
}

fn swagger_file(file: &str, docs: &Docs) -> Result<utoipa_swagger_ui::SwaggerFile<'static>, ApiError> {
    match utoipa_swagger_ui::serve(file, docs.swagger.clone()) {
        Ok(Some(found)) => Ok(found),
        Ok(None) => Err(ApiError::not_found("Not Found")),
        Err(e) => Err(ApiError {
            detail: Some(format!("Swagger UI file {file}: {e}")),
            ..ApiError::from(tonic::Status::internal("Swagger UI is unavailable"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_is_the_host_the_client_reached() {
        let mut headers = HeaderMap::new();
        assert_eq!(server_url(&headers), "/");
        headers.insert(header::HOST, HeaderValue::from_static("gw.example.com:8080"));
        assert_eq!(server_url(&headers), "http://gw.example.com:8080");
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers.insert("x-forwarded-host", HeaderValue::from_static("api.example.com, internal"));
        assert_eq!(server_url(&headers), "https://api.example.com");
        headers.insert("x-forwarded-host", HeaderValue::from_static("evil.com/\"><script>"));
        assert_eq!(server_url(&headers), "/");
    }

    #[test]
    fn the_pages_name_no_other_host() {
        let docs = Docs { spec: OpenApi::default(), swagger: Arc::new(Config::new(["/openapi.json"])) };
        let swagger = swagger_file("index.html", &docs).unwrap();
        for html in [String::from_utf8_lossy(&swagger.bytes).into_owned(), REDOC_HTML.to_owned()] {
            for attr in ["src=\"", "href=\""] {
                for (i, _) in html.match_indices(attr) {
                    let url = &html[i + attr.len()..];
                    assert!(!url.starts_with("http") && !url.starts_with("//"), "{}", &url[..40.min(url.len())]);
                }
            }
        }
        assert!(REDOC_JS.len() > 100_000, "the ReDoc bundle is compiled in");
    }
}
