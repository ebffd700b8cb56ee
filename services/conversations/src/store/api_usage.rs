//! Seed 001's API usage table on both backends.

use async_trait::async_trait;
use switchboard_kit::{db_run, db_write};

use super::{ApiUsageCount, ApiUsageKey, ApiUsageRow, ApiUsageStore, SqlStore};
use crate::domain::Principal;

#[async_trait]
impl ApiUsageStore for SqlStore {
    async fn add_api_usage(&self, counts: &[(ApiUsageKey, ApiUsageCount)]) -> Result<(), sqlx::Error> {
        if counts.is_empty() {
            return Ok(());
        }
        db_write!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            for ((system_id, user_id, endpoint), c) in counts {
                sqlx::query(
                    "INSERT INTO api_usage (system_id, user_id, endpoint, request_count, last_request_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (system_id, user_id, endpoint) DO UPDATE SET \
                     request_count = api_usage.request_count + excluded.request_count, \
                     last_request_at = CASE WHEN api_usage.last_request_at < excluded.last_request_at \
                                       THEN excluded.last_request_at ELSE api_usage.last_request_at END",
                )
                .bind(system_id)
                .bind(user_id)
                .bind(endpoint)
                .bind(c.requests)
                .bind(c.last_at)
                .bind(c.first_at)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })
    }

    async fn api_usage(&self, owner: &Principal) -> Result<Vec<ApiUsageRow>, sqlx::Error> {
        db_run!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT endpoint, request_count, last_request_at, created_at FROM api_usage \
                 WHERE system_id = $1 AND user_id = $2 ORDER BY last_request_at DESC, endpoint",
            )
            .bind(&owner.system_id)
            .bind(&owner.user_id)
            .fetch_all(pool)
            .await
        })
    }
}
