//! Storage of the auth service: issued API keys, users, profiles and revoked tokens.
//! One trait per capability; [`SqlStore`] implements them on SQLite and PostgreSQL.

mod keys;
mod users;

use async_trait::async_trait;
use switchboard_kit::db::Db;

/// The SQL store.
#[derive(Debug, Clone)]
pub struct SqlStore {
    db: Db,
}

impl SqlStore {
    /// A store over `db` (already migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

/// A stored key (digest only).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredKey {
    /// Public id.
    pub id: String,
    /// SHA-256 of the secret, hex.
    pub digest: String,
    /// Recognisable start of the key.
    pub prefix: String,
    /// Client the key was issued to.
    pub client_name: String,
    /// Tenant; empty for every allowed tenant.
    pub system_id: String,
    /// `client` or `service`.
    pub scope: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub expires_at: Option<i64>,
    /// Unix ms.
    pub revoked_at: Option<i64>,
    /// Unix ms.
    pub last_used_at: Option<i64>,
}

/// Issued API keys.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Stores a new key.
    async fn insert(&self, key: &StoredKey) -> Result<(), sqlx::Error>;
    /// A key by public id.
    async fn find(&self, id: &str) -> Result<Option<StoredKey>, sqlx::Error>;
    /// Keys, newest first; only active ones unless `include_inactive`.
    async fn list(
        &self,
        system_id: Option<&str>,
        include_inactive: bool,
        now: i64,
    ) -> Result<Vec<StoredKey>, sqlx::Error>;
    /// Marks a key revoked; false when there is no such key.
    async fn revoke(&self, id: &str, now: i64) -> Result<bool, sqlx::Error>;
    /// Stores `successor` and makes `id` expire at `old_expires_at` (if sooner), atomically.
    async fn rotate(&self, id: &str, successor: &StoredKey, old_expires_at: i64) -> Result<(), sqlx::Error>;
    /// Records last-used times, `(id, unix ms)`, in one transaction.
    async fn touch(&self, used: &[(String, i64)]) -> Result<(), sqlx::Error>;
}

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredUser {
    /// Stable id.
    pub id: String,
    /// Tenant.
    pub system_id: String,
    /// Login name as registered.
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Unix ms.
    pub created_at: i64,
}

/// A profile (seed 001).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredProfile {
    /// Tenant.
    pub system_id: String,
    /// User id.
    pub user_id: String,
    /// Display name.
    pub name: String,
    /// E-mail.
    pub email: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// Users, profiles and revoked tokens.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Stores a new user; a unique violation on `users_username_key` when the name is taken.
    async fn create_user(&self, user: &StoredUser) -> Result<(), sqlx::Error>;
    /// A user by tenant and username (case-insensitive).
    async fn find_user(&self, system_id: &str, username: &str) -> Result<Option<StoredUser>, sqlx::Error>;
    /// Creates or updates a profile; true when it was created.
    async fn upsert_profile(&self, profile: &StoredProfile) -> Result<(StoredProfile, bool), sqlx::Error>;
    /// Creates a profile; `None` when one exists already.
    async fn create_profile(&self, profile: &StoredProfile) -> Result<Option<StoredProfile>, sqlx::Error>;
    /// A profile.
    async fn get_profile(&self, system_id: &str, user_id: &str) -> Result<Option<StoredProfile>, sqlx::Error>;
    /// Revokes a token id until it expires (Unix ms); forgets revocations already expired.
    async fn revoke_token(&self, jti: &str, expires_at: i64, now: i64) -> Result<(), sqlx::Error>;
    /// Whether a token id is revoked.
    async fn is_token_revoked(&self, jti: &str) -> Result<bool, sqlx::Error>;
}
