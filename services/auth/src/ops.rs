//! Operator commands on API keys, for the `switchboard keys` CLI: an operator acts from a pod
//! shell with the auth database's URL, without the admin HTTP API or its token.
//!
//! Each command runs the service's own RPC code (the same checks, the same revocation
//! announcement over Redis, so running replicas drop a revoked key at once) as the admin,
//! with a one-time admin token that never leaves the process.

use std::fmt::Write as _;
use std::sync::Arc;

use rand::RngCore;
use secrecy::SecretString;
use switchboard_kit::db::Db;
use switchboard_kit::revocation::Hub;
use switchboard_proto::auth::v1 as pb;
use tonic::Request;

use crate::grpc::{AuthGrpc, Deps};
use crate::{MIGRATIONS, Settings};

/// The auth service's RPCs, run in this process as the admin.
pub struct Operator {
    db: Db,
    service: AuthGrpc,
    token: String,
}

/// A key just issued: its metadata and the plaintext, shown once.
pub struct IssuedKey {
    /// The key's metadata.
    pub key: pb::ApiKey,
    /// The plaintext key.
    pub secret: String,
}

impl Operator {
    /// Opens the auth database (applying migrations) and Redis, when configured.
    pub async fn open(mut settings: Settings) -> anyhow::Result<Self> {
        let db = Db::connect(&settings.database_url, settings.database_var).await?;
        db.migrate(&MIGRATIONS).await?;
        let redis = settings.redis.as_ref().map(switchboard_kit::redis::Redis::new).transpose()?;
        let store = Arc::new(crate::store::SqlStore::new(db.clone()));
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = hex::encode(bytes);
        settings.admin_token = Some(SecretString::from(token.clone()));
        let deps = Deps {
            keys: store.clone(),
            users: store,
            last_used: crate::last_used::LastUsed::default(),
            bus: Hub::default().bus(redis),
        };
        Ok(Self { db, service: AuthGrpc::new(&settings, deps), token })
    }

    fn admin<T>(&self, message: T) -> anyhow::Result<Request<T>> {
        let mut request = Request::new(message);
        request.metadata_mut().insert("x-admin-token", self.token.parse()?);
        Ok(request)
    }

    /// Issues a key of `scope` (`client` or `service`) for `system_id`.
    pub async fn create_key(
        &self,
        system_id: &str,
        name: &str,
        scope: &str,
        ttl_seconds: i64,
    ) -> anyhow::Result<IssuedKey> {
        let scope = match scope {
            "client" => pb::KeyScope::Client,
            "service" => pb::KeyScope::Service,
            other => anyhow::bail!("--scope: must be client or service, not {other:?}"),
        };
        let request = self.admin(pb::CreateApiKeyRequest {
            client_name: name.to_owned(),
            system_id: system_id.to_owned(),
            scope: scope as i32,
            ttl_seconds,
        })?;
        let answer = self.service.do_create_key(request).await?;
        Ok(IssuedKey { key: answer.key.unwrap_or_default(), secret: answer.secret })
    }

    /// Every key (of `system_id`), newest first, as a table; revoked and expired ones too
    /// when `all`.
    pub async fn list_keys(&self, system_id: Option<&str>, all: bool) -> anyhow::Result<String> {
        let request =
            pb::ListApiKeysRequest { system_id: system_id.unwrap_or_default().to_owned(), include_inactive: all };
        let keys = self.service.do_list_keys(request).await?.keys;
        let mut out = String::new();
        writeln!(
            out,
            "{:<28} {:<16} {:<8} {:<24} {:<20} {:<20} state",
            "id", "system_id", "scope", "name", "created", "last used"
        )?;
        let now = switchboard_kit::time::now_ms();
        for key in keys {
            writeln!(
                out,
                "{:<28} {:<16} {:<8} {:<24} {:<20} {:<20} {}",
                key.id,
                if key.system_id.is_empty() { "-" } else { &key.system_id },
                scope_name(key.scope),
                key.client_name,
                time(key.created_at.as_ref()),
                time(key.last_used_at.as_ref()),
                state(&key, now),
            )?;
        }
        Ok(out)
    }

    /// Revokes a key by id; replicas drop it at once (over Redis) or within their cache's TTL.
    pub async fn revoke_key(&self, id: &str) -> anyhow::Result<pb::ApiKey> {
        let request = self.admin(pb::RevokeApiKeyRequest { key: id.to_owned() })?;
        Ok(self.service.do_revoke_key(request).await?.key.unwrap_or_default())
    }

    /// Issues a successor of a key; the old one keeps working for `overlap_seconds`.
    pub async fn rotate_key(&self, id: &str, overlap_seconds: i64) -> anyhow::Result<IssuedKey> {
        let request = pb::RotateApiKeyRequest { id: id.to_owned(), overlap_seconds };
        let answer = self.service.do_rotate_key(request).await?;
        Ok(IssuedKey { key: answer.key.unwrap_or_default(), secret: answer.secret })
    }

    /// Closes the database.
    pub async fn close(self) {
        self.db.close().await;
    }
}

fn scope_name(scope: i32) -> &'static str {
    if scope == pb::KeyScope::Service as i32 { "service" } else { "client" }
}

fn time(at: Option<&prost_types::Timestamp>) -> String {
    at.map_or_else(|| "-".to_owned(), |t| switchboard_kit::time::rfc3339(t.seconds * 1000).chars().take(19).collect())
}

fn state(key: &pb::ApiKey, now_ms: i64) -> String {
    let ms = |t: &prost_types::Timestamp| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000;
    match (key.revoked_at.as_ref(), key.expires_at.as_ref()) {
        (Some(_), _) => "revoked".into(),
        (None, Some(t)) if ms(t) <= now_ms => "expired".into(),
        (None, Some(t)) => format!("active until {}", time(Some(t))),
        (None, None) => "active".into(),
    }
}
