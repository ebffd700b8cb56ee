//! Holes a security review found, each reproduced as an attacker would try it. Every test here
//! failed before its fix.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use switchboard_e2e::{ADMIN_TOKEN, SERVICE_KEY, TestApp, base_env, openai_env, spawn_app, with_admin};
use switchboard_kit::Env;
use switchboard_proto::llm::v1 as llm;
use switchboard_test_support::{MockUpstream, db};
use tonic::Request;

const JWT_SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";
const PASSWORD: &str = "Passw0rdX";

fn secure_env(env: Env) -> Env {
    with_admin(env).with("CHAT_GATEWAY_JWT_SECRET", JWT_SECRET)
}

async fn register(app: &TestApp, username: &str, system_id: &str) -> reqwest::Response {
    app.register(username, PASSWORD, system_id).await
}

async fn login(app: &TestApp, username: &str, system_id: &str) -> String {
    app.login(username, PASSWORD, system_id).await
}

async fn conversations_with_bearer(app: &TestApp, token: &str) -> Value {
    let answer = app.client.get(format!("{}/v1/conversations", app.http)).bearer_auth(token).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    answer.json().await.unwrap()
}

async fn issue_key(app: &TestApp, body: Value) -> Value {
    app.issue_key(body).await
}

#[tokio::test]
async fn registering_a_backend_users_id_does_not_reach_that_users_history() {
    let test_db = db::sqlite();
    let env = secure_env(base_env(&test_db.url)).with("SWITCHBOARD_REGISTRATION_SYSTEMS", "default,drillquiz");
    let app = spawn_app(env).await;
    // DrillQuiz's backend keeps user 12345's history with its service key.
    let chat =
        app.post("/v1/chat", json!({"system_id": "drillquiz", "user_id": "12345", "message": "my secret"})).await;
    assert_eq!(chat.status(), 200);

    // Someone signs up with that id as a username and logs in.
    assert_eq!(register(&app, "12345", "drillquiz").await.status(), 201);
    let token = login(&app, "12345", "drillquiz").await;
    let seen = conversations_with_bearer(&app, &token).await;
    assert_eq!(seen["data"], json!([]), "a self-registered user saw a backend user's history: {seen}");

    // /users/me still names the user by the username they chose.
    let me: Value = app
        .client
        .get(format!("{}/users/me", app.http))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "12345");
    assert_eq!(me["system_id"], "drillquiz");
    app.stop().await;
}

#[tokio::test]
async fn registering_a_client_keys_principal_does_not_reach_that_keys_history() {
    let test_db = db::sqlite();
    let app = spawn_app(secure_env(base_env(&test_db.url))).await;
    let key = issue_key(&app, json!({"client_name": "gpt-action"})).await;
    let plaintext = key["api_key"].as_str().unwrap();
    let id = plaintext.strip_prefix("sb_").unwrap().split('_').next().unwrap();
    let chat = app
        .client
        .post(format!("{}/v1/chat", app.http))
        .header("X-API-Key", plaintext)
        .json(&json!({"message": "the key's own secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);

    let username = format!("key_{id}");
    assert_eq!(register(&app, &username, "default").await.status(), 201);
    let token = login(&app, &username, "default").await;
    let seen = conversations_with_bearer(&app, &token).await;
    assert_eq!(seen["data"], json!([]), "a self-registered user saw a client key's history: {seen}");
    app.stop().await;
}

#[tokio::test]
async fn open_registration_is_off_for_tenants_not_listed() {
    let test_db = db::sqlite();
    let app = spawn_app(secure_env(base_env(&test_db.url))).await;
    let refused = register(&app, "mallory", "drillquiz").await;
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("SWITCHBOARD_REGISTRATION_SYSTEMS"), "{body}");
    assert_eq!(register(&app, "mallory", "default").await.status(), 201, "`default` is open by default");
    // Seed 004's sign-up takes the same rule (it has no tenant field: `default`).
    let join = app
        .client
        .post(format!("{}/api/v1/users/join", app.http))
        .json(&json!({"username": "mallory2", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(join.status(), 201);
    app.stop().await;
}

#[tokio::test]
async fn a_service_key_cannot_assert_a_signed_in_users_or_a_keys_identity() {
    let test_db = db::sqlite();
    let app = spawn_app(secure_env(base_env(&test_db.url))).await;
    assert_eq!(register(&app, "alice_1", "default").await.status(), 201);
    let token = login(&app, "alice_1", "default").await;
    let chat = app
        .client
        .post(format!("{}/v1/chat", app.http))
        .bearer_auth(&token)
        .json(&json!({"message": "alice's secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    let key = issue_key(&app, json!({"client_name": "bot"})).await;
    let id = key["api_key"].as_str().unwrap().strip_prefix("sb_").unwrap().split('_').next().unwrap().to_owned();

    for reserved in ["user:alice_1".to_owned(), format!("key_{id}")] {
        let listed = app.get(&format!("/v1/conversations?system_id=default&user_id={reserved}")).await;
        assert_eq!(listed.status(), 403, "service key listed {reserved}'s history");
        let sent = app.post("/v1/chat", json!({"system_id": "default", "user_id": reserved, "message": "x"})).await;
        assert_eq!(sent.status(), 403, "service key chatted as {reserved}");
        let minted = app.get(&format!("/v1/chat-token?system_id=default&user_id={reserved}")).await;
        assert_eq!(minted.status(), 403, "service key minted a chat token for {reserved}");
    }
    app.stop().await;
}

/// A service key bound to one tenant, as a gRPC caller would hold it.
async fn tenant_key(app: &TestApp, system_id: &str) -> String {
    let key = issue_key(app, json!({"client_name": "quiz-backend", "scope": "service", "system_id": system_id})).await;
    key["api_key"].as_str().unwrap().to_owned()
}

fn with_key<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("x-api-key", key.parse().unwrap());
    request
}

#[tokio::test]
async fn the_llm_proxy_acts_for_exactly_the_principal_it_checked() {
    let upstream = MockUpstream::start().await;
    let test_db = db::sqlite();
    let app = spawn_app(secure_env(openai_env(&test_db.url, &upstream.base_url()))).await;
    let drillquiz_key = tenant_key(&app, "drillquiz").await;
    let mut llm_client = app.llm().await;

    // The drillquiz key names user "u" without a tenant: it means drillquiz's user "u".
    let principal = llm::Principal { system_id: String::new(), user_id: "u".into() };
    let set = llm_client
        .set_model_choice(with_key(
            llm::SetModelChoiceRequest { principal: Some(principal.clone()), model: "gpt-test-mini".into() },
            &drillquiz_key,
        ))
        .await
        .unwrap();
    assert_eq!(set.into_inner().model, "gpt-test-mini");

    let choice_of = |system_id: &str| {
        let mut client = llm_client.clone();
        let request = with_key(
            llm::GetModelChoiceRequest {
                principal: Some(llm::Principal { system_id: system_id.into(), user_id: "u".into() }),
            },
            SERVICE_KEY,
        );
        async move { client.get_model_choice(request).await.unwrap().into_inner() }
    };
    let default_users = choice_of("default").await;
    assert!(!default_users.chosen, "a drillquiz key changed tenant `default`'s user: {default_users:?}");
    let drillquiz_users = choice_of("drillquiz").await;
    assert!(drillquiz_users.chosen && drillquiz_users.model == "gpt-test-mini", "{drillquiz_users:?}");

    // A drillquiz-bound key naming another tenant outright is refused.
    let other = llm_client
        .set_model_choice(with_key(
            llm::SetModelChoiceRequest {
                principal: Some(llm::Principal { system_id: "default".into(), user_id: "u".into() }),
                model: "gpt-test".into(),
            },
            &drillquiz_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::PermissionDenied);
    app.stop().await;
}

#[tokio::test]
async fn a_tenant_bound_client_key_stays_in_its_tenant_on_every_service() {
    let upstream = MockUpstream::start().await;
    let test_db = db::sqlite();
    let app = spawn_app(secure_env(openai_env(&test_db.url, &upstream.base_url()))).await;
    let key = issue_key(&app, json!({"client_name": "quiz-widget", "system_id": "drillquiz"})).await;
    let plaintext = key["api_key"].as_str().unwrap().to_owned();
    let id = plaintext.strip_prefix("sb_").unwrap().split('_').next().unwrap().to_owned();
    let mut llm_client = app.llm().await;
    // Naming its own user id without the tenant must not move it to `default`.
    let set = llm_client
        .set_model_choice(with_key(
            llm::SetModelChoiceRequest {
                principal: Some(llm::Principal { system_id: String::new(), user_id: format!("key_{id}") }),
                model: "gpt-test-mini".into(),
            },
            &plaintext,
        ))
        .await
        .unwrap();
    assert_eq!(set.into_inner().model, "gpt-test-mini");
    let own = llm_client
        .get_model_choice(with_key(llm::GetModelChoiceRequest { principal: None }, &plaintext))
        .await
        .unwrap()
        .into_inner();
    assert!(own.chosen, "the key's choice was stored under another tenant: {own:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_service_key_reads_a_conversation_by_id_alone_within_its_tenants() {
    let test_db = db::sqlite();
    let app = spawn_app(secure_env(base_env(&test_db.url))).await;
    let chat: Value = app
        .post("/v1/chat", json!({"system_id": "drillquiz", "user_id": "12345", "message": "hello"}))
        .await
        .json()
        .await
        .unwrap();
    let id = chat["conversation_id"].as_str().unwrap();
    // Seed 003 documents these routes without query parameters.
    for path in [format!("/v1/conversations/{id}/messages"), format!("/v1/cache/conversations/{id}/messages")] {
        let read = app.get(&path).await;
        assert_eq!(read.status(), 200, "{path}");
        let body: Value = read.json().await.unwrap();
        assert_eq!(body["data"].as_array().unwrap().len(), 2, "{body}");
    }
    // Given, the ids are filters: a conversation that does not match is missing.
    assert_eq!(app.get(&format!("/v1/conversations/{id}/messages?user_id=12345")).await.status(), 200);
    assert_eq!(app.get(&format!("/v1/conversations/{id}/messages?user_id=999")).await.status(), 404);
    assert_eq!(app.get(&format!("/v1/conversations/{id}/messages?system_id=cointutor")).await.status(), 404);
    // A key of another tenant sees nothing, exactly as for a missing id.
    let cointutor = tenant_key(&app, "cointutor").await;
    let get = |key: String, path: String| {
        let app = &app;
        async move { app.client.get(format!("{}{path}", app.http)).header("X-API-Key", key).send().await.unwrap() }
    };
    let foreign = get(cointutor.clone(), format!("/v1/conversations/{id}/messages")).await;
    assert_eq!(foreign.status(), 404);
    let missing = get(cointutor, "/v1/conversations/no-such-id/messages".into()).await;
    assert_eq!(foreign.text().await.unwrap(), missing.text().await.unwrap());
    let drillquiz = tenant_key(&app, "drillquiz").await;
    assert_eq!(get(drillquiz, format!("/v1/conversations/{id}/messages")).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_whose_caller_left_replays_the_stored_answer_instead_of_409() {
    let upstream = MockUpstream::start().await;
    upstream.set_delay(std::time::Duration::from_millis(800));
    let test_db = db::sqlite();
    let app = spawn_app(secure_env(openai_env(&test_db.url, &upstream.base_url()))).await;
    let body = json!({"system_id": "drillquiz", "user_id": "12345", "message": "only once"});
    let send = |timeout: std::time::Duration| {
        let (app, body) = (&app, body.clone());
        async move {
            app.client
                .post(format!("{}/v1/chat", app.http))
                .header("X-API-Key", SERVICE_KEY)
                .header("Idempotency-Key", "retry-me-1")
                .timeout(timeout)
                .json(&body)
                .send()
                .await
        }
    };
    // The client gives up before the answer; the turn goes on and is stored.
    assert!(send(std::time::Duration::from_millis(200)).await.is_err(), "the first call should time out");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    upstream.set_delay(std::time::Duration::ZERO);
    let retry = send(std::time::Duration::from_secs(10)).await.unwrap();
    assert_eq!(retry.status(), 200, "the retry was refused: {}", retry.text().await.unwrap());
    let answer: Value = retry.json().await.unwrap();
    assert_eq!(answer["answer"], "upstream reply to: only once");
    assert_eq!(upstream.calls(), 1, "the retry replayed the stored answer");
    app.stop().await;
}

#[tokio::test]
async fn an_api_key_name_with_control_characters_is_refused_naming_client_name() {
    let test_db = db::sqlite();
    let app = spawn_app(secure_env(base_env(&test_db.url))).await;
    let create = |name: &str| {
        app.client
            .post(format!("{}/api-keys", app.http))
            .header("X-Admin-Token", ADMIN_TOKEN)
            .json(&json!({"client_name": name}))
            .send()
    };
    // Each would forge or hide a line in the text log that records the key.
    for name in [
        "backend\nINFO API key revoked key_id=all",
        "cr\rhere",
        "tab\there",
        "esc\u{1b}[2K",
        "nul\0",
        "ls\u{2028}here",
        "rlo\u{202e}txt.exe",
    ] {
        let answer = create(name).await.unwrap();
        assert_eq!(answer.status(), 422, "{name:?}");
        let body: Value = answer.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("client_name"), "{name:?}: {body}");
    }
    assert_eq!(
        create("DrillQuiz 백엔드 (prod)").await.unwrap().status(),
        200,
        "printable names of any script are fine"
    );
    app.stop().await;
}

#[tokio::test]
async fn only_a_service_credential_mints_chat_tokens() {
    let test_db = db::sqlite();
    let app = spawn_app(secure_env(base_env(&test_db.url))).await;
    // A backend mints one for its user: allowed.
    let minted = app.get("/v1/chat-token?system_id=drillquiz&user_id=12345").await;
    assert_eq!(minted.status(), 200);
    let chat_token = minted.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    // A chat token, a signed-in user or a client key could otherwise mint fresh 24-hour tokens
    // for themselves forever, outliving logout and key revocation.
    assert_eq!(register(&app, "alice_2", "default").await.status(), 201);
    let login_token = login(&app, "alice_2", "default").await;
    let key = issue_key(&app, json!({"client_name": "widget"})).await["api_key"].as_str().unwrap().to_owned();
    for (what, request) in [
        ("a chat token", app.client.get(format!("{}/v1/chat-token", app.http)).bearer_auth(&chat_token)),
        ("a login token", app.client.get(format!("{}/v1/chat-token", app.http)).bearer_auth(&login_token)),
        ("a client key", app.client.get(format!("{}/v1/chat-token", app.http)).header("X-API-Key", &key)),
    ] {
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), 403, "{what} minted a chat token");
    }
    app.stop().await;
}

#[tokio::test]
async fn open_key_registration_may_not_pick_a_tenant() {
    let test_db = db::sqlite();
    let app = spawn_app(
        secure_env(base_env(&test_db.url))
            .with("SWITCHBOARD_OPEN_KEY_REGISTRATION", "true")
            .with("ALLOWED_SYSTEM_IDS", "default,drillquiz"),
    )
    .await;
    let open = |body: Value| {
        let app = &app;
        async move { app.client.post(format!("{}/api-keys", app.http)).json(&body).send().await.unwrap() }
    };
    let refused = open(json!({"client_name": "squatter", "system_id": "drillquiz"})).await;
    assert_eq!(refused.status(), 403, "an anonymous key landed in tenant drillquiz");
    let allowed = open(json!({"client_name": "gpt-action"})).await;
    assert_eq!(allowed.status(), 200);
    let tenant = allowed.json::<Value>().await.unwrap()["system_id"].as_str().unwrap().to_owned();
    assert!(tenant.is_empty() || tenant == "default", "{tenant}");
    app.stop().await;
}

#[tokio::test]
async fn made_up_http_methods_do_not_grow_the_metrics_without_bound() {
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url)).await;
    for i in 0..5 {
        let method = reqwest::Method::from_bytes(format!("BOGUS{i}").as_bytes()).unwrap();
        let _ = app.client.request(method, format!("{}/v1/conversations", app.http)).send().await.unwrap();
    }
    let metrics = app.client.get(format!("{}/metrics", app.http)).send().await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("BOGUS"), "each made-up method became a new series");
    assert!(metrics.contains("method=\"other\""), "made-up methods are counted together");
    app.stop().await;
}

#[tokio::test]
async fn upstream_error_text_is_neither_stored_nor_shown_to_end_users() {
    let upstream = MockUpstream::start().await;
    // An upstream's error can hold a (masked) key or other internals.
    upstream.accept_only(Some(&["sk-not-the-configured-one"]));
    let test_db = db::sqlite();
    let env = secure_env(openai_env(&test_db.url, &upstream.base_url())).with("SWITCHBOARD_UPSTREAM_RETRIES", "0");
    let app = spawn_app(env).await;
    let answer = app.post("/v1/chat", json!({"system_id": "drillquiz", "user_id": "12345", "message": "hi"})).await;
    assert_eq!(answer.status(), 502);
    let shown = answer.text().await.unwrap();
    let list: Value = app.get("/v1/conversations?system_id=drillquiz&user_id=12345").await.json().await.unwrap();
    let id = list["data"][0]["id"].as_str().unwrap();
    let messages = app.get(&format!("/v1/conversations/{id}/messages")).await.text().await.unwrap();
    for text in [&shown, &messages] {
        assert!(!text.contains("Incorrect API key"), "the upstream's words reached the client: {text}");
    }
    let stored: Value = serde_json::from_str(&messages).unwrap();
    assert_eq!(stored["data"][1]["status"], "failed");
    assert!(
        stored["data"][1]["error"].as_str().unwrap().contains("401"),
        "the reason still says what happened: {stored}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url).with("SWITCHBOARD_HEADER_READ_TIMEOUT_SECS", "1")).await;
    let address = app.http.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    // Slowloris: a request line and one header, then nothing.
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 256];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(4), slow.read(&mut buffer)).await;
    assert!(closed.is_ok(), "the half-sent request still holds its connection after 4 s");
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "{:?}", started.elapsed());
    // Normal clients are not affected.
    assert_eq!(app.client.get(format!("{}/healthz", app.http)).send().await.unwrap().status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn password_guessing_straight_at_the_auth_service_locks_the_account() {
    use switchboard_proto::auth::v1 as auth;
    let test_db = db::sqlite();
    let app = spawn_app(secure_env(base_env(&test_db.url))).await;
    assert_eq!(register(&app, "target_1", "default").await.status(), 201);
    // No gateway and its per-address limit in the way: a gRPC client of the auth service.
    let mut client = auth::auth_service_client::AuthServiceClient::new(switchboard_e2e::grpc_channel(app.auth_port));
    let attempt = |password: &str| auth::LoginRequest {
        username: "target_1".into(),
        password: password.into(),
        system_id: String::new(),
    };
    let mut codes = Vec::new();
    for i in 0..12 {
        let code = match client.login(attempt(&format!("Guess{i:04}x"))).await {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        codes.push(code);
    }
    assert!(codes[..10].iter().all(|c| *c == tonic::Code::Unauthenticated), "{codes:?}");
    assert_eq!(codes[10..], [tonic::Code::ResourceExhausted; 2], "{codes:?}");
    let locked = client.login(attempt(PASSWORD)).await.unwrap_err();
    assert_eq!(locked.code(), tonic::Code::ResourceExhausted, "even the right password waits for the window");
    assert!(locked.metadata().get("sb-retry-after").is_some());
    app.stop().await;
}

#[tokio::test]
async fn a_request_whose_body_never_arrives_is_answered_408_in_time() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url).with("SWITCHBOARD_REQUEST_TIMEOUT_SECS", "1")).await;
    let address = app.http.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    // Headers promise 100 bytes of body; 10 come, then nothing.
    let head = format!(
        "POST /v1/chat HTTP/1.1\r\nHost: x\r\nX-API-Key: {SERVICE_KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"message\""
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = vec![0u8; 512];
    let read = tokio::time::timeout(std::time::Duration::from_secs(4), slow.read(&mut answer)).await;
    let read = read.expect("no answer within 4 s while the body never arrives").unwrap();
    let text = String::from_utf8_lossy(&answer[..read]).to_string();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "{:?}", started.elapsed());
    app.stop().await;
}
