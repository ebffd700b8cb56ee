//! Usage of every completion, rolled up per principal, API key, model and hour in memory and
//! written once a second in one transaction, so no completion waits on a database write.

use std::sync::Arc;
use std::time::Duration;

use switchboard_kit::tally::{Merge, Tally};

use crate::store::{Rollup, RollupKey, UsageStore};

impl Merge for Rollup {
    fn merge(&mut self, other: Self) {
        self.add(&other);
    }
}

const HOUR_MS: i64 = 3_600_000;

/// One completion, as counted.
#[derive(Debug, Clone, Copy)]
pub struct Completion<'a> {
    /// Tenant.
    pub system_id: &'a str,
    /// User.
    pub user_id: &'a str,
    /// Public id of the API key used; empty for other credentials.
    pub key_id: &'a str,
    /// Catalogue model that answered.
    pub model: &'a str,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Completion tokens.
    pub completion_tokens: u32,
    /// Cost in micro-dollars.
    pub cost_micros: u64,
    /// Whether the model has a price (an unpriced completion's cost is unknown, not zero).
    pub priced: bool,
    /// When, Unix ms.
    pub at: i64,
}

/// The pending rollups.
#[derive(Clone, Default)]
pub struct UsageRollups(Tally<RollupKey, Rollup>);

impl UsageRollups {
    /// Counts one completion.
    pub fn add(&self, c: Completion<'_>) {
        let key = RollupKey {
            system_id: c.system_id.to_owned(),
            user_id: c.user_id.to_owned(),
            key_id: c.key_id.to_owned(),
            model: c.model.to_owned(),
            hour: c.at - c.at.rem_euclid(HOUR_MS),
        };
        self.0.add(
            key,
            Rollup {
                requests: 1,
                prompt_tokens: i64::from(c.prompt_tokens),
                completion_tokens: i64::from(c.completion_tokens),
                cost_micros: i64::try_from(c.cost_micros).unwrap_or(i64::MAX),
                unpriced_requests: i64::from(!c.priced),
            },
        );
    }

    /// Writes what is pending; kept for the next flush when the store fails.
    pub async fn flush(&self, store: &dyn UsageStore) {
        self.0
            .flush("usage rollups", |batch| async move {
                store.add_rollups(&batch).await.map_err(|e| (batch, e.to_string()))
            })
            .await;
    }

    /// Flushes every second until `stop`, then once more.
    pub async fn run(self, store: Arc<dyn UsageStore>, stop: impl std::future::Future<Output = ()>) {
        switchboard_kit::periodic::until_stopped(Duration::from_secs(1), stop, || self.flush(&*store)).await;
    }
}
