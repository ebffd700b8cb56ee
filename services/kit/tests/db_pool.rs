//! The PostgreSQL pool skips the ping before each statement on a connection in steady use, but
//! a connection that sat idle is checked first: one the server dropped meanwhile (a restart, a
//! proxy's idle timeout) is replaced, and the statement still succeeds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sqlx::Connection as _;
use switchboard_kit::db::Db;

fn postgres_url() -> String {
    std::env::var("SWITCHBOARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

async fn backend_pid(db: &Db) -> i32 {
    match db {
        Db::Postgres(pool) => sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(pool).await.unwrap(),
        Db::Sqlite(_) => panic!("expected PostgreSQL"),
    }
}

#[tokio::test]
async fn an_idle_connection_the_server_dropped_is_replaced_before_use() {
    let db = Db::connect(&postgres_url(), "DATABASE_URL").await.unwrap();
    let first = backend_pid(&db).await;

    // The server ends that session while it sits idle in the pool.
    let mut admin = sqlx::PgConnection::connect(&postgres_url()).await.unwrap();
    let ended: bool =
        sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(first).fetch_one(&mut admin).await.unwrap();
    assert!(ended, "the test could not end the pool's session");
    admin.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;

    let second = backend_pid(&db).await;
    assert_ne!(first, second, "a new session answers");
    db.close().await;
}
