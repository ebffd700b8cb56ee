//! A map of entries that expire, bounded in size: the in-process caches of verified
//! credentials and of model choices. When it is full, expired entries go first, then (if
//! still full) everything: a cache that loses its entries only asks again.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Entries of `V` by `K`, each until its own instant, at most `capacity` of them.
#[derive(Debug)]
pub struct ExpiringMap<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    capacity: usize,
}

impl<K: Eq + Hash, V: Clone> ExpiringMap<K, V> {
    /// An empty map holding at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self { entries: Mutex::new(HashMap::new()), capacity }
    }

    /// The value of `key`, unless absent or expired.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.get(key).filter(|(_, until)| *until > Instant::now()).map(|(value, _)| value.clone())
    }

    /// Keeps `value` for `key` until `until`.
    pub fn insert(&self, key: K, value: V, until: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity {
            let now = Instant::now();
            entries.retain(|_, (_, until)| *until > now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (value, until));
    }

    /// Forgets `key`.
    pub fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
    }

    /// Forgets every entry whose value `keep` refuses.
    pub fn retain(&self, mut keep: impl FnMut(&V) -> bool) {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, (value, _)| keep(value));
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn entries_expire_and_a_full_map_drops_the_expired_first_then_everything() {
        let map = ExpiringMap::new(2);
        let later = Instant::now() + Duration::from_secs(60);
        map.insert("a", 1, later);
        map.insert("old", 0, Instant::now());
        assert_eq!(map.get("a"), Some(1));
        assert_eq!(map.get("old"), None, "expired");
        map.insert("b", 2, later);
        assert_eq!((map.get("a"), map.get("b")), (Some(1), Some(2)), "the expired one made room");
        map.insert("c", 3, later);
        assert_eq!((map.get("a"), map.get("b"), map.get("c")), (None, None, Some(3)), "full of live ones: emptied");
        map.insert("d", 4, later);
        map.retain(|v| *v != 3);
        assert_eq!((map.get("c"), map.get("d")), (None, Some(4)));
        map.remove("d");
        assert_eq!(map.get("d"), None);
        map.insert("e", 5, later);
        map.clear();
        assert_eq!(map.get("e"), None);
    }
}
