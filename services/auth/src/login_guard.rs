//! Failed sign-ins per account, counted by the auth service itself: whoever calls `Login`
//! (the gateway, or a gRPC client straight to this service) gets at most [`MAX_FAILURES`]
//! wrong passwords per account per [`WINDOW`], then the account refuses sign-ins until the
//! window ends. Counted per process: each replica allows its own share.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Wrong passwords allowed per account and window.
pub const MAX_FAILURES: u32 = 10;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Accounts tracked at most; the oldest windows are forgotten beyond.
const CAPACITY: usize = 100_000;

/// The failures of every account.
#[derive(Debug, Default)]
pub struct LoginGuard {
    failures: Mutex<HashMap<(String, String), (Instant, u32)>>,
}

impl LoginGuard {
    /// Seconds until `account` may try again, when it is locked.
    pub fn locked(&self, system_id: &str, username: &str) -> Option<u64> {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let (since, count) = failures.get(&key(system_id, username))?;
        let left = WINDOW.checked_sub(since.elapsed())?;
        (*count >= MAX_FAILURES).then(|| left.as_secs().max(1))
    }

    /// Counts a wrong password.
    pub fn failed(&self, system_id: &str, username: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= CAPACITY {
            failures.retain(|_, (since, _)| since.elapsed() < WINDOW);
        }
        let entry = failures.entry(key(system_id, username)).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }

    /// Forgets an account's failures after a successful sign-in.
    pub fn succeeded(&self, system_id: &str, username: &str) {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner).remove(&key(system_id, username));
    }
}

fn key(system_id: &str, username: &str) -> (String, String) {
    (system_id.to_owned(), username.trim().to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_locks_after_the_allowed_failures_and_a_success_clears_them() {
        let guard = LoginGuard::default();
        for _ in 0..MAX_FAILURES - 1 {
            guard.failed("default", "alice");
        }
        assert_eq!(guard.locked("default", "alice"), None);
        guard.succeeded("default", "alice");
        for _ in 0..MAX_FAILURES {
            guard.failed("default", "Alice");
        }
        assert!(guard.locked("default", "alice").is_some_and(|s| s > 0 && s <= WINDOW.as_secs()));
        assert_eq!(guard.locked("default", "bob"), None, "per account");
        assert_eq!(guard.locked("other", "alice"), None, "per tenant");
    }
}
