//! Provider keys users bring (seed 004): validated, sealed at rest, never shown whole, used
//! for their owner's completions, with usage per key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_e2e::{TestApp, openai_env, spawn_app};
use switchboard_test_support::{MockUpstream, db};

const ENCRYPTION_KEY: &str = "8f3a1c9e7b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a";
const USER_KEY: &str = "sk-user-good-1234";

async fn sign_in(app: &TestApp, username: &str) -> String {
    let join = json!({"username": username, "password": "Passw0rdX"});
    app.client.post(format!("{}/api/v1/users/join", app.http)).json(&join).send().await.unwrap();
    let login: Value = app
        .client
        .post(format!("{}/api/v1/users/login", app.http))
        .json(&join)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["data"]["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_users_own_key_is_validated_sealed_used_and_counted() {
    let upstream = MockUpstream::start().await;
    upstream.accept_only(Some(&["sk-upstream-secret", USER_KEY]));
    let test_db = db::sqlite();
    let env = openai_env(&test_db.url, &upstream.base_url())
        .with("SWITCHBOARD_ENCRYPTION_KEY", ENCRYPTION_KEY)
        .with("CHAT_GATEWAY_JWT_SECRET", "0123456789abcdef0123456789abcdef-byok");
    let app = spawn_app(env).await;
    let token = sign_in(&app, "card_owner").await;
    let keys = format!("{}/api/v1/keys/", app.http);

    let refused = app
        .client
        .post(&keys)
        .bearer_auth(&token)
        .json(&json!({"name": "bad", "api_key": "sk-user-bad-0000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["success"], false);
    assert!(refused["errors"]["api_key"].is_array(), "{refused}");

    let added = app
        .client
        .post(&keys)
        .bearer_auth(&token)
        .json(&json!({"name": "card 1", "api_key": USER_KEY, "kind": "open_ai"}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
    let added: Value = added.json().await.unwrap();
    assert_eq!(added["message"], "valid api key");
    assert_eq!(added["data"]["masked_key"], "…1234");
    assert!(!added.to_string().contains(USER_KEY));
    let pk = added["data"]["pk"].as_str().unwrap().to_owned();

    let listed: Value = app.client.get(&keys).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains(USER_KEY));

    let chat = app
        .client
        .post(format!("{}/v1/chat", app.http))
        .bearer_auth(&token)
        .json(&json!({"message": "on my card"}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    assert_eq!(upstream.authorizations().last().unwrap().as_deref(), Some("Bearer sk-user-good-1234"));

    tokio::time::sleep(Duration::from_millis(2200)).await;
    let stats: Value = app
        .client
        .get(format!("{}/api/v1/keys/{pk}/statics", app.http))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["data"]["request_count"], 1);
    assert!(stats["data"]["total_tokens"].as_u64().unwrap() > 0);

    // Another user sees nothing of it.
    let other = sign_in(&app, "someone_else").await;
    let theirs =
        app.client.get(format!("{}/api/v1/keys/{pk}/statics", app.http)).bearer_auth(&other).send().await.unwrap();
    assert_eq!(theirs.status(), 404);
    let steal = app.client.delete(format!("{}/api/v1/keys/{pk}/", app.http)).bearer_auth(&other).send().await.unwrap();
    assert_eq!(steal.status(), 404);
    app.client
        .post(format!("{}/v1/chat", app.http))
        .bearer_auth(&other)
        .json(&json!({"message": "mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(upstream.authorizations().last().unwrap().as_deref(), Some("Bearer sk-upstream-secret"));

    // At rest the key is sealed.
    let mut stored = Vec::new();
    for entry in
        std::fs::read_dir(std::path::Path::new(test_db.url.trim_start_matches("sqlite://")).parent().unwrap()).unwrap()
    {
        stored.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    assert!(!String::from_utf8_lossy(&stored).contains(USER_KEY), "the key is encrypted at rest");

    let deleted =
        app.client.delete(format!("{}/api/v1/keys/{pk}/", app.http)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    app.client
        .post(format!("{}/v1/chat", app.http))
        .bearer_auth(&token)
        .json(&json!({"message": "server key"}))
        .send()
        .await
        .unwrap();
    assert_eq!(upstream.authorizations().last().unwrap().as_deref(), Some("Bearer sk-upstream-secret"));
    app.stop().await;
}

#[tokio::test]
async fn without_an_encryption_key_provider_keys_are_off_and_say_why() {
    let upstream = MockUpstream::start().await;
    let test_db = db::sqlite();
    let env = openai_env(&test_db.url, &upstream.base_url())
        .with("CHAT_GATEWAY_JWT_SECRET", "0123456789abcdef0123456789abcdef-byok");
    let app = spawn_app(env).await;
    let token = sign_in(&app, "no_keys").await;
    let response = app
        .client
        .post(format!("{}/api/v1/keys/", app.http))
        .bearer_auth(&token)
        .json(&json!({"name": "x", "api_key": USER_KEY}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(
        response.json::<Value>().await.unwrap()["message"].as_str().unwrap().contains("SWITCHBOARD_ENCRYPTION_KEY")
    );
    app.stop().await;
}
