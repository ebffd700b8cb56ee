//! Seed 000's API with client keys: one running conversation and one model per key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use switchboard_e2e::{TestApp, base_env, spawn_app};
use switchboard_test_support::db;

const ADMIN: &str = "admin-token-for-classic-0001";

async fn new_key(app: &TestApp, name: &str) -> String {
    let key: Value = app
        .client
        .post(format!("{}/api-keys", app.http))
        .header("X-Admin-Token", ADMIN)
        .json(&json!({"client_name": name}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    key["api_key"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn each_client_key_has_one_running_conversation_and_one_model() {
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url).with("SWITCHBOARD_ADMIN_TOKEN", ADMIN)).await;
    let key = new_key(&app, "gpt-action").await;
    let call = |method: reqwest::Method, path: &str, body: Option<Value>, key: &str| {
        let mut request = app.client.request(method, format!("{}{path}", app.http)).header("X-API-Key", key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };

    let first: Value = call(reqwest::Method::POST, "/query", Some(json!({"input": "안녕하세요"})), &key)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first, json!({"response": "mock reply #1: 안녕하세요"}));
    let second: Value = call(reqwest::Method::POST, "/query", Some(json!({"input": "again"})), &key)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second["response"], "mock reply #2: again", "the running conversation carries on");

    let history: Value = call(reqwest::Method::GET, "/history", None, &key).await.unwrap().json().await.unwrap();
    let history = history.as_array().expect("a bare array");
    assert_eq!(history.len(), 4);
    assert_eq!(history[0]["role"], "user");
    assert_eq!(history[1]["content"], "mock reply #1: 안녕하세요");
    assert!(history[3]["timestamp"].as_str().unwrap().ends_with('Z'));

    let other = new_key(&app, "another-client").await;
    let theirs: Value = call(reqwest::Method::GET, "/history", None, &other).await.unwrap().json().await.unwrap();
    assert_eq!(theirs, json!([]), "another key has a history of its own");

    assert_eq!(
        call(reqwest::Method::GET, "/model", None, &key).await.unwrap().json::<Value>().await.unwrap(),
        json!({"model": "mock"})
    );
    let unknown = call(reqwest::Method::POST, "/model", Some(json!({"model": "gpt-9"})), &key).await.unwrap();
    assert_eq!(unknown.status(), 400);
    assert_eq!(
        unknown.json::<Value>().await.unwrap(),
        json!({"error": "사용할 수 없는 모델입니다. 사용 가능한 모델: mock"})
    );
    let set = call(reqwest::Method::POST, "/model", Some(json!({"model": "mock"})), &key).await.unwrap();
    assert_eq!(set.json::<Value>().await.unwrap(), json!({"model": "mock"}));
    let models: Value = call(reqwest::Method::GET, "/models", None, &key).await.unwrap().json().await.unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "mock");

    let missing_input = call(reqwest::Method::POST, "/query", Some(json!({})), &key).await.unwrap();
    assert_eq!(missing_input.status(), 422);
    assert!(missing_input.json::<Value>().await.unwrap()["error"].as_str().unwrap().starts_with("input"));

    let cleared: Value = call(reqwest::Method::DELETE, "/history", None, &key).await.unwrap().json().await.unwrap();
    assert_eq!(cleared, json!({"message": "대화 기록이 초기화되었습니다."}));
    let history: Value = call(reqwest::Method::GET, "/history", None, &key).await.unwrap().json().await.unwrap();
    assert_eq!(history, json!([]));
    let fresh: Value = call(reqwest::Method::POST, "/query", Some(json!({"input": "new start"})), &key)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fresh["response"], "mock reply #1: new start");

    let anonymous = app.client.get(format!("{}/history", app.http)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.json::<Value>().await.unwrap()["error"].is_string());
    app.stop().await;
}
