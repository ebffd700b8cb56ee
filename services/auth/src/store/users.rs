//! [`UserStore`] on SQL.

use async_trait::async_trait;
use switchboard_kit::{db_run, db_write};

use super::{SqlStore, StoredProfile, StoredUser, UserStore};

#[async_trait]
impl UserStore for SqlStore {
    async fn create_user(&self, user: &StoredUser) -> Result<(), sqlx::Error> {
        db_write!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO users (id, system_id, username, username_lower, password_hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&user.id)
            .bind(&user.system_id)
            .bind(&user.username)
            .bind(user.username.to_lowercase())
            .bind(&user.password_hash)
            .bind(user.created_at)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    async fn find_user(&self, system_id: &str, username: &str) -> Result<Option<StoredUser>, sqlx::Error> {
        db_run!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT id, system_id, username, password_hash, created_at FROM users \
                 WHERE system_id = $1 AND username_lower = $2",
            )
            .bind(system_id)
            .bind(username.to_lowercase())
            .fetch_optional(pool)
            .await
        })
    }

    async fn upsert_profile(&self, p: &StoredProfile) -> Result<(StoredProfile, bool), sqlx::Error> {
        let stored: StoredProfile = db_write!(&self.db, |pool| {
            sqlx::query_as(
                "INSERT INTO profiles (system_id, user_id, name, email, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) \
                 ON CONFLICT (system_id, user_id) DO UPDATE SET name = excluded.name, email = excluded.email, \
                 updated_at = excluded.updated_at \
                 RETURNING system_id, user_id, name, email, created_at, updated_at",
            )
            .bind(&p.system_id)
            .bind(&p.user_id)
            .bind(&p.name)
            .bind(&p.email)
            .bind(p.updated_at)
            .fetch_one(pool)
            .await
        })?;
        let created = stored.created_at == p.updated_at;
        Ok((stored, created))
    }

    async fn create_profile(&self, p: &StoredProfile) -> Result<Option<StoredProfile>, sqlx::Error> {
        db_write!(&self.db, |pool| {
            sqlx::query_as(
                "INSERT INTO profiles (system_id, user_id, name, email, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (system_id, user_id) DO NOTHING \
                 RETURNING system_id, user_id, name, email, created_at, updated_at",
            )
            .bind(&p.system_id)
            .bind(&p.user_id)
            .bind(&p.name)
            .bind(&p.email)
            .bind(p.created_at)
            .fetch_optional(pool)
            .await
        })
    }

    async fn get_profile(&self, system_id: &str, user_id: &str) -> Result<Option<StoredProfile>, sqlx::Error> {
        db_run!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT system_id, user_id, name, email, created_at, updated_at FROM profiles \
                 WHERE system_id = $1 AND user_id = $2",
            )
            .bind(system_id)
            .bind(user_id)
            .fetch_optional(pool)
            .await
        })
    }

    async fn revoke_token(&self, jti: &str, expires_at: i64, now: i64) -> Result<(), sqlx::Error> {
        db_write!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING")
                .bind(jti)
                .bind(expires_at)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < $1").bind(now).execute(&mut *tx).await?;
            tx.commit().await
        })
    }

    async fn is_token_revoked(&self, jti: &str) -> Result<bool, sqlx::Error> {
        let found: Option<i64> = db_run!(&self.db, |pool| {
            sqlx::query_scalar("SELECT expires_at FROM revoked_tokens WHERE jti = $1")
                .bind(jti)
                .fetch_optional(pool)
                .await
        })?;
        Ok(found.is_some())
    }
}
