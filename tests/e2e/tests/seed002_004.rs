//! Seed 002's chat routes (FastAPI conventions) and seed 004's chat rooms (the
//! `{success, message, data, errors}` envelope), driven as their clients drive them: sign up,
//! log in, then chat with the token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use switchboard_e2e::{TestApp, base_env, spawn_app};
use switchboard_test_support::db;

const JWT_SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";

async fn app() -> (TestApp, db::TestDb) {
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url).with("CHAT_GATEWAY_JWT_SECRET", JWT_SECRET)).await;
    (app, test_db)
}

async fn fastapi_token(app: &TestApp, username: &str) -> String {
    assert_eq!(app.register(username, "Passw0rdX", "default").await.status(), 201);
    app.login(username, "Passw0rdX", "default").await
}

#[tokio::test]
async fn simple_chat_keeps_the_users_history_as_context() {
    let (app, _db) = app().await;
    let token = fastapi_token(&app, "student_1").await;
    let chat = |message: &'static str| {
        let (app, token) = (&app, token.clone());
        async move {
            app.client
                .post(format!("{}/chat/simple", app.http))
                .bearer_auth(token)
                .json(&json!({"message": message}))
                .send()
                .await
                .unwrap()
        }
    };
    let first = chat("hello").await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["response"], "mock reply #1: hello");
    assert!(first["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let second: Value = chat("again").await.json().await.unwrap();
    assert_eq!(second["response"], "mock reply #2: again", "the history went upstream");

    let history: Value = app
        .client
        .get(format!("{}/chat/history", app.http))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = history["history"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(
        items[0],
        json!({"username": "student_1", "role": "user", "content": "hello", "timestamp": items[0]["timestamp"]})
    );
    assert_eq!(items[1]["role"], "assistant");
    assert!(items[0]["timestamp"].is_string());

    // FastAPI conventions: 422 naming the field, 401 with WWW-Authenticate.
    let invalid = app
        .client
        .post(format!("{}/chat/simple", app.http))
        .bearer_auth(&token)
        .json(&json!({"text": "wrong field"}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 422);
    let detail: Value = invalid.json().await.unwrap();
    assert_eq!(detail["detail"][0]["loc"], json!(["body", "message"]));
    let anonymous =
        app.client.post(format!("{}/chat/simple", app.http)).json(&json!({"message": "hi"})).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().get("www-authenticate").unwrap().to_str().unwrap().contains("Bearer"));
    assert!(anonymous.json::<Value>().await.unwrap()["detail"].is_string());
    app.stop().await;
}

async fn seed004_token(app: &TestApp, username: &str) -> String {
    let join = app
        .client
        .post(format!("{}/api/v1/users/join", app.http))
        .json(&json!({"username": username, "password": "Passw0rdX"}))
        .send()
        .await
        .unwrap();
    assert_eq!(join.status(), 201);
    let login: Value = app
        .client
        .post(format!("{}/api/v1/users/login", app.http))
        .json(&json!({"username": username, "password": "Passw0rdX"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["data"]["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn chat_rooms_and_their_messages_answer_in_seed_004s_envelope() {
    let (app, _db) = app().await;
    let token = seed004_token(&app, "reader_1").await;
    let send = |method: reqwest::Method, path: String, body: Option<Value>| {
        let (app, token) = (&app, token.clone());
        async move {
            let mut request = app.client.request(method, format!("{}{path}", app.http)).bearer_auth(token);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let answer = request.send().await.unwrap();
            (answer.status().as_u16(), answer.json::<Value>().await.unwrap())
        }
    };
    let (status, created) = send(reqwest::Method::POST, "/api/v1/conversations/".into(), Some(json!({}))).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["success"], true);
    assert_eq!(created["errors"], Value::Null);
    let pk = created["data"]["id"].as_u64().unwrap();
    assert!(created["data"]["title"].as_str().unwrap().starts_with("ChatRoom: "), "{created}");
    assert_eq!(created["data"]["user"], "reader_1");

    // The front end posts `message`; the model's field is `payload`: both work.
    let (status, reply) =
        send(reqwest::Method::POST, format!("/api/v1/conversations/{pk}/messages"), Some(json!({"message": "hi"})))
            .await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["message"], "Message created successfully");
    assert_eq!(reply["data"]["role"], "chatbot");
    assert_eq!(reply["data"]["payload"], "mock reply #1: hi");
    assert_eq!(reply["data"]["conversation"], pk);
    let (status, _) =
        send(reqwest::Method::POST, format!("/api/v1/conversations/{pk}/messages"), Some(json!({"payload": "more"})))
            .await;
    assert_eq!(status, 201);

    let (status, listed) = send(reqwest::Method::GET, format!("/api/v1/conversations/{pk}/messages"), None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["message"], "messages of chatroom");
    let roles: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "chatbot", "user", "chatbot"]);

    let (status, rooms) = send(reqwest::Method::GET, "/api/v1/conversations".into(), None).await;
    assert_eq!(status, 200, "both slash forms are served");
    assert_eq!(rooms["message"], "get Every Conversation of user");
    assert_eq!(rooms["data"][0]["id"], pk);

    // Someone else's room is missing, in the envelope; a bad body names the field.
    let other = seed004_token(&app, "reader_2").await;
    let foreign = app
        .client
        .get(format!("{}/api/v1/conversations/{pk}/messages", app.http))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404);
    let body: Value = foreign.json().await.unwrap();
    assert_eq!((body["success"].clone(), body["message"].clone()), (json!(false), json!("No conversation found.")));
    let (status, empty) =
        send(reqwest::Method::POST, format!("/api/v1/conversations/{pk}/messages"), Some(json!({}))).await;
    assert_eq!(status, 422, "{empty}");
    assert!(empty["errors"]["payload"].is_array(), "{empty}");
    app.stop().await;
}
