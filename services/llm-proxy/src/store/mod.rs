//! Storage of the LLM proxy: each principal's chosen model, and the provider keys users bring.

use async_trait::async_trait;
use switchboard_kit::db::Db;
use switchboard_kit::db_run;

/// A principal's current model.
#[async_trait]
pub trait ModelChoiceStore: Send + Sync + 'static {
    /// The chosen model, if any.
    async fn get(&self, system_id: &str, user_id: &str) -> Result<Option<String>, sqlx::Error>;
    /// Sets the chosen model.
    async fn set(&self, system_id: &str, user_id: &str, model: &str) -> Result<(), sqlx::Error>;
}

/// [`ModelChoiceStore`] and [`ProviderKeyStore`] on SQLite or PostgreSQL.
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

#[async_trait]
impl ModelChoiceStore for SqlStore {
    async fn get(&self, system_id: &str, user_id: &str) -> Result<Option<String>, sqlx::Error> {
        db_run!(&self.db, |pool| {
            sqlx::query_scalar("SELECT model FROM model_choices WHERE system_id = $1 AND user_id = $2")
                .bind(system_id)
                .bind(user_id)
                .fetch_optional(pool)
                .await
        })
    }

    async fn set(&self, system_id: &str, user_id: &str, model: &str) -> Result<(), sqlx::Error> {
        let now = switchboard_kit::time::now_ms();
        db_run!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO model_choices (system_id, user_id, model, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (system_id, user_id) DO UPDATE SET model = excluded.model, updated_at = excluded.updated_at",
            )
            .bind(system_id)
            .bind(user_id)
            .bind(model)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }
}

/// A provider key a user brought (sealed), with its usage.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredProviderKey {
    /// Id.
    pub id: String,
    /// Owner's tenant.
    pub system_id: String,
    /// Owner.
    pub user_id: String,
    /// `openai`.
    pub provider: String,
    /// The owner's name for it.
    pub label: String,
    /// AES-256-GCM sealed key.
    pub sealed: String,
    /// Last four characters.
    pub last_four: String,
    /// Unix ms.
    pub created_at: i64,
    /// Completions made with it.
    pub requests: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Cost, micro-dollars.
    pub cost_micros: i64,
    /// Unix ms.
    pub last_used_at: Option<i64>,
}

/// Usage to add to a provider key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyUsage {
    /// Completions.
    pub requests: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Cost, micro-dollars.
    pub cost_micros: i64,
    /// Unix ms of the last use.
    pub last_used_at: i64,
}

/// Provider keys users bring.
#[async_trait]
pub trait ProviderKeyStore: Send + Sync + 'static {
    /// Stores a key.
    async fn insert(&self, key: &StoredProviderKey) -> Result<(), sqlx::Error>;
    /// The owner's keys, newest first.
    async fn list(&self, system_id: &str, user_id: &str) -> Result<Vec<StoredProviderKey>, sqlx::Error>;
    /// One of the owner's keys.
    async fn get(&self, system_id: &str, user_id: &str, id: &str) -> Result<Option<StoredProviderKey>, sqlx::Error>;
    /// The owner's newest key for a provider: the one their completions use.
    async fn newest(
        &self,
        system_id: &str,
        user_id: &str,
        provider: &str,
    ) -> Result<Option<StoredProviderKey>, sqlx::Error>;
    /// Deletes one of the owner's keys; false when there was none.
    async fn delete(&self, system_id: &str, user_id: &str, id: &str) -> Result<bool, sqlx::Error>;
    /// Adds usage, in one transaction.
    async fn add_usage(&self, usage: &[(String, KeyUsage)]) -> Result<(), sqlx::Error>;
}

const KEY_COLUMNS: &str = "id, system_id, user_id, provider, label, sealed, last_four, created_at, requests, \
                           prompt_tokens, completion_tokens, cost_micros, last_used_at";

#[async_trait]
impl ProviderKeyStore for SqlStore {
    async fn insert(&self, k: &StoredProviderKey) -> Result<(), sqlx::Error> {
        db_run!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO provider_keys (id, system_id, user_id, provider, label, sealed, last_four, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&k.id)
            .bind(&k.system_id)
            .bind(&k.user_id)
            .bind(&k.provider)
            .bind(&k.label)
            .bind(&k.sealed)
            .bind(&k.last_four)
            .bind(k.created_at)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    async fn list(&self, system_id: &str, user_id: &str) -> Result<Vec<StoredProviderKey>, sqlx::Error> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM provider_keys WHERE system_id = $1 AND user_id = $2 ORDER BY created_at DESC, id DESC"
        );
        db_run!(&self.db, |pool| sqlx::query_as(&sql).bind(system_id).bind(user_id).fetch_all(pool).await)
    }

    async fn get(&self, system_id: &str, user_id: &str, id: &str) -> Result<Option<StoredProviderKey>, sqlx::Error> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM provider_keys WHERE system_id = $1 AND user_id = $2 AND id = $3");
        db_run!(&self.db, |pool| sqlx::query_as(&sql).bind(system_id).bind(user_id).bind(id).fetch_optional(pool).await)
    }

    async fn newest(
        &self,
        system_id: &str,
        user_id: &str,
        provider: &str,
    ) -> Result<Option<StoredProviderKey>, sqlx::Error> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM provider_keys WHERE system_id = $1 AND user_id = $2 AND provider = $3 \
             ORDER BY created_at DESC, id DESC LIMIT 1"
        );
        db_run!(&self.db, |pool| {
            sqlx::query_as(&sql).bind(system_id).bind(user_id).bind(provider).fetch_optional(pool).await
        })
    }

    async fn delete(&self, system_id: &str, user_id: &str, id: &str) -> Result<bool, sqlx::Error> {
        db_run!(&self.db, |pool| {
            sqlx::query("DELETE FROM provider_keys WHERE system_id = $1 AND user_id = $2 AND id = $3")
                .bind(system_id)
                .bind(user_id)
                .bind(id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected() > 0)
        })
    }

    async fn add_usage(&self, usage: &[(String, KeyUsage)]) -> Result<(), sqlx::Error> {
        if usage.is_empty() {
            return Ok(());
        }
        db_run!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            for (id, u) in usage {
                sqlx::query(
                    "UPDATE provider_keys SET requests = requests + $1, prompt_tokens = prompt_tokens + $2, \
                     completion_tokens = completion_tokens + $3, cost_micros = cost_micros + $4, \
                     last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < $5 THEN $5 ELSE last_used_at END \
                     WHERE id = $6",
                )
                .bind(u.requests)
                .bind(u.prompt_tokens)
                .bind(u.completion_tokens)
                .bind(u.cost_micros)
                .bind(u.last_used_at)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })
    }
}

/// What one usage rollup row counts: a principal's completions with one key and one model
/// in one hour.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RollupKey {
    /// Tenant.
    pub system_id: String,
    /// User.
    pub user_id: String,
    /// Public id of the API key used; empty for other credentials.
    pub key_id: String,
    /// Catalogue model.
    pub model: String,
    /// Start of the hour, Unix ms.
    pub hour: i64,
}

/// Totals of a rollup row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Rollup {
    /// Completions.
    pub requests: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Cost in micro-dollars.
    pub cost_micros: i64,
}

impl Rollup {
    /// Adds `other` to these totals.
    pub fn add(&mut self, other: &Self) {
        self.requests += other.requests;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cost_micros = self.cost_micros.saturating_add(other.cost_micros);
    }
}

/// Usage rolled up per principal, key, model and hour.
#[async_trait]
pub trait UsageStore: Send + Sync + 'static {
    /// Adds the totals to their rows (creating them), in one transaction.
    async fn add_rollups(&self, rollups: &[(RollupKey, Rollup)]) -> Result<(), sqlx::Error>;
    /// The totals of a principal since `from` (Unix ms), over every key and model.
    async fn principal_totals(&self, system_id: &str, user_id: &str, from: i64) -> Result<Rollup, sqlx::Error>;
}

#[async_trait]
impl UsageStore for SqlStore {
    async fn add_rollups(&self, rollups: &[(RollupKey, Rollup)]) -> Result<(), sqlx::Error> {
        if rollups.is_empty() {
            return Ok(());
        }
        db_run!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            for (k, r) in rollups {
                sqlx::query(
                    "INSERT INTO usage_rollups (system_id, user_id, key_id, model, hour, requests, prompt_tokens, \
                     completion_tokens, cost_micros) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                     ON CONFLICT (system_id, user_id, key_id, model, hour) DO UPDATE SET \
                     requests = usage_rollups.requests + excluded.requests, \
                     prompt_tokens = usage_rollups.prompt_tokens + excluded.prompt_tokens, \
                     completion_tokens = usage_rollups.completion_tokens + excluded.completion_tokens, \
                     cost_micros = usage_rollups.cost_micros + excluded.cost_micros",
                )
                .bind(&k.system_id)
                .bind(&k.user_id)
                .bind(&k.key_id)
                .bind(&k.model)
                .bind(k.hour)
                .bind(r.requests)
                .bind(r.prompt_tokens)
                .bind(r.completion_tokens)
                .bind(r.cost_micros)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })
    }

    async fn principal_totals(&self, system_id: &str, user_id: &str, from: i64) -> Result<Rollup, sqlx::Error> {
        db_run!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) AS requests, \
                 CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
                 CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
                 CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS cost_micros \
                 FROM usage_rollups WHERE system_id = $1 AND user_id = $2 AND hour >= $3",
            )
            .bind(system_id)
            .bind(user_id)
            .bind(from)
            .fetch_one(pool)
            .await
        })
    }
}
