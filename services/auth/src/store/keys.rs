//! [`KeyStore`] on SQL.

use async_trait::async_trait;
use sqlx::AssertSqlSafe;
use switchboard_kit::{db_run, db_write};

use super::{KeyStore, SqlStore, StoredKey};

const COLUMNS: &str =
    "id, digest, prefix, client_name, system_id, scope, created_at, expires_at, revoked_at, last_used_at";

const INSERT: &str = "INSERT INTO api_keys (id, digest, prefix, client_name, system_id, scope, created_at, expires_at) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

#[async_trait]
impl KeyStore for SqlStore {
    async fn insert(&self, key: &StoredKey) -> Result<(), sqlx::Error> {
        db_write!(&self.db, |pool| {
            sqlx::query(INSERT)
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
        db_run!(&self.db, |pool| sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(id).fetch_optional(pool).await)
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
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(system_id.unwrap_or_default())
                .bind(include_inactive)
                .bind(now)
                .fetch_all(pool)
                .await
        })
    }

    async fn revoke(&self, id: &str, now: i64) -> Result<bool, sqlx::Error> {
        db_write!(&self.db, |pool| {
            sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected() > 0)
        })
    }

    async fn rotate(&self, id: &str, successor: &StoredKey, old_expires_at: i64) -> Result<(), sqlx::Error> {
        db_write!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "UPDATE api_keys SET expires_at = CASE WHEN expires_at IS NULL OR expires_at > $1 THEN $1 \
                 ELSE expires_at END WHERE id = $2",
            )
            .bind(old_expires_at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(INSERT)
                .bind(&successor.id)
                .bind(&successor.digest)
                .bind(&successor.prefix)
                .bind(&successor.client_name)
                .bind(&successor.system_id)
                .bind(&successor.scope)
                .bind(successor.created_at)
                .bind(successor.expires_at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        })
    }

    async fn touch(&self, used: &[(String, i64)]) -> Result<(), sqlx::Error> {
        if used.is_empty() {
            return Ok(());
        }
        db_write!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            for (id, at) in used {
                sqlx::query(
                    "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
                )
                .bind(at)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })
    }
}
