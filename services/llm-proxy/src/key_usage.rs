//! Usage of provider keys, written off the request path: completions add to an in-memory
//! tally that is flushed once a second in one transaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::store::{KeyUsage, ProviderKeyStore};

/// The tally.
#[derive(Clone, Default)]
pub struct KeyUsageTally {
    pending: Arc<Mutex<HashMap<String, KeyUsage>>>,
}

impl KeyUsageTally {
    /// Adds one completion made with key `id`.
    pub fn add(&self, id: &str, prompt_tokens: u32, completion_tokens: u32, cost_micros: u64, at: i64) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let u = pending.entry(id.to_owned()).or_default();
        u.requests += 1;
        u.prompt_tokens += i64::from(prompt_tokens);
        u.completion_tokens += i64::from(completion_tokens);
        u.cost_micros += i64::try_from(cost_micros).unwrap_or(i64::MAX);
        u.last_used_at = u.last_used_at.max(at);
    }

    /// Writes the tally; kept for the next flush when the store fails.
    pub async fn flush(&self, store: &dyn ProviderKeyStore) {
        let batch: Vec<(String, KeyUsage)> =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner)).into_iter().collect();
        if batch.is_empty() {
            return;
        }
        if let Err(e) = store.add_usage(&batch).await {
            tracing::warn!(error = %e, keys = batch.len(), "cannot record provider key usage; retrying next flush");
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            for (id, u) in batch {
                let p = pending.entry(id).or_default();
                p.requests += u.requests;
                p.prompt_tokens += u.prompt_tokens;
                p.completion_tokens += u.completion_tokens;
                p.cost_micros += u.cost_micros;
                p.last_used_at = p.last_used_at.max(u.last_used_at);
            }
        }
    }

    /// Flushes every second until `stop`, then once more.
    pub async fn run(self, store: Arc<dyn ProviderKeyStore>, stop: impl std::future::Future<Output = ()>) {
        switchboard_kit::periodic::until_stopped(Duration::from_secs(1), stop, || self.flush(&*store)).await;
    }
}
