//! The `switchboard.auth.v1.AuthService` implementation. Key management needs the admin
//! token (`x-admin-token` metadata) except where seed 000's open registration allows it.

mod keys;
mod users;

use std::sync::Arc;

use std::borrow::Borrow;

use secrecy::{ExposeSecret, SecretString};
use switchboard_kit::auth::{Caller, Credential};
use switchboard_kit::revocation::RevocationBus;
use switchboard_proto::auth::v1 as pb;
use switchboard_proto::auth::v1::auth_service_server::AuthService;
use tonic::{Request, Response, Status};

use crate::error::AuthError;
use crate::jwt::Jwt;
use crate::last_used::LastUsed;
use crate::passwords::HashPool;
use crate::settings::Settings;
use crate::store::{KeyStore, UserStore};

/// The gRPC face of the auth service.
pub(crate) struct AuthGrpc {
    static_keys: Vec<Vec<u8>>,
    admin_token: Option<SecretString>,
    open_key_registration: bool,
    jwt: Option<Jwt>,
    jwt_ttl_secs: i64,
    allowed_system_ids: Vec<String>,
    allowed_origins: Vec<String>,
    registration_systems: Vec<String>,
    keys: Arc<dyn KeyStore>,
    users: Arc<dyn UserStore>,
    last_used: LastUsed,
    bus: RevocationBus,
    hashing: HashPool,
    logins: crate::login_guard::LoginGuard,
}

/// Where the auth service keeps things and announces revocations.
pub(crate) struct Deps {
    pub keys: Arc<dyn KeyStore>,
    pub users: Arc<dyn UserStore>,
    pub last_used: LastUsed,
    pub bus: RevocationBus,
}

impl AuthGrpc {
    pub(crate) fn new(settings: &Settings, deps: Deps) -> Self {
        Self {
            static_keys: settings.static_keys.iter().map(|k| k.expose_secret().as_bytes().to_vec()).collect(),
            admin_token: settings.admin_token.clone(),
            open_key_registration: settings.open_key_registration,
            jwt: settings.jwt_secret.as_ref().map(Jwt::new),
            jwt_ttl_secs: i64::try_from(settings.jwt_ttl.as_secs()).unwrap_or(86_400),
            allowed_system_ids: settings.allowed_system_ids.clone(),
            allowed_origins: settings.allowed_chat_token_origins.clone(),
            registration_systems: settings.registration_systems.clone(),
            keys: deps.keys,
            users: deps.users,
            last_used: deps.last_used,
            bus: deps.bus,
            hashing: HashPool::new(settings.password_hash_concurrency, settings.password_hash_queue),
            logins: crate::login_guard::LoginGuard::default(),
        }
    }

    fn system_allowed(&self, system_id: &str) -> bool {
        self.allowed_system_ids.is_empty() || self.allowed_system_ids.iter().any(|s| s == system_id)
    }

    /// `default` for an empty tenant; refuses tenants outside `ALLOWED_SYSTEM_IDS`.
    fn tenant(&self, system_id: &str) -> Result<String, AuthError> {
        let system_id = system_id.trim();
        let system_id = if system_id.is_empty() { "default" } else { system_id };
        if !self.system_allowed(system_id) {
            return Err(AuthError::PermissionDenied(format!("system_id {system_id:?} is not allowed")));
        }
        Ok(system_id.to_owned())
    }

    fn jwt(&self) -> Result<&Jwt, AuthError> {
        self.jwt.as_ref().ok_or_else(|| AuthError::NotConfigured("tokens are off: set CHAT_GATEWAY_JWT_SECRET".into()))
    }

    /// Whether the request carries the admin token (`x-admin-token`), compared in constant time.
    fn is_admin<T>(&self, request: &Request<T>) -> bool {
        let presented = request.metadata().get("x-admin-token").and_then(|v| v.to_str().ok());
        match (&self.admin_token, presented) {
            (Some(token), Some(presented)) => {
                crate::keys::same(token.expose_secret().as_bytes(), presented.trim().as_bytes())
            }
            _ => false,
        }
    }

    /// The caller presenting the request's credential (`x-api-key` or `authorization`).
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, AuthError> {
        let credential = Credential::from_headers(request.metadata().clone().into_headers().borrow())
            .map_err(|_| AuthError::Unauthenticated)?;
        let kind = credential.kind();
        let answer = self
            .do_authenticate(pb::AuthenticateRequest { kind: kind as i32, credential: credential.secret().to_owned() })
            .await?;
        Ok(Caller::from_answer(answer, credential))
    }

    /// The principal the request's credential acts for when it names `(system_id, user_id)`;
    /// refused unless it may.
    async fn require_principal<T>(
        &self,
        request: &Request<T>,
        system_id: &str,
        user_id: &str,
    ) -> Result<(String, String), Status> {
        self.caller(request).await?.check(system_id, user_id)
    }

    fn require_admin<T>(&self, request: &Request<T>) -> Result<(), AuthError> {
        if self.admin_token.is_none() {
            return Err(AuthError::PermissionDenied(
                "key management is off: set SWITCHBOARD_ADMIN_TOKEN to enable it".into(),
            ));
        }
        if self.is_admin(request) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied("the admin token is missing or wrong".into()))
        }
    }
}

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        Ok(Response::new(self.do_authenticate(request.into_inner()).await?))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        Ok(Response::new(self.do_create_key(request).await?))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        self.require_admin(&request)?;
        Ok(Response::new(self.do_list_keys(request.into_inner()).await?))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        Ok(Response::new(self.do_revoke_key(request).await?))
    }

    async fn rotate_api_key(
        &self,
        request: Request<pb::RotateApiKeyRequest>,
    ) -> Result<Response<pb::RotateApiKeyResponse>, Status> {
        self.require_admin(&request)?;
        Ok(Response::new(self.do_rotate_key(request.into_inner()).await?))
    }

    async fn register_user(
        &self,
        request: Request<pb::RegisterUserRequest>,
    ) -> Result<Response<pb::RegisterUserResponse>, Status> {
        Ok(Response::new(self.do_register(request.into_inner()).await?))
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        Ok(Response::new(self.do_login(request.into_inner()).await?))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        self.do_logout(request.into_inner()).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn upsert_profile(
        &self,
        request: Request<pb::UpsertProfileRequest>,
    ) -> Result<Response<pb::UpsertProfileResponse>, Status> {
        let p = request.get_ref().profile.clone().unwrap_or_default();
        let (system_id, user_id) =
            self.require_principal(&request, &self.tenant(&p.system_id)?, p.user_id.trim()).await?;
        let mut req = request.into_inner();
        if let Some(profile) = req.profile.as_mut() {
            (profile.system_id, profile.user_id) = (system_id, user_id);
        }
        Ok(Response::new(self.do_upsert_profile(req).await?))
    }

    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::GetProfileResponse>, Status> {
        let (system_id, user_id) = (request.get_ref().system_id.clone(), request.get_ref().user_id.clone());
        let (system_id, user_id) = self.require_principal(&request, &self.tenant(&system_id)?, user_id.trim()).await?;
        Ok(Response::new(self.do_get_profile(pb::GetProfileRequest { system_id, user_id }).await?))
    }

    async fn issue_chat_token(
        &self,
        request: Request<pb::IssueChatTokenRequest>,
    ) -> Result<Response<pb::IssueChatTokenResponse>, Status> {
        let caller = self.caller(&request).await?;
        // Only a backend mints chat tokens for its users: a token minting tokens (or a user or
        // client key minting its own) would outlive logout and revocation indefinitely.
        if !caller.service {
            return Err(AuthError::PermissionDenied(
                "chat tokens are issued with a service key (the backend of the site embedding the chat)".into(),
            )
            .into());
        }
        let req = request.get_ref();
        let (system_id, user_id) = caller.check(req.system_id.trim(), req.user_id.trim())?;
        let req = pb::IssueChatTokenRequest { system_id, user_id, ..request.into_inner() };
        Ok(Response::new(self.do_chat_token(req)?))
    }
}
