//! Measures how long a new PostgreSQL connection takes to open, in plain TCP and over TLS:
//! `cargo run --release -p switchboard-kit --example pg_connect` (the server named by
//! `SWITCHBOARD_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
//! A pool opens one whenever it grows, and every turn waiting on that pool waits for it. With
//! the workspace's patched sqlx-core (TCP_NODELAY) a TLS connection here takes about 4 ms;
//! without it, about 88 ms, two delayed ACKs in the handshake.

use std::str::FromStr;
use std::time::Instant;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("SWITCHBOARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let connections = 20;
    for (name, mode) in [("plain TCP", PgSslMode::Disable), ("TLS (if the server offers it)", PgSslMode::Prefer)] {
        let options = PgConnectOptions::from_str(&url)?.ssl_mode(mode);
        let mut latencies = Vec::with_capacity(connections);
        for _ in 0..connections {
            let started = Instant::now();
            let mut connection = sqlx::PgConnection::connect_with(&options).await?;
            sqlx::query("SELECT 1").execute(&mut connection).await?;
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            connection.close().await?;
        }
        latencies.sort_by(f64::total_cmp);
        println!(
            "{name}: connect and first query p50 {:.1} ms, max {:.1} ms ({connections} connections)",
            latencies[connections / 2],
            latencies[connections - 1]
        );
    }
    Ok(())
}
