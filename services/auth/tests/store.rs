//! The key store against real SQLite and PostgreSQL (same test bodies on both).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchboard_auth::keys;
use switchboard_auth::store::{KeyStore, SqlKeyStore, StoredKey};
use switchboard_auth::{POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
use switchboard_kit::db::Db;
use switchboard_test_support::db::{self, TestDb};

async fn open(test_db: TestDb) -> (SqlKeyStore, Db, TestDb) {
    let db = Db::connect(&test_db.url, "DATABASE_URL").await.unwrap();
    db.migrate(&SQLITE_MIGRATIONS, &POSTGRES_MIGRATIONS).await.unwrap();
    (SqlKeyStore::new(db.clone()), db, test_db)
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { let (s, d, _t) = super::open(super::db::sqlite()).await; super::$name(s, d).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { let (s, d, _t) = super::open(super::db::postgres().await).await; super::$name(s, d).await })*
        }
    };
}

on_both_backends!(keys_are_stored_as_digests_and_listed_until_revoked, expired_keys_leave_the_active_list);

fn stored(client: &str, system_id: &str, expires_at: Option<i64>) -> (StoredKey, String) {
    let generated = keys::generate();
    let key = StoredKey {
        id: generated.id,
        digest: generated.digest,
        prefix: generated.prefix,
        client_name: client.into(),
        system_id: system_id.into(),
        scope: "client".into(),
        created_at: 1_000,
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    (key, generated.plaintext)
}

async fn keys_are_stored_as_digests_and_listed_until_revoked(store: SqlKeyStore, db: Db) {
    let (key, plaintext) = stored("quiz-bot", "drillquiz", None);
    store.insert(&key).await.unwrap();
    assert_eq!(store.find(&key.id).await.unwrap(), Some(key.clone()));

    // No column holds the secret part of the key.
    let (_, secret) = keys::parse(&plaintext).unwrap();
    let rows: Vec<(String, String, String)> = switchboard_kit::db_run!(&db, |pool| {
        sqlx::query_as("SELECT id, digest, prefix FROM api_keys").fetch_all(pool).await.unwrap()
    });
    assert!(rows.iter().all(|(a, b, c)| !a.contains(secret) && !b.contains(secret) && !c.contains(secret)));

    assert_eq!(store.list(Some("drillquiz"), false, 2_000).await.unwrap().len(), 1);
    assert!(store.list(Some("cointutor"), false, 2_000).await.unwrap().is_empty());
    assert!(store.revoke(&key.id, 3_000).await.unwrap());
    assert!(!store.revoke("no-such-key", 3_000).await.unwrap());
    assert!(store.list(None, false, 4_000).await.unwrap().is_empty());
    let all = store.list(None, true, 4_000).await.unwrap();
    assert_eq!(all[0].revoked_at, Some(3_000));
    // Revoking again keeps the first revocation time.
    store.revoke(&key.id, 9_000).await.unwrap();
    assert_eq!(store.find(&key.id).await.unwrap().unwrap().revoked_at, Some(3_000));
}

async fn expired_keys_leave_the_active_list(store: SqlKeyStore, _db: Db) {
    let (key, _) = stored("short-lived", "", Some(5_000));
    store.insert(&key).await.unwrap();
    assert_eq!(store.list(None, false, 4_999).await.unwrap().len(), 1);
    assert!(store.list(None, false, 5_000).await.unwrap().is_empty());
    assert_eq!(store.list(None, true, 5_000).await.unwrap().len(), 1);
}
