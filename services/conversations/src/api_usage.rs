//! Requests per principal and endpoint (seed 001's API usage table): counted in memory as
//! calls arrive and written once a second in one transaction, never on the request path.

use std::sync::Arc;
use std::time::Duration;

use switchboard_kit::tally::{Merge, Tally};

use crate::store::{ApiUsageCount, ApiUsageKey, ApiUsageStore};

/// Metadata key naming the endpoint a call serves (the gateway sets its route).
pub const ENDPOINT_METADATA: &str = "sb-endpoint";
/// Longest endpoint name kept; longer ones are cut.
const MAX_ENDPOINT: usize = 100;

impl Merge for ApiUsageCount {
    fn merge(&mut self, other: Self) {
        self.requests += other.requests;
        self.first_at = self.first_at.min(other.first_at);
        self.last_at = self.last_at.max(other.last_at);
    }
}

/// The pending counts.
#[derive(Clone, Default)]
pub struct ApiUsageTally(Tally<ApiUsageKey, ApiUsageCount>);

impl ApiUsageTally {
    /// Counts one request of `(system_id, user_id)` to `endpoint` at `at` (Unix ms).
    pub fn count(&self, system_id: &str, user_id: &str, endpoint: &str, at: i64) {
        let endpoint: String =
            endpoint.chars().filter(|c| !c.is_control()).take(MAX_ENDPOINT).collect::<String>().trim().to_owned();
        let key = (system_id.to_owned(), user_id.to_owned(), endpoint);
        self.0.add(key, ApiUsageCount { requests: 1, first_at: at, last_at: at });
    }

    /// Writes what is pending; kept for the next flush when the store fails.
    pub async fn flush(&self, store: &dyn ApiUsageStore) {
        self.0
            .flush(
                "API usage",
                |batch| async move { store.add_api_usage(&batch).await.map_err(|e| (batch, e.to_string())) },
            )
            .await;
    }

    /// Flushes every second until `stop`, then once more.
    pub async fn run(self, store: Arc<dyn ApiUsageStore>, stop: impl std::future::Future<Output = ()>) {
        switchboard_kit::periodic::until_stopped(Duration::from_secs(1), stop, || self.flush(&*store)).await;
    }
}
