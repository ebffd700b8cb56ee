//! Dify chat apps end to end (seed 003): blocking and streaming turns, conversation mapping,
//! per-tenant apps, and sync into the store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use switchboard_e2e::{SERVICE_KEY, TestApp, base_env, spawn_app};
use switchboard_test_support::{MockDify, db};

async fn messages(app: &TestApp, path: &str, conversation_id: &str, user: &str) -> Vec<Value> {
    let page: Value = app
        .get(&format!("{path}/{conversation_id}/messages?system_id=drillquiz&user_id={user}"))
        .await
        .json()
        .await
        .unwrap();
    page["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn blocking_turns_map_our_conversation_to_difys_and_pass_user_and_language() {
    let dify = MockDify::start("app-common").await;
    let test_db = db::sqlite();
    let env = base_env(&test_db.url).with("DIFY_BASE_URL", dify.base_url()).with("DIFY_API_KEY", "app-common");
    let app = spawn_app(env).await;

    let first: Value = app
        .post("/v1/chat", json!({"system_id": "drillquiz", "user_id": "12345", "message": "안녕하세요", "lang": "ko"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["answer"], "dify reply to: 안녕하세요 [ko]");
    assert_eq!(first["model"], "dify", "Dify is the default model when it is configured");
    let conversation_id = first["conversation_id"].as_str().unwrap();
    let second = app
        .post(
            "/v1/chat",
            json!({"system_id": "drillquiz", "user_id": "12345", "message": "again", "conversation_id": conversation_id}),
        )
        .await;
    assert_eq!(second.status(), 200);

    let sent = dify.requests();
    assert_eq!(sent[0]["user"], "drillquiz_12345");
    assert_eq!(sent[0]["inputs"]["language"], "ko");
    assert_eq!(sent[0]["response_mode"], "blocking");
    assert_eq!(sent[0]["conversation_id"], "");
    assert_eq!(sent[1]["query"], "again", "Dify keeps the history: only the new message is sent");
    assert!(sent[1]["conversation_id"].as_str().unwrap().starts_with("dify-conv-"), "the second turn continues Dify's");
    app.stop().await;
}

#[tokio::test]
async fn streaming_turns_through_dify_arrive_token_by_token() {
    let dify = MockDify::start("app-common").await;
    let test_db = db::sqlite();
    let env = base_env(&test_db.url).with("DIFY_BASE_URL", dify.base_url()).with("DIFY_API_KEY", "app-common");
    let app = spawn_app(env).await;
    let body = app
        .client
        .post(format!("{}/v1/chat", app.http))
        .header("X-API-Key", SERVICE_KEY)
        .json(&json!({"system_id": "drillquiz", "user_id": "st", "message": "stream it please", "stream": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let deltas: Vec<String> = body
        .split("\n\n")
        .filter(|b| b.starts_with("event: delta"))
        .map(|b| {
            let data: Value = serde_json::from_str(b.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
            data["delta"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(deltas.len() >= 4, "{body}");
    assert_eq!(deltas.concat(), "dify reply to: stream it please");
    assert_eq!(dify.requests()[0]["response_mode"], "streaming");
    assert!(body.contains("event: done"));
    app.stop().await;
}

#[tokio::test]
async fn a_tenant_with_an_app_of_its_own_is_routed_there() {
    let common = MockDify::start("app-common").await;
    let cointutor = MockDify::start("app-cointutor").await;
    let test_db = db::sqlite();
    let env = base_env(&test_db.url)
        .with("DIFY_BASE_URL", common.base_url())
        .with("DIFY_API_KEY", "app-common")
        .with("DIFY_COINTUTOR_BASE_URL", cointutor.base_url())
        .with("DIFY_COINTUTOR_API_KEY", "app-cointutor");
    let app = spawn_app(env).await;
    for system in ["drillquiz", "cointutor"] {
        let r = app
            .post("/v1/chat", json!({"system_id": system, "user_id": "u", "message": format!("hi from {system}")}))
            .await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(common.requests().len(), 1);
    assert_eq!(common.requests()[0]["user"], "drillquiz_u");
    assert_eq!(cointutor.requests().len(), 1);
    assert_eq!(cointutor.requests()[0]["user"], "cointutor_u");
    app.stop().await;
}

#[tokio::test]
async fn sync_upserts_difys_conversations_and_messages_without_duplicates() {
    let dify = MockDify::start("app-common").await;
    let test_db = db::sqlite();
    let env = base_env(&test_db.url).with("DIFY_BASE_URL", dify.base_url()).with("DIFY_API_KEY", "app-common");
    let app = spawn_app(env).await;

    // A known user: one turn through Switchboard, and one conversation held only by Dify.
    let turn: Value = app
        .post("/v1/chat", json!({"system_id": "drillquiz", "user_id": "kim", "message": "through switchboard"}))
        .await
        .json()
        .await
        .unwrap();
    let outside = dify.seed("drillquiz_kim", "made in Dify", &[("q1", "a1"), ("q2", "a2")]);

    let synced: Value = app.post("/v1/sync", json!({})).await.json().await.unwrap();
    assert_eq!(synced, json!({"users": 1, "conversations": 1, "messages": 4}), "only the outside conversation was new");

    let list: Value = app.get("/v1/cache/conversations?system_id=drillquiz&user_id=kim").await.json().await.unwrap();
    let conversations = list["data"].as_array().unwrap();
    assert_eq!(conversations.len(), 2);
    let pulled = conversations.iter().find(|c| c["id"] != turn["conversation_id"]).unwrap();
    assert_eq!(pulled["title"], "made in Dify");
    let pulled_id = pulled["id"].as_str().unwrap();
    let contents: Vec<String> = messages(&app, "/v1/cache/conversations", pulled_id, "kim")
        .await
        .iter()
        .map(|m| format!("{}:{}", m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(contents, vec!["user:q1", "assistant:a1", "user:q2", "assistant:a2"]);
    assert_eq!(messages(&app, "/v1/conversations", turn["conversation_id"].as_str().unwrap(), "kim").await.len(), 2);

    // Repeating is harmless; new exchanges in Dify arrive on the next sync.
    let again: Value = app.post("/v1/sync", json!({})).await.json().await.unwrap();
    assert_eq!(again["messages"], 0);
    dify.add_exchange(&outside, "q3", "a3");
    let third: Value = app.post("/v1/sync?system_id=drillquiz", json!({})).await.json().await.unwrap();
    assert_eq!(third["messages"], 2);
    assert_eq!(messages(&app, "/v1/cache/conversations", pulled_id, "kim").await.len(), 6);

    let elsewhere: Value = app.post("/v1/sync?system_id=cointutor", json!({})).await.json().await.unwrap();
    assert_eq!(elsewhere["users"], 0, "a tenant with no known users has nothing to pull");
    app.stop().await;
}

#[tokio::test]
async fn a_tenant_with_an_app_of_its_own_uses_it_by_default_and_the_config_can_route_a_tenant() {
    let coin = MockDify::start("app-coin").await;
    let test_db = db::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchboard.toml");
    std::fs::write(&config, "[tenants.quizland]\nallowed_models = [\"mock\"]\n").unwrap();
    let env = base_env(&test_db.url)
        .with("SWITCHBOARD_DEFAULT_MODEL", "mock")
        .with("DIFY_COINTUTOR_BASE_URL", coin.base_url())
        .with("DIFY_COINTUTOR_API_KEY", "app-coin")
        .with("SWITCHBOARD_CONFIG", config.display().to_string());
    let app = spawn_app(env).await;
    let chat = |system_id: &'static str, model: Option<&'static str>| {
        let app = &app;
        async move {
            let mut body = json!({"system_id": system_id, "user_id": "u1", "message": "hello"});
            if let Some(model) = model {
                body["model"] = json!(model);
            }
            app.post("/v1/chat", body).await
        }
    };
    // The global default is `mock`, but CoinTutor's own app answers CoinTutor.
    let coin_answer: Value = chat("cointutor", None).await.json().await.unwrap();
    assert_eq!(coin_answer["model"], "dify", "{coin_answer}");
    assert_eq!(coin.requests().len(), 1);
    let other: Value = chat("drillquiz", None).await.json().await.unwrap();
    assert_eq!(other["model"], "mock", "{other}");
    assert_eq!(coin.requests().len(), 1, "another tenant does not reach CoinTutor's app");
    // A tenant limited to some models may not use another.
    let refused = chat("quizland", Some("dify")).await;
    assert_eq!(refused.status(), 422);
    let allowed: Value = chat("quizland", None).await.json().await.unwrap();
    assert_eq!(allowed["model"], "mock");
    app.stop().await;
}
