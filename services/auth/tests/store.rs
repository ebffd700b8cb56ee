//! The key store against real SQLite and PostgreSQL (same test bodies on both).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchboard_auth::MIGRATIONS;
use switchboard_auth::keys;
use switchboard_auth::store::{KeyStore, SqlStore, StoredKey, StoredProfile, StoredUser, UserStore};
use switchboard_kit::db::Db;
use switchboard_test_support::db::{self, TestDb};

async fn open(test_db: TestDb) -> (SqlStore, Db, TestDb) {
    let db = Db::connect(&test_db.url, "DATABASE_URL").await.unwrap();
    db.migrate(&MIGRATIONS).await.unwrap();
    (SqlStore::new(db.clone()), db, test_db)
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

on_both_backends!(
    keys_are_stored_as_digests_and_listed_until_revoked,
    expired_keys_leave_the_active_list,
    rotation_shortens_the_old_key_and_stores_the_new_one,
    last_used_times_only_move_forward,
    usernames_are_unique_per_tenant_regardless_of_case,
    profiles_are_created_then_updated,
    revoked_tokens_are_remembered_until_they_expire,
);

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

async fn keys_are_stored_as_digests_and_listed_until_revoked(store: SqlStore, db: Db) {
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

async fn expired_keys_leave_the_active_list(store: SqlStore, _db: Db) {
    let (key, _) = stored("short-lived", "", Some(5_000));
    store.insert(&key).await.unwrap();
    assert_eq!(store.list(None, false, 4_999).await.unwrap().len(), 1);
    assert!(store.list(None, false, 5_000).await.unwrap().is_empty());
    assert_eq!(store.list(None, true, 5_000).await.unwrap().len(), 1);
}

async fn rotation_shortens_the_old_key_and_stores_the_new_one(store: SqlStore, _db: Db) {
    let (old, _) = stored("rotating", "drillquiz", None);
    store.insert(&old).await.unwrap();
    let (new, _) = stored("rotating", "drillquiz", None);
    store.rotate(&old.id, &new, 10_000).await.unwrap();
    assert_eq!(store.find(&old.id).await.unwrap().unwrap().expires_at, Some(10_000));
    assert!(store.find(&new.id).await.unwrap().is_some());
    // A rotation never extends an expiry that is already sooner.
    let (newer, _) = stored("rotating", "drillquiz", None);
    store.rotate(&old.id, &newer, 99_000).await.unwrap();
    assert_eq!(store.find(&old.id).await.unwrap().unwrap().expires_at, Some(10_000));
}

async fn last_used_times_only_move_forward(store: SqlStore, _db: Db) {
    let (key, _) = stored("used", "", None);
    store.insert(&key).await.unwrap();
    store.touch(&[(key.id.clone(), 5_000)]).await.unwrap();
    store.touch(&[(key.id.clone(), 4_000), ("unknown".into(), 1)]).await.unwrap();
    assert_eq!(store.find(&key.id).await.unwrap().unwrap().last_used_at, Some(5_000));
}

fn user(system_id: &str, username: &str) -> StoredUser {
    StoredUser {
        id: uuid_like(username, system_id),
        system_id: system_id.into(),
        username: username.into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        created_at: 1,
    }
}

fn uuid_like(a: &str, b: &str) -> String {
    format!("{a}-{b}")
}

async fn usernames_are_unique_per_tenant_regardless_of_case(store: SqlStore, _db: Db) {
    store.create_user(&user("drillquiz", "Alice")).await.unwrap();
    let err = store.create_user(&StoredUser { id: "other".into(), ..user("drillquiz", "alice") }).await.unwrap_err();
    assert!(switchboard_kit::db::is_unique_violation(&err, "users_username_key"), "{err}");
    store.create_user(&user("cointutor", "alice")).await.unwrap();
    let found = store.find_user("drillquiz", "ALICE").await.unwrap().unwrap();
    assert_eq!(found.username, "Alice");
    assert!(store.find_user("default", "alice").await.unwrap().is_none());
}

async fn profiles_are_created_then_updated(store: SqlStore, _db: Db) {
    let profile = StoredProfile {
        system_id: "default".into(),
        user_id: "u1".into(),
        name: "Kim".into(),
        email: "kim@example.com".into(),
        created_at: 100,
        updated_at: 100,
    };
    let (stored, created) = store.upsert_profile(&profile).await.unwrap();
    assert!(created);
    assert_eq!(stored, profile);
    let changed = StoredProfile { name: "Kim Minsu".into(), created_at: 200, updated_at: 200, ..profile.clone() };
    let (stored, created) = store.upsert_profile(&changed).await.unwrap();
    assert!(!created);
    assert_eq!((stored.name.as_str(), stored.created_at, stored.updated_at), ("Kim Minsu", 100, 200));
    assert_eq!(store.get_profile("default", "u1").await.unwrap().unwrap().name, "Kim Minsu");
    assert!(store.create_profile(&profile).await.unwrap().is_none(), "create_profile never overwrites");
    let fresh = StoredProfile { user_id: "u2".into(), ..profile.clone() };
    assert_eq!(store.create_profile(&fresh).await.unwrap(), Some(fresh));
    assert!(store.get_profile("other", "u1").await.unwrap().is_none());
}

async fn revoked_tokens_are_remembered_until_they_expire(store: SqlStore, _db: Db) {
    store.revoke_token("jti-1", 1_000, 0).await.unwrap();
    store.revoke_token("jti-1", 1_000, 0).await.unwrap();
    assert!(store.is_token_revoked("jti-1").await.unwrap());
    assert!(!store.is_token_revoked("jti-2").await.unwrap());
    // A later revocation sweeps the ones already expired.
    store.revoke_token("jti-2", 9_000, 2_000).await.unwrap();
    assert!(!store.is_token_revoked("jti-1").await.unwrap());
    assert!(store.is_token_revoked("jti-2").await.unwrap());
}
