//! Credentials: authentication, and issuing, listing, revoking and rotating API keys.

use switchboard_kit::time::{now_ms, to_timestamp};
use switchboard_proto::auth::v1 as pb;
use tonic::Request;

use super::AuthGrpc;
use crate::error::AuthError;
use crate::keys;
use crate::store::StoredKey;

/// Longest overlap of a rotation: 30 days.
const MAX_OVERLAP_SECS: i64 = 30 * 86_400;

fn scope_pb(scope: &str) -> i32 {
    if scope == "service" { pb::KeyScope::Service as i32 } else { pb::KeyScope::Client as i32 }
}

pub(super) fn key_pb(k: StoredKey) -> pb::ApiKey {
    pb::ApiKey {
        scope: scope_pb(&k.scope),
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

impl AuthGrpc {
    pub(super) async fn do_authenticate(
        &self,
        req: pb::AuthenticateRequest,
    ) -> Result<pb::AuthenticateResponse, AuthError> {
        let credential = req.credential.trim();
        if credential.is_empty() {
            return Err(AuthError::Unauthenticated);
        }
        match pb::CredentialKind::try_from(req.kind).unwrap_or(pb::CredentialKind::Unspecified) {
            pb::CredentialKind::ApiKey => self.authenticate_key(credential).await,
            pb::CredentialKind::Jwt => self.authenticate_jwt(credential).await,
            // A bearer credential: an API key if it is one, else a JWT.
            pb::CredentialKind::Unspecified => match self.authenticate_key(credential).await {
                Err(AuthError::Unauthenticated) => self.authenticate_jwt(credential).await,
                other => other,
            },
        }
    }

    async fn authenticate_key(&self, presented: &str) -> Result<pb::AuthenticateResponse, AuthError> {
        // Every static key is compared, in constant time, so timing reveals nothing.
        let static_match =
            self.static_keys.iter().fold(false, |found, key| keys::same(key, presented.as_bytes()) | found);
        if static_match {
            return Ok(pb::AuthenticateResponse {
                principal: Some(pb::Principal::default()),
                scope: pb::KeyScope::Service as i32,
                allowed_system_ids: self.allowed_system_ids.clone(),
                ..Default::default()
            });
        }
        let key = self.live_key(presented).await?;
        self.last_used.touch(&key.id, now_ms());
        let system_id = if key.system_id.is_empty() { "default".to_owned() } else { key.system_id.clone() };
        let service = key.scope == "service";
        Ok(pb::AuthenticateResponse {
            principal: Some(pb::Principal {
                system_id: system_id.clone(),
                user_id: if service { String::new() } else { switchboard_kit::principal::client_key(&key.id) },
            }),
            scope: scope_pb(&key.scope),
            revocation_id: key.id.clone(),
            key_id: key.id,
            allowed_system_ids: vec![system_id],
            expires_at: key.expires_at.map(to_timestamp),
        })
    }

    /// The stored key a presented plaintext key belongs to, if it matches and is live.
    async fn live_key(&self, presented: &str) -> Result<StoredKey, AuthError> {
        let (id, secret) = keys::parse(presented).ok_or(AuthError::Unauthenticated)?;
        let key = self.keys.find(id).await?.ok_or(AuthError::Unauthenticated)?;
        let live = key.revoked_at.is_none() && key.expires_at.is_none_or(|t| t > now_ms());
        if !keys::same(keys::digest(secret).as_bytes(), key.digest.as_bytes()) || !live {
            return Err(AuthError::Unauthenticated);
        }
        Ok(key)
    }

    async fn authenticate_jwt(&self, token: &str) -> Result<pb::AuthenticateResponse, AuthError> {
        let jwt = self.jwt.as_ref().ok_or(AuthError::Unauthenticated)?;
        let claims = jwt.verify(token).map_err(|_| AuthError::Unauthenticated)?;
        if claims.system_id.trim().is_empty() || claims.user_id.trim().is_empty() {
            return Err(AuthError::Unauthenticated);
        }
        if let Some(jti) = &claims.jti
            && self.users.is_token_revoked(jti).await?
        {
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
            revocation_id: claims.jti.unwrap_or_default(),
        })
    }

    pub(crate) async fn do_create_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<pb::CreateApiKeyResponse, AuthError> {
        let admin = self.is_admin(&request);
        let req = request.into_inner();
        let scope = match pb::KeyScope::try_from(req.scope).unwrap_or(pb::KeyScope::Unspecified) {
            pb::KeyScope::Service => "service",
            _ => "client",
        };
        if !admin {
            if !self.open_key_registration {
                self.require_admin(&Request::new(()))?;
            }
            if scope == "service" {
                return Err(AuthError::PermissionDenied("only the admin can issue service keys".into()));
            }
        }
        let client_name = req.client_name.trim();
        if client_name.is_empty() || client_name.chars().count() > 100 {
            return Err(AuthError::invalid("client_name", "must be 1-100 characters"));
        }
        if client_name.chars().any(hides_or_breaks_a_line) {
            return Err(AuthError::invalid(
                "client_name",
                "must not contain control characters (line breaks, tabs, escapes) or text-direction overrides",
            ));
        }
        if !(0..=10 * 365 * 86_400).contains(&req.ttl_seconds) {
            return Err(AuthError::invalid("ttl_seconds", "must be between 0 (no expiry) and ten years"));
        }
        let system_id = req.system_id.trim();
        if !system_id.is_empty() && !self.system_allowed(system_id) {
            return Err(AuthError::PermissionDenied(format!("system_id {system_id:?} is not allowed")));
        }
        // Anyone may register a key only into a tenant open to sign-up.
        if !admin
            && !self.registration_systems.iter().any(|s| s == if system_id.is_empty() { "default" } else { system_id })
        {
            return Err(AuthError::PermissionDenied(format!(
                "only the admin issues keys for system_id {system_id:?}; open registration covers SWITCHBOARD_REGISTRATION_SYSTEMS"
            )));
        }
        let now = now_ms();
        let (stored, secret) =
            new_key(client_name, system_id, scope, now, (req.ttl_seconds > 0).then_some(req.ttl_seconds));
        self.keys.insert(&stored).await?;
        tracing::info!(key_id = %stored.id, client = %stored.client_name, scope, "API key issued");
        Ok(pb::CreateApiKeyResponse { key: Some(key_pb(stored)), secret })
    }

    pub(crate) async fn do_list_keys(&self, req: pb::ListApiKeysRequest) -> Result<pb::ListApiKeysResponse, AuthError> {
        let system = Some(req.system_id.trim()).filter(|s| !s.is_empty());
        let keys = self.keys.list(system, req.include_inactive, now_ms()).await?;
        Ok(pb::ListApiKeysResponse { keys: keys.into_iter().map(key_pb).collect() })
    }

    pub(crate) async fn do_revoke_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<pb::RevokeApiKeyResponse, AuthError> {
        let admin = self.is_admin(&request);
        let presented = request.into_inner().key;
        let presented = presented.trim();
        // The admin may name a key by id; anyone holding a key may revoke it.
        let id = match keys::parse(presented) {
            Some(_) => self.live_key(presented).await.map_err(|_| AuthError::NotFound("API key not found".into()))?.id,
            None if admin => presented.to_owned(),
            None => {
                self.require_admin(&Request::new(()))?;
                return Err(AuthError::PermissionDenied("revoking a key by id needs the admin token".into()));
            }
        };
        if !self.keys.revoke(&id, now_ms()).await? {
            return Err(AuthError::NotFound("API key not found".into()));
        }
        self.bus.publish(&id).await;
        let key = self.keys.find(&id).await?.ok_or_else(|| AuthError::NotFound("API key not found".into()))?;
        tracing::info!(key_id = %key.id, "API key revoked");
        Ok(pb::RevokeApiKeyResponse { key: Some(key_pb(key)) })
    }

    pub(crate) async fn do_rotate_key(
        &self,
        req: pb::RotateApiKeyRequest,
    ) -> Result<pb::RotateApiKeyResponse, AuthError> {
        if !(0..=MAX_OVERLAP_SECS).contains(&req.overlap_seconds) {
            return Err(AuthError::invalid("overlap_seconds", "must be between 0 and 2592000 (30 days)"));
        }
        let old =
            self.keys.find(req.id.trim()).await?.ok_or_else(|| AuthError::NotFound("API key not found".into()))?;
        let now = now_ms();
        if old.revoked_at.is_some() || old.expires_at.is_some_and(|t| t <= now) {
            return Err(AuthError::Conflict("a revoked or expired key cannot be rotated".into()));
        }
        let remaining = old.expires_at.map(|t| (t - now) / 1000);
        let (successor, secret) = new_key(&old.client_name, &old.system_id, &old.scope, now, remaining);
        self.keys.rotate(&old.id, &successor, now + req.overlap_seconds * 1000).await?;
        // Caches must learn the old key's new expiry.
        self.bus.publish(&old.id).await;
        tracing::info!(old = %old.id, new = %successor.id, overlap_seconds = req.overlap_seconds, "API key rotated");
        Ok(pb::RotateApiKeyResponse { key: Some(key_pb(successor)), secret })
    }
}

/// Characters that would let a key's name forge or hide a line in a text log: control
/// characters, Unicode line and paragraph separators, and bidirectional overrides.
fn hides_or_breaks_a_line(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn new_key(client_name: &str, system_id: &str, scope: &str, now: i64, ttl_secs: Option<i64>) -> (StoredKey, String) {
    let generated = keys::generate();
    let stored = StoredKey {
        id: generated.id,
        digest: generated.digest,
        prefix: generated.prefix,
        client_name: client_name.to_owned(),
        system_id: system_id.to_owned(),
        scope: scope.to_owned(),
        created_at: now,
        expires_at: ttl_secs.map(|s| now.saturating_add(s.saturating_mul(1000))),
        revoked_at: None,
        last_used_at: None,
    };
    (stored, generated.plaintext)
}
