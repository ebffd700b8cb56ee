//! Managed PostgreSQL insists on TLS: `sslmode=require` must connect encrypted, and a
//! `prefer` URL must not quietly fall back to plaintext when the server offers TLS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchboard_kit::db::Db;

fn postgres_url(sslmode: &str) -> String {
    let base = std::env::var("SWITCHBOARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}sslmode={sslmode}")
}

async fn encrypted(db: &Db) -> bool {
    match db {
        Db::Postgres(pool) => sqlx::query_scalar::<_, bool>("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(pool)
            .await
            .unwrap(),
        Db::Sqlite(_) => panic!("expected PostgreSQL"),
    }
}

#[tokio::test]
async fn postgres_with_sslmode_require_connects_over_tls() {
    let db = Db::connect(&postgres_url("require"), "DATABASE_URL")
        .await
        .unwrap_or_else(|e| panic!("sslmode=require must connect (the test server offers TLS): {e}"));
    assert!(encrypted(&db).await, "the connection is not encrypted");
    db.close().await;
}

#[tokio::test]
async fn postgres_with_sslmode_prefer_uses_tls_when_the_server_offers_it() {
    let db = Db::connect(&postgres_url("prefer"), "DATABASE_URL").await.unwrap();
    assert!(encrypted(&db).await, "prefer fell back to plaintext although the server offers TLS");
    db.close().await;
}
