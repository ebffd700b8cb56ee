//! The peer column: LiteLLM proxy (`pip install 'litellm[proxy]'`; `make bench` installs it in
//! a virtualenv) in front of the same mock upstream, with its master key and no database,
//! measured at the same rates as Switchboard. Everything that would reach the internet (its
//! model-cost map and other downloads, telemetry) is switched off.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::report::{Memory, Target};
use crate::{Aim, Bench, COMPLETION_RATES, completion_body, log, proc};

const MASTER_KEY: &str = "sk-litellm-bench-master";

/// The `litellm` executable to run.
pub struct Peer {
    exe: PathBuf,
}

/// The peer from `LITELLM` (`BENCH_PEER=none` skips it; without `LITELLM` it is skipped
/// with a note, unless `BENCH_PEER=litellm` asks for it).
pub fn from_env() -> anyhow::Result<Option<Peer>> {
    let wanted = std::env::var("BENCH_PEER").unwrap_or_default();
    if wanted == "none" {
        return Ok(None);
    }
    match std::env::var_os("LITELLM").map(PathBuf::from).filter(|p| p.exists()) {
        Some(exe) => Ok(Some(Peer { exe })),
        None if wanted == "litellm" => bail!("BENCH_PEER=litellm but LITELLM names no executable"),
        None => {
            log("LiteLLM is not installed (LITELLM unset): no peer column");
            Ok(None)
        }
    }
}

/// Starts LiteLLM, measures it like Switchboard, stops it.
pub async fn measure(bench: &mut Bench, peer: &Peer) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("litellm.yaml");
    std::fs::write(
        &config,
        format!(
            "model_list:\n  - model_name: gpt-test\n    litellm_params:\n      model: openai/gpt-test\n      \
             api_base: {}\n      api_key: {}\nlitellm_settings:\n  telemetry: False\n  set_verbose: False\n  \
             callbacks: []\n  success_callback: []\n  failure_callback: []\n  num_retries: 0\n  request_timeout: 30\n\
             general_settings:\n  master_key: {MASTER_KEY}\n  disable_spend_logs: True\n  background_health_checks: False\n",
            bench.upstream,
            crate::UPSTREAM_KEY
        ),
    )?;
    let port = switchboard_test_support::stack::free_port()?;
    let log_file = std::fs::File::create(dir.path().join("litellm.log"))?;
    let mut child = tokio::process::Command::new(&peer.exe)
        .args(["--config", &config.to_string_lossy(), "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--num_workers", "1"])
        .envs([
            ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
            ("LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS", "True"),
            ("LITELLM_LOCAL_BLOG_POSTS", "True"),
            ("LITELLM_LOCAL_AUTOROUTER_PRESETS", "True"),
            ("LITELLM_LOCAL_POLICY_TEMPLATES", "True"),
            ("LITELLM_LOG", "ERROR"),
            ("NO_DOCS", "True"),
            ("NO_REDOC", "True"),
            ("DISABLE_ADMIN_UI", "True"),
        ])
        .env_remove("DATABASE_URL")
        .env_remove("HOST")
        .env_remove("PORT")
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {}", peer.exe.display()))?;
    let pid = child.id().context("litellm pid")?;
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        let alive = bench.http.get(format!("{base}/health/liveliness")).send().await;
        if alive.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) || child.try_wait()?.is_some() {
            bail!("LiteLLM did not start; see {}", dir.path().join("litellm.log").display());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    log(format!("LiteLLM {} answers after {:.1} s", peer.exe.display(), started.elapsed().as_secs_f64()));
    // Its first requests import code lazily: not part of what is measured.
    let url = format!("{base}/v1/chat/completions");
    for _ in 0..20 {
        bench.http.post(&url).bearer_auth(MASTER_KEY).json(&completion_body(false)).send().await?.error_for_status()?;
    }
    let pids = [("litellm", pid)];
    for rate in COMPLETION_RATES {
        let aim = Aim { scenario: "completions", target: Target::Litellm, url: &url, key: MASTER_KEY };
        let run = bench.oha_point(aim, &completion_body(false), rate, &pids).await?;
        if run.failed() * 10 > run.answered.max(1) || run.achieved_rps < rate * 0.5 {
            log(format!("LiteLLM falls over at {rate} rps ({:.0} served/s): stopping there", run.achieved_rps));
            break;
        }
    }
    crate::streams(bench, &format!("{base}/v1"), MASTER_KEY, Target::Litellm, &pids).await;
    let (_, peak) = proc::memory(pid);
    bench.report.memory.push(Memory { component: "LiteLLM proxy".into(), peak_rss_mib: crate::proc::mib(peak) });
    child.kill().await?;
    Ok(())
}
