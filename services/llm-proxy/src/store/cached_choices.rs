//! Model choices cached in memory: a turn without an explicit model reads the principal's
//! choice, and that read would otherwise be a database query on every turn.
//!
//! A choice set through this replica is seen at once; one set through another replica is seen
//! here within [`CHOICE_TTL`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use switchboard_kit::expiring::ExpiringMap;

use super::ModelChoiceStore;

/// How long a cached choice (or the absence of one) is trusted.
pub const CHOICE_TTL: Duration = Duration::from_secs(2);
/// Most principals remembered.
const CAPACITY: usize = 100_000;

type Key = (String, String);

/// [`ModelChoiceStore`] over another, remembering what it read for [`CHOICE_TTL`].
pub struct CachedChoices {
    inner: Arc<dyn ModelChoiceStore>,
    ttl: Duration,
    cache: ExpiringMap<Key, Option<String>>,
    lookups: switchboard_kit::metrics::CacheLookups,
}

impl CachedChoices {
    /// A cache over `inner`, trusting what it read for `ttl`.
    pub fn new(inner: Arc<dyn ModelChoiceStore>, ttl: Duration) -> Self {
        Self { inner, ttl, cache: ExpiringMap::new(CAPACITY), lookups: Default::default() }
    }

    /// Counts hits and misses as the `model_choices` cache of `family`.
    pub fn with_metrics(mut self, family: &switchboard_kit::metrics::CacheFamily) -> Self {
        self.lookups = switchboard_kit::metrics::CacheLookups::of(family, "model_choices");
        self
    }
}

#[async_trait]
impl ModelChoiceStore for CachedChoices {
    async fn get(&self, system_id: &str, user_id: &str) -> Result<Option<String>, sqlx::Error> {
        let key = (system_id.to_owned(), user_id.to_owned());
        let cached = self.cache.get(&key);
        self.lookups.record(cached.is_some());
        if let Some(choice) = cached {
            return Ok(choice);
        }
        let choice = self.inner.get(system_id, user_id).await?;
        self.cache.insert(key, choice.clone(), Instant::now() + self.ttl);
        Ok(choice)
    }

    async fn set(&self, system_id: &str, user_id: &str, model: &str) -> Result<(), sqlx::Error> {
        let key = (system_id.to_owned(), user_id.to_owned());
        // Forgotten first: a read racing with this write must not re-cache the old choice
        // for long after the write returns.
        self.cache.remove(&key);
        self.inner.set(system_id, user_id, model).await?;
        self.cache.insert(key, Some(model.to_owned()), Instant::now() + self.ttl);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts the reads that reach it.
    #[derive(Default)]
    struct Counting {
        reads: AtomicUsize,
        choices: Mutex<HashMap<Key, String>>,
    }

    #[async_trait]
    impl ModelChoiceStore for Counting {
        async fn get(&self, system_id: &str, user_id: &str) -> Result<Option<String>, sqlx::Error> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(self.choices.lock().unwrap().get(&(system_id.to_owned(), user_id.to_owned())).cloned())
        }

        async fn set(&self, system_id: &str, user_id: &str, model: &str) -> Result<(), sqlx::Error> {
            self.choices.lock().unwrap().insert((system_id.to_owned(), user_id.to_owned()), model.to_owned());
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_choice_is_read_once_per_ttl_and_a_set_is_seen_at_once() {
        let inner = Arc::new(Counting::default());
        let cached = CachedChoices::new(inner.clone(), Duration::from_millis(200));
        assert_eq!(cached.get("t", "u").await.unwrap(), None);
        assert_eq!(cached.get("t", "u").await.unwrap(), None, "no choice is remembered too");
        assert_eq!(inner.reads.load(Ordering::SeqCst), 1);

        cached.set("t", "u", "gpt-b").await.unwrap();
        assert_eq!(cached.get("t", "u").await.unwrap().as_deref(), Some("gpt-b"), "seen at once");
        assert_eq!(inner.reads.load(Ordering::SeqCst), 1);

        // Another replica changes it: seen once the cached one expires.
        inner.set("t", "u", "gpt-c").await.unwrap();
        assert_eq!(cached.get("t", "u").await.unwrap().as_deref(), Some("gpt-b"));
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(cached.get("t", "u").await.unwrap().as_deref(), Some("gpt-c"));
        assert_eq!(inner.reads.load(Ordering::SeqCst), 2);
        assert_eq!(cached.get("t", "other").await.unwrap(), None, "per principal");
    }
}
