//! Requests per principal and endpoint (seed 001's API usage table): counted in memory as
//! calls arrive and written once a second in one transaction, never on the request path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::store::{ApiUsageCount, ApiUsageKey, ApiUsageStore};

/// Metadata key naming the endpoint a call serves (the gateway sets its route).
pub const ENDPOINT_METADATA: &str = "sb-endpoint";
/// Longest endpoint name kept; longer ones are cut.
const MAX_ENDPOINT: usize = 100;

/// The pending counts.
#[derive(Clone, Default)]
pub struct ApiUsageTally {
    pending: Arc<Mutex<HashMap<ApiUsageKey, ApiUsageCount>>>,
}

impl ApiUsageTally {
    /// Counts one request of `(system_id, user_id)` to `endpoint` at `at` (Unix ms).
    pub fn count(&self, system_id: &str, user_id: &str, endpoint: &str, at: i64) {
        let endpoint: String =
            endpoint.chars().filter(|c| !c.is_control()).take(MAX_ENDPOINT).collect::<String>().trim().to_owned();
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = pending.entry((system_id.to_owned(), user_id.to_owned(), endpoint)).or_insert(ApiUsageCount {
            requests: 0,
            first_at: at,
            last_at: at,
        });
        entry.requests += 1;
        entry.first_at = entry.first_at.min(at);
        entry.last_at = entry.last_at.max(at);
    }

    /// Writes what is pending; kept for the next flush when the store fails.
    pub async fn flush(&self, store: &dyn ApiUsageStore) {
        let batch: Vec<(ApiUsageKey, ApiUsageCount)> =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner)).into_iter().collect();
        if batch.is_empty() {
            return;
        }
        if let Err(e) = store.add_api_usage(&batch).await {
            tracing::warn!(error = %e, rows = batch.len(), "cannot write API usage; retrying next flush");
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            for (key, count) in batch {
                let entry = pending.entry(key).or_insert(ApiUsageCount { requests: 0, ..count });
                entry.requests += count.requests;
                entry.first_at = entry.first_at.min(count.first_at);
                entry.last_at = entry.last_at.max(count.last_at);
            }
        }
    }

    /// Flushes every second until `stop`, then once more.
    pub async fn run(self, store: Arc<dyn ApiUsageStore>, stop: impl std::future::Future<Output = ()>) {
        switchboard_kit::periodic::until_stopped(Duration::from_secs(1), stop, || self.flush(&*store)).await;
    }
}
