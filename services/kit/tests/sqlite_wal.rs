//! SQLite's WAL under a steady stream of commits: the background checkpoint copies it into the
//! database file and it starts again from its beginning, instead of growing without end; and a
//! long read does not hold the commits up while the checkpoint waits for it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use switchboard_kit::db::Db;

/// A fresh SQLite database `wal.db` with a `notes` table, in the directory returned with it.
async fn notes_db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wal.db");
    let db = Db::connect(&format!("sqlite://{}", file.display()), "DATABASE_URL").await.unwrap();
    let Db::Sqlite(sqlite) = &db else { panic!("expected SQLite") };
    let create = "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)";
    sqlx::query(create).execute(&sqlite.writer).await.unwrap();
    (dir, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_stream_of_commits_does_not_grow_the_wal_without_end() {
    let (dir, db) = notes_db().await;
    let Db::Sqlite(sqlite) = &db else { panic!("expected SQLite") };

    // Commits one after another, with reads beside them, across several checkpoints.
    let reads = {
        let readers = sqlite.readers.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            while started.elapsed() < Duration::from_millis(5_500) {
                let _: i64 = sqlx::query_scalar("SELECT count(*) FROM notes").fetch_one(&readers).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let body = "x".repeat(2_000);
    let (started, mut commits) = (Instant::now(), 0u64);
    while started.elapsed() < Duration::from_millis(5_500) {
        sqlx::query("INSERT INTO notes (body) VALUES ($1)").bind(&body).execute(&sqlite.writer).await.unwrap();
        commits += 1;
    }
    reads.await.unwrap();

    // Each commit appended at least one page (4 KiB and its frame header) to the WAL: a WAL
    // that never started again is at least that long; one that did is shorter.
    let appended = commits * 4_120;
    let wal = std::fs::metadata(dir.path().join("wal.db-wal")).unwrap().len();
    assert!(commits > 500, "only {commits} commits in 5.5 s");
    assert!(
        wal < appended,
        "the WAL grew to {wal} bytes, of at least {appended} appended by {commits} commits: it never started again"
    );
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_do_not_wait_for_a_long_read_while_the_wal_is_checkpointed() {
    let (_dir, db) = notes_db().await;
    let Db::Sqlite(sqlite) = &db else { panic!("expected SQLite") };

    // A read that stays open on the WAL across several checkpoints.
    let mut reader = sqlite.readers.acquire().await.unwrap();
    sqlx::query("BEGIN").execute(&mut *reader).await.unwrap();
    let _: i64 = sqlx::query_scalar("SELECT count(*) FROM notes").fetch_one(&mut *reader).await.unwrap();

    let (started, mut slowest, mut commits) = (Instant::now(), Duration::ZERO, 0u64);
    while started.elapsed() < Duration::from_millis(3_500) {
        let commit = Instant::now();
        sqlx::query("INSERT INTO notes (body) VALUES ('x')").execute(&sqlite.writer).await.unwrap();
        slowest = slowest.max(commit.elapsed());
        commits += 1;
    }
    sqlx::query("COMMIT").execute(&mut *reader).await.unwrap();
    drop(reader);
    assert!(commits > 100, "only {commits} commits in 3.5 s");
    // The statements' own lock wait is 10 s: a checkpoint waiting that long would show here.
    assert!(slowest < Duration::from_secs(2), "a commit waited {slowest:?} behind the checkpoint");
    db.close().await;
}
