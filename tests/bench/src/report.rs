//! The results: JSON for tools, Markdown for people, both under `bench/results/`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::{load, oha};

/// Who answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Target {
    /// The mock upstream alone.
    Direct,
    /// Through Switchboard.
    Switchboard,
    /// Through LiteLLM proxy.
    Litellm,
}

/// One measured point.
#[derive(Debug, Serialize)]
pub struct Point {
    /// What was asked (`completions`, `stream`, `chat sqlite`, …).
    pub scenario: String,
    /// Who answered.
    pub target: Target,
    /// Requests per second asked for.
    pub rate: f64,
    /// Requests answered (or, open loop, sent).
    pub requests: u64,
    /// Not a 2xx / not OK.
    pub failed: u64,
    /// Answers per second.
    pub achieved_rps: f64,
    /// Latency quantiles, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Time to first token (streams), ms.
    pub ttft_p50_ms: Option<f64>,
    /// 90th percentile of the time to first token, ms.
    pub ttft_p90_ms: Option<f64>,
    /// 99th percentile of the time to first token, ms.
    pub ttft_p99_ms: Option<f64>,
    /// CPU time of the target's processes per request, ms.
    pub cpu_ms_per_request: Option<f64>,
    /// The same, by process.
    pub cpu_by_process: Vec<(String, f64)>,
    /// CPU time of the machine's PostgreSQL and Redis processes per request, ms (turns on
    /// PostgreSQL).
    pub services_cpu_ms_per_request: Option<f64>,
    /// The largest resident memory (`VmRSS`) of each of the target's processes during the
    /// point, MiB.
    pub rss_mib_by_process: Vec<(String, f64)>,
}

fn ms(d: Option<Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

impl Point {
    /// Records the largest resident memory of each process (bytes) during the point.
    pub fn set_rss(&mut self, rss: Vec<(String, u64)>) {
        self.rss_mib_by_process = rss.into_iter().map(|(name, bytes)| (name, crate::proc::mib(bytes))).collect();
    }

    /// A point from an oha run.
    pub fn from_oha(
        scenario: &str,
        target: Target,
        rate: f64,
        run: &oha::Run,
        cpu: Option<(f64, Vec<(String, f64)>)>,
    ) -> Self {
        let (cpu_ms_per_request, cpu_by_process) = cpu.map_or((None, Vec::new()), |(t, each)| (Some(t), each));
        Self {
            scenario: scenario.to_owned(),
            target,
            rate,
            requests: run.answered,
            failed: run.failed(),
            achieved_rps: run.achieved_rps,
            p50_ms: run.p50_ms,
            p90_ms: run.p90_ms,
            p99_ms: run.p99_ms,
            ttft_p50_ms: None,
            ttft_p90_ms: None,
            ttft_p99_ms: None,
            cpu_ms_per_request,
            cpu_by_process,
            services_cpu_ms_per_request: None,
            rss_mib_by_process: Vec::new(),
        }
    }

    /// A point from an open-loop run.
    pub fn from_outcome(
        scenario: &str,
        target: Target,
        rate: f64,
        outcome: &load::Outcome,
        cpu: Option<(f64, Vec<(String, f64)>)>,
    ) -> Self {
        let (cpu_ms_per_request, cpu_by_process) = cpu.map_or((None, Vec::new()), |(t, each)| (Some(t), each));
        let first = |q| (!outcome.first_tokens.is_empty()).then(|| ms(load::quantile(&outcome.first_tokens, q)));
        Self {
            scenario: scenario.to_owned(),
            target,
            rate,
            requests: outcome.sent as u64,
            failed: outcome.failed() as u64,
            achieved_rps: outcome.latencies.len() as f64 / outcome.elapsed.as_secs_f64(),
            p50_ms: ms(load::quantile(&outcome.latencies, 0.5)),
            p90_ms: ms(load::quantile(&outcome.latencies, 0.9)),
            p99_ms: ms(load::quantile(&outcome.latencies, 0.99)),
            ttft_p50_ms: first(0.5),
            ttft_p90_ms: first(0.9),
            ttft_p99_ms: first(0.99),
            cpu_ms_per_request,
            cpu_by_process,
            services_cpu_ms_per_request: None,
            rss_mib_by_process: Vec::new(),
        }
    }
}

/// Peak resident memory of one process.
#[derive(Debug, Serialize)]
pub struct Memory {
    /// Which.
    pub component: String,
    /// `VmHWM`, MiB.
    pub peak_rss_mib: f64,
}

/// A whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// CPU, cores, memory, kernel.
    pub machine: String,
    /// When (UTC, RFC 3339).
    pub date: String,
    /// Length of each point.
    pub seconds_per_point: u64,
    /// Every point, in order.
    pub points: Vec<Point>,
    /// Peak memory per process.
    pub memory: Vec<Memory>,
    /// Settings given to every component (`BENCH_ENV`), if any.
    pub settings: String,
    /// How Switchboard's components ran (`BENCH_LAYOUT`).
    pub layout: &'static str,
}

fn three(p: &Point) -> String {
    format!("{:.2} / {:.2} / {:.2}", p.p50_ms, p.p90_ms, p.p99_ms)
}

fn cpu(p: &Point) -> String {
    p.cpu_ms_per_request.map_or("–".to_owned(), |c| format!("{c:.3} ms"))
}

fn failed(p: &Point) -> String {
    if p.failed == 0 { "0".to_owned() } else { format!("**{} of {}**", p.failed, p.requests) }
}

impl Report {
    /// An empty report for `machine`.
    pub fn new(machine: String, seconds: Duration) -> Self {
        let date =
            time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        Self {
            machine,
            date,
            seconds_per_point: seconds.as_secs(),
            points: Vec::new(),
            memory: Vec::new(),
            settings: String::new(),
            layout: "",
        }
    }

    /// The point of `scenario` measured on `target` at `rate`, if any.
    pub fn find(&self, scenario: &str, target: Target, rate: f64) -> Option<&Point> {
        self.points.iter().find(|p| p.scenario == scenario && p.target == target && p.rate == rate)
    }

    /// The tables.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Switchboard side by side — {}\n", self.date);
        let _ = writeln!(
            md,
            "Machine: {}. Load generator, mock upstream and the system measured share it. Each point: {} s at a \
             fixed rate, open loop with latency correction (oha, 64 keep-alive connections; streams and gRPC: the \
             harness's own open-loop client, which times a request from its actual start when its timer fires within \
             {} ms of the schedule). Latencies in ms as p50 / p90 / p99; **overhead** = through − upstream \
             alone at the same rate, per quantile. CPU = user + system time of all the system's processes per \
             request, from /proc.\n",
            self.machine,
            self.seconds_per_point,
            crate::load::WAKE_SLACK.as_millis()
        );
        let _ = writeln!(md, "Layout: {}.\n", self.layout);
        if !self.settings.is_empty() {
            let _ = writeln!(md, "Switchboard ran with `{}`.\n", self.settings);
        }
        let _ = writeln!(md, "## POST /v1/chat/completions (API key)\n");
        let _ = writeln!(
            md,
            "| rate/s | upstream alone | Switchboard | overhead p50 / p99 | served/s | failed | CPU/request | LiteLLM | LiteLLM overhead p50 / p99 | served/s | failed | CPU/request |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for direct in self.points.iter().filter(|p| p.scenario == "completions" && p.target == Target::Direct) {
            let Some(sb) = self.find("completions", Target::Switchboard, direct.rate) else { continue };
            let peer = self.find("completions", Target::Litellm, direct.rate);
            let overhead = |p: &Point| format!("{:+.2} / {:+.2}", p.p50_ms - direct.p50_ms, p.p99_ms - direct.p99_ms);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
                direct.rate,
                three(direct),
                three(sb),
                overhead(sb),
                sb.achieved_rps,
                failed(sb),
                cpu(sb),
                peer.map_or("–".to_owned(), three),
                peer.map_or("–".to_owned(), overhead),
                peer.map_or("–".to_owned(), |p| format!("{:.0}", p.achieved_rps)),
                peer.map_or("–".to_owned(), failed),
                peer.map_or("–".to_owned(), cpu),
            );
        }
        let _ = writeln!(md, "\n## Streamed completions\n");
        let _ = writeln!(
            md,
            "| target | rate/s | first token | first-token overhead p50 / p99 | whole stream | failed | CPU/request |\n|---|---|---|---|---|---|---|"
        );
        let direct = self.find("stream", Target::Direct, crate::STREAM_RATE);
        for p in self.points.iter().filter(|p| p.scenario == "stream") {
            let first = format!(
                "{:.2} / {:.2} / {:.2}",
                p.ttft_p50_ms.unwrap_or(f64::NAN),
                p.ttft_p90_ms.unwrap_or(f64::NAN),
                p.ttft_p99_ms.unwrap_or(f64::NAN)
            );
            let overhead = match (p.target, direct) {
                (Target::Direct, _) | (_, None) => "–".to_owned(),
                (_, Some(d)) => format!(
                    "{:+.2} / {:+.2}",
                    p.ttft_p50_ms.unwrap_or(f64::NAN) - d.ttft_p50_ms.unwrap_or(f64::NAN),
                    p.ttft_p99_ms.unwrap_or(f64::NAN) - d.ttft_p99_ms.unwrap_or(f64::NAN)
                ),
            };
            let _ = writeln!(
                md,
                "| {:?} | {} | {first} | {overhead} | {} | {} | {} |",
                p.target,
                p.rate,
                three(p),
                failed(p),
                cpu(p)
            );
        }
        let _ = writeln!(md, "\n## POST /v1/chat (a new conversation each: auth, store, history, durable writes)\n");
        let _ = writeln!(
            md,
            "| store | rate/s | upstream alone | turn | overhead p50 / p99 | failed | CPU/request | PostgreSQL + Redis CPU/request |\n|---|---|---|---|---|---|---|---|"
        );
        for p in self.points.iter().filter(|p| p.scenario.starts_with("chat ")) {
            let direct = self.find("completions", Target::Direct, p.rate);
            let overhead = direct
                .map_or("–".to_owned(), |d| format!("{:+.2} / {:+.2}", p.p50_ms - d.p50_ms, p.p99_ms - d.p99_ms));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {overhead} | {} | {} | {} |",
                p.scenario.trim_start_matches("chat "),
                p.rate,
                direct.map_or("–".to_owned(), three),
                three(p),
                failed(p),
                cpu(p),
                p.services_cpu_ms_per_request.map_or("–".to_owned(), |ms| format!("{ms:.3} ms"))
            );
        }
        let _ = writeln!(md, "\n## gRPC, as an internal caller (service key)\n");
        let _ = writeln!(md, "| call | rate/s | latency | failed | CPU/request |\n|---|---|---|---|---|");
        for p in self.points.iter().filter(|p| p.scenario.starts_with("grpc ")) {
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} | {} |",
                p.scenario.trim_start_matches("grpc "),
                p.rate,
                three(p),
                failed(p),
                cpu(p)
            );
        }
        let _ = writeln!(
            md,
            "\n## Resident memory during each point (largest VmRSS, read every {} ms)\n",
            crate::proc::RSS_EVERY.as_millis()
        );
        let _ = writeln!(md, "| point | target | rate/s | MiB by process |\n|---|---|---|---|");
        for p in self.points.iter().filter(|p| !p.rss_mib_by_process.is_empty()) {
            let each: Vec<String> = p.rss_mib_by_process.iter().map(|(name, mib)| format!("{name} {mib:.1}")).collect();
            let _ = writeln!(md, "| {} | {:?} | {} | {} |", p.scenario, p.target, p.rate, each.join(", "));
        }
        let _ = writeln!(md, "\n## Peak resident memory over the whole run (VmHWM)\n");
        let _ = writeln!(md, "| process | MiB |\n|---|---|");
        for m in &self.memory {
            let _ = writeln!(md, "| {} | {:.1} |", m.component, m.peak_rss_mib);
        }
        md
    }

    /// Writes `<date>.json`, `<date>.md` and `latest.md` under `dir`.
    pub fn write(&self, dir: &Path, markdown: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let stem = self.date.replace(':', "-");
        std::fs::write(dir.join(format!("{stem}.json")), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join(format!("{stem}.md")), markdown)?;
        std::fs::write(dir.join("latest.md"), markdown)?;
        Ok(())
    }
}
