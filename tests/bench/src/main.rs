//! `make bench`: what Switchboard adds to a request, measured side by side in one run on this
//! machine — the same request straight to the mock upstream and through Switchboard (and,
//! when installed, through LiteLLM proxy) at fixed rates, open loop with latency correction.
//!
//! - `POST /v1/chat/completions` (API-key auth; gateway → LLM proxy → upstream) at 1k, 2k and
//!   5k requests/s with `oha`, stopping where the mock alone saturates;
//! - streamed completions at 100 streams/s: time to first token and to the end;
//! - `POST /v1/chat` (a new conversation each: auth, store, history, persistence) on SQLite and
//!   on PostgreSQL with Redis;
//! - gRPC `LlmService/Complete` and `ConversationService/SendMessage` as an internal caller;
//! - CPU time per request across Switchboard's processes and each one's peak resident memory,
//!   from `/proc`.
//!
//! Switchboard runs as an operator runs it: the release `switchboard` binary, one process per
//! component (`SWITCHBOARD_BIN`); the mock upstream is a process of its own (`mock-upstream`).
//! Results go to `bench/results/<time>.{json,md}` and `bench/results/latest.md`, and the table
//! is printed. `BENCH_SECONDS` sets each point's length (default 8); `LITELLM` names the
//! `litellm` executable of the peer column (`make bench` installs it; `BENCH_PEER=none` skips it).
//! `BENCH_ONLY` runs some parts only (a comma list of `completions`, `stream`, `grpc`,
//! `chat-sqlite`, `chat-postgres`, `litellm`); `BENCH_ENV` adds settings to every Switchboard
//! component (`NAME=value`, space separated, e.g. `TOKIO_WORKER_THREADS=2`), or to one
//! (`conversations:TOKIO_WORKER_THREADS=1`), and the report names them; unset, each component
//! process runs one async worker, as a pod with the manifests' CPU limit of 1 does.
//! `BENCH_LAYOUT=one-process` runs every component in one process, as `make run` does (calls
//! between components then stay in-process, on as many workers as the machine has cores),
//! instead of one process per component. `BENCH_CHAT_RATES` sets the
//! `/v1/chat` rates (a comma list; default 200,500,1000), e.g. to find where a store saturates.

mod litellm;
mod load;
mod oha;
mod proc;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use switchboard_test_support::stack::{Layout, Part, Stack};

use report::{Memory, Point, Report, Target};

/// The static service key of the benchmark's Switchboard.
const SERVICE_KEY: &str = "bench-service-key-0123456789";
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
const UPSTREAM_KEY: &str = "sk-upstream-bench";
/// Non-streaming completion rates, per second.
const COMPLETION_RATES: [f64; 3] = [1000.0, 2000.0, 5000.0];
const STREAM_RATE: f64 = 100.0;
/// The machine's database and cache processes, whose CPU the turns on PostgreSQL also cost.
const SERVICES: &[&str] = &["postgres", "redis-server"];
const CHAT_RATES: [f64; 3] = [200.0, 500.0, 1000.0];
const GRPC_COMPLETE_RATES: [f64; 3] = [1000.0, 2000.0, 5000.0];
const GRPC_TURN_RATES: [f64; 2] = [200.0, 500.0];

fn log(message: impl AsRef<str>) {
    eprintln!("[bench] {}", message.as_ref());
}

fn completion_body(stream: bool) -> Value {
    json!({"model": "gpt-test", "messages": [{"role": "user", "content": "Say hello in five words"}], "stream": stream})
}

/// What an oha point measures: a scenario, who answers it, where, with which key.
#[derive(Clone, Copy)]
struct Aim<'a> {
    scenario: &'a str,
    target: Target,
    url: &'a str,
    key: &'a str,
}

/// Everything a measurement needs.
struct Bench {
    oha: PathBuf,
    seconds: Duration,
    upstream: String,
    report: Report,
    http: reqwest::Client,
}

impl Bench {
    /// Measures `aim` with oha, counting the CPU of `pids` (if any) per answered request.
    async fn oha_point(
        &mut self,
        aim: Aim<'_>,
        body: &Value,
        rate: f64,
        pids: &[(&'static str, u32)],
    ) -> anyhow::Result<oha::Run> {
        let Aim { scenario, target, url, key } = aim;
        let before: Vec<Duration> = pids.iter().map(|(_, pid)| proc::cpu(*pid)).collect();
        // Only turns on PostgreSQL use the machine's services.
        let services = scenario.contains("postgres").then(|| proc::cpu_of_named(SERVICES));
        let bearer = format!("Bearer {key}");
        let watch = proc::RssWatch::start(pids);
        let run = oha::post(&self.oha, url, body, &[("Authorization", &bearer)], rate, self.seconds).await;
        let rss = watch.stop().await;
        let run = run?;
        let cpu = cpu_per_request(pids, &before, run.answered as usize);
        let services_ms = services.filter(|_| run.answered > 0).map(|before| {
            proc::cpu_of_named(SERVICES).saturating_sub(before).as_secs_f64() * 1000.0 / run.answered as f64
        });
        log(format!(
            "{scenario} {target:?} @ {rate} rps: p50 {:.3} p90 {:.3} p99 {:.3} ms, {:.0} rps, {} failed{}{}",
            run.p50_ms,
            run.p90_ms,
            run.p99_ms,
            run.achieved_rps,
            run.failed(),
            cpu.as_ref().map_or(String::new(), |(total, _)| format!(", {total:.3} ms CPU/request")),
            services_ms.map_or(String::new(), |ms| format!(", PostgreSQL + Redis {ms:.3} ms CPU/request"))
        ));
        let mut point = Point::from_oha(scenario, target, rate, &run, cpu);
        point.services_cpu_ms_per_request = services_ms;
        point.set_rss(rss);
        self.report.points.push(point);
        Ok(run)
    }

    /// Measures an open-loop run of `call`, counting the CPU of `pids` per request.
    async fn open_loop_point<F, Fut>(
        &mut self,
        scenario: &str,
        target: Target,
        rate: f64,
        pids: &[(&'static str, u32)],
        call: F,
    ) -> load::Outcome
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = load::CallResult> + Send + 'static,
    {
        let before: Vec<Duration> = pids.iter().map(|(_, pid)| proc::cpu(*pid)).collect();
        let watch = proc::RssWatch::start(pids);
        let outcome = load::open_loop(rate, self.seconds, call).await;
        let rss = watch.stop().await;
        let cpu = cpu_per_request(pids, &before, outcome.sent);
        let mut point = Point::from_outcome(scenario, target, rate, &outcome, cpu);
        point.set_rss(rss);
        log(format!(
            "{scenario} {target:?} @ {rate}/s: p50 {:.3} p99 {:.3} ms{}, {} failed",
            point.p50_ms,
            point.p99_ms,
            point.ttft_p99_ms.map_or(String::new(), |t| format!(", first token p99 {t:.3} ms")),
            outcome.failed()
        ));
        self.report.points.push(point);
        outcome
    }
}

/// `(all processes, by process)` CPU ms per request since `before`.
fn cpu_per_request(
    pids: &[(&'static str, u32)],
    before: &[Duration],
    requests: usize,
) -> Option<(f64, Vec<(String, f64)>)> {
    if pids.is_empty() || requests == 0 {
        return None;
    }
    let each: Vec<(String, f64)> = pids
        .iter()
        .zip(before)
        .map(|((name, pid), before)| {
            ((*name).to_owned(), proc::cpu(*pid).saturating_sub(*before).as_secs_f64() * 1000.0 / requests as f64)
        })
        .collect();
    Some((each.iter().map(|(_, ms)| ms).sum(), each))
}

fn stack_pids(stack: &Stack) -> Vec<(&'static str, u32)> {
    stack.processes()
}

/// `BENCH_LAYOUT`: one process per component (`processes`, the default) or `one-process`.
/// The `/v1/chat` rates: `BENCH_CHAT_RATES` (a comma list of requests/s), or [`CHAT_RATES`].
fn chat_rates() -> anyhow::Result<Vec<f64>> {
    let Ok(list) = std::env::var("BENCH_CHAT_RATES") else { return Ok(CHAT_RATES.to_vec()) };
    list.split(',')
        .map(|rate| match rate.trim().parse::<f64>() {
            Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
            _ => bail!("BENCH_CHAT_RATES: {rate:?} is not a rate (requests per second, e.g. 1000,1500,2000)"),
        })
        .collect()
}

fn layout() -> anyhow::Result<Layout> {
    match std::env::var("BENCH_LAYOUT").as_deref() {
        Err(_) | Ok("" | "processes") => Ok(Layout::Processes),
        Ok("one-process") => Ok(Layout::OneProcess),
        Ok(other) => bail!("BENCH_LAYOUT={other:?}: expected processes or one-process"),
    }
}

fn stack_memory(stack: &Stack, backend: &str) -> Vec<Memory> {
    stack_pids(stack)
        .into_iter()
        .map(|(component, pid)| {
            let (_, peak) = proc::memory(pid);
            Memory { component: format!("{component} ({backend})"), peak_rss_mib: proc::mib(peak) }
        })
        .collect()
}

/// The parts of a run `BENCH_ONLY` selects: every part when it is unset.
struct Only(Option<Vec<String>>);

impl Only {
    const PARTS: [&str; 6] = ["completions", "stream", "grpc", "chat-sqlite", "chat-postgres", "litellm"];

    fn from_env() -> anyhow::Result<Self> {
        let Ok(list) = std::env::var("BENCH_ONLY") else { return Ok(Self(None)) };
        let parts: Vec<String> = list.split(',').map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect();
        if let Some(unknown) = parts.iter().find(|p| !Self::PARTS.contains(&p.as_str())) {
            bail!("BENCH_ONLY: unknown part {unknown:?} (expected some of {})", Self::PARTS.join(", "));
        }
        Ok(Self(Some(parts)))
    }

    fn wants(&self, part: &str) -> bool {
        self.0.as_ref().is_none_or(|parts| parts.iter().any(|p| p == part))
    }
}

/// What each component process of [`Layout::Processes`] gets unless `BENCH_ENV` says otherwise:
/// one async worker, as in a Kubernetes pod with a CPU limit of 1 (the manifests' limit), where
/// the standard library, and so tokio, counts the cgroup's quota instead of the node's cores.
const POD_SETTINGS: &str = "TOKIO_WORKER_THREADS=1";

/// `BENCH_ENV`: settings added to every component, as `NAME=value` words; unset or empty, the
/// layout's own ([`POD_SETTINGS`] for a process per component, none for one process).
fn extra_settings(layout: Layout, bench_env: Option<&str>) -> anyhow::Result<Vec<(&'static str, String)>> {
    let words = match bench_env {
        Some(words) if !words.trim().is_empty() => words,
        _ if layout == Layout::Processes => POD_SETTINGS,
        _ => return Ok(Vec::new()),
    };
    words
        .split_whitespace()
        .map(|word| match word.split_once('=') {
            Some((name, value)) if !name.is_empty() => {
                if let Some((part, _)) = name.split_once(':')
                    && !Part::ALL.iter().any(|p| p.command() == part)
                {
                    bail!(
                        "BENCH_ENV: {part:?} in {word:?} is not a component (auth, llm-proxy, conversations, gateway)"
                    );
                }
                Ok((&*name.to_owned().leak(), value.to_owned()))
            }
            _ => bail!("BENCH_ENV: {word:?} is not NAME=value or component:NAME=value"),
        })
        .collect()
}

fn settings(upstream: &str, redis: Option<&str>) -> Vec<(&'static str, String)> {
    let mut settings = vec![
        ("CHAT_GATEWAY_API_KEY", SERVICE_KEY.to_owned()),
        ("SWITCHBOARD_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("OPENAI_BASE_URL", upstream.to_owned()),
        ("OPENAI_API_KEY", UPSTREAM_KEY.to_owned()),
        ("SWITCHBOARD_DEFAULT_MODEL", "gpt-test".to_owned()),
        ("SWITCHBOARD_RATE_LIMIT_CHAT", "off".to_owned()),
        ("SWITCHBOARD_RATE_LIMIT_CHAT_PRINCIPAL", "off".to_owned()),
        ("SWITCHBOARD_RATE_LIMIT_API", "off".to_owned()),
        ("SWITCHBOARD_RATE_LIMIT_API_PRINCIPAL", "off".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    if let Some(redis) = redis {
        settings.push(("REDIS_URL", redis.to_owned()));
    }
    settings
}

async fn client_key(http: &reqwest::Client, gateway: &str) -> anyhow::Result<String> {
    let answer: Value = http
        .post(format!("{gateway}/api-keys"))
        .header("x-admin-token", ADMIN_TOKEN)
        .json(&json!({"client_name": "bench"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    answer["api_key"].as_str().map(str::to_owned).context("no api_key in the answer")
}

/// Starts the mock upstream process; its base URL (`…/v1`) and the child.
async fn start_mock() -> anyhow::Result<(String, tokio::process::Child)> {
    use tokio::io::AsyncBufReadExt;
    let bin = std::env::current_exe()?.with_file_name("mock-upstream");
    let mut child = tokio::process::Command::new(&bin)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let stdout = child.stdout.take().context("mock stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let url = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await??.context("mock said nothing")?;
    Ok((url, child))
}

/// The non-streaming completions: the mock alone, then Switchboard, at each rate.
async fn completions(bench: &mut Bench, stack: &Stack, key: &str) -> anyhow::Result<()> {
    let body = completion_body(false);
    let direct = format!("{}/chat/completions", bench.upstream);
    let through = format!("{}/v1/chat/completions", stack.http);
    let pids = stack_pids(stack);
    // Warm both paths (connections, caches) before measuring.
    let bearer = format!("Bearer {key}");
    oha::post(&bench.oha, &through, &body, &[("Authorization", &bearer)], 500.0, Duration::from_secs(1)).await?;
    for rate in COMPLETION_RATES {
        let alone = bench
            .oha_point(
                Aim { scenario: "completions", target: Target::Direct, url: &direct, key: UPSTREAM_KEY },
                &body,
                rate,
                &[],
            )
            .await?;
        bench
            .oha_point(
                Aim { scenario: "completions", target: Target::Switchboard, url: &through, key },
                &body,
                rate,
                &pids,
            )
            .await?;
        if alone.achieved_rps < rate * 0.9 || alone.failed() > 0 {
            log(format!("the mock alone saturates at {rate} rps: stopping there"));
            break;
        }
    }
    Ok(())
}

async fn streams(bench: &mut Bench, base: &str, key: &str, target: Target, pids: &[(&'static str, u32)]) {
    let url = format!("{base}/chat/completions");
    let client = switchboard_test_support::http().pool_max_idle_per_host(256).build().unwrap_or_default();
    let key = key.to_owned();
    bench
        .open_loop_point("stream", target, STREAM_RATE, pids, move |_| {
            load::stream_completion(client.clone(), url.clone(), key.clone(), completion_body(true))
        })
        .await;
}

/// `POST /v1/chat`, a new conversation each time, at each rate (next to the mock alone).
async fn turns(bench: &mut Bench, stack: &Stack, scenario: &str, rates: &[f64]) -> anyhow::Result<()> {
    let pids = stack_pids(stack);
    let url = format!("{}/v1/chat", stack.http);
    let direct = format!("{}/chat/completions", bench.upstream);
    let body = json!({"system_id": "bench", "user_id": "reader", "message": "Say hello in five words"});
    for &rate in rates {
        if bench.report.find("completions", Target::Direct, rate).is_none() {
            let aim = Aim { scenario: "completions", target: Target::Direct, url: &direct, key: UPSTREAM_KEY };
            bench.oha_point(aim, &completion_body(false), rate, &[]).await?;
        }
        let aim = Aim { scenario, target: Target::Switchboard, url: &url, key: SERVICE_KEY };
        let run = bench.oha_point(aim, &body, rate, &pids).await?;
        if run.failed() * 10 > run.answered.max(1) {
            log(format!("{scenario} fails at {rate} rps: stopping there"));
            break;
        }
    }
    Ok(())
}

async fn grpc(bench: &mut Bench, stack: &Stack) -> anyhow::Result<()> {
    use switchboard_proto::conversation::v1 as conv;
    use switchboard_proto::llm::v1 as llm;
    let pids = stack_pids(stack);
    let channel = |port: u16| {
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).map(|e| e.connect_lazy())
    };
    let key: tonic::metadata::MetadataValue<_> = SERVICE_KEY.parse()?;
    let llm_client = llm::llm_service_client::LlmServiceClient::new(channel(stack.port(Part::Llm))?);
    for rate in GRPC_COMPLETE_RATES {
        let (client, key) = (llm_client.clone(), key.clone());
        bench
            .open_loop_point("grpc Complete", Target::Switchboard, rate, &pids, move |_| {
                let (mut client, key) = (client.clone(), key.clone());
                async move {
                    let mut request = tonic::Request::new(llm::CompleteRequest {
                        messages: vec![llm::ChatMessage {
                            role: llm::Role::User as i32,
                            content: "Say hello in five words".to_owned(),
                        }],
                        principal: Some(llm::Principal { system_id: "bench".into(), user_id: "grpc".into() }),
                        ..Default::default()
                    });
                    request.metadata_mut().insert("x-api-key", key);
                    client.complete(request).await.map(|_| None).map_err(|s| format!("{:?}", s.code()))
                }
            })
            .await;
    }
    let turns =
        conv::conversation_service_client::ConversationServiceClient::new(channel(stack.port(Part::Conversations))?);
    for rate in GRPC_TURN_RATES {
        let (client, key) = (turns.clone(), key.clone());
        bench
            .open_loop_point("grpc SendMessage", Target::Switchboard, rate, &pids, move |i| {
                let (mut client, key) = (client.clone(), key.clone());
                async move {
                    let mut request = tonic::Request::new(conv::SendMessageRequest {
                        principal: Some(conv::Principal {
                            system_id: "bench".into(),
                            user_id: format!("grpc-{}", i % 100),
                        }),
                        message: "Say hello in five words".to_owned(),
                        ..Default::default()
                    });
                    request.metadata_mut().insert("x-api-key", key);
                    client.send_message(request).await.map(|_| None).map_err(|s| format!("{:?}", s.code()))
                }
            })
            .await;
    }
    Ok(())
}

async fn postgres_database() -> anyhow::Result<(String, String)> {
    let admin = std::env::var("SWITCHBOARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let name = format!("bench_{}", std::process::id());
    let status = tokio::process::Command::new("psql")
        .args([admin.as_str(), "-Atqc", &format!("CREATE DATABASE {name}")])
        .status()
        .await
        .context("psql")?;
    if !status.success() {
        bail!("cannot create database {name} on {admin}");
    }
    let url = match admin.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => bail!("SWITCHBOARD_TEST_POSTGRES_URL has no database"),
    };
    Ok((admin, url))
}

async fn run() -> anyhow::Result<()> {
    let bin = PathBuf::from(std::env::var("SWITCHBOARD_BIN").context("SWITCHBOARD_BIN names the release binary")?);
    let oha = PathBuf::from(std::env::var("OHA").unwrap_or_else(|_| "oha".to_owned()));
    let seconds = Duration::from_secs(std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(8));
    let out = PathBuf::from(std::env::var("BENCH_RESULTS").unwrap_or_else(|_| "bench/results".to_owned()));
    let logs = tempfile::Builder::new().prefix("sb-bench-logs-").tempdir()?.keep();
    log(format!("component logs in {}", logs.display()));

    let (upstream, mut mock) = start_mock().await?;
    let mock_pid = mock.id().context("mock pid")?;
    let mut bench = Bench {
        oha,
        seconds,
        upstream: upstream.clone(),
        report: Report::new(proc::machine(), seconds),
        http: switchboard_test_support::http().build().unwrap_or_default(),
    };

    let only = Only::from_env()?;
    let layout = layout()?;
    let chat_rates = chat_rates()?;
    bench.report.layout = match layout {
        Layout::Processes => "one process per component, as on Kubernetes",
        Layout::OneProcess => "every component in one process, as `make run` (calls between components in-process)",
    };
    log(format!("layout: {}", bench.report.layout));
    let extra = extra_settings(layout, std::env::var("BENCH_ENV").ok().as_deref())?;
    if !extra.is_empty() {
        let shown: Vec<String> = extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
        bench.report.settings = shown.join(" ");
        log(format!("every component runs with {}", bench.report.settings));
    }
    let with_extra = |mut settings: Vec<(&'static str, String)>| {
        settings.extend(extra.iter().cloned());
        settings
    };

    // SQLite, in-process cache: the defaults of `make run`.
    if ["completions", "stream", "grpc", "chat-sqlite"].iter().any(|p| only.wants(p)) {
        let data = tempfile::tempdir()?;
        let sqlite = format!("sqlite://{}/bench.db", data.path().display());
        let mut stack =
            Stack::start_as(layout, "sqlite", &bin, &logs, &sqlite, &with_extra(settings(&upstream, None))).await?;
        // One client key for the OpenAI-compatible parts.
        let key = client_key(&bench.http, &stack.http).await?;
        if only.wants("completions") {
            completions(&mut bench, &stack, &key).await?;
        }
        if only.wants("stream") {
            streams(&mut bench, &upstream, UPSTREAM_KEY, Target::Direct, &[]).await;
            let gateway_v1 = format!("{}/v1", stack.http);
            streams(&mut bench, &gateway_v1, &key, Target::Switchboard, &stack_pids(&stack)).await;
        }
        if only.wants("grpc") {
            grpc(&mut bench, &stack).await?;
        }
        if only.wants("chat-sqlite") {
            turns(&mut bench, &stack, "chat sqlite", &chat_rates).await?;
        }
        bench.report.memory.extend(stack_memory(&stack, "SQLite"));
        stack.stop_all().await;
    }

    // PostgreSQL and Redis: a production deployment's backends.
    if only.wants("chat-postgres") {
        let (admin, pg) = postgres_database().await?;
        let redis = std::env::var("SWITCHBOARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let mut stack =
            Stack::start_as(layout, "postgres", &bin, &logs, &pg, &with_extra(settings(&upstream, Some(&redis))))
                .await?;
        turns(&mut bench, &stack, "chat postgres", &chat_rates).await?;
        bench.report.memory.extend(stack_memory(&stack, "PostgreSQL"));
        stack.stop_all().await;
        let name = pg.rsplit('/').next().unwrap_or_default().to_owned();
        let _ = tokio::process::Command::new("psql")
            .args([admin.as_str(), "-Atqc", &format!("DROP DATABASE {name}")])
            .status()
            .await;
    }

    if only.wants("litellm")
        && let Some(peer) = litellm::from_env()?
    {
        litellm::measure(&mut bench, &peer).await?;
    }
    let (_, mock_peak) = proc::memory(mock_pid);
    bench.report.memory.push(Memory { component: "mock upstream".into(), peak_rss_mib: proc::mib(mock_peak) });
    let _ = mock.kill().await;

    let markdown = bench.report.markdown();
    println!("{markdown}");
    bench.report.write(&out, &markdown)?;
    log(format!("written to {}", out.display()));
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Stopped by a signal, the run is dropped: its processes (Switchboard, the mock, LiteLLM,
    // oha) are killed with it rather than left running.
    let outcome = tokio::select! {
        outcome = run() => outcome,
        () = switchboard_kit::shutdown::signal() => {
            log("stopped by a signal: its processes are stopped too");
            return std::process::ExitCode::from(130);
        }
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log(format!("failed: {e:#}"));
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(settings: &[(&str, String)]) -> Vec<String> {
        settings.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    #[test]
    fn a_process_per_component_runs_as_a_one_cpu_pod_unless_bench_env_says_otherwise() {
        let pod = extra_settings(Layout::Processes, None).unwrap();
        assert_eq!(names(&pod), ["TOKIO_WORKER_THREADS=1"]);
        assert_eq!(names(&extra_settings(Layout::Processes, Some(" ")).unwrap()), ["TOKIO_WORKER_THREADS=1"]);
        assert!(extra_settings(Layout::OneProcess, None).unwrap().is_empty());
        let given = extra_settings(Layout::Processes, Some("TOKIO_WORKER_THREADS=2 gateway:RUST_LOG=info")).unwrap();
        assert_eq!(names(&given), ["TOKIO_WORKER_THREADS=2", "gateway:RUST_LOG=info"]);
        let wrong = extra_settings(Layout::OneProcess, Some("proxy:X=1")).unwrap_err().to_string();
        assert!(wrong.contains("\"proxy\" in \"proxy:X=1\" is not a component"), "{wrong}");
        assert!(extra_settings(Layout::Processes, Some("X")).is_err());
    }
}
