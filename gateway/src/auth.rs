//! The principal resolver: one extractor for `X-API-Key`, `Authorization: Bearer` and
//! `?token=`, verified through the shared, revocation-aware [`Verifier`] cache.
//!
//! [`Verifier`]: switchboard_kit::auth::Verifier

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use switchboard_kit::auth::{ActAsError, Credential, CredentialError};

use crate::error::ApiError;
use crate::state::AppState;

/// The principal a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Tenant.
    pub system_id: String,
    /// User.
    pub user_id: String,
}

impl From<&Principal> for switchboard_proto::common::v1::Principal {
    fn from(p: &Principal) -> Self {
        Self { system_id: p.system_id.clone(), user_id: p.user_id.clone() }
    }
}

/// An authenticated caller, and the route it called (internal calls name it, so usage per
/// endpoint is counted by the services).
#[derive(Debug, Clone)]
pub struct Caller(pub switchboard_kit::auth::Caller, pub Endpoint);

/// `<METHOD> <route template>` of a request, as gRPC metadata: sent with the request's first
/// internal call only, so a request that makes several calls is counted once.
#[derive(Debug, Clone, Default)]
pub struct Endpoint(std::sync::Arc<std::sync::Mutex<Option<tonic::metadata::AsciiMetadataValue>>>);

impl Endpoint {
    fn take(&self) -> Option<tonic::metadata::AsciiMetadataValue> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // The rate limiter may have verified the credential already.
        let caller = match parts.extensions.get::<switchboard_kit::auth::Caller>() {
            Some(caller) => caller.clone(),
            None => {
                let credential = credential_of(&parts.headers, parts.uri.query())?;
                let caller = state.verifier.verify(&credential).await?;
                parts.extensions.insert(caller.clone());
                caller
            }
        };
        let endpoint = parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .and_then(|route| format!("{} {}", parts.method, route.as_str()).parse().ok());
        Ok(Self(caller, Endpoint(std::sync::Arc::new(std::sync::Mutex::new(endpoint)))))
    }
}

/// The credential a request presents: `X-API-Key`, `Authorization: Bearer`, or `?token=`.
pub fn credential_of(headers: &axum::http::HeaderMap, query: Option<&str>) -> Result<Credential, ApiError> {
    match Credential::from_headers(headers) {
        Ok(c) => Ok(c),
        Err(CredentialError::MalformedAuthorization) => {
            Err(ApiError::unauthenticated("Authorization must be `Bearer <token>`"))
        }
        Err(CredentialError::Missing) => query_param(query, "token").map(Credential::Jwt).ok_or_else(|| {
            ApiError::unauthenticated("missing credential: send X-API-Key, Authorization: Bearer <token>, or ?token=")
        }),
    }
}

/// The query parameter `name`, trimmed, if given and not empty (`?token=` on pages,
/// `?api_key=` on the history page).
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

impl Caller {
    /// The principal this request acts for (see [`switchboard_kit::auth::Caller::act_as`]);
    /// `root` is where the ids come from (`body` or `query`), for errors.
    pub fn act_as(&self, system_id: Option<&str>, user_id: Option<&str>, root: &str) -> Result<Principal, ApiError> {
        match self.0.act_as(system_id, user_id) {
            Ok((system_id, user_id)) => Ok(Principal { system_id, user_id }),
            Err(ActAsError::Missing(field)) => Err(ApiError::invalid(&[root, field], "missing", "Field required")),
            Err(ActAsError::Forbidden(reason)) => Err(ApiError::forbidden(reason)),
        }
    }

    /// Public id of the API key used, for usage records.
    pub fn key_id(&self) -> &str {
        &self.0.key_id
    }

    /// Wraps a message for an internal gRPC call, forwarding the caller's credential.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        self.0.credential.write_to(request.metadata_mut());
        if let Some(endpoint) = self.1.take() {
            request.metadata_mut().insert("sb-endpoint", endpoint);
        }
        request
    }
}
