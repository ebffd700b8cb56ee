//! Usage of provider keys, written off the request path: completions add to an in-memory
//! tally that is flushed once a second in one transaction.

use std::sync::Arc;
use std::time::Duration;

use switchboard_kit::tally::{Merge, Tally};

use crate::store::{KeyUsage, ProviderKeyStore};

impl Merge for KeyUsage {
    fn merge(&mut self, other: Self) {
        self.requests += other.requests;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cost_micros = self.cost_micros.saturating_add(other.cost_micros);
        self.last_used_at = self.last_used_at.max(other.last_used_at);
    }
}

/// The tally.
#[derive(Clone, Default)]
pub struct KeyUsageTally(Tally<String, KeyUsage>);

impl KeyUsageTally {
    /// Adds one completion made with key `id`.
    pub fn add(&self, id: &str, prompt_tokens: u32, completion_tokens: u32, cost_micros: u64, at: i64) {
        let usage = KeyUsage {
            requests: 1,
            prompt_tokens: i64::from(prompt_tokens),
            completion_tokens: i64::from(completion_tokens),
            cost_micros: i64::try_from(cost_micros).unwrap_or(i64::MAX),
            last_used_at: at,
        };
        self.0.add(id.to_owned(), usage);
    }

    /// Writes the tally; kept for the next flush when the store fails.
    pub async fn flush(&self, store: &dyn ProviderKeyStore) {
        self.0
            .flush("provider key usage", |batch| async move {
                store.add_usage(&batch).await.map_err(|e| (batch, e.to_string()))
            })
            .await;
    }

    /// Flushes every second until `stop`, then once more.
    pub async fn run(self, store: Arc<dyn ProviderKeyStore>, stop: impl std::future::Future<Output = ()>) {
        switchboard_kit::periodic::until_stopped(Duration::from_secs(1), stop, || self.flush(&*store)).await;
    }
}
