//! The `switchboard.auth.v1.AuthService` implementation.

use std::sync::Arc;

use secrecy::ExposeSecret;
use switchboard_kit::time::{now_ms, to_timestamp};
use switchboard_proto::auth::v1 as pb;
use switchboard_proto::auth::v1::auth_service_server::AuthService;
use tonic::{Request, Response, Status};

use crate::error::AuthError;
use crate::jwt::JwtVerifier;
use crate::keys;
use crate::settings::Settings;
use crate::store::{KeyStore, StoredKey};

/// The gRPC face of the auth service.
pub(crate) struct AuthGrpc {
    static_keys: Vec<Vec<u8>>,
    jwt: Option<JwtVerifier>,
    allowed_system_ids: Vec<String>,
    keys: Arc<dyn KeyStore>,
}

impl AuthGrpc {
    pub(crate) fn new(settings: &Settings, keys: Arc<dyn KeyStore>) -> Self {
        Self {
            static_keys: settings.static_keys.iter().map(|k| k.expose_secret().as_bytes().to_vec()).collect(),
            jwt: settings.jwt_secret.as_ref().map(JwtVerifier::new),
            allowed_system_ids: settings.allowed_system_ids.clone(),
            keys,
        }
    }

    fn system_allowed(&self, system_id: &str) -> bool {
        self.allowed_system_ids.is_empty() || self.allowed_system_ids.iter().any(|s| s == system_id)
    }

    async fn authenticate_key(&self, presented: &str) -> Result<pb::AuthenticateResponse, AuthError> {
        // Every static key is compared, in constant time, so timing reveals nothing.
        let static_match =
            self.static_keys.iter().fold(false, |found, key| keys::same(key, presented.as_bytes()) | found);
        if static_match {
            return Ok(pb::AuthenticateResponse {
                principal: Some(pb::Principal::default()),
                scope: pb::KeyScope::Service as i32,
                key_id: String::new(),
                allowed_system_ids: self.allowed_system_ids.clone(),
                expires_at: None,
            });
        }
        let (id, secret) = keys::parse(presented).ok_or(AuthError::Unauthenticated)?;
        let key = self.keys.find(id).await?.ok_or(AuthError::Unauthenticated)?;
        let now = now_ms();
        let live = key.revoked_at.is_none() && key.expires_at.is_none_or(|t| t > now);
        if !keys::same(keys::digest(secret).as_bytes(), key.digest.as_bytes()) || !live {
            return Err(AuthError::Unauthenticated);
        }
        let system_id = if key.system_id.is_empty() { "default".to_owned() } else { key.system_id.clone() };
        let service = key.scope == "service";
        Ok(pb::AuthenticateResponse {
            principal: Some(pb::Principal {
                system_id: system_id.clone(),
                user_id: if service { String::new() } else { format!("key_{}", key.id) },
            }),
            scope: if service { pb::KeyScope::Service } else { pb::KeyScope::Client } as i32,
            key_id: key.id,
            allowed_system_ids: vec![system_id],
            expires_at: key.expires_at.map(to_timestamp),
        })
    }

    fn authenticate_jwt(&self, token: &str) -> Result<pb::AuthenticateResponse, AuthError> {
        let verifier = self.jwt.as_ref().ok_or(AuthError::Unauthenticated)?;
        let claims = verifier.verify(token).map_err(|_| AuthError::Unauthenticated)?;
        if claims.system_id.trim().is_empty() || claims.user_id.trim().is_empty() {
            return Err(AuthError::Unauthenticated);
        }
        if !self.system_allowed(&claims.system_id) {
            return Err(AuthError::PermissionDenied(format!("system_id {:?} is not allowed", claims.system_id)));
        }
        Ok(pb::AuthenticateResponse {
            allowed_system_ids: vec![claims.system_id.clone()],
            principal: Some(pb::Principal { system_id: claims.system_id, user_id: claims.user_id }),
            scope: pb::KeyScope::Client as i32,
            key_id: String::new(),
            expires_at: Some(prost_types::Timestamp { seconds: claims.exp, nanos: 0 }),
        })
    }
}

fn key_pb(k: StoredKey) -> pb::ApiKey {
    pb::ApiKey {
        scope: if k.scope == "service" { pb::KeyScope::Service } else { pb::KeyScope::Client } as i32,
        id: k.id,
        client_name: k.client_name,
        system_id: k.system_id,
        created_at: Some(to_timestamp(k.created_at)),
        expires_at: k.expires_at.map(to_timestamp),
        revoked_at: k.revoked_at.map(to_timestamp),
        last_used_at: k.last_used_at.map(to_timestamp),
        prefix: k.prefix,
    }
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not available yet"))
}

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let req = request.into_inner();
        let credential = req.credential.trim();
        if credential.is_empty() {
            return Err(AuthError::Unauthenticated.into());
        }
        let answer = match pb::CredentialKind::try_from(req.kind).unwrap_or(pb::CredentialKind::Unspecified) {
            pb::CredentialKind::ApiKey => self.authenticate_key(credential).await?,
            pb::CredentialKind::Jwt => self.authenticate_jwt(credential)?,
            // A bearer credential of unknown kind: an API key if it is one, else a JWT.
            pb::CredentialKind::Unspecified => match self.authenticate_key(credential).await {
                Ok(answer) => answer,
                Err(AuthError::Unauthenticated) => self.authenticate_jwt(credential)?,
                Err(e) => return Err(e.into()),
            },
        };
        Ok(Response::new(answer))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let req = request.into_inner();
        let client_name = req.client_name.trim();
        if client_name.is_empty() || client_name.chars().count() > 100 {
            return Err(
                AuthError::InvalidArgument { field: "client_name", reason: "must be 1-100 characters".into() }.into()
            );
        }
        if req.ttl_seconds < 0 {
            return Err(
                AuthError::InvalidArgument { field: "ttl_seconds", reason: "must not be negative".into() }.into()
            );
        }
        let system_id = req.system_id.trim();
        if !system_id.is_empty() && !self.system_allowed(system_id) {
            return Err(AuthError::PermissionDenied(format!("system_id {system_id:?} is not allowed")).into());
        }
        let generated = keys::generate();
        let now = now_ms();
        let scope = match pb::KeyScope::try_from(req.scope).unwrap_or(pb::KeyScope::Unspecified) {
            pb::KeyScope::Service => "service",
            _ => "client",
        };
        let stored = StoredKey {
            id: generated.id,
            digest: generated.digest,
            prefix: generated.prefix,
            client_name: client_name.to_owned(),
            system_id: system_id.to_owned(),
            scope: scope.to_owned(),
            created_at: now,
            expires_at: (req.ttl_seconds > 0).then(|| now.saturating_add(req.ttl_seconds.saturating_mul(1000))),
            revoked_at: None,
            last_used_at: None,
        };
        self.keys.insert(&stored).await.map_err(AuthError::from)?;
        tracing::info!(key_id = %stored.id, client = %stored.client_name, scope, "API key issued");
        Ok(Response::new(pb::CreateApiKeyResponse { key: Some(key_pb(stored)), secret: generated.plaintext }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let req = request.into_inner();
        let system = Some(req.system_id.trim()).filter(|s| !s.is_empty());
        let keys = self.keys.list(system, req.include_inactive, now_ms()).await.map_err(AuthError::from)?;
        Ok(Response::new(pb::ListApiKeysResponse { keys: keys.into_iter().map(key_pb).collect() }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let presented = request.into_inner().key;
        let presented = presented.trim();
        // Either the public id or the whole plaintext key.
        let id = keys::parse(presented).map_or(presented, |(id, _)| id);
        if !self.keys.revoke(id, now_ms()).await.map_err(AuthError::from)? {
            return Err(AuthError::NotFound.into());
        }
        let key = self.keys.find(id).await.map_err(AuthError::from)?.ok_or(AuthError::NotFound)?;
        tracing::info!(key_id = %key.id, "API key revoked");
        Ok(Response::new(pb::RevokeApiKeyResponse { key: Some(key_pb(key)) }))
    }

    async fn rotate_api_key(
        &self,
        _: Request<pb::RotateApiKeyRequest>,
    ) -> Result<Response<pb::RotateApiKeyResponse>, Status> {
        Err(unimplemented("RotateApiKey"))
    }

    async fn register_user(
        &self,
        _: Request<pb::RegisterUserRequest>,
    ) -> Result<Response<pb::RegisterUserResponse>, Status> {
        Err(unimplemented("RegisterUser"))
    }

    async fn login(&self, _: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        Err(unimplemented("Login"))
    }

    async fn logout(&self, _: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        Err(unimplemented("Logout"))
    }

    async fn upsert_profile(
        &self,
        _: Request<pb::UpsertProfileRequest>,
    ) -> Result<Response<pb::UpsertProfileResponse>, Status> {
        Err(unimplemented("UpsertProfile"))
    }

    async fn get_profile(&self, _: Request<pb::GetProfileRequest>) -> Result<Response<pb::GetProfileResponse>, Status> {
        Err(unimplemented("GetProfile"))
    }

    async fn issue_chat_token(
        &self,
        _: Request<pb::IssueChatTokenRequest>,
    ) -> Result<Response<pb::IssueChatTokenResponse>, Status> {
        Err(unimplemented("IssueChatToken"))
    }
}
