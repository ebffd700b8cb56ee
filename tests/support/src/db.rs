//! Fresh databases for tests: a new SQLite file, or a new PostgreSQL database on the server
//! named by `SWITCHBOARD_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! A PostgreSQL server that cannot be reached fails the test: it is never skipped.

use sqlx::AssertSqlSafe;
use sqlx::Connection;

/// Default administrative URL of the test PostgreSQL server.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database that exists for one test.
pub struct TestDb {
    /// URL to give to `DATABASE_URL`.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// A fresh SQLite database file in a temporary directory.
pub fn sqlite() -> TestDb {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("cannot create a temporary directory: {e}"),
    };
    let url = format!("sqlite://{}/switchboard.db", dir.path().display());
    TestDb { url, _dir: Some(dir) }
}

/// A fresh, empty PostgreSQL database.
pub async fn postgres() -> TestDb {
    let admin_url = std::env::var("SWITCHBOARD_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
    let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
        Ok(c) => c,
        Err(e) => panic!(
            "PostgreSQL is required for this test and is not reachable at {admin_url} ({e}). \
             Start it (see README, 'Tests') or set SWITCHBOARD_TEST_POSTGRES_URL."
        ),
    };
    let name = format!("sb_test_{}", uuid::Uuid::new_v4().simple());
    if let Err(e) = sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await {
        panic!("cannot create test database {name}: {e}");
    }
    let _ = admin.close().await;
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("SWITCHBOARD_TEST_POSTGRES_URL must end with a database name: {admin_url}"),
    };
    TestDb { url, _dir: None }
}
