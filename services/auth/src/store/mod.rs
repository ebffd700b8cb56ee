//! Storage of the auth service: issued API keys.

use async_trait::async_trait;
use switchboard_kit::db::Db;
use switchboard_kit::db_run;

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
}

/// [`KeyStore`] on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct SqlKeyStore {
    db: Db,
}

impl SqlKeyStore {
    /// A store over `db` (already migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

const COLUMNS: &str =
    "id, digest, prefix, client_name, system_id, scope, created_at, expires_at, revoked_at, last_used_at";

#[async_trait]
impl KeyStore for SqlKeyStore {
    async fn insert(&self, key: &StoredKey) -> Result<(), sqlx::Error> {
        db_run!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO api_keys (id, digest, prefix, client_name, system_id, scope, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&key.id)
            .bind(&key.digest)
            .bind(&key.prefix)
            .bind(&key.client_name)
            .bind(&key.system_id)
            .bind(&key.scope)
            .bind(key.created_at)
            .bind(key.expires_at)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    async fn find(&self, id: &str) -> Result<Option<StoredKey>, sqlx::Error> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1");
        db_run!(&self.db, |pool| sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)
    }

    async fn list(
        &self,
        system_id: Option<&str>,
        include_inactive: bool,
        now: i64,
    ) -> Result<Vec<StoredKey>, sqlx::Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM api_keys WHERE ($1 = '' OR system_id = $1) \
             AND ($2 OR (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $3))) \
             ORDER BY created_at DESC, id DESC"
        );
        db_run!(&self.db, |pool| {
            sqlx::query_as(&sql)
                .bind(system_id.unwrap_or_default())
                .bind(include_inactive)
                .bind(now)
                .fetch_all(pool)
                .await
        })
    }

    async fn revoke(&self, id: &str, now: i64) -> Result<bool, sqlx::Error> {
        db_run!(&self.db, |pool| {
            sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected() > 0)
        })
    }
}
