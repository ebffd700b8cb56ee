//! Seed 001's API (the custom-GPT Actions server), as its documented requests and answers
//! show it: the `{success, message, data}` envelope, camelCase, whole-number ids, usage per
//! endpoint, and `API_SECRET_KEY` as a service key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_e2e::{TestApp, base_env, spawn_app};
use switchboard_proto::conversation::v1 as pb;
use switchboard_test_support::db;

const SECRET: &str = "seed-001-api-secret-key";

async fn app() -> (TestApp, db::TestDb) {
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url).with("API_SECRET_KEY", SECRET)).await;
    (app, test_db)
}

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let answer =
        app.client.post(format!("{}{path}", app.http)).header("X-API-Key", SECRET).json(&body).send().await.unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap())
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let answer = app.client.get(format!("{}{path}", app.http)).header("X-API-Key", SECRET).send().await.unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap())
}

#[tokio::test]
async fn the_documented_chat_request_answers_in_the_documented_shape() {
    let (app, _db) = app().await;
    // The seed's first example, without a conversation: a new one is made.
    let (status, first) = post(
        &app,
        "/api/chat",
        json!({"userId": "user123", "message": "안녕하세요!", "model": "mock", "temperature": 0.7, "maxTokens": 1000}),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["success"], true);
    assert_eq!(first["message"], "Chat response generated successfully");
    let data = &first["data"];
    let conversation_id = data["conversationId"].as_u64().expect("an integer conversationId");
    assert!(data["messageId"].as_u64().is_some(), "an integer messageId: {data}");
    assert_eq!(data["response"], "mock reply #1: 안녕하세요!");
    let usage = &data["usage"];
    assert_eq!(
        usage["totalTokens"].as_u64().unwrap(),
        usage["promptTokens"].as_u64().unwrap() + usage["completionTokens"].as_u64().unwrap()
    );

    // Continuing it by its integer id: the history travels upstream ("#2").
    let (status, second) =
        post(&app, "/api/chat", json!({"userId": "user123", "message": "again", "conversationId": conversation_id}))
            .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["data"]["conversationId"], conversation_id);
    assert_eq!(second["data"]["response"], "mock reply #2: again");
    assert!(second["data"]["messageId"].as_u64() > data["messageId"].as_u64());

    // Someone else's conversation id is not found.
    let (status, other) =
        post(&app, "/api/chat", json!({"userId": "intruder", "message": "x", "conversationId": conversation_id})).await;
    assert_eq!(status, 404, "{other}");
    assert_eq!(other["success"], false);
    assert_eq!(other["message"], "Conversation not found");
    app.stop().await;
}

#[tokio::test]
async fn errors_take_the_envelope_and_name_the_field() {
    let (app, _db) = app().await;
    let (status, missing) = post(&app, "/api/chat", json!({"userId": "user123"})).await;
    assert_eq!(status, 422, "{missing}");
    assert_eq!(missing["success"], false);
    assert_eq!(missing["data"], Value::Null);
    assert!(missing["message"].as_str().unwrap().contains("message"), "{missing}");
    assert_eq!(missing["error"], missing["message"]);
    let (status, bad) =
        post(&app, "/api/chat", json!({"userId": "u", "message": "x", "conversationId": "not-a-number"})).await;
    assert_eq!(status, 422, "{bad}");
    assert!(bad["message"].as_str().unwrap().contains("conversationId"), "{bad}");
    let (status, bad) = post(&app, "/api/chat", json!({"userId": "u", "message": "x", "maxTokens": 5000})).await;
    assert_eq!(status, 422);
    assert!(bad["message"].as_str().unwrap().contains("maxTokens"), "{bad}");
    let unauthenticated = app
        .client
        .post(format!("{}/api/chat", app.http))
        .json(&json!({"userId": "u", "message": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    assert_eq!(unauthenticated.json::<Value>().await.unwrap()["success"], false);
    let (status, bad_id) = get(&app, "/api/conversations/abc/messages").await;
    assert_eq!(status, 422, "{bad_id}");
    assert!(bad_id["message"].as_str().unwrap().contains("Invalid conversation ID"), "{bad_id}");
    app.stop().await;
}

#[tokio::test]
async fn conversations_are_created_listed_and_read_with_integer_ids() {
    let (app, _db) = app().await;
    let (status, created) = post(&app, "/api/conversations", json!({"userId": "user123", "title": "quiz"})).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["message"], "Conversation created successfully");
    let id = created["data"]["id"].as_u64().unwrap();
    assert_eq!(created["data"]["title"], "quiz");
    assert_eq!(created["data"]["user_id"], "user123");
    let (_, untitled) = post(&app, "/api/conversations", json!({"userId": "user123"})).await;
    assert_eq!(untitled["data"]["title"], "New Conversation");

    let (status, _) =
        post(&app, "/api/chat", json!({"userId": "user123", "message": "hello", "conversationId": id})).await;
    assert_eq!(status, 200);

    let (status, listed) = get(&app, "/api/conversations?userId=user123").await;
    assert_eq!(status, 200, "{listed}");
    let rows = listed["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], id, "most recently updated first");
    assert_eq!(rows[0]["message_count"], 2);
    let (_, paged) = get(&app, "/api/conversations?userId=user123&limit=1&offset=1").await;
    assert_eq!(paged["data"].as_array().unwrap().len(), 1);
    assert_ne!(paged["data"][0]["id"], id);
    let (_, nobody) = get(&app, "/api/conversations?userId=nobody").await;
    assert_eq!(nobody["data"], json!([]));

    // Seed 001 reads messages by conversation id alone.
    let (status, read) = get(&app, &format!("/api/conversations/{id}/messages")).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["data"]["conversation"]["id"], id);
    let messages = read["data"]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["content"], "hello");
    assert_eq!(messages[0]["metadata"], Value::Null);
    assert!(messages[0]["id"].as_u64().unwrap() < messages[1]["id"].as_u64().unwrap());
    assert_eq!(messages[1]["role"], "assistant");
    assert!(messages[1]["metadata"]["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let (status, _) = get(&app, &format!("/api/conversations/{id}/messages?userId=someone-else")).await;
    assert_eq!(status, 404);
    let (status, missing) = get(&app, "/api/conversations/999999/messages").await;
    assert_eq!(status, 404);
    assert_eq!(missing["message"], "Conversation not found");
    app.stop().await;
}

#[tokio::test]
async fn health_reports_the_store_and_the_cache() {
    let (app, _db) = app().await;
    let answer = app.client.get(format!("{}/api/health", app.http)).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["success"], true);
    assert_eq!(body["message"], "All services are healthy");
    assert_eq!(body["data"]["database"], true);
    assert_eq!(body["data"]["redis"], Value::Null, "no Redis configured: caches run in process");
    assert!(body["data"]["timestamp"].as_str().unwrap().ends_with('Z'));
    app.stop().await;
}

#[tokio::test]
async fn requests_are_counted_per_user_and_endpoint_and_readable_over_grpc() {
    let (app, _db) = app().await;
    for message in ["one", "two", "three"] {
        let (status, _) = post(&app, "/api/chat", json!({"userId": "user123", "message": message})).await;
        assert_eq!(status, 200);
    }
    let (status, _) = get(&app, "/api/conversations?userId=user123").await;
    assert_eq!(status, 200);
    let mut client = app.conversations().await;
    let mut usage = Vec::new();
    for _ in 0..40 {
        let mut request = tonic::Request::new(pb::GetApiUsageRequest {
            principal: Some(pb::Principal { system_id: "default".into(), user_id: "user123".into() }),
        });
        request.metadata_mut().insert("x-api-key", SECRET.parse().unwrap());
        usage = client.get_api_usage(request).await.unwrap().into_inner().usage;
        if usage.iter().map(|u| u.request_count).sum::<u64>() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let count = |endpoint: &str| usage.iter().find(|u| u.endpoint == endpoint).map(|u| u.request_count);
    assert_eq!(count("POST /api/chat"), Some(3), "{usage:?}");
    assert_eq!(count("GET /api/conversations"), Some(1), "{usage:?}");
    assert!(usage.iter().all(|u| u.last_request_at.is_some()));
    app.stop().await;
}
