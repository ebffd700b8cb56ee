//! Last-used times of API keys, written off the request path: uses are coalesced in memory
//! and flushed once a second in one transaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::store::KeyStore;

/// Collects key uses.
#[derive(Clone, Default)]
pub struct LastUsed {
    pending: Arc<Mutex<HashMap<String, i64>>>,
}

impl LastUsed {
    /// Notes that key `id` was used at `at` (Unix ms).
    pub fn touch(&self, id: &str, at: i64) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = pending.entry(id.to_owned()).or_insert(at);
        *entry = (*entry).max(at);
    }

    /// Writes what was collected.
    pub async fn flush(&self, store: &dyn KeyStore) {
        let batch: Vec<(String, i64)> =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner)).into_iter().collect();
        if batch.is_empty() {
            return;
        }
        if let Err(e) = store.touch(&batch).await {
            tracing::warn!(error = %e, keys = batch.len(), "cannot record last-used times; retrying next flush");
            for (id, at) in batch {
                self.touch(&id, at);
            }
        }
    }

    /// Flushes every second until `stop` resolves, then once more.
    pub async fn run(self, store: Arc<dyn KeyStore>, stop: impl std::future::Future<Output = ()>) {
        switchboard_kit::periodic::until_stopped(Duration::from_secs(1), stop, || self.flush(&*store)).await;
    }
}
