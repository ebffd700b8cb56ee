//! Retries of upstream calls: exponential backoff with full jitter on 429, 5xx and connect
//! errors, honouring `Retry-After`, within a retry budget so that retries never multiply an
//! outage. A streamed call is retried only before its first byte.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rand::Rng;

use crate::providers::ProviderError;

/// How calls are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff step.
    pub base_delay: Duration,
    /// Longest wait between attempts; a `Retry-After` beyond it is not waited for.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_retries: 2, base_delay: Duration::from_millis(200), max_delay: Duration::from_secs(10) }
    }
}

/// Consecutive failures that eject an upstream.
pub const EJECT_AFTER: u32 = 5;
/// How long an ejected upstream is left alone.
pub const EJECT_FOR: Duration = Duration::from_secs(30);

/// Retries may add at most this share of the calls made (plus a small reserve).
const BUDGET_RATIO: f64 = 0.2;
const BUDGET_RESERVE: f64 = 10.0;

/// A shared allowance of retries: each call deposits a fifth of a retry, each retry spends
/// one, so a failing upstream sees at most about 1.2 times the traffic, not 3 times.
#[derive(Debug)]
pub struct RetryBudget {
    balance: Mutex<f64>,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self { balance: Mutex::new(BUDGET_RESERVE) }
    }
}

impl RetryBudget {
    fn deposit(&self) {
        let mut balance = self.balance.lock().unwrap_or_else(PoisonError::into_inner);
        *balance = (*balance + BUDGET_RATIO).min(BUDGET_RESERVE * 10.0);
    }

    fn withdraw(&self) -> bool {
        let mut balance = self.balance.lock().unwrap_or_else(PoisonError::into_inner);
        if *balance >= 1.0 {
            *balance -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Whether a failure is worth another attempt.
pub fn retryable(error: &ProviderError) -> bool {
    match error {
        ProviderError::Status { status, .. } => *status == 429 || (500..=599).contains(status) && *status != 501,
        ProviderError::Connect(_) => true,
        ProviderError::Timeout
        | ProviderError::InvalidResponse(_)
        | ProviderError::Setup(_)
        | ProviderError::Ejected { .. } => false,
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (1-based), or `None` when the upstream asks
    /// for longer than [`RetryPolicy::max_delay`].
    pub fn delay(&self, attempt: u32, error: &ProviderError) -> Option<Duration> {
        let ceiling = self.base_delay.saturating_mul(1 << attempt.min(16)).min(self.max_delay);
        let jittered = Duration::from_micros(rand::rng().random_range(0..=ceiling.as_micros() as u64));
        match error {
            ProviderError::Status { retry_after: Some(wait), .. } if *wait > self.max_delay => None,
            ProviderError::Status { retry_after: Some(wait), .. } => Some((*wait).max(jittered)),
            _ => Some(jittered),
        }
    }

    /// Runs `call` to `provider` until it succeeds, fails for good, or the retries or the
    /// budget run out.
    pub async fn run<T, F, Fut>(
        &self,
        budget: &RetryBudget,
        provider: &'static str,
        mut call: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        budget.deposit();
        let mut attempt = 0;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(error) if attempt < self.max_retries && retryable(&error) => {
                    let Some(wait) = self.delay(attempt + 1, &error) else { return Err(error) };
                    if !budget.withdraw() {
                        tracing::warn!(%error, "retry budget spent; not retrying");
                        return Err(error);
                    }
                    attempt += 1;
                    crate::telemetry::retried(provider);
                    tracing::info!(%error, attempt, wait_ms = wait.as_millis() as u64, "retrying the upstream");
                    tokio::time::sleep(wait).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// Ejects a failing upstream for a cool-down: after `threshold` consecutive failures calls
/// fail fast for `cooldown`; then one trial call decides whether it is back.
#[derive(Debug)]
pub struct Breaker {
    provider: &'static str,
    threshold: u32,
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    failures: u32,
    open_until: Option<tokio::time::Instant>,
    trial: bool,
}

impl Breaker {
    /// A breaker of an upstream of `provider` opening after `threshold` failures in a row,
    /// for `cooldown`.
    pub fn new(provider: &'static str, threshold: u32, cooldown: Duration) -> Self {
        Self { provider, threshold: threshold.max(1), cooldown, state: Mutex::new(BreakerState::default()) }
    }

    /// Whether a call may go out now.
    pub fn allow(&self) -> Result<(), ProviderError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.open_until {
            Some(until) if tokio::time::Instant::now() < until => {
                Err(ProviderError::Ejected { retry_in: until - tokio::time::Instant::now() })
            }
            Some(_) => {
                // Cooled down: let one trial through.
                state.open_until = None;
                state.trial = true;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Records a call's outcome; only failures of the upstream itself count.
    pub fn record<T>(&self, outcome: &Result<T, ProviderError>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Ok(_) => *state = BreakerState::default(),
            Err(e) if retryable(e) || matches!(e, ProviderError::Timeout) => {
                state.failures += 1;
                if state.trial || state.failures >= self.threshold {
                    crate::telemetry::ejected(self.provider);
                    tracing::warn!(
                        provider = self.provider,
                        failures = state.failures,
                        cooldown_s = self.cooldown.as_secs(),
                        "upstream ejected"
                    );
                    state.open_until = Some(tokio::time::Instant::now() + self.cooldown);
                    state.failures = 0;
                }
                state.trial = false;
            }
            Err(_) => state.trial = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn status(code: u16, retry_after: Option<Duration>) -> ProviderError {
        ProviderError::Status { status: code, message: String::new(), retry_after }
    }

    #[test]
    fn only_throttling_server_errors_and_connect_failures_are_retried() {
        assert!(retryable(&status(429, None)));
        assert!(retryable(&status(503, None)));
        assert!(retryable(&ProviderError::Connect("refused".into())));
        assert!(!retryable(&status(400, None)));
        assert!(!retryable(&status(401, None)));
        assert!(!retryable(&status(501, None)));
        assert!(!retryable(&ProviderError::Timeout));
    }

    #[test]
    fn backoff_is_jittered_exponential_and_honours_retry_after() {
        let policy = RetryPolicy::default();
        for attempt in 1..=3 {
            let ceiling = policy.base_delay * (1 << attempt);
            let d = policy.delay(attempt, &status(503, None)).unwrap();
            assert!(d <= ceiling, "{d:?} > {ceiling:?}");
        }
        let d = policy.delay(1, &status(429, Some(Duration::from_secs(2)))).unwrap();
        assert!(d >= Duration::from_secs(2));
        assert_eq!(policy.delay(1, &status(429, Some(Duration::from_secs(60)))), None, "too long to wait");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_then_stop_at_the_limit() {
        let policy = RetryPolicy::default();
        let budget = RetryBudget::default();
        let calls = AtomicU32::new(0);
        let result = policy
            .run(&budget, "test", || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 2 { Err(status(503, None)) } else { Ok(n) }
            })
            .await;
        assert_eq!(result.unwrap(), 2);
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        calls.store(0, Ordering::SeqCst);
        let result: Result<(), _> = policy
            .run(&budget, "test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(status(500, None))
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3, "one attempt and two retries");

        calls.store(0, Ordering::SeqCst);
        let result: Result<(), _> = policy
            .run(&budget, "test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(status(400, None))
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a client error is final");
    }

    #[tokio::test(start_paused = true)]
    async fn a_breaker_ejects_after_consecutive_failures_and_tries_again_after_the_cool_down() {
        let breaker = Breaker::new("test", 3, Duration::from_secs(30));
        for _ in 0..2 {
            breaker.allow().unwrap();
            breaker.record::<()>(&Err(status(503, None)));
        }
        breaker.record::<()>(&Ok(()));
        for _ in 0..3 {
            breaker.allow().unwrap();
            breaker.record::<()>(&Err(status(503, None)));
        }
        assert!(matches!(breaker.allow(), Err(ProviderError::Ejected { .. })), "three in a row eject it");
        tokio::time::advance(Duration::from_secs(31)).await;
        breaker.allow().unwrap();
        breaker.record::<()>(&Err(status(503, None)));
        assert!(breaker.allow().is_err(), "a failed trial ejects it again at once");
        tokio::time::advance(Duration::from_secs(31)).await;
        breaker.allow().unwrap();
        breaker.record::<()>(&Ok(()));
        breaker.allow().unwrap();
        breaker.record::<()>(&Err(status(400, None)));
        breaker.allow().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_budget_stops_retries() {
        let policy = RetryPolicy::default();
        let budget = RetryBudget::default();
        let calls = AtomicU32::new(0);
        for _ in 0..20 {
            let _: Result<(), _> = policy
                .run(&budget, "test", || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(status(503, None))
                })
                .await;
        }
        // 20 calls deposit 4 retries on top of the reserve of 10.
        let total = calls.load(Ordering::SeqCst);
        assert!(total <= 20 + 14, "{total}");
        assert!(total >= 20 + 10, "{total}");
    }
}
