//! Users with passwords, logins and logouts, profiles, and chat tokens.

use std::str::FromStr;

use switchboard_kit::principal;
use switchboard_kit::time::{now_ms, to_timestamp};
use switchboard_proto::auth::v1 as pb;

use super::AuthGrpc;
use crate::error::AuthError;
use crate::passwords;
use crate::store::{StoredProfile, StoredUser};
use switchboard_kit::chat_ui;

/// Lifetime of a chat-page token (seed 003: 24 h).
const CHAT_TOKEN_TTL_SECS: i64 = 24 * 3600;

fn user_pb(u: &StoredUser) -> pb::User {
    pb::User {
        id: u.id.clone(),
        username: u.username.clone(),
        system_id: u.system_id.clone(),
        created_at: Some(to_timestamp(u.created_at)),
    }
}

fn profile_pb(p: StoredProfile) -> pb::Profile {
    pb::Profile {
        user_id: p.user_id,
        name: p.name,
        email: p.email,
        system_id: p.system_id,
        created_at: Some(to_timestamp(p.created_at)),
    }
}

impl AuthGrpc {
    pub(super) async fn do_register(
        &self,
        req: pb::RegisterUserRequest,
    ) -> Result<pb::RegisterUserResponse, AuthError> {
        let system_id = self.tenant(&req.system_id)?;
        if !self.registration_systems.contains(&system_id) {
            return Err(AuthError::PermissionDenied(format!(
                "sign-up is closed for system_id {system_id:?}; an operator opens it with SWITCHBOARD_REGISTRATION_SYSTEMS"
            )));
        }
        let username = req.username.trim().to_owned();
        passwords::check_username(&username)?;
        passwords::check_password(&req.password)?;
        if self.users.find_user(&system_id, &username).await?.is_some() {
            return Err(AuthError::Conflict(format!("username {username:?} is already taken")));
        }
        let password = req.password;
        let password_hash = self.hashing.run(move || passwords::hash(&password)).await??;
        let user = StoredUser {
            id: uuid::Uuid::now_v7().to_string(),
            system_id,
            username,
            password_hash,
            created_at: now_ms(),
        };
        match self.users.create_user(&user).await {
            Ok(()) => {}
            // Two registrations raced for the name.
            Err(e) if switchboard_kit::db::is_unique_violation(&e, "users_username_key") => {
                return Err(AuthError::Conflict(format!("username {:?} is already taken", user.username)));
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(user_id = %user.id, system_id = %user.system_id, "user registered");
        Ok(pb::RegisterUserResponse { user: Some(user_pb(&user)) })
    }

    pub(super) async fn do_login(&self, req: pb::LoginRequest) -> Result<pb::LoginResponse, AuthError> {
        let jwt = self.jwt()?.clone();
        let system_id = self.tenant(&req.system_id)?;
        if let Some(retry_after_secs) = self.logins.locked(&system_id, &req.username) {
            return Err(AuthError::AccountLocked { retry_after_secs });
        }
        let user = self.users.find_user(&system_id, req.username.trim()).await?;
        // Unknown users cost a hash verification too, so timing does not tell them apart.
        let stored_hash = user.as_ref().map(|u| u.password_hash.clone());
        let password = req.password;
        let matches = self
            .hashing
            .run(move || match &stored_hash {
                Some(stored) => passwords::verify(&password, stored),
                None => passwords::verify(&password, passwords::decoy_hash()),
            })
            .await?;
        let user = match user {
            Some(user) if matches => user,
            _ => {
                self.logins.failed(&system_id, &req.username);
                return Err(AuthError::BadLogin);
            }
        };
        self.logins.succeeded(&system_id, &req.username);
        let issued = jwt
            .issue(&user.system_id, &principal::password_user(&user.username), self.jwt_ttl_secs)
            .map_err(|e| AuthError::Unexpected(format!("signing a token: {e}")))?;
        Ok(pb::LoginResponse {
            access_token: issued.token,
            token_type: "bearer".into(),
            expires_at: Some(to_timestamp(issued.expires_at_ms)),
            user: Some(user_pb(&user)),
        })
    }

    pub(super) async fn do_logout(&self, req: pb::LogoutRequest) -> Result<(), AuthError> {
        let claims = self.jwt()?.verify(req.access_token.trim()).map_err(|_| AuthError::Unauthenticated)?;
        let jti = claims.jti.ok_or_else(|| {
            AuthError::invalid(
                "access_token",
                "this token has no id (jti) and cannot be revoked; it ends at its expiry",
            )
        })?;
        self.users.revoke_token(&jti, claims.exp.saturating_mul(1000), now_ms()).await?;
        self.bus.publish(&jti).await;
        Ok(())
    }

    pub(super) async fn do_upsert_profile(
        &self,
        req: pb::UpsertProfileRequest,
    ) -> Result<pb::UpsertProfileResponse, AuthError> {
        let p = req.profile.ok_or_else(|| AuthError::invalid("profile", "is required"))?;
        let system_id = self.tenant(&p.system_id)?;
        let user_id = p.user_id.trim();
        if user_id.is_empty() || user_id.chars().count() > 128 {
            return Err(AuthError::invalid("userId", "must be 1-128 characters"));
        }
        let name = p.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(AuthError::invalid("name", "must be 1-100 characters"));
        }
        let email = p.email.trim();
        if email.len() > 254 || email_address::EmailAddress::from_str(email).is_err() {
            return Err(AuthError::invalid("email", "is not a valid e-mail address"));
        }
        let now = now_ms();
        let profile = StoredProfile {
            system_id,
            user_id: user_id.to_owned(),
            name: name.to_owned(),
            email: email.to_owned(),
            created_at: now,
            updated_at: now,
        };
        if req.create_only {
            let stored = self
                .users
                .create_profile(&profile)
                .await?
                .ok_or_else(|| AuthError::Conflict(format!("user {:?} already exists", profile.user_id)))?;
            return Ok(pb::UpsertProfileResponse { profile: Some(profile_pb(stored)), created: true });
        }
        let (stored, created) = self.users.upsert_profile(&profile).await?;
        Ok(pb::UpsertProfileResponse { profile: Some(profile_pb(stored)), created })
    }

    pub(super) async fn do_get_profile(&self, req: pb::GetProfileRequest) -> Result<pb::GetProfileResponse, AuthError> {
        let system_id = self.tenant(&req.system_id)?;
        let profile = self
            .users
            .get_profile(&system_id, req.user_id.trim())
            .await?
            .ok_or_else(|| AuthError::NotFound("user not found".into()))?;
        Ok(pb::GetProfileResponse { profile: Some(profile_pb(profile)) })
    }

    pub(super) fn do_chat_token(
        &self,
        req: pb::IssueChatTokenRequest,
    ) -> Result<pb::IssueChatTokenResponse, AuthError> {
        let jwt = self.jwt()?;
        if !self.allowed_origins.is_empty() {
            let origin = req.origin.trim().trim_end_matches('/');
            if !self.allowed_origins.iter().any(|o| o.trim_end_matches('/') == origin) {
                return Err(AuthError::PermissionDenied("this Origin may not request chat tokens".into()));
            }
        }
        let system_id = req.system_id.trim();
        if system_id.is_empty() {
            return Err(AuthError::invalid("system_id", "is required"));
        }
        let system_id = self.tenant(system_id)?;
        let user_id = req.user_id.trim();
        if user_id.is_empty() || user_id.chars().count() > 128 {
            return Err(AuthError::invalid("user_id", "must be 1-128 characters"));
        }
        let lang = req.lang.trim();
        let ui = if lang.is_empty() {
            None
        } else {
            let [title, close, open, token_error, loading] = chat_ui::strings(lang).ok_or_else(|| {
                AuthError::invalid("lang", format!("must be one of {}", chat_ui::LANGUAGES.join(", ")))
            })?;
            Some(pb::ChatUiStrings {
                title: title.into(),
                close: close.into(),
                open: open.into(),
                token_error: token_error.into(),
                loading: loading.into(),
            })
        };
        let issued = jwt
            .issue(&system_id, user_id, CHAT_TOKEN_TTL_SECS)
            .map_err(|e| AuthError::Unexpected(format!("signing a token: {e}")))?;
        Ok(pb::IssueChatTokenResponse { token: issued.token, ui, expires_at: Some(to_timestamp(issued.expires_at_ms)) })
    }
}
