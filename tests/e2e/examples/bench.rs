//! `make bench`: latency of one chat turn measured side by side in one run — straight to the
//! mock upstream, through the LLM proxy's gRPC `Complete`, and through the whole gateway
//! (`POST /v1/chat`: credential check, conversation service, three durable writes, LLM proxy,
//! upstream). Sequential requests on loopback; the figures are per request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_e2e::{SERVICE_KEY, openai_env, spawn_app};
use switchboard_proto::llm::v1 as llm;
use switchboard_test_support::{MockUpstream, db};

const WARMUP: usize = 200;
const RUNS: usize = 2000;

struct Stats {
    name: &'static str,
    samples: Vec<Duration>,
}

impl Stats {
    fn pct(&self, p: f64) -> Duration {
        let mut s = self.samples.clone();
        s.sort_unstable();
        s[((s.len() as f64 - 1.0) * p).round() as usize]
    }
}

async fn measure<F, Fut>(name: &'static str, mut call: F) -> Stats
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for i in 0..WARMUP {
        call(i).await;
    }
    let mut samples = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let started = Instant::now();
        call(WARMUP + i).await;
        samples.push(started.elapsed());
    }
    Stats { name, samples }
}

#[tokio::main]
async fn main() {
    let upstream = MockUpstream::start().await;
    let test_db = db::sqlite();
    let env = openai_env(&test_db.url, &upstream.base_url())
        .with("SWITCHBOARD_RATE_LIMIT_CHAT", "off")
        .with("SWITCHBOARD_RATE_LIMIT_CHAT_PRINCIPAL", "off")
        .with("SWITCHBOARD_RATE_LIMIT_API", "off")
        .with("SWITCHBOARD_RATE_LIMIT_API_PRINCIPAL", "off");
    let app = spawn_app(env).await;
    let client = reqwest::Client::new();
    let completions = format!("{}/chat/completions", upstream.base_url());

    let direct = measure("upstream directly (HTTP)", |i| {
        let (client, url) = (client.clone(), completions.clone());
        async move {
            let body = json!({"model": "gpt-test", "messages": [{"role": "user", "content": format!("hello {i}")}]});
            let r = client.post(url).bearer_auth("sk-upstream-secret").json(&body).send().await.unwrap();
            assert!(r.status().is_success());
            r.bytes().await.unwrap();
        }
    })
    .await;

    let grpc = app.llm().await;
    let proxy = measure("LLM proxy (gRPC Complete)", |i| {
        let mut grpc = grpc.clone();
        async move {
            let mut request = tonic::Request::new(llm::CompleteRequest {
                messages: vec![llm::ChatMessage { role: llm::Role::User as i32, content: format!("hello {i}") }],
                ..Default::default()
            });
            request.metadata_mut().insert("x-api-key", SERVICE_KEY.parse().unwrap());
            grpc.complete(request).await.unwrap();
        }
    })
    .await;

    let gateway = measure("gateway (POST /v1/chat, full turn)", |i| {
        let (client, url) = (client.clone(), format!("{}/v1/chat", app.http));
        async move {
            let body =
                json!({"system_id": "bench", "user_id": format!("u{}", i % 50), "message": format!("hello {i}")});
            let r = client.post(url).header("X-API-Key", SERVICE_KEY).json(&body).send().await.unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            r.bytes().await.unwrap();
        }
    })
    .await;

    println!("{RUNS} sequential requests each (after {WARMUP} warm-up), loopback, SQLite store");
    println!("{:<40} {:>10} {:>10} {:>10}", "path", "p50", "p90", "p99");
    for s in [&direct, &proxy, &gateway] {
        println!("{:<40} {:>10.3?} {:>10.3?} {:>10.3?}", s.name, s.pct(0.5), s.pct(0.9), s.pct(0.99));
    }
    let overhead = |s: &Stats| s.pct(0.5).saturating_sub(direct.pct(0.5));
    println!(
        "median overhead over the upstream: LLM proxy {:.3?}, gateway full turn {:.3?}",
        overhead(&proxy),
        overhead(&gateway)
    );
    app.stop().await;
}
