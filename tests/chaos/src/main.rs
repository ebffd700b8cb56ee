//! `make chaos`: the process-level failure modes of issue 7, against the real `switchboard`
//! binary run as one process per component (auth, llm-proxy, conversations, gateway), each on
//! its own loopback port, with the mock OpenAI upstream running inside this harness.
//!
//! 1. `kill -9` of the conversation or LLM service at random points under load (≥ 50 kills):
//!    every upstream call has a committed user message, and no answer stays `in_progress`
//!    once the sweeper ran.
//! 2. SIGTERM of the conversation service under load with open SSE streams: its gRPC health
//!    turns NOT_SERVING at once (seen on a health `Watch`, which stays open through the drain),
//!    in-flight turns finish `complete`, no client sees a reset, usage records (written in
//!    batches) are flushed, the process exits 0.
//! 3. PostgreSQL restarted under load, then stopped for 7 s (past the pool's 5 s acquire
//!    timeout): the services reconnect on their own; requests fail cleanly (502/503/504, no
//!    hang, no panic) meanwhile and succeed after.
//!
//! Every loop is bounded in count and time; the process exits non-zero when a check fails.
//! `SWITCHBOARD_BIN` names the binary (default `$CARGO_TARGET_DIR/debug/switchboard`).
//! The restart of check 3 is done on a private, throwaway PostgreSQL cluster (so tests
//! running against the shared server are not disturbed); `CHAOS_PG=shared` restarts the
//! shared cluster instead with `pg_ctlcluster <version> main restart`.

use sqlx::AssertSqlSafe;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use rand::Rng;
use serde_json::{Value, json};
use sqlx::Connection;
use switchboard_test_support::MockUpstream;
use switchboard_test_support::stack::{Part, Stack, free_port, health_channel};
use tokio::process::Command;
use tokio::task::JoinHandle;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

const KEY: &str = "chaos-service-key-0123456789";
const TURN_TIMEOUT_SECS: u64 = 5;
/// A request that takes longer than this hangs.
const HANG: Duration = Duration::from_secs(10);
const KILLS: usize = 50;
/// How long PostgreSQL stays down in the outage of check 3.
const OUTAGE: Duration = Duration::from_secs(7);

fn log(msg: impl AsRef<str>) {
    eprintln!("[chaos {:>7.2}s] {}", started().elapsed().as_secs_f64(), msg.as_ref());
}

fn started() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// The settings of every chaos stack: the service key, the upstream, a short turn timeout (so
/// the sweeper closes answers a kill left behind within the run), no rate limits.
fn settings(upstream: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CHAT_GATEWAY_API_KEY", KEY.to_owned()),
        ("OPENAI_BASE_URL", upstream.to_owned()),
        ("OPENAI_API_KEY", "sk-chaos".to_owned()),
        ("SWITCHBOARD_DEFAULT_MODEL", "gpt-test".to_owned()),
        ("SWITCHBOARD_TURN_TIMEOUT_SECS", TURN_TIMEOUT_SECS.to_string()),
        ("SWITCHBOARD_RATE_LIMIT_CHAT", "off".to_owned()),
        ("SWITCHBOARD_RATE_LIMIT_CHAT_PRINCIPAL", "off".to_owned()),
        ("SWITCHBOARD_RATE_LIMIT_API", "off".to_owned()),
        ("SWITCHBOARD_RATE_LIMIT_API_PRINCIPAL", "off".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]
}

fn panics_in(logs: &Path) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(dir) = std::fs::read_dir(logs) {
        for entry in dir.flatten() {
            if let Ok(text) = std::fs::read_to_string(entry.path()) {
                for line in text.lines().filter(|l| l.contains("panicked")) {
                    found.push(format!("{}: {line}", entry.file_name().to_string_lossy()));
                }
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Load.

#[derive(Clone, Debug)]
enum Kind {
    Ok,
    /// An HTTP error status, or the status of an SSE `error` event.
    Status(u16),
    /// The connection failed or was reset under the client.
    Transport(String),
    /// No answer within [`HANG`].
    Hang,
}

#[derive(Clone, Debug)]
struct Outcome {
    at: Instant,
    took: Duration,
    kind: Kind,
}

#[derive(Default)]
struct Load {
    stop: AtomicBool,
    outcomes: Mutex<Vec<Outcome>>,
    next: AtomicUsize,
}

impl Load {
    fn outcomes(&self) -> Vec<Outcome> {
        self.outcomes.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

async fn chat(client: &reqwest::Client, http: &str, user: &str, message: &str, stream: bool) -> Kind {
    let call = async {
        let body = json!({"system_id": "chaos", "user_id": user, "message": message, "stream": stream});
        let response = match client.post(format!("{http}/v1/chat")).header("X-API-Key", KEY).json(&body).send().await {
            Ok(r) => r,
            Err(e) => return Kind::Transport(e.to_string()),
        };
        let status = response.status().as_u16();
        if status != 200 {
            return Kind::Status(status);
        }
        let text = match response.text().await {
            Ok(t) => t,
            Err(e) => return Kind::Transport(e.to_string()),
        };
        if !stream {
            return match serde_json::from_str::<Value>(&text) {
                Ok(v) if v["answer"].is_string() => Kind::Ok,
                _ => Kind::Status(0),
            };
        }
        if text.contains("event: done") {
            Kind::Ok
        } else if let Some(data) = text.split("event: error\ndata: ").nth(1) {
            let status = serde_json::from_str::<Value>(data.lines().next().unwrap_or_default())
                .ok()
                .and_then(|v| v["status"].as_u64())
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(0);
            Kind::Status(status)
        } else {
            Kind::Transport("SSE stream ended without done or error".to_owned())
        }
    };
    tokio::time::timeout(HANG, call).await.unwrap_or(Kind::Hang)
}

/// `workers` loops of chat turns (every `stream_every`-th streamed), each a new conversation
/// with a unique message `{prefix}-{n}`, until stopped or `max` turns were sent.
fn start_load(
    http: &str,
    prefix: &'static str,
    workers: usize,
    stream_every: usize,
    max: usize,
) -> (Arc<Load>, Vec<JoinHandle<()>>) {
    let load = Arc::new(Load::default());
    let client = switchboard_test_support::http().build().unwrap_or_default();
    let handles = (0..workers)
        .map(|w| {
            let (load, client, http) = (load.clone(), client.clone(), http.to_owned());
            tokio::spawn(async move {
                let user = format!("{prefix}-u{w}");
                while !load.stop.load(Ordering::SeqCst) {
                    let n = load.next.fetch_add(1, Ordering::SeqCst);
                    if n >= max {
                        break;
                    }
                    let at = Instant::now();
                    let kind = chat(&client, &http, &user, &format!("{prefix}-{n}"), n % stream_every == 0).await;
                    let failed = !matches!(kind, Kind::Ok);
                    load.outcomes.lock().unwrap_or_else(PoisonError::into_inner).push(Outcome {
                        at,
                        took: at.elapsed(),
                        kind,
                    });
                    if failed {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    (load, handles)
}

async fn stop_load(load: &Load, handles: Vec<JoinHandle<()>>) {
    load.stop.store(true, Ordering::SeqCst);
    for h in handles {
        let _ = tokio::time::timeout(HANG + Duration::from_secs(2), h).await;
    }
}

#[derive(Default, Debug)]
struct Summary {
    ok: usize,
    statuses: BTreeMap<u16, usize>,
    transport: usize,
    hangs: usize,
    slowest: Duration,
    transport_examples: Vec<String>,
}

fn summarize<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) -> Summary {
    let mut s = Summary::default();
    for o in outcomes {
        s.slowest = s.slowest.max(o.took);
        match &o.kind {
            Kind::Ok => s.ok += 1,
            Kind::Status(code) => *s.statuses.entry(*code).or_default() += 1,
            Kind::Transport(e) => {
                s.transport += 1;
                if s.transport_examples.len() < 3 {
                    s.transport_examples.push(e.clone());
                }
            }
            Kind::Hang => s.hangs += 1,
        }
    }
    s
}

impl Summary {
    fn failed(&self) -> usize {
        self.statuses.values().sum::<usize>() + self.transport + self.hangs
    }
    fn statuses(&self) -> String {
        if self.statuses.is_empty() {
            return "none".to_owned();
        }
        self.statuses.iter().map(|(k, v)| format!("{v}×{k}")).collect::<Vec<_>>().join(", ")
    }
}

// ---------------------------------------------------------------------------------------------
// Report.

#[derive(Default)]
struct Report {
    rows: Vec<(String, String, bool)>,
}

impl Report {
    fn check(&mut self, what: &str, figure: String, ok: bool) {
        log(format!("{} {what}: {figure}", if ok { "PASS" } else { "FAIL" }));
        self.rows.push((what.to_owned(), figure, ok));
    }
    fn passed(&self) -> bool {
        self.rows.iter().all(|r| r.2)
    }
    fn print(&self) {
        let w = self.rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
        println!();
        println!("chaos figures");
        println!("{}", "-".repeat(100));
        for (what, figure, ok) in &self.rows {
            let pad = " ".repeat(w - what.chars().count());
            println!("{}  {what}{pad}  {figure}", if *ok { "PASS" } else { "FAIL" });
        }
        println!("{}", "-".repeat(100));
        println!("{}", if self.passed() { "chaos: every check passed" } else { "chaos: FAILED" });
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL.

async fn create_database(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("PostgreSQL is not reachable at {admin_url}"))?;
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}"))).execute(&mut admin).await?;
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await?;
    let _ = admin.close().await;
    let (base, _) = admin_url.rsplit_once('/').context("admin URL must end with a database name")?;
    Ok(format!("{base}/{name}"))
}

fn admin_url() -> String {
    std::env::var("SWITCHBOARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn pg_version() -> anyhow::Result<String> {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql")?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    versions.sort_unstable();
    versions.last().map(u32::to_string).context("no PostgreSQL version installed")
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Runs a PostgreSQL tool as the `postgres` user when this harness is root.
fn pg_command(tool: &str, args: &[&str]) -> anyhow::Result<Command> {
    let path = format!("/usr/lib/postgresql/{}/bin/{tool}", pg_version()?);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &path]);
        c
    } else {
        Command::new(path)
    };
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    Ok(cmd)
}

async fn run_ok(mut cmd: Command, what: &str, limit: Duration) -> anyhow::Result<()> {
    let out = tokio::time::timeout(limit, cmd.output()).await.with_context(|| format!("{what} timed out"))??;
    if !out.status.success() {
        bail!("{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The PostgreSQL server check 3 restarts.
enum Pg {
    /// A throwaway cluster of this run on a port of its own.
    Private { dir: tempfile::TempDir, port: u16 },
    /// The shared server (`pg_ctlcluster <version> main`).
    Shared,
}

impl Pg {
    async fn start() -> anyhow::Result<Self> {
        if std::env::var("CHAOS_PG").is_ok_and(|v| v == "shared") {
            return Ok(Pg::Shared);
        }
        let dir = tempfile::Builder::new().prefix("sb-chaos-pg-").tempdir()?;
        if is_root() {
            run_ok(
                {
                    let mut c = Command::new("chown");
                    c.args(["postgres:postgres", &dir.path().display().to_string()]);
                    c
                },
                "chown",
                Duration::from_secs(5),
            )
            .await?;
        }
        let data = dir.path().join("data").display().to_string();
        run_ok(
            pg_command("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "-N"])?,
            "initdb",
            Duration::from_secs(60),
        )
        .await?;
        let port = free_port()?;
        let pg = Pg::Private { dir, port };
        pg.action("start").await?;
        Ok(pg)
    }

    /// `start`, `stop` or `restart`.
    async fn action(&self, action: &str) -> anyhow::Result<()> {
        let Pg::Private { dir, port } = self else {
            let mut c = Command::new("pg_ctlcluster");
            c.args(["--skip-systemctl-redirect", &pg_version()?, "main", action]);
            return run_ok(c, &format!("pg_ctlcluster {action}"), Duration::from_secs(70)).await;
        };
        let data = dir.path().join("data").display().to_string();
        let logfile = dir.path().join("server.log").display().to_string();
        let opts = format!("-p {port} -c listen_addresses=127.0.0.1 -k {}", dir.path().display());
        run_ok(
            pg_command("pg_ctl", &["-D", &data, "-l", &logfile, "-o", &opts, "-m", "fast", "-w", "-t", "60", action])?,
            &format!("pg_ctl {action}"),
            Duration::from_secs(70),
        )
        .await
    }

    fn admin_url(&self) -> String {
        match self {
            Pg::Private { port, .. } => format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            Pg::Shared => admin_url(),
        }
    }

    async fn restart(&self) -> anyhow::Result<()> {
        self.action("restart").await
    }

    async fn stop(&self) {
        if matches!(self, Pg::Private { .. })
            && let Err(e) = self.action("stop").await
        {
            log(format!("stopping the private PostgreSQL: {e:#}"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Check 1: kill -9 loop.

async fn kill_loop(stack: &mut Stack, upstream: &MockUpstream, report: &mut Report) -> anyhow::Result<()> {
    log("check 1: kill -9 loop");
    upstream.set_delay(Duration::from_millis(60));
    upstream.set_chunk_delay(Duration::from_millis(15));
    let (load, handles) = start_load(&stack.http, "kill", 6, 3, 100_000);
    let deadline = Instant::now() + Duration::from_secs(100);
    let (mut conv_kills, mut llm_kills) = (0usize, 0usize);
    let mut restart_ms = Vec::new();
    let mut rng = rand::rng();
    let mut result = Ok(());
    while conv_kills + llm_kills < KILLS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..700))).await;
        let part = if rng.random_bool(0.5) { Part::Conversations } else { Part::Llm };
        if let Err(e) = stack.kill9(part).await {
            result = Err(e);
            break;
        }
        match part {
            Part::Conversations => conv_kills += 1,
            _ => llm_kills += 1,
        }
        let t = Instant::now();
        if let Err(e) = stack.spawn(part).await {
            result = Err(e);
            break;
        }
        restart_ms.push(t.elapsed().as_millis());
    }
    stop_load(&load, handles).await;
    result?;
    let kills = conv_kills + llm_kills;
    let summary = summarize(&load.outcomes());
    log(format!(
        "{kills} kills ({conv_kills} conversations, {llm_kills} llm-proxy); turns: {} ok, failed: {} (statuses {}, transport {}, hangs {})",
        summary.ok,
        summary.failed(),
        summary.statuses(),
        summary.transport,
        summary.hangs
    ));
    // Let every answer age past the turn timeout, then restart the conversation service:
    // its start-up sweep closes what a crash left in progress.
    tokio::time::sleep(Duration::from_secs(TURN_TIMEOUT_SECS + 1)).await;
    stack.stop(Part::Conversations).await?;
    stack.spawn(Part::Conversations).await?;

    let mut db = sqlx::PgConnection::connect(&stack.db_url).await?;
    let stored: HashSet<String> =
        sqlx::query_scalar::<_, String>("SELECT content FROM messages WHERE role = 'user' AND content LIKE 'kill-%'")
            .fetch_all(&mut db)
            .await?
            .into_iter()
            .collect();
    let requests = upstream.requests();
    let mut lost = Vec::new();
    for body in &requests {
        let last = body["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_owned();
        if !stored.contains(&last) {
            lost.push(last);
        }
    }
    let in_progress: i64 =
        sqlx::query_scalar("SELECT count(*) FROM messages WHERE status = 'in_progress'").fetch_one(&mut db).await?;
    let swept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM messages WHERE error LIKE 'interrupted%'").fetch_one(&mut db).await?;
    let _ = db.close().await;
    if !lost.is_empty() {
        log(format!("user messages the upstream got but the store lacks (first 5): {:?}", &lost[..lost.len().min(5)]));
    }
    let avg_restart = restart_ms.iter().sum::<u128>() / restart_ms.len().max(1) as u128;
    report.check(
        "kill -9 loop",
        format!(
            "{kills} kills ({conv_kills} conversations, {llm_kills} llm-proxy, restart to ready avg {avg_restart} ms); \
             {} turns ok, {} failed ({}, {} transport)",
            summary.ok,
            summary.failed(),
            summary.statuses(),
            summary.transport
        ),
        kills >= KILLS && summary.ok > 0,
    );
    let unclean: usize = summary.statuses.iter().filter(|(s, _)| !matches!(s, 502..=504)).map(|(_, n)| n).sum();
    report.check(
        "kill -9: clean failures",
        format!(
            "{} failed turns: {} unclean statuses, {} transport errors, {} hangs (> {} s; slowest {:.1} s)",
            summary.failed(),
            unclean,
            summary.transport,
            summary.hangs,
            HANG.as_secs(),
            summary.slowest.as_secs_f64()
        ),
        unclean == 0 && summary.transport == 0 && summary.hangs == 0,
    );
    report.check(
        "kill -9: committed user messages",
        format!("{} upstream calls, {} lost user messages", requests.len(), lost.len()),
        lost.is_empty() && !requests.is_empty(),
    );
    report.check(
        "kill -9: sweeper",
        format!("{in_progress} answers left in progress ({swept} closed as interrupted)"),
        in_progress == 0,
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Check 2: SIGTERM with open streams.

struct OpenStream {
    conversation_id: String,
    kind: Kind,
    /// How a stream that did not end with `done` ended: its `error` event, or why.
    failure: Option<String>,
}

/// One streamed turn; `delta` fires once the first text arrived.
async fn open_stream(
    client: reqwest::Client,
    http: String,
    n: usize,
    delta: tokio::sync::oneshot::Sender<()>,
) -> OpenStream {
    let mut conversation_id = String::new();
    let mut delta = Some(delta);
    let mut failure = None;
    let call = async {
        let body = json!({"system_id": "chaos", "user_id": format!("term-sse-{n}"),
                          "message": format!("term-sse-{n} tell me something long"), "stream": true});
        let response = match client.post(format!("{http}/v1/chat")).header("X-API-Key", KEY).json(&body).send().await {
            Ok(r) => r,
            Err(e) => return Kind::Transport(e.to_string()),
        };
        if response.status() != 200 {
            return Kind::Status(response.status().as_u16());
        }
        let mut bytes = response.bytes_stream();
        let mut text = String::new();
        while let Some(chunk) = bytes.next().await {
            match chunk {
                Ok(c) => text.push_str(&String::from_utf8_lossy(&c)),
                Err(e) => return Kind::Transport(e.to_string()),
            }
            if conversation_id.is_empty()
                && let Some(data) = text.split("event: start\ndata: ").nth(1)
                && let Ok(v) = serde_json::from_str::<Value>(data.lines().next().unwrap_or_default())
            {
                conversation_id = v["conversation_id"].as_str().unwrap_or_default().to_owned();
            }
            if text.contains("event: delta")
                && let Some(tx) = delta.take()
            {
                let _ = tx.send(());
            }
        }
        if text.contains("event: done") {
            Kind::Ok
        } else if let Some(error) = text.split("event: error\ndata: ").nth(1) {
            failure = Some(error.lines().next().unwrap_or_default().to_owned());
            Kind::Status(0)
        } else {
            Kind::Transport("stream ended without done".to_owned())
        }
    };
    let kind = tokio::time::timeout(Duration::from_secs(20), call).await.unwrap_or(Kind::Hang);
    let failure = failure.or_else(|| match &kind {
        Kind::Ok => None,
        other => Some(format!("{other:?}")),
    });
    OpenStream { conversation_id, kind, failure }
}

async fn sigterm(stack: &mut Stack, upstream: &MockUpstream, report: &mut Report) -> anyhow::Result<()> {
    log("check 2: SIGTERM of the conversation service with open streams");
    const STREAMS: usize = 8;
    upstream.set_delay(Duration::ZERO);
    // "upstream reply to: term-sse-N tell me something long": 8 chunks of 250 ms each.
    upstream.set_chunk_delay(Duration::from_millis(250));
    let (load, handles) = start_load(&stack.http, "term-bg", 2, 1_000_000, 100_000);
    let client = switchboard_test_support::http().build().unwrap_or_default();
    let mut streams = Vec::new();
    let mut deltas = Vec::new();
    for n in 0..STREAMS {
        let (tx, rx) = tokio::sync::oneshot::channel();
        streams.push(tokio::spawn(open_stream(client.clone(), stack.http.clone(), n, tx)));
        deltas.push(rx);
    }
    for rx in deltas {
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .context("a stream saw no text within 10 s")?
            .context("a stream ended before its first text")?;
    }
    // A health watch opened before the signal sees the change as it happens.
    let port = stack.port(Part::Conversations);
    let channel = health_channel(port).await.context("no health channel")?;
    let mut watch = HealthClient::new(channel).watch(HealthCheckRequest { service: String::new() }).await?.into_inner();
    let first: Option<HealthCheckResponse> = watch.message().await?;
    let serving = first.map(|r| r.status) == Some(ServingStatus::Serving as i32);
    let t0 = Instant::now();
    let mut child = stack.sigterm(Part::Conversations)?;
    let not_serving = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match watch.message().await {
                Ok(Some(r)) if r.status == ServingStatus::NotServing as i32 => return Some(t0.elapsed()),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .ok()
    .flatten();
    let mut results = Vec::new();
    for s in streams {
        results.push(tokio::time::timeout(Duration::from_secs(25), s).await.context("stream task hung")??);
    }
    // The watch is still open (as a mesh's health watcher's would be): the drain must not wait on it.
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    let drained_in = t0.elapsed();
    drop(watch);
    stop_load(&load, handles).await;
    let exited_cleanly = matches!(&exit, Ok(Ok(s)) if s.success());
    if exit.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    let completed_streams = results.iter().filter(|r| matches!(r.kind, Kind::Ok)).count();
    let resets_streams = results.iter().filter(|r| !matches!(r.kind, Kind::Ok | Kind::Status(_))).count();
    let bg = summarize(&load.outcomes());

    let ids: Vec<String> = results.iter().map(|r| r.conversation_id.clone()).filter(|c| !c.is_empty()).collect();
    let mut db = sqlx::PgConnection::connect(&stack.db_url).await?;
    let complete: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE role = 'assistant' AND status = 'complete' AND conversation_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(&mut db)
    .await?;
    let usage: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_records WHERE conversation_id = ANY($1)")
        .bind(&ids)
        .fetch_one(&mut db)
        .await?;
    let _ = db.close().await;
    // Serve again for what follows.
    stack.spawn(Part::Conversations).await?;

    let ms = not_serving.map_or("never".to_owned(), |d| format!("{} ms", d.as_millis()));
    report.check(
        "SIGTERM: health",
        format!("SERVING before: {serving}; NOT_SERVING after {ms}"),
        serving && not_serving.is_some_and(|d| d < Duration::from_millis(500)),
    );
    report.check(
        "SIGTERM: in-flight turns",
        format!(
            "{completed_streams}/{STREAMS} open streams ended with `done`, {complete} answers stored complete; \
             process exited {} after {} ms (a health watch held open){}",
            if exited_cleanly { "0" } else { "non-zero or hung" },
            drained_in.as_millis(),
            results
                .iter()
                .find_map(|r| r.failure.as_deref())
                .map_or(String::new(), |f| format!("; a stream ended: {f}"))
        ),
        completed_streams == STREAMS && complete == STREAMS as i64 && exited_cleanly,
    );
    let unclean: usize = bg.statuses.iter().filter(|(s, _)| !matches!(s, 502..=504)).map(|(_, n)| n).sum();
    report.check(
        "SIGTERM: clean failures",
        format!("{unclean} unclean statuses among {} failed other requests", bg.failed()),
        unclean == 0,
    );
    report.check(
        "SIGTERM: resets",
        format!(
            "{} resets ({resets_streams} on open streams, {} on {} other requests: {} ok, {}){}",
            resets_streams + bg.transport + bg.hangs,
            bg.transport + bg.hangs,
            bg.ok + bg.failed(),
            bg.ok,
            bg.statuses(),
            if bg.transport_examples.is_empty() { String::new() } else { format!(" e.g. {:?}", bg.transport_examples) }
        ),
        resets_streams + bg.transport + bg.hangs == 0,
    );
    report.check(
        "SIGTERM: batched writes",
        format!("{usage}/{STREAMS} usage records flushed"),
        usage == STREAMS as i64,
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Check 3: PostgreSQL restart.

async fn pg_restart(bin: &Path, logs: &Path, report: &mut Report) -> anyhow::Result<()> {
    log("check 3: PostgreSQL restart under load");
    let pg = Pg::start().await?;
    let result = pg_restart_on(&pg, bin, logs, report).await;
    pg.stop().await;
    result
}

async fn pg_restart_on(pg: &Pg, bin: &Path, logs: &Path, report: &mut Report) -> anyhow::Result<()> {
    let db_url = create_database(&pg.admin_url(), "sb_chaos_pg_restart").await?;
    let upstream = MockUpstream::start().await;
    upstream.set_delay(Duration::from_millis(30));
    let mut stack = Stack::start("pg", bin, logs, &db_url, &settings(&upstream.base_url())).await?;
    let (load, handles) = start_load(&stack.http, "pg", 4, 4, 100_000);
    let result = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = summarize(&load.outcomes());
        report.check(
            "PostgreSQL: load before",
            format!("{} ok, {} failed", before.ok, before.failed()),
            before.ok > 0 && before.failed() == 0,
        );
        // A restart, then an outage longer than the pool's acquire timeout (5 s): stop, wait, start.
        disrupt(pg, &load, Disruption::Restart, report).await?;
        disrupt(pg, &load, Disruption::Outage, report).await?;
        let panics = panics_in(logs);
        report.check(
            "no panics",
            format!(
                "{} panic lines in the component logs{}",
                panics.len(),
                panics.first().map_or(String::new(), |p| format!(": {p}"))
            ),
            panics.is_empty(),
        );
        anyhow::Ok(())
    }
    .await;
    stop_load(&load, handles).await;
    stack.stop_all().await;
    result
}

#[derive(Clone, Copy, PartialEq)]
enum Disruption {
    Restart,
    Outage,
}

/// Restarts PostgreSQL (or stops it for [`OUTAGE`]) under `load`, then waits (at most 40 s) until
/// 20 turns in a row succeeded, and reports how requests fared from the disruption on.
async fn disrupt(pg: &Pg, load: &Load, how: Disruption, report: &mut Report) -> anyhow::Result<()> {
    let t_start = Instant::now();
    match how {
        Disruption::Restart => pg.restart().await?,
        Disruption::Outage => {
            pg.action("stop").await?;
            tokio::time::sleep(OUTAGE).await;
            pg.action("start").await?;
        }
    }
    let t_up = Instant::now();
    let deadline = t_up + Duration::from_secs(40);
    let recovered = loop {
        let after: Vec<Outcome> = load.outcomes().into_iter().filter(|o| o.at >= t_up).collect();
        let tail = after.iter().rev().take_while(|o| matches!(o.kind, Kind::Ok)).count();
        if tail >= 20 {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let t_end = Instant::now();
    let outcomes = load.outcomes();
    let since = summarize(outcomes.iter().filter(|o| o.at >= t_start && o.at < t_end));
    let first_ok = outcomes.iter().filter(|o| o.at >= t_up && matches!(o.kind, Kind::Ok)).map(|o| o.at).min();
    let reconnect = first_ok.map(|t| t.duration_since(t_up));
    let unclean: usize = since.statuses.iter().filter(|(s, _)| !matches!(s, 502..=504)).map(|(_, n)| n).sum();
    let what = match how {
        Disruption::Restart => "PostgreSQL restart",
        Disruption::Outage => "PostgreSQL down 7 s",
    };
    report.check(
        &format!("{what}: reconnect"),
        format!(
            "down for {:.1} s; reconnected after {} (first success); {} turns ok until 20 in a row",
            t_up.duration_since(t_start).as_secs_f64(),
            reconnect.map_or("never".to_owned(), |d| format!("{:.2} s", d.as_secs_f64())),
            since.ok
        ),
        recovered,
    );
    report.check(
        &format!("{what}: clean failures"),
        format!(
            "{} failed requests ({}), {} unclean statuses, {} transport errors, {} hangs (> {} s; slowest {:.1} s){}",
            since.failed(),
            since.statuses(),
            unclean,
            since.transport,
            since.hangs,
            HANG.as_secs(),
            since.slowest.as_secs_f64(),
            if since.transport_examples.is_empty() {
                String::new()
            } else {
                format!(" e.g. {:?}", since.transport_examples)
            }
        ),
        unclean == 0 && since.transport == 0 && since.hangs == 0,
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------

async fn kill_and_term(bin: &Path, logs: &Path, report: &mut Report) -> anyhow::Result<()> {
    let db_url = create_database(&admin_url(), "sb_chaos_kill").await?;
    let upstream = MockUpstream::start().await;
    let mut stack = Stack::start("kill", bin, logs, &db_url, &settings(&upstream.base_url())).await?;
    let mut result = kill_loop(&mut stack, &upstream, report).await;
    if let Err(e) = &result {
        report.check("kill -9 loop", format!("error: {e:#}"), false);
    }
    if stack.children[Part::Conversations.index()].is_none() {
        result = stack.spawn(Part::Conversations).await;
    }
    if result.is_ok()
        && let Err(e) = sigterm(&mut stack, &upstream, report).await
    {
        report.check("SIGTERM", format!("error: {e:#}"), false);
    }
    stack.stop_all().await;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    started();
    let bin = std::env::var_os("SWITCHBOARD_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| "target".into());
        target.join("debug/switchboard")
    });
    if !bin.exists() {
        eprintln!("chaos: no switchboard binary at {} (set SWITCHBOARD_BIN)", bin.display());
        return std::process::ExitCode::FAILURE;
    }
    let logs = match tempfile::Builder::new().prefix("sb-chaos-logs-").tempdir() {
        Ok(d) => d.keep(),
        Err(e) => {
            eprintln!("chaos: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    log(format!("binary {}, component logs in {}", bin.display(), logs.display()));
    let mut report = Report::default();
    let all = async {
        if let Err(e) = kill_and_term(&bin, &logs, &mut report).await {
            report.check("kill -9 / SIGTERM setup", format!("error: {e:#}"), false);
        }
        if let Err(e) = pg_restart(&bin, &logs, &mut report).await {
            report.check("PostgreSQL restart", format!("error: {e:#}"), false);
        }
    };
    // The whole run is bounded too.
    if tokio::time::timeout(Duration::from_secs(220), all).await.is_err() {
        report.check("time bound", "the run took more than 220 s".to_owned(), false);
    }
    report.print();
    if report.passed() { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
}
