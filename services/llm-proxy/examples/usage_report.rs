//! How long a month's usage report takes over the hourly rollups, on SQLite and PostgreSQL.
//!
//! A month of about 10 million completions by 2,000 users of 20 tenants on 2 models, each user
//! active 8 hours a day with 10 completions per model and hour, is 960,000 rollup rows: that is
//! what the reports read, instead of 9.6 million usage records.
//!
//! `cargo run --release -p switchboard-llm-proxy --example usage_report` (SQLite in a temporary
//! file; set `SWITCHBOARD_TEST_POSTGRES_URL` to measure PostgreSQL too: the example creates a
//! scratch database `switchboard_usage_report` on that server and drops it afterwards).

#![allow(clippy::expect_used, clippy::panic)]

use std::time::Instant;

use switchboard_kit::db::Db;
use switchboard_llm_proxy::MIGRATIONS;
use switchboard_llm_proxy::store::{Dimension, Rollup, RollupKey, SqlStore, UsageFilter, UsageStore};

const TENANTS: usize = 20;
const USERS_PER_TENANT: usize = 100;
const MODELS: [&str; 2] = ["gpt-4o-mini", "gpt-4o"];
const DAYS: i64 = 30;
const ACTIVE_HOURS: i64 = 8;
const HOUR: i64 = 3_600_000;
/// 2026-11-01T00:00:00Z.
const START: i64 = 1_793_491_200_000;

async fn fill(store: &SqlStore) -> usize {
    let mut rows = 0;
    for day in 0..DAYS {
        let mut batch = Vec::new();
        for hour in 0..ACTIVE_HOURS {
            for t in 0..TENANTS {
                for u in 0..USERS_PER_TENANT {
                    for model in MODELS {
                        let key = RollupKey {
                            system_id: format!("tenant{t}"),
                            user_id: format!("user{u}"),
                            key_id: format!("key{t}-{}", u % 5),
                            model: model.to_owned(),
                            hour: START + day * 24 * HOUR + (9 + hour) * HOUR,
                        };
                        let totals = Rollup {
                            requests: 10,
                            prompt_tokens: 2_000,
                            completion_tokens: 600,
                            cost_micros: 900,
                            unpriced_requests: 0,
                        };
                        batch.push((key, totals));
                    }
                }
            }
        }
        rows += batch.len();
        for chunk in batch.chunks(5_000) {
            store.add_rollups(chunk).await.expect("insert rollups");
        }
    }
    rows
}

async fn measure(name: &str, url: &str) {
    let db = Db::connect(url, "DATABASE_URL").await.expect("connect");
    db.migrate(&MIGRATIONS).await.expect("migrate");
    let store = SqlStore::new(db.clone());
    let filled = Instant::now();
    let rows = fill(&store).await;
    println!(
        "{name}: {rows} rollup rows ({} completions) written in {:.1} s",
        rows * 10,
        filled.elapsed().as_secs_f64()
    );
    let (from, to) = (START, START + DAYS * 24 * HOUR);
    let one = UsageFilter { system_ids: Some(vec!["tenant7".into()]), ..UsageFilter::default() };
    let all = UsageFilter::default();
    let cases: [(&str, &UsageFilter, &[Dimension]); 4] = [
        ("one tenant, totals", &one, &[]),
        ("one tenant, by user and model", &one, &[Dimension::User, Dimension::Model]),
        ("one tenant, by model and day", &one, &[Dimension::Model, Dimension::Day]),
        ("every tenant, by tenant, model and day", &all, &[Dimension::Tenant, Dimension::Model, Dimension::Day]),
    ];
    for (label, filter, group_by) in cases {
        let mut best = f64::MAX;
        let mut groups = 0;
        for _ in 0..5 {
            let started = Instant::now();
            groups = store.report(from, to, filter, group_by).await.expect("report").len();
            best = best.min(started.elapsed().as_secs_f64() * 1000.0);
        }
        println!("{name}: a month, {label}: {groups} rows in {best:.1} ms (best of 5)");
    }
    db.close().await;
}

#[tokio::main]
async fn main() {
    let dir = std::env::temp_dir().join(format!("sb-usage-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    measure("SQLite", &format!("sqlite://{}/usage.db", dir.display())).await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Ok(url) = std::env::var("SWITCHBOARD_TEST_POSTGRES_URL") {
        // A scratch database of its own next to the given one, dropped afterwards.
        let admin = Db::connect(&url, "SWITCHBOARD_TEST_POSTGRES_URL").await.expect("connect");
        let Db::Postgres(pool) = &admin else { panic!("SWITCHBOARD_TEST_POSTGRES_URL is not PostgreSQL") };
        sqlx::query("DROP DATABASE IF EXISTS switchboard_usage_report").execute(pool).await.expect("drop");
        sqlx::query("CREATE DATABASE switchboard_usage_report").execute(pool).await.expect("create");
        let scratch = match url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/switchboard_usage_report"),
            None => panic!("SWITCHBOARD_TEST_POSTGRES_URL has no database name"),
        };
        measure("PostgreSQL", &scratch).await;
        sqlx::query("DROP DATABASE IF EXISTS switchboard_usage_report WITH (FORCE)").execute(pool).await.expect("drop");
    }
}
