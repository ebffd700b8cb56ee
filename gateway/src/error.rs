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
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), loc: None, kind, detail: None }
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
            Code::FailedPrecondition => Self::new(StatusCode::CONFLICT, "failed_precondition", status.message()),
            Code::Unavailable | Code::Cancelled => {
                opaque(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "a dependency is unavailable; try again shortly")
            }
            _ => opaque(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error"),
        }
    }
}

impl IntoResponse for ApiError {
    /// FastAPI's dialect (seed 003): `{"detail": [{loc, msg, type}]}` for validation errors,
    /// `{"detail": "..."}` otherwise.
    fn into_response(self) -> Response {
        let body = match &self.loc {
            Some(loc) => json!({"detail": [{"loc": loc, "msg": self.message, "type": self.kind}]}),
            None => json!({"detail": self.message}),
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer, ApiKey"));
        }
        if let Some(detail) = self.detail {
            response.extensions_mut().insert(ErrorDetail(detail));
        }
        response
    }
}
