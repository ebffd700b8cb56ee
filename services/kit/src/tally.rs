//! Counts kept in memory and written in batches off the request path: a request adds to a
//! [`Tally`], a background task flushes it (see [`crate::periodic`]); what a failed write could
//! not store is merged back and tried again at the next flush, so nothing counted is lost.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

/// A count that can take in another for the same key.
pub trait Merge {
    /// Adds `other` into `self`.
    fn merge(&mut self, other: Self);
}

/// Pending counts by key.
pub struct Tally<K, V> {
    pending: Arc<Mutex<HashMap<K, V>>>,
}

impl<K, V> Clone for Tally<K, V> {
    fn clone(&self) -> Self {
        Self { pending: self.pending.clone() }
    }
}

impl<K, V> Default for Tally<K, V> {
    fn default() -> Self {
        Self { pending: Arc::default() }
    }
}

impl<K: Eq + Hash, V: Merge> Tally<K, V> {
    /// Counts `value` under `key`.
    pub fn add(&self, key: K, value: V) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        match pending.get_mut(&key) {
            Some(count) => count.merge(value),
            None => {
                pending.insert(key, value);
            }
        }
    }

    /// Hands what is pending to `write`; a batch it gives back (with why) is kept for the
    /// next flush. `what` names the counts in the log.
    pub async fn flush<W, Fut>(&self, what: &str, write: W)
    where
        W: FnOnce(Vec<(K, V)>) -> Fut,
        Fut: Future<Output = Result<(), (Vec<(K, V)>, String)>>,
    {
        let batch: Vec<(K, V)> =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner)).into_iter().collect();
        if batch.is_empty() {
            return;
        }
        if let Err((batch, error)) = write(batch).await {
            tracing::warn!(%error, rows = batch.len(), "cannot write {what}; retrying at the next flush");
            for (key, value) in batch {
                self.add(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Merge for u32 {
        fn merge(&mut self, other: Self) {
            *self += other;
        }
    }

    #[tokio::test]
    async fn counts_merge_and_a_failed_write_keeps_them_for_the_next_flush() {
        let tally: Tally<&str, u32> = Tally::default();
        tally.add("a", 1);
        tally.add("a", 2);
        tally.add("b", 5);
        tally.flush("counts", |batch| async move { Err((batch, "down".to_owned())) }).await;
        tally.add("a", 4);
        let mut written = Vec::new();
        tally
            .flush("counts", |batch| {
                written = batch;
                async { Ok(()) }
            })
            .await;
        written.sort();
        assert_eq!(written, [("a", 7), ("b", 5)]);
        tally.flush("counts", |batch| async move { Err((batch, "must not be called".to_owned())) }).await;
    }
}
