//! The principal resolver: one extractor for `X-API-Key`, `Authorization: Bearer` and
//! `?token=`, asking the auth service who the credential is.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use switchboard_proto::auth::v1 as pb;
use tonic::metadata::MetadataValue;

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

/// How a credential was presented, kept to forward it on internal calls.
#[derive(Debug, Clone)]
enum Credential {
    ApiKey(String),
    Bearer(String),
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The fixed principal of a client credential; tenant only (or nothing) for service keys.
    principal: Principal,
    /// True for service keys, which act for any user of their tenants.
    service: bool,
    /// Tenants the credential may act for; empty for every tenant.
    allowed_system_ids: Vec<String>,
    /// Public id of the API key, for usage records.
    pub key_id: String,
    credential: Credential,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let (credential, kind) = if let Some(key) = header("x-api-key").filter(|k| !k.is_empty()) {
            (Credential::ApiKey(key.to_owned()), pb::CredentialKind::ApiKey)
        } else if let Some(auth) = header(AUTHORIZATION.as_str()) {
            let token = auth
                .strip_prefix("Bearer ")
                .or_else(|| auth.strip_prefix("bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ApiError::unauthenticated("Authorization must be `Bearer <token>`"))?;
            (Credential::Bearer(token.to_owned()), pb::CredentialKind::Unspecified)
        } else if let Some(token) = query_token(parts.uri.query()) {
            (Credential::Bearer(token), pb::CredentialKind::Jwt)
        } else {
            return Err(ApiError::unauthenticated(
                "missing credential: send X-API-Key, Authorization: Bearer <token>, or ?token=",
            ));
        };
        let secret = match &credential {
            Credential::ApiKey(s) | Credential::Bearer(s) => s.clone(),
        };
        let answer = state
            .auth
            .clone()
            .authenticate(pb::AuthenticateRequest { kind: kind as i32, credential: secret })
            .await?
            .into_inner();
        let principal = answer.principal.unwrap_or_default();
        Ok(Self {
            principal: Principal { system_id: principal.system_id, user_id: principal.user_id },
            service: answer.scope == pb::KeyScope::Service as i32,
            allowed_system_ids: answer.allowed_system_ids,
            key_id: answer.key_id,
            credential,
        })
    }
}

fn query_token(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

impl Caller {
    /// The principal this request acts for. Service keys must name `system_id` and `user_id`
    /// (within their tenants); client credentials act as themselves, and naming someone else
    /// is refused. `root` is where the ids come from (`body` or `query`), for errors.
    pub fn act_as(&self, system_id: Option<&str>, user_id: Option<&str>, root: &str) -> Result<Principal, ApiError> {
        let given = |v: Option<&str>| v.map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
        let (system_id, user_id) = (given(system_id), given(user_id));
        if !self.service {
            let mismatch = system_id.as_ref().is_some_and(|s| *s != self.principal.system_id)
                || user_id.as_ref().is_some_and(|u| *u != self.principal.user_id);
            if mismatch {
                return Err(ApiError::forbidden("this credential can only act for its own system_id and user_id"));
            }
            return Ok(self.principal.clone());
        }
        let system_id = system_id
            .or_else(|| Some(self.principal.system_id.clone()).filter(|s| !s.is_empty()))
            .ok_or_else(|| ApiError::invalid(&[root, "system_id"], "missing", "Field required"))?;
        let user_id = user_id.ok_or_else(|| ApiError::invalid(&[root, "user_id"], "missing", "Field required"))?;
        if !self.allowed_system_ids.is_empty() && !self.allowed_system_ids.contains(&system_id) {
            return Err(ApiError::forbidden(format!("system_id {system_id:?} is not allowed for this credential")));
        }
        Ok(Principal { system_id, user_id })
    }

    /// Wraps a message for an internal gRPC call, forwarding the caller's credential.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let (key, value) = match &self.credential {
            Credential::ApiKey(k) => ("x-api-key", k.clone()),
            Credential::Bearer(t) => ("authorization", format!("Bearer {t}")),
        };
        if let Ok(value) = MetadataValue::try_from(value) {
            request.metadata_mut().insert(key, value);
        }
        request
    }
}
