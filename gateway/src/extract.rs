//! Request extractors whose rejections name the field at fault.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body. Malformed JSON is a 400; a missing field or a wrong type is a 422 whose
/// `loc` names the field.
#[derive(Debug)]
pub struct ValidJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ValidJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError { status: e.status(), ..ApiError::malformed_json("request body is too large") }
            } else {
                ApiError::malformed_json(format!("cannot read the request body: {e}"))
            }
        })?;
        parse_json(&bytes).map(ValidJson)
    }
}

/// Parses a JSON object body with field-naming errors.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::malformed_json(format!("request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::invalid(&["body"], "model_attributes_type", "request body must be a JSON object"));
    }
    deserialize(value, "body")
}

/// A form-encoded body (`application/x-www-form-urlencoded`), with field-naming errors.
#[derive(Debug)]
pub struct ValidForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ValidForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError { status: e.status(), ..ApiError::malformed_json("cannot read the request body") })?;
        let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(&bytes));
        serde_path_to_error::deserialize(deserializer).map(ValidForm).map_err(|e| to_api_error(e, "body"))
    }
}

/// Query parameters, with the same field-naming errors as [`ValidJson`].
#[derive(Debug)]
pub struct ValidQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ValidQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer).map(ValidQuery).map_err(|e| to_api_error(e, "query"))
    }
}

fn deserialize<T: DeserializeOwned>(value: serde_json::Value, root: &'static str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| to_api_error(e, root))
}

fn to_api_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>, root: &'static str) -> ApiError {
    {
        let inner = e.inner().to_string();
        let mut loc: Vec<String> = vec![root.to_owned()];
        loc.extend(e.path().iter().map(|seg| seg.to_string()).filter(|s| s != "?"));
        // serde reports a missing field at its parent; name the field itself.
        let (kind, message) = if let Some(field) = missing_field(&inner) {
            loc.push(field);
            ("missing", "Field required".to_owned())
        } else if inner.starts_with("invalid type") {
            ("type_error", inner)
        } else {
            ("value_error", inner)
        };
        let loc_refs: Vec<&str> = loc.iter().map(String::as_str).collect();
        ApiError::invalid(&loc_refs, kind, message)
    }
}

fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split_once('`').map(|(field, _)| field.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        message: String,
        stream: Option<bool>,
    }

    #[test]
    fn missing_and_mistyped_fields_are_named() {
        let err = deserialize::<Body>(serde_json::json!({}), "body").unwrap_err();
        assert_eq!(err.loc, Some(vec!["body".to_owned(), "message".to_owned()]));
        assert_eq!(err.kind, "missing");
        let err = deserialize::<Body>(serde_json::json!({"message": 5}), "body").unwrap_err();
        assert_eq!(err.field(), Some("message"));
        assert_eq!(err.kind, "type_error");
        let err = deserialize::<Body>(serde_json::json!({"message": "x", "stream": "yes"}), "body").unwrap_err();
        assert_eq!(err.field(), Some("stream"));
    }
}
