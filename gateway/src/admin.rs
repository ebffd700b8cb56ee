//! The admin credential (`SWITCHBOARD_ADMIN_TOKEN`), presented as `X-Admin-Token` or as
//! `Authorization: Bearer`, and passed to the auth service, which checks it.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tonic::metadata::MetadataValue;

/// Whatever admin token the request carries (checked by the auth service, not here).
#[derive(Debug, Clone, Default)]
pub struct AdminToken(Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for AdminToken {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let token = header("x-admin-token")
            .or_else(|| header("authorization").and_then(|a| a.strip_prefix("Bearer ").or(a.strip_prefix("bearer "))))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        Ok(Self(token))
    }
}

impl AdminToken {
    /// Wraps a message for the auth service, with the admin token when one was presented.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = self.0.as_deref().and_then(|t| MetadataValue::try_from(t).ok()) {
            request.metadata_mut().insert("x-admin-token", value);
        }
        request
    }
}
