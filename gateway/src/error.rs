//! One error type for every route, rendered in the dialect of the API it belongs to. gRPC
//! statuses map to HTTP codes in one table ([`From<Status>`]); 5xx bodies stay opaque and the
//! detail goes to the log once, in the request trace.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use switchboard_kit::grpc::{BUDGET_METADATA, FIELD_METADATA, RETRY_AFTER_METADATA, UPSTREAM_METADATA};
use tonic::Code;
use utoipa::ToSchema;

use crate::openapi::Null;

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
        let retry_after = meta(RETRY_AFTER_METADATA)
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| HeaderValue::from_str(&v).ok());
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
            // A budget is spent: no retry helps before it resets (`Retry-After`, absent for a
            // budget that never does), unlike a rate limit.
            Code::ResourceExhausted if meta(BUDGET_METADATA).is_some() => Self {
                headers: retry_after.clone().into_iter().map(|v| (header::RETRY_AFTER, v)).collect(),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", status.message())
            },
            Code::ResourceExhausted => Self {
                headers: retry_after.clone().into_iter().map(|v| (header::RETRY_AFTER, v)).collect(),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", status.message())
            },
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
            // A service shed the request under load and said when to come back.
            Code::Unavailable if retry_after.is_some() => Self {
                headers: retry_after.into_iter().map(|v| (header::RETRY_AFTER, v)).collect(),
                ..opaque(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "too busy right now; retry after Retry-After")
            },
            // A feature that is switched off here (e.g. "set SWITCHBOARD_ENCRYPTION_KEY").
            Code::FailedPrecondition => Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_configured", status.message()),
            Code::Unavailable | Code::Cancelled => {
                opaque(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "a dependency is unavailable; try again shortly")
            }
            // The connection to a service broke mid-call (the process died, restarted or was
            // draining): the client made this status from the transport or HTTP/2 error, the
            // service never sent it.
            Code::Unknown | Code::Internal if std::error::Error::source(&status).is_some() => {
                opaque(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "a dependency is unavailable; try again shortly")
            }
            _ => opaque(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error"),
        }
    }
}

/// How an API family writes its errors. Each seed's API keeps the error shape its clients
/// already parse; all are rendered from the same [`ApiError`]. A family picks its dialect once,
/// where its routes are declared (`routes::Family`).
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

/// FastAPI's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct FastApiError {
    /// What went wrong: a sentence, or for invalid input one entry per field at fault.
    pub detail: FastApiDetail,
}

/// `detail` of a FastAPI error.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum FastApiDetail {
    /// A sentence.
    Message(String),
    /// Invalid input, one entry per field at fault.
    Validation(Vec<ValidationIssue>),
}

/// One invalid field, as FastAPI reports it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationIssue {
    /// Where the field is: `body` or `query` (or `header`), then its path.
    pub loc: Vec<String>,
    /// What is wrong with it.
    pub msg: String,
    /// Machine-readable kind (`missing`, `type_error`, `value_error`, ...).
    #[serde(rename = "type")]
    pub kind: String,
}

/// Seed 000's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClassicError {
    /// What went wrong; an invalid field is named first (`input: Field required`).
    pub error: String,
}

/// Seed 001's error envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnvelopeError {
    /// Always `false`.
    pub success: bool,
    /// What went wrong; an invalid field is named first.
    pub message: String,
    /// Always `null`.
    pub data: Null,
    /// Same as `message`.
    pub error: String,
}

/// Seed 004's error envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnvelopeWithErrorsError {
    /// Always `false`.
    pub success: bool,
    /// What went wrong; an invalid field is named first.
    pub message: String,
    /// Always `null`.
    pub data: Null,
    /// Messages by invalid field, or `null` when no one field is at fault.
    pub errors: Option<BTreeMap<String, Vec<String>>>,
}

/// OpenAI's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiError {
    /// The error.
    pub error: OpenAiErrorDetail,
}

/// The `error` object of an OpenAI error.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorDetail {
    /// What went wrong.
    pub message: String,
    /// OpenAI's error class: `invalid_request_error`, `authentication_error`,
    /// `permission_error`, `not_found_error`, `rate_limit_error`, `insufficient_quota` (a
    /// budget is spent) or `api_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request field at fault, if any.
    pub param: Option<String>,
    /// Machine-readable kind (`missing`, `unauthenticated`, `upstream_error`,
    /// `insufficient_quota`, ...).
    pub code: &'static str,
}

/// The body of an error in some dialect.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ErrorBody {
    /// [`Dialect::FastApi`].
    FastApi(FastApiError),
    /// [`Dialect::Classic`].
    Classic(ClassicError),
    /// [`Dialect::Envelope`].
    Envelope(EnvelopeError),
    /// [`Dialect::EnvelopeWithErrors`].
    EnvelopeWithErrors(EnvelopeWithErrorsError),
    /// [`Dialect::OpenAi`].
    OpenAi(OpenAiError),
}

impl Dialect {
    /// The schema of this dialect's error body, by name, for the OpenAPI document.
    pub fn schema(self) -> (String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>) {
        fn named<T: ToSchema>() -> (String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>) {
            (T::name().into_owned(), T::schema())
        }
        match self {
            Self::FastApi => named::<FastApiError>(),
            Self::Classic => named::<ClassicError>(),
            Self::Envelope => named::<EnvelopeError>(),
            Self::EnvelopeWithErrors => named::<EnvelopeWithErrorsError>(),
            Self::OpenAi => named::<OpenAiError>(),
        }
    }

    /// The schemas `schema()` refers to, for the OpenAPI document's components.
    pub fn referenced_schemas() -> Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)> {
        let mut schemas = Vec::new();
        for dialect in [Self::FastApi, Self::Classic, Self::Envelope, Self::EnvelopeWithErrors, Self::OpenAi] {
            schemas.push(dialect.schema());
        }
        FastApiError::schemas(&mut schemas);
        OpenAiError::schemas(&mut schemas);
        schemas
    }
}

impl ApiError {
    fn message_with_field(&self) -> String {
        match self.field() {
            Some(field) if field != "body" && field != "query" => format!("{field}: {}", self.message),
            _ => self.message.clone(),
        }
    }

    /// The body in `dialect`.
    pub fn body(&self, dialect: Dialect) -> ErrorBody {
        match dialect {
            Dialect::FastApi => ErrorBody::FastApi(FastApiError {
                detail: match &self.loc {
                    Some(loc) => FastApiDetail::Validation(vec![ValidationIssue {
                        loc: loc.clone(),
                        msg: self.message.clone(),
                        kind: self.kind.to_owned(),
                    }]),
                    None => FastApiDetail::Message(self.message.clone()),
                },
            }),
            Dialect::Classic => ErrorBody::Classic(ClassicError { error: self.message_with_field() }),
            Dialect::Envelope => {
                let message = self.message_with_field();
                ErrorBody::Envelope(EnvelopeError { success: false, error: message.clone(), message, data: Null })
            }
            Dialect::EnvelopeWithErrors => ErrorBody::EnvelopeWithErrors(EnvelopeWithErrorsError {
                success: false,
                message: self.message_with_field(),
                data: Null,
                errors: self.field().map(|f| BTreeMap::from([(f.to_owned(), vec![self.message.clone()])])),
            }),
            Dialect::OpenAi => {
                let kind = match self.status.as_u16() {
                    // OpenAI's shape for a spent quota: `insufficient_quota` as type and code.
                    429 if self.kind == "insufficient_quota" => "insufficient_quota",
                    401 => "authentication_error",
                    403 => "permission_error",
                    404 => "not_found_error",
                    429 => "rate_limit_error",
                    400..=499 => "invalid_request_error",
                    _ => "api_error",
                };
                ErrorBody::OpenAi(OpenAiError {
                    error: OpenAiErrorDetail {
                        message: self.message_with_field(),
                        kind,
                        param: self.field().map(str::to_owned),
                        code: self.kind,
                    },
                })
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

    /// Renders a response in `dialect` if it is an error in another one; keeps the headers set on
    /// the way out (rate-limit state). The middleware of [`Dialect::render_errors`].
    fn rerender(response: Response, dialect: Dialect) -> Response {
        match response.extensions().get::<ApiError>() {
            Some(error) if dialect != Dialect::FastApi => {
                let mut fresh = error.clone().into_response_in(dialect);
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
}

impl IntoResponse for ApiError {
    /// FastAPI's dialect; a family of another dialect re-renders it ([`Dialect::render_errors`]).
    fn into_response(self) -> Response {
        self.into_response_in(Dialect::FastApi)
    }
}

impl Dialect {
    /// Middleware for a family's routes: their errors (from handlers, extractors and the rate
    /// limiter inside it) answer in this dialect.
    pub async fn render_errors(self, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
        ApiError::rerender(next.run(request).await, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_connection_to_a_service_is_unavailable_not_internal() {
        // What tonic makes on the client side when the service's process dies mid-call.
        let broken = tonic::Status::from_error(Box::new(std::io::Error::other("transport error")));
        assert_eq!(broken.code(), Code::Unknown);
        assert_eq!(ApiError::from(broken).status, StatusCode::SERVICE_UNAVAILABLE);
        // An `Unknown` or `Internal` the service itself sent stays an internal error.
        assert_eq!(ApiError::from(tonic::Status::unknown("boom")).status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(ApiError::from(tonic::Status::internal("boom")).status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn a_spent_budget_is_insufficient_quota_and_a_rate_limit_stays_a_rate_limit() {
        use tonic::metadata::MetadataValue;

        let mut refused = tonic::Status::resource_exhausted("budget tenant:drillquiz:month is spent");
        refused.metadata_mut().insert(BUDGET_METADATA, MetadataValue::from_static("tenant:drillquiz:month"));
        refused.metadata_mut().insert(RETRY_AFTER_METADATA, MetadataValue::from_static("3600"));
        let error = ApiError::from(refused);
        assert_eq!(error.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(error.kind, "insufficient_quota");
        assert_eq!(error.message, "budget tenant:drillquiz:month is spent");
        assert!(error.headers.contains(&(header::RETRY_AFTER, HeaderValue::from_static("3600"))));
        let body = serde_json::to_value(error.body(Dialect::OpenAi)).unwrap();
        assert_eq!(body["error"]["type"], "insufficient_quota");
        assert_eq!(body["error"]["code"], "insufficient_quota");

        let limited = ApiError::from(tonic::Status::resource_exhausted("rate limit exceeded"));
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.kind, "rate_limited");
        let body = serde_json::to_value(limited.body(Dialect::OpenAi)).unwrap();
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert_eq!(body["error"]["code"], "rate_limited");
    }
}
