//! Storage of the LLM proxy: each principal's chosen model.

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

/// [`ModelChoiceStore`] on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct SqlModelChoiceStore {
    db: Db,
}

impl SqlModelChoiceStore {
    /// A store over `db` (already migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

#[async_trait]
impl ModelChoiceStore for SqlModelChoiceStore {
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
