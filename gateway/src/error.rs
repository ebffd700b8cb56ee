//! One error type for every route, rendered in the dialect of the API it belongs to. gRPC
//! statuses map to HTTP codes in one table ([`From<Status>`]); 5xx bodies stay opaque and the
//! detail goes to the log once, in the request trace.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use switchboard_kit::grpc::{FIELD_METADATA, UPSTREAM_METADATA};
use tonic::Code;

/// Detail of a failed request, for the trace layer to log (never sent to the client).
#[derive(Debug, Clone)]
pub struct ErrorDetail(pub String);

/// An error answered to an HTTP client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Message shown to the client.
    pub message: String,
    /// Where the problem is, FastAPI-style (`["body", "message"]`), for validation errors.
    pub loc: Option<Vec<String>>,
    /// Machine-readable kind (`missing`, `json_invalid`, `unauthenticated`, ...).
    pub kind: &'static str,
    /// Detail for the log.
    pub detail: Option<String>,
    /// Extra response headers (`Retry-After`, rate-limit state).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), loc: None, kind, detail: None, headers: Vec::new() }
    }

    /// 401: no credential or a bad one.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 403: the credential may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 422 about one field: `loc` is where (`body`/`query`, then the field path).
    pub fn invalid(loc: &[&str], kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            loc: Some(loc.iter().map(|s| (*s).to_owned()).collect()),
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, kind, message)
        }
    }

    /// 400: the body is not JSON at all.
    pub fn malformed_json(message: impl Into<String>) -> Self {
        Self { loc: Some(vec!["body".into()]), ..Self::new(StatusCode::BAD_REQUEST, "json_invalid", message) }
    }

    /// Names the field as this API does when a service called it `service_field`
    /// (e.g. the services' `page_token` is this API's `cursor` query parameter).
    pub fn renamed(mut self, service_field: &str, loc: &[&str]) -> Self {
        if self.field() == Some(service_field) {
            self.loc = Some(loc.iter().map(|s| (*s).to_owned()).collect());
        }
        self
    }

    /// The field this error is about, if any.
    pub fn field(&self) -> Option<&str> {
        self.loc.as_ref().and_then(|l| l.last()).map(String::as_str)
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let meta = |key| status.metadata().get(key).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let upstream = meta(UPSTREAM_METADATA);
        let detail = Some(format!("{:?}: {}", status.code(), status.message()));
        let opaque =
            |code: StatusCode, kind, message: &str| Self { detail: detail.clone(), ..Self::new(code, kind, message) };
        match status.code() {
            Code::InvalidArgument => match meta(FIELD_METADATA) {
                Some(field) => Self {
                    loc: Some(vec!["body".into(), field]),
                    ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "value_error", status.message())
                },
                None => Self::new(StatusCode::BAD_REQUEST, "invalid_argument", status.message()),
            },
            Code::NotFound => Self::not_found(status.message()),
            Code::AlreadyExists => Self::new(StatusCode::CONFLICT, "conflict", status.message()),
            Code::Aborted => Self::new(StatusCode::CONFLICT, "conflict", status.message()),
            Code::Unauthenticated => Self::unauthenticated(status.message()),
            Code::PermissionDenied => Self::forbidden(status.message()),
            Code::ResourceExhausted => Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", status.message()),
            Code::Unimplemented => Self::new(StatusCode::NOT_IMPLEMENTED, "not_implemented", status.message()),
            Code::DeadlineExceeded if upstream.is_some() => {
                opaque(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", "the model upstream did not answer in time")
            }
            Code::DeadlineExceeded => {
                opaque(StatusCode::GATEWAY_TIMEOUT, "timeout", "a dependency did not answer in time")
            }
            Code::Unavailable | Code::FailedPrecondition if upstream.is_some() => {
                opaque(StatusCode::BAD_GATEWAY, "upstream_error", "the model upstream failed; your message was saved")
            }
            // A feature that is switched off here (e.g. "set SWITCHBOARD_ENCRYPTION_KEY").
            Code::FailedPrecondition => Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_configured", status.message()),
            Code::Unavailable | Code::Cancelled => {
                opaque(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "a dependency is unavailable; try again shortly")
            }
            _ => opaque(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error"),
        }
    }
}

/// How an API family writes its errors. Each seed's API keeps the error shape its clients
/// already parse; all are rendered from the same [`ApiError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// FastAPI (seeds 002, 003 and the canonical `/v1` API): `{"detail": "..."}`, and
    /// `{"detail": [{loc, msg, type}]}` for validation errors.
    FastApi,
    /// Seed 000: `{"error": "..."}`.
    Classic,
    /// Seed 001: `{"success": false, "message", "data": null, "error"}`.
    Envelope,
    /// Seed 004: `{"success": false, "message", "data": null, "errors": {field: [msg]}}`.
    EnvelopeWithErrors,
    /// OpenAI: `{"error": {"message", "type", "param", "code"}}`.
    OpenAi,
}

impl ApiError {
    fn message_with_field(&self) -> String {
        match self.field() {
            Some(field) if field != "body" && field != "query" => format!("{field}: {}", self.message),
            _ => self.message.clone(),
        }
    }

    /// The body in `dialect`.
    pub fn body(&self, dialect: Dialect) -> serde_json::Value {
        match dialect {
            Dialect::FastApi => match &self.loc {
                Some(loc) => json!({"detail": [{"loc": loc, "msg": self.message, "type": self.kind}]}),
                None => json!({"detail": self.message}),
            },
            Dialect::Classic => json!({"error": self.message_with_field()}),
            Dialect::Envelope => {
                let message = self.message_with_field();
                json!({"success": false, "message": message, "data": null, "error": message})
            }
            Dialect::EnvelopeWithErrors => {
                let errors = self.field().map(|f| json!({ f: [self.message] }));
                json!({"success": false, "message": self.message_with_field(), "data": null, "errors": errors})
            }
            Dialect::OpenAi => {
                let kind = match self.status.as_u16() {
                    401 => "authentication_error",
                    403 => "permission_error",
                    404 => "not_found_error",
                    429 => "rate_limit_error",
                    400..=499 => "invalid_request_error",
                    _ => "api_error",
                };
                json!({"error": {"message": self.message_with_field(), "type": kind, "param": self.field(), "code": self.kind}})
            }
        }
    }

    fn into_response_in(self, dialect: Dialect) -> Response {
        // OpenAI answers every invalid request with 400, where FastAPI's clients expect 422.
        let status = match (dialect, self.status) {
            (Dialect::OpenAi, StatusCode::UNPROCESSABLE_ENTITY) => StatusCode::BAD_REQUEST,
            (_, status) => status,
        };
        let mut response = (status, axum::Json(self.body(dialect))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer, ApiKey"));
        }
        if let Some(detail) = &self.detail {
            response.extensions_mut().insert(ErrorDetail(detail.clone()));
        }
        for (name, value) in &self.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        response.extensions_mut().insert(self);
        response
    }
}

impl IntoResponse for ApiError {
    /// FastAPI's dialect; [`in_dialect`] re-renders it for routes of other dialects.
    fn into_response(self) -> Response {
        self.into_response_in(Dialect::FastApi)
    }
}

/// The error dialect of a path (see the table in `routes`).
pub fn dialect_of(path: &str) -> Dialect {
    if matches!(path, "/v1/chat/completions" | "/v1/models") {
        Dialect::OpenAi
    } else if path.starts_with("/api-keys") || matches!(path, "/models" | "/model" | "/query" | "/history") {
        Dialect::Classic
    } else if path.starts_with("/api/v1/") {
        Dialect::EnvelopeWithErrors
    } else if path.starts_with("/api/") {
        Dialect::Envelope
    } else {
        Dialect::FastApi
    }
}

/// Middleware: re-renders error responses in the dialect of the request's path.
pub async fn render_in_dialect(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let dialect = dialect_of(request.uri().path());
    let response = next.run(request).await;
    match response.extensions().get::<ApiError>() {
        Some(error) if dialect != Dialect::FastApi => {
            let mut fresh = error.clone().into_response_in(dialect);
            // Keep headers set on the way out (rate-limit state).
            for (name, value) in response.headers() {
                if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                    fresh.headers_mut().insert(name.clone(), value.clone());
                }
            }
            fresh
        }
        _ => response,
    }
}
