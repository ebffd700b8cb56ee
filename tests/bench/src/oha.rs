//! HTTP load at a fixed rate with `oha` (`cargo install oha`; `make bench` installs it): open
//! loop with latency correction (`-q`, `--latency-correction`), 64 keep-alive connections, its
//! JSON report read back.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// Connections oha keeps open.
const CONNECTIONS: &str = "64";

/// One oha run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    /// Requests answered (any status).
    pub answered: u64,
    /// Answers other than 2xx.
    pub non_2xx: u64,
    /// Transport errors (refused, reset, timed out).
    pub errors: u64,
    /// Answers per second over the run.
    pub achieved_rps: f64,
    /// Latency quantiles in ms (all answers).
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

impl Run {
    /// Requests that did not get a 2xx.
    pub fn failed(&self) -> u64 {
        self.non_2xx + self.errors
    }
}

/// POSTs `body` to `url` at `rate` per second for `duration`, with `headers`.
pub async fn post(
    oha: &Path,
    url: &str,
    body: &Value,
    headers: &[(&str, &str)],
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Run> {
    let mut command = tokio::process::Command::new(oha);
    command
        .args(["--no-tui", "--output-format", "json", "--latency-correction", "-w", "-c", CONNECTIONS])
        .args(["-z", &format!("{}ms", duration.as_millis())])
        .args(["-q", &rate.to_string()])
        .args(["-m", "POST", "-T", "application/json", "-d", &body.to_string()]);
    for (name, value) in headers {
        command.args(["-H", &format!("{name}: {value}")]);
    }
    let output =
        command.arg(url).kill_on_drop(true).output().await.with_context(|| format!("running {}", oha.display()))?;
    if !output.status.success() {
        bail!("oha failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    parse(&serde_json::from_slice(&output.stdout).context("oha's JSON report")?)
}

fn parse(report: &Value) -> anyhow::Result<Run> {
    let ms = |q: &str| report["latencyPercentiles"][q].as_f64().map_or(f64::NAN, |s| s * 1000.0);
    let statuses = report["statusCodeDistribution"].as_object().context("statusCodeDistribution")?;
    let count = |ok: bool| -> u64 {
        statuses.iter().filter(|(code, _)| code.starts_with('2') == ok).filter_map(|(_, n)| n.as_u64()).sum()
    };
    let errors = report["errorDistribution"].as_object().map_or(0, |e| e.values().filter_map(Value::as_u64).sum());
    let answered = count(true) + count(false);
    let seconds = report["summary"]["total"].as_f64().unwrap_or(f64::NAN);
    Ok(Run {
        answered,
        non_2xx: count(false),
        errors,
        achieved_rps: answered as f64 / seconds,
        p50_ms: ms("p50"),
        p90_ms: ms("p90"),
        p99_ms: ms("p99"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_gives_quantiles_in_ms_and_counts_non_2xx_and_errors() {
        let report = serde_json::json!({
            "summary": {"total": 2.0},
            "latencyPercentiles": {"p50": 0.001, "p90": 0.002, "p99": 0.004},
            "statusCodeDistribution": {"200": 1990, "503": 8},
            "errorDistribution": {"connection closed": 2}
        });
        let run = parse(&report).unwrap();
        assert_eq!((run.answered, run.non_2xx, run.errors, run.failed()), (1998, 8, 2, 10));
        assert!((run.p99_ms - 4.0).abs() < 1e-9 && (run.achieved_rps - 999.0).abs() < 1e-9);
    }
}
