//! [`IdempotencyStore`] on SQL.

use async_trait::async_trait;
use switchboard_kit::db_write;

use super::{Claim, ClaimTerms, IdempotencyStore, SqlStore};
use crate::domain::Principal;

#[derive(sqlx::FromRow)]
struct Row {
    request_hash: String,
    status: String,
    response: Option<String>,
}

#[async_trait]
impl IdempotencyStore for SqlStore {
    async fn claim(&self, owner: &Principal, key: &str, terms: &ClaimTerms<'_>) -> Result<Claim, sqlx::Error> {
        let hash = terms.hash;
        let row: Option<Row> = db_write!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "DELETE FROM idempotency_keys WHERE system_id = $1 AND user_id = $2 AND key = $3 AND created_at < $4",
            )
            .bind(&owner.system_id)
            .bind(&owner.user_id)
            .bind(key)
            .bind(terms.expired_before)
            .execute(&mut *tx)
            .await?;
            // A claim whose holder died (its lease ran out) passes to this request.
            let taken_over = sqlx::query(
                "UPDATE idempotency_keys SET holder = $1, lease_until = $2 \
                 WHERE system_id = $3 AND user_id = $4 AND key = $5 AND status = 'in_progress' \
                 AND lease_until < $6 AND request_hash = $7",
            )
            .bind(terms.holder)
            .bind(terms.lease_until)
            .bind(&owner.system_id)
            .bind(&owner.user_id)
            .bind(key)
            .bind(terms.now)
            .bind(hash)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let inserted = if taken_over == 1 {
                1
            } else {
                sqlx::query(
                    "INSERT INTO idempotency_keys (system_id, user_id, key, request_hash, status, created_at, holder, lease_until) \
                     VALUES ($1, $2, $3, $4, 'in_progress', $5, $6, $7) ON CONFLICT (system_id, user_id, key) DO NOTHING",
                )
                .bind(&owner.system_id)
                .bind(&owner.user_id)
                .bind(key)
                .bind(hash)
                .bind(terms.now)
                .bind(terms.holder)
                .bind(terms.lease_until)
                .execute(&mut *tx)
                .await?
                .rows_affected()
            };
            let row = if inserted == 1 {
                None
            } else {
                sqlx::query_as(
                    "SELECT request_hash, status, response FROM idempotency_keys \
                     WHERE system_id = $1 AND user_id = $2 AND key = $3",
                )
                .bind(&owner.system_id)
                .bind(&owner.user_id)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?
            };
            tx.commit().await?;
            Ok::<_, sqlx::Error>(row)
        })?;
        Ok(match row {
            None => Claim::New,
            Some(row) if row.request_hash != hash => Claim::Mismatch,
            Some(Row { status, response: Some(response), .. }) if status == "complete" => {
                Claim::Replay(hex::decode(response).unwrap_or_default())
            }
            Some(_) => Claim::InProgress,
        })
    }

    async fn finish(&self, owner: &Principal, key: &str, holder: &str, response: &[u8]) -> Result<(), sqlx::Error> {
        db_write!(&self.db, |pool| {
            sqlx::query(
                "UPDATE idempotency_keys SET status = 'complete', response = $1 \
                 WHERE system_id = $2 AND user_id = $3 AND key = $4 AND holder = $5",
            )
            .bind(hex::encode(response))
            .bind(&owner.system_id)
            .bind(&owner.user_id)
            .bind(key)
            .bind(holder)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    async fn release(&self, owner: &Principal, key: &str, holder: &str) -> Result<(), sqlx::Error> {
        db_write!(&self.db, |pool| {
            sqlx::query(
                "DELETE FROM idempotency_keys WHERE system_id = $1 AND user_id = $2 AND key = $3 \
                 AND status = 'in_progress' AND holder = $4",
            )
            .bind(&owner.system_id)
            .bind(&owner.user_id)
            .bind(key)
            .bind(holder)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }
}
