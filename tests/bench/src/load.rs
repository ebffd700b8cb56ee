//! An open-loop load generator for what `oha` cannot drive: gRPC calls and streams whose time
//! to first token matters. Requests start on a fixed schedule whatever the answers do, and each
//! latency is measured from the request's scheduled start, so a stall shows in the figures
//! instead of silently lowering the rate (no coordinated omission). The one exception is the
//! harness's own wake-up: tokio's timer counts in milliseconds and fires a little after the
//! instant asked for, so a request that starts within [`WAKE_SLACK`] of its schedule is timed
//! from its actual start (otherwise that lateness, the harness's and not the system's, would be
//! added to the figures). A later start (the harness fell behind) is timed from the schedule.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

/// How late the harness's timer may fire before the delay counts against the system measured:
/// a few of the timer's millisecond ticks, well under the gap between two requests.
pub const WAKE_SLACK: Duration = Duration::from_millis(3);

/// How long one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What one call reports: when its first token arrived (streams), or an error.
pub type CallResult = Result<Option<Instant>, String>;

/// Latencies and errors of one run.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Requests started.
    pub sent: usize,
    /// Latencies of the successful ones (scheduled start to end), sorted.
    pub latencies: Vec<Duration>,
    /// Times to first token of the successful streams (scheduled start to first token), sorted.
    pub first_tokens: Vec<Duration>,
    /// Errors by kind.
    pub errors: BTreeMap<String, usize>,
    /// From the first scheduled start to the last answer.
    pub elapsed: Duration,
}

impl Outcome {
    /// Failed requests.
    pub fn failed(&self) -> usize {
        self.errors.values().sum()
    }
}

/// The `q` quantile (0..=1) of sorted `values`.
pub fn quantile(values: &[Duration], q: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    let index = ((values.len() as f64 * q) as usize).min(values.len() - 1);
    Some(values[index])
}

/// Starts `call(i)` `rate` times a second for `duration`, each on its own task.
pub async fn open_loop<F, Fut>(rate: f64, duration: Duration, call: F) -> Outcome
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = CallResult> + Send + 'static,
{
    let total = (rate * duration.as_secs_f64()).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now();
    for i in 0..total {
        let scheduled = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let started = Instant::now();
        let scheduled = if started.saturating_duration_since(scheduled) <= WAKE_SLACK { started } else { scheduled };
        let request = call(i);
        let tx = tx.clone();
        tokio::spawn(async move {
            let result = match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
                Ok(result) => result,
                Err(_) => Err("timeout".to_owned()),
            };
            let _ = tx.send((scheduled, Instant::now(), result));
        });
    }
    drop(tx);
    let mut outcome = Outcome { sent: total, ..Outcome::default() };
    while let Some((scheduled, ended, result)) = rx.recv().await {
        match result {
            Ok(first_token) => {
                outcome.latencies.push(ended - scheduled);
                if let Some(first) = first_token {
                    outcome.first_tokens.push(first.saturating_duration_since(scheduled));
                }
            }
            Err(kind) => *outcome.errors.entry(kind).or_default() += 1,
        }
    }
    outcome.elapsed = start.elapsed();
    outcome.latencies.sort_unstable();
    outcome.first_tokens.sort_unstable();
    outcome
}

/// One streamed chat completion: `Ok(Some(first token))` once the answer ended.
pub async fn stream_completion(
    client: reqwest::Client,
    url: String,
    key: String,
    body: serde_json::Value,
) -> CallResult {
    use futures::StreamExt;
    let response =
        client.post(url).bearer_auth(key).json(&body).send().await.map_err(|e| format!("connect: {}", kind(&e)))?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status().as_u16()));
    }
    let mut body = response.bytes_stream();
    let mut first = None;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("body: {}", kind(&e)))?;
        if first.is_none() && has_content(&chunk) {
            first = Some(Instant::now());
        }
    }
    if first.is_none() {
        return Err("no token".to_owned());
    }
    Ok(first)
}

/// Whether an SSE chunk carries a non-empty `"content":"…"`.
fn has_content(chunk: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"\"content\":\"";
    chunk.windows(NEEDLE.len() + 1).any(|w| w.starts_with(NEEDLE) && w[NEEDLE.len()] != b'"')
}

fn kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "refused"
    } else {
        "broken"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_a_non_empty_content() {
        assert!(has_content(br#"data: {"choices":[{"delta":{"content":"Hi"}}]}"#));
        assert!(!has_content(br#"data: {"choices":[{"delta":{"role":"assistant","content":""}}]}"#));
    }

    #[test]
    fn quantiles_pick_from_the_sorted_values() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&values, 0.5), Some(Duration::from_millis(51)));
        assert_eq!(quantile(&values, 0.99), Some(Duration::from_millis(100)));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
