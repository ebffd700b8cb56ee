//! Measures what SQLite's `synchronous` setting costs a commit on this disk (WAL journal):
//! `cargo run --release -p switchboard-kit --example sqlite_sync`. Switchboard runs `FULL`,
//! so a commit survives a power loss, not only a crash of the process.

use std::str::FromStr;
use std::time::Instant;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let commits = 1000;
    for mode in [SqliteSynchronous::Normal, SqliteSynchronous::Full] {
        let dir = tempfile::tempdir_in(".")?;
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}/measure.db", dir.path().display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(mode);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)").execute(&pool).await?;
        let mut latencies = Vec::with_capacity(commits);
        for i in 0..commits {
            let started = Instant::now();
            let mut tx = pool.begin().await?;
            sqlx::query("INSERT INTO t (v) VALUES ($1)").bind(i.to_string()).execute(&mut *tx).await?;
            tx.commit().await?;
            latencies.push(started.elapsed().as_micros());
        }
        latencies.sort_unstable();
        println!(
            "synchronous={mode:?}: {commits} commits, p50 {} µs, p99 {} µs",
            latencies[commits / 2],
            latencies[commits * 99 / 100]
        );
    }
    Ok(())
}
