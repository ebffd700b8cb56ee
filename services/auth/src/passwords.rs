//! Usernames and passwords: the rules (seeds 002, 004), argon2id hashing, and the bound on how
//! many hashes run at once ([`HashPool`]), since each one holds 19 MiB while it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::Semaphore;

use crate::error::AuthError;

/// Username: 3-20 of `[A-Za-z0-9_]`.
pub fn check_username(username: &str) -> Result<(), AuthError> {
    let ok = (3..=20).contains(&username.len()) && username.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok { Ok(()) } else { Err(AuthError::invalid("username", "must be 3-20 characters of letters, digits and '_'")) }
}

/// Password: 8-100 characters with a digit and an upper-case letter (seed 002's review).
pub fn check_password(password: &str) -> Result<(), AuthError> {
    let len = password.chars().count();
    if len < 8 {
        return Err(AuthError::invalid("password", "must be at least 8 characters"));
    }
    if len > 100 {
        return Err(AuthError::invalid("password", "must be at most 100 characters"));
    }
    if !password.chars().any(|c| c.is_ascii_digit()) {
        return Err(AuthError::invalid("password", "must contain a digit"));
    }
    if !password.chars().any(|c| c.is_uppercase()) {
        return Err(AuthError::invalid("password", "must contain an upper-case letter"));
    }
    Ok(())
}

fn hasher() -> Argon2<'static> {
    // OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// An argon2id PHC string for `password`. CPU-heavy: call from a blocking thread.
pub fn hash(password: &str) -> Result<String, AuthError> {
    // A fresh 16-byte salt from the operating system's generator.
    let hashed: PasswordHash = hasher()
        .hash_password(password.as_bytes())
        .map_err(|e| AuthError::Unexpected(format!("hashing a password: {e}")))?;
    Ok(hashed.to_string())
}

/// Whether `password` matches the stored PHC string. CPU-heavy: call from a blocking thread.
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| hasher().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A hash of a password nobody has, verified against when the user does not exist so that
/// a login takes as long for unknown users as for known ones.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash("Decoy-password-0").unwrap_or_default())
}

/// Longest a password check waits for a free hashing slot before it is shed.
pub const MAX_WAIT: Duration = Duration::from_secs(2);
/// What a shed caller is told to wait before retrying, in seconds: a hash takes milliseconds.
pub const RETRY_AFTER_SECS: u64 = 1;

/// Runs password hashes on blocking threads, at most `concurrency` at once (each holds 19 MiB,
/// so this bounds their memory), with at most `queue` callers waiting for a slot and none for
/// longer than [`MAX_WAIT`]. Callers beyond that are shed with [`AuthError::Overloaded`].
#[derive(Clone)]
pub struct HashPool {
    permits: Arc<Semaphore>,
    queue: usize,
    waiting: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
}

/// Counts one in, and out again when dropped, so a cancelled or panicking task is counted out.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    /// Counts one in; with how many were counted before.
    fn new(counter: &Arc<AtomicUsize>) -> (Self, usize) {
        let before = counter.fetch_add(1, Ordering::SeqCst);
        (Self(counter.clone()), before)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl HashPool {
    /// A pool running at most `concurrency` (at least one) hashes, with `queue` waiting.
    pub fn new(concurrency: usize, queue: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            queue,
            waiting: Arc::default(),
            running: Arc::default(),
        }
    }

    /// How many hashes are running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Runs `work` on a blocking thread once a slot is free. The slot is held until `work`
    /// ends, even if the caller gives up first: the memory is in use until then.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, AuthError> {
        let overloaded = || AuthError::Overloaded { retry_after_secs: RETRY_AFTER_SECS };
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let (_waiting, ahead) = Counted::new(&self.waiting);
                if ahead >= self.queue {
                    return Err(overloaded());
                }
                match tokio::time::timeout(MAX_WAIT, self.permits.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => return Err(overloaded()),
                }
            }
        };
        let running = self.running.clone();
        tokio::task::spawn_blocking(move || {
            // Dropped in reverse: counted out before the slot is given back, so `running`
            // never shows more than the slots.
            let _permit = permit;
            let (_running, _) = Counted::new(&running);
            work()
        })
        .await
        .map_err(|e| AuthError::Unexpected(format!("password task: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_and_password_rules() {
        assert!(check_username("alice_01").is_ok());
        for bad in ["al", "a".repeat(21).as_str(), "alice!", "엘리스"] {
            assert!(check_username(bad).is_err(), "{bad}");
        }
        assert!(check_password("Passw0rdX").is_ok());
        for bad in ["Short1", "alllowercase1", "NoDigitsHere", &"A1".repeat(51)] {
            let err = check_password(bad).unwrap_err();
            assert!(err.to_string().starts_with("password"), "{bad}: {err}");
        }
    }

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let a = hash("Passw0rdX").unwrap();
        let b = hash("Passw0rdX").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "salted");
        assert!(verify("Passw0rdX", &a));
        assert!(!verify("passw0rdX", &a));
        assert!(!verify("Passw0rdX", "garbage"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_the_configured_number_of_hashes_run_at_once_and_callers_beyond_the_queue_are_shed() {
        let pool = HashPool::new(2, 3);
        let peak = Arc::new(AtomicUsize::new(0));
        // Work blocks until the test lets go of the gate.
        let gate = Arc::new(tokio::sync::RwLock::new(()));
        let closed = gate.clone().write_owned().await;
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let (pool, peak, gate) = (pool.clone(), peak.clone(), gate.clone());
                tokio::spawn(async move {
                    let counted = pool.clone();
                    pool.run(move || {
                        peak.fetch_max(counted.running(), Ordering::SeqCst);
                        drop(gate.blocking_read());
                    })
                    .await
                })
            })
            .collect();
        let settled = async {
            while pool.running() < 2 || calls.iter().filter(|c| c.is_finished()).count() < 3 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), settled).await.unwrap();
        assert_eq!(pool.waiting.load(Ordering::SeqCst), 3, "two run, three wait, three are shed");
        drop(closed);
        let mut shed = 0;
        for call in calls {
            match call.await.unwrap() {
                Ok(()) => {}
                Err(AuthError::Overloaded { retry_after_secs }) => {
                    assert_eq!(retry_after_secs, RETRY_AFTER_SECS);
                    shed += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(shed, 3);
        assert_eq!(peak.load(Ordering::SeqCst), 2, "never more than two at once");
        assert_eq!(pool.running(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_that_waits_longer_than_the_limit_for_a_slot_is_shed() {
        let pool = HashPool::new(1, 10);
        let _busy = pool.permits.clone().acquire_owned().await.unwrap();
        let started = tokio::time::Instant::now();
        let outcome = pool.run(|| ()).await;
        assert!(matches!(outcome, Err(AuthError::Overloaded { .. })), "{outcome:?}");
        assert_eq!(started.elapsed(), MAX_WAIT);
    }
}
