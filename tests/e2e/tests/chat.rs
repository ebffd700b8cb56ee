//! The chat path end to end: gateway → conversations → LLM proxy → upstream, and back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use switchboard_e2e::{SERVICE_KEY, base_env, openai_env, spawn_app};
use switchboard_proto::conversation::v1 as pb;
use switchboard_test_support::{MockUpstream, db};

#[tokio::test]
async fn chat_with_the_mock_model_answers_and_stores_the_turn() {
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url)).await;

    let response =
        app.post("/v1/chat", json!({"system_id": "drillquiz", "user_id": "12345", "message": "안녕하세요"})).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["answer"], "mock reply #1: 안녕하세요");
    assert_eq!(body["model"], "mock");
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0);
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
    let conversation_id = body["conversation_id"].as_str().unwrap().to_owned();

    // The second turn continues the conversation and sends its history upstream.
    let response = app
        .post(
            "/v1/chat",
            json!({"system_id": "drillquiz", "user_id": "12345", "message": "again", "conversation_id": conversation_id}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let second: Value = response.json().await.unwrap();
    assert_eq!(second["answer"], "mock reply #2: again");
    assert_eq!(second["conversation_id"], conversation_id.as_str());

    let list: Value = app.get("/v1/conversations?system_id=drillquiz&user_id=12345").await.json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["id"], conversation_id.as_str());
    assert_eq!(list["data"][0]["title"], "안녕하세요");
    assert_eq!(list["data"][0]["message_count"], 4);
    assert!(list["next_cursor"].is_null());

    let messages: Value = app
        .get(&format!("/v1/conversations/{conversation_id}/messages?system_id=drillquiz&user_id=12345"))
        .await
        .json()
        .await
        .unwrap();
    let roles_and_text: Vec<(String, String)> = messages["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_owned(), m["content"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        roles_and_text,
        vec![
            ("user".to_owned(), "안녕하세요".to_owned()),
            ("assistant".to_owned(), "mock reply #1: 안녕하세요".to_owned()),
            ("user".to_owned(), "again".to_owned()),
            ("assistant".to_owned(), "mock reply #2: again".to_owned()),
        ]
    );
    assert_eq!(messages["data"][1]["id"], body["message_id"]);
    assert_eq!(messages["data"][1]["status"], "complete");
    app.stop().await;
}

#[tokio::test]
async fn chat_through_an_openai_compatible_upstream_sends_the_history_and_the_key() {
    let upstream = MockUpstream::start().await;
    let test_db = db::sqlite();
    let env = openai_env(&test_db.url, &upstream.base_url());
    let app = spawn_app(env).await;

    let first: Value = app
        .post("/v1/chat", json!({"system_id": "cointutor", "user_id": "u1", "message": "What is a coin?"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["answer"], "upstream reply to: What is a coin?");
    assert_eq!(first["model"], "gpt-test");
    let conversation_id = first["conversation_id"].as_str().unwrap();
    let second = app
        .post(
            "/v1/chat",
            json!({"system_id": "cointutor", "user_id": "u1", "message": "And a token?", "conversation_id": conversation_id}),
        )
        .await;
    assert_eq!(second.status(), 200);

    assert_eq!(upstream.calls(), 2);
    let sent = &upstream.requests()[1];
    assert_eq!(sent["model"], "gpt-test");
    let contents: Vec<&str> =
        sent["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, vec!["What is a coin?", "upstream reply to: What is a coin?", "And a token?"]);
    assert_eq!(upstream.authorizations()[0].as_deref(), Some("Bearer sk-upstream-secret"));

    // The built-in model stays available by name next to the upstream's.
    let mock: Value = app
        .post("/v1/chat", json!({"system_id": "cointutor", "user_id": "u1", "message": "hi", "model": "mock"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mock["model"], "mock");
    assert_eq!(upstream.calls(), 2);
    app.stop().await;
}

#[tokio::test]
async fn history_survives_a_restart_of_every_component() {
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url)).await;
    let body: Value = app
        .post("/v1/chat", json!({"system_id": "drillquiz", "user_id": "7", "message": "remember me"}))
        .await
        .json()
        .await
        .unwrap();
    let conversation_id = body["conversation_id"].as_str().unwrap().to_owned();
    app.stop().await;

    let app = spawn_app(base_env(&test_db.url)).await;
    let messages: Value = app
        .get(&format!("/v1/conversations/{conversation_id}/messages?system_id=drillquiz&user_id=7"))
        .await
        .json()
        .await
        .unwrap();
    let contents: Vec<&str> =
        messages["data"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, vec!["remember me", "mock reply #1: remember me"]);
    // The restarted services carry on the same conversation.
    let next: Value = app
        .post(
            "/v1/chat",
            json!({"system_id": "drillquiz", "user_id": "7", "message": "still there?", "conversation_id": conversation_id}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(next["answer"], "mock reply #2: still there?");
    app.stop().await;
}

#[tokio::test]
async fn history_survives_a_restart_on_postgres() {
    let test_db = db::postgres().await;
    let app = spawn_app(base_env(&test_db.url)).await;
    let body: Value = app
        .post("/v1/chat", json!({"system_id": "drillquiz", "user_id": "pg", "message": "durable?"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["answer"], "mock reply #1: durable?");
    app.stop().await;

    let app = spawn_app(base_env(&test_db.url)).await;
    let list: Value = app.get("/v1/conversations?system_id=drillquiz&user_id=pg").await.json().await.unwrap();
    assert_eq!(list["data"][0]["id"], body["conversation_id"]);
    assert_eq!(list["data"][0]["message_count"], 2);
    app.stop().await;
}

#[tokio::test]
async fn invalid_input_gets_a_4xx_that_names_the_field() {
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url)).await;
    let cases = [
        (json!({"system_id": "drillquiz", "user_id": "1"}), 422, vec!["body", "message"]),
        (json!({"system_id": "drillquiz", "message": "hi"}), 422, vec!["body", "user_id"]),
        (json!({"user_id": "1", "message": "hi"}), 422, vec!["body", "system_id"]),
        (json!({"system_id": "drillquiz", "user_id": "1", "message": 42}), 422, vec!["body", "message"]),
        (
            json!({"system_id": "drillquiz", "user_id": "1", "message": "hi", "stream": "yes"}),
            422,
            vec!["body", "stream"],
        ),
        (json!({"system_id": "drillquiz", "user_id": "1", "message": "   "}), 422, vec!["body", "message"]),
        (json!({"system_id": "drill quiz", "user_id": "1", "message": "hi"}), 422, vec!["body", "system_id"]),
        (
            json!({"system_id": "drillquiz", "user_id": "1", "message": "hi", "temperature": 7.5}),
            422,
            vec!["body", "temperature"],
        ),
        (json!(["not", "an", "object"]), 422, vec!["body"]),
    ];
    for (body, status, loc) in cases {
        let response = app.post("/v1/chat", body.clone()).await;
        assert_eq!(response.status(), status, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["detail"][0]["loc"], json!(loc), "{body}: {error}");
        assert!(error["detail"][0]["msg"].as_str().is_some_and(|m| !m.is_empty()));
    }

    let malformed = app
        .client
        .post(format!("{}/v1/chat", app.http))
        .header("X-API-Key", SERVICE_KEY)
        .header("content-type", "application/json")
        .body("{\"system_id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let error: Value = malformed.json().await.unwrap();
    assert_eq!(error["detail"][0]["type"], "json_invalid");

    let bad_cursor = app.get("/v1/conversations?system_id=drillquiz&user_id=1&cursor=garbage").await;
    assert_eq!(bad_cursor.status(), 422);
    let error: Value = bad_cursor.json().await.unwrap();
    assert_eq!(error["detail"][0]["loc"], json!(["query", "cursor"]));

    let bad_limit = app.get("/v1/conversations?system_id=drillquiz&user_id=1&limit=many").await;
    assert_eq!(bad_limit.status(), 422);
    let error: Value = bad_limit.json().await.unwrap();
    assert_eq!(error["detail"][0]["loc"], json!(["query", "limit"]));

    let too_big = app
        .post("/v1/chat", json!({"system_id": "drillquiz", "user_id": "1", "message": "x".repeat(2 * 1024 * 1024)}))
        .await;
    assert_eq!(too_big.status(), 413);
    app.stop().await;
}

#[tokio::test]
async fn a_missing_or_wrong_key_gets_401() {
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url)).await;
    let body = json!({"system_id": "drillquiz", "user_id": "1", "message": "hi"});
    let url = format!("{}/v1/chat", app.http);

    let none = app.client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert!(none.headers().contains_key("www-authenticate"));
    let wrong = app.client.post(&url).header("X-API-Key", "not-the-key-at-all").json(&body).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let bearer = app.client.post(&url).bearer_auth("not-a-jwt").json(&body).send().await.unwrap();
    assert_eq!(bearer.status(), 401);
    let list =
        app.client.get(format!("{}/v1/conversations?system_id=drillquiz&user_id=1", app.http)).send().await.unwrap();
    assert_eq!(list.status(), 401);
    let error: Value = wrong.json().await.unwrap();
    assert!(!error.to_string().contains("not-the-key-at-all"), "the presented key is not echoed");

    // Nothing was stored for the refused requests.
    let mine: Value = app.get("/v1/conversations?system_id=drillquiz&user_id=1").await.json().await.unwrap();
    assert!(mine["data"].as_array().unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn an_upstream_failure_gets_502_and_the_user_message_is_still_stored() {
    let upstream = MockUpstream::start().await;
    upstream.always_fail(Some(503));
    let test_db = db::sqlite();
    let env = openai_env(&test_db.url, &upstream.base_url());
    let app = spawn_app(env).await;

    let response =
        app.post("/v1/chat", json!({"system_id": "drillquiz", "user_id": "9", "message": "are you there?"})).await;
    assert_eq!(response.status(), 502);
    let error: Value = response.json().await.unwrap();
    assert!(!error.to_string().contains("sk-upstream-secret"));

    let list: Value = app.get("/v1/conversations?system_id=drillquiz&user_id=9").await.json().await.unwrap();
    let conversation_id = list["data"][0]["id"].as_str().expect("the conversation was stored");
    let messages: Value = app
        .get(&format!("/v1/conversations/{conversation_id}/messages?system_id=drillquiz&user_id=9"))
        .await
        .json()
        .await
        .unwrap();
    let data = messages["data"].as_array().unwrap();
    assert_eq!(data[0]["content"], "are you there?");
    assert_eq!(data[0]["status"], "complete");
    assert_eq!(data[1]["status"], "failed");
    assert!(data[1]["error"].as_str().unwrap().contains("503"));
    app.stop().await;
}

#[tokio::test]
async fn an_unreachable_upstream_gets_502_and_a_stopped_service_gets_503() {
    let test_db = db::sqlite();
    // Nothing listens on port 9 of loopback.
    let env = base_env(&test_db.url)
        .with("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
        .with("SWITCHBOARD_DEFAULT_MODEL", "gpt-test");
    let app = spawn_app(env).await;
    let response = app.post("/v1/chat", json!({"system_id": "drillquiz", "user_id": "9", "message": "hello?"})).await;
    assert_eq!(response.status(), 502);
    app.stop().await;

    // A gateway whose conversation service is gone answers 503 for chat and stays ready
    // (degraded, naming the service), so its replicas are not all taken out of the balancer.
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url)).await;
    let gateway_only = {
        let env = base_env(&test_db.url)
            .with("SWITCHBOARD_AUTH_ADDR", format!("127.0.0.1:{}", app.auth_port))
            .with("SWITCHBOARD_CONVERSATIONS_ADDR", "127.0.0.1:9")
            .with("SWITCHBOARD_LLM_ADDR", format!("127.0.0.1:{}", app.llm_port));
        switchboard_gateway::Application::build(
            switchboard_gateway::Settings::from_env(&env).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap()
    };
    let url = format!("http://127.0.0.1:{}", gateway_only.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway_only.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let response = app
        .client
        .post(format!("{url}/v1/chat"))
        .header("X-API-Key", SERVICE_KEY)
        .json(&json!({"system_id": "drillquiz", "user_id": "9", "message": "hello?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let ready = app.client.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "degraded");
    assert_eq!(ready["services"]["conversations"], "unreachable");
    assert_eq!(ready["services"]["auth"], "serving");
    let _ = stop.send(());
    server.await.unwrap().unwrap();

    // With nothing behind it, a gateway is not ready.
    let env = base_env(&test_db.url)
        .with("SWITCHBOARD_AUTH_ADDR", "127.0.0.1:9")
        .with("SWITCHBOARD_CONVERSATIONS_ADDR", "127.0.0.1:9")
        .with("SWITCHBOARD_LLM_ADDR", "127.0.0.1:9");
    let alone = switchboard_gateway::Application::build(
        switchboard_gateway::Settings::from_env(&env).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let url = format!("http://127.0.0.1:{}", alone.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(alone.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let ready = app.client.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "not_ready");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    app.stop().await;
}

#[tokio::test]
async fn another_users_conversation_is_a_404_over_rest_and_not_found_over_grpc() {
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url)).await;
    let body: Value = app
        .post("/v1/chat", json!({"system_id": "drillquiz", "user_id": "alice", "message": "mine"}))
        .await
        .json()
        .await
        .unwrap();
    let id = body["conversation_id"].as_str().unwrap();

    for (system, user) in [("drillquiz", "bob"), ("cointutor", "alice")] {
        let theirs = app.get(&format!("/v1/conversations/{id}/messages?system_id={system}&user_id={user}")).await;
        assert_eq!(theirs.status(), 404);
        let missing =
            app.get(&format!("/v1/conversations/does-not-exist/messages?system_id={system}&user_id={user}")).await;
        assert_eq!(missing.status(), 404);
        assert_eq!(theirs.text().await.unwrap(), missing.text().await.unwrap(), "indistinguishable from a missing one");
        let continue_theirs = app
            .post("/v1/chat", json!({"system_id": system, "user_id": user, "message": "hijack", "conversation_id": id}))
            .await;
        assert_eq!(continue_theirs.status(), 404);
    }

    let request = |key: Option<&str>| {
        let mut request = tonic::Request::new(pb::ListMessagesRequest {
            principal: Some(pb::Principal { system_id: "drillquiz".into(), user_id: "bob".into() }),
            conversation_id: id.to_owned(),
            page_size: 0,
            page_token: String::new(),
        });
        if let Some(key) = key {
            request.metadata_mut().insert("x-api-key", key.parse().unwrap());
        }
        request
    };
    let mut grpc = app.conversations().await;
    let status = grpc.list_messages(request(Some(SERVICE_KEY))).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let status = grpc.list_messages(request(None)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "internal callers present credentials too");
    let status = grpc.list_messages(request(Some("wrong-key-0123456789"))).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    app.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url)).await;
    let health: Value = app.client.get(format!("{}/healthz", app.http)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let ready = app.client.get(format!("{}/readyz", app.http)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["services"], json!({"auth": "serving", "conversations": "serving", "llm-proxy": "serving"}));
    assert_eq!(ready["status"], "ready");

    app.post("/v1/chat", json!({"system_id": "drillquiz", "user_id": "m", "message": "count me"})).await;
    let metrics = app.client.get(format!("{}/metrics", app.http)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("switchboard_http_requests_total{")
            && l.contains("route=\"/v1/chat\"")
            && l.contains("status=\"200\"")),
        "{metrics}"
    );
    assert!(metrics.contains("switchboard_http_request_duration_seconds_bucket"));
    let unknown = app.client.get(format!("{}/nope", app.http)).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn an_upstream_that_fails_twice_then_answers_costs_three_calls_and_one_answer() {
    let upstream = MockUpstream::start().await;
    upstream.fail_next(&[503, 503]);
    let test_db = db::sqlite();
    let app = spawn_app(openai_env(&test_db.url, &upstream.base_url())).await;
    let response =
        app.post("/v1/chat", json!({"system_id": "drillquiz", "user_id": "r", "message": "third time lucky"})).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["answer"], "upstream reply to: third time lucky");
    assert_eq!(upstream.calls(), 3);
    let conversation_id = body["conversation_id"].as_str().unwrap();
    let messages: Value = app
        .get(&format!("/v1/conversations/{conversation_id}/messages?system_id=drillquiz&user_id=r"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(messages["data"].as_array().unwrap().len(), 2, "one user message, one answer: retries add nothing");
    app.stop().await;
}

#[tokio::test]
async fn ten_concurrent_sends_to_one_conversation_become_ten_complete_turns_in_order() {
    let test_db = db::sqlite();
    let env = base_env(&test_db.url).with("SWITCHBOARD_RATE_LIMIT_CHAT_PRINCIPAL", "off");
    let app = spawn_app(env).await;
    let first: Value = app
        .post("/v1/chat", json!({"system_id": "drillquiz", "user_id": "c", "message": "start"}))
        .await
        .json()
        .await
        .unwrap();
    let id = first["conversation_id"].as_str().unwrap().to_owned();
    let sends = (0..10).map(|i| {
        let body = json!({"system_id": "drillquiz", "user_id": "c", "message": format!("m{i}"), "conversation_id": id});
        let app = &app;
        async move { app.post("/v1/chat", body).await.json::<Value>().await.unwrap() }
    });
    let answers = futures::future::join_all(sends).await;
    let mut turn_numbers: Vec<u64> = answers
        .iter()
        .map(|a| {
            a["answer"].as_str().unwrap().trim_start_matches("mock reply #").split(':').next().unwrap().parse().unwrap()
        })
        .collect();
    turn_numbers.sort_unstable();
    assert_eq!(turn_numbers, (2..=11).collect::<Vec<u64>>(), "each turn saw every turn before it");

    let messages: Value =
        app.get(&format!("/v1/conversations/{id}/messages?system_id=drillquiz&user_id=c")).await.json().await.unwrap();
    let data = messages["data"].as_array().unwrap();
    assert_eq!(data.len(), 22, "none lost");
    for (i, pair) in data.chunks(2).enumerate() {
        assert_eq!(pair[0]["role"], "user");
        assert_eq!(pair[1]["role"], "assistant");
        assert_eq!(pair[1]["status"], "complete");
        assert!(pair[1]["content"].as_str().unwrap().starts_with(&format!("mock reply #{}: ", i + 1)), "{pair:?}");
        assert!(pair[1]["content"].as_str().unwrap().ends_with(pair[0]["content"].as_str().unwrap()));
    }
    app.stop().await;
}

async fn post_with_key(app: &switchboard_e2e::TestApp, key: &str, body: Value) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/chat", app.http))
        .header("X-API-Key", SERVICE_KEY)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_refuses_another_body_and_a_concurrent_duplicate() {
    let upstream = MockUpstream::start().await;
    let test_db = db::sqlite();
    let app = spawn_app(openai_env(&test_db.url, &upstream.base_url())).await;
    let body = json!({"system_id": "drillquiz", "user_id": "idem", "message": "charge once"});

    let first = post_with_key(&app, "key-1", body.clone()).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let replay = post_with_key(&app, "key-1", body.clone()).await;
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.json::<Value>().await.unwrap(), first, "the same answer");
    assert_eq!(upstream.calls(), 1, "no second upstream call");

    let other =
        post_with_key(&app, "key-1", json!({"system_id": "drillquiz", "user_id": "idem", "message": "something else"}))
            .await;
    assert_eq!(other.status(), 422);
    assert_eq!(other.json::<Value>().await.unwrap()["detail"][0]["loc"], json!(["header", "Idempotency-Key"]));

    // The key belongs to the principal: another user may use the same key freely.
    let elsewhere =
        post_with_key(&app, "key-1", json!({"system_id": "drillquiz", "user_id": "idem2", "message": "charge once"}))
            .await;
    assert_eq!(elsewhere.status(), 200);
    assert_ne!(elsewhere.json::<Value>().await.unwrap()["conversation_id"], first["conversation_id"]);

    // A duplicate arriving while the first is still running is told so.
    upstream.set_delay(std::time::Duration::from_millis(1500));
    let slow = json!({"system_id": "drillquiz", "user_id": "idem", "message": "slow one"});
    let (a, b) = tokio::join!(post_with_key(&app, "key-2", slow.clone()), async {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        post_with_key(&app, "key-2", slow.clone()).await
    });
    assert_eq!(a.status(), 200);
    assert_eq!(b.status(), 409);
    assert_eq!(post_with_key(&app, "key-2", slow).await.status(), 200, "and replayed once it is done");

    let messages: Value = app
        .get(&format!(
            "/v1/conversations/{}/messages?system_id=drillquiz&user_id=idem",
            first["conversation_id"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(messages["data"].as_array().unwrap().len(), 2, "the replay stored nothing new");
    app.stop().await;
}

#[tokio::test]
async fn a_callers_deadline_reaches_the_upstream_call_and_the_turn_is_recorded_as_failed() {
    let upstream = MockUpstream::start().await;
    upstream.set_delay(std::time::Duration::from_secs(3));
    let test_db = db::sqlite();
    let app = spawn_app(openai_env(&test_db.url, &upstream.base_url())).await;
    let mut request = tonic::Request::new(pb::SendMessageRequest {
        principal: Some(pb::Principal { system_id: "drillquiz".into(), user_id: "late".into() }),
        message: "are you quick?".into(),
        ..Default::default()
    });
    request.metadata_mut().insert("x-api-key", SERVICE_KEY.parse().unwrap());
    request.set_timeout(std::time::Duration::from_millis(700));
    let started = std::time::Instant::now();
    let status = app.conversations().await.send_message(request).await.unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_millis(1500), "{:?}", started.elapsed());
    assert!(matches!(status.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled), "{status:?}");

    // The turn itself was not cut off halfway: it is recorded as failed, not left in progress.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let list: Value = app.get("/v1/conversations?system_id=drillquiz&user_id=late").await.json().await.unwrap();
        if let Some(id) = list["data"][0]["id"].as_str() {
            let messages: Value = app
                .get(&format!("/v1/conversations/{id}/messages?system_id=drillquiz&user_id=late"))
                .await
                .json()
                .await
                .unwrap();
            if messages["data"][1]["status"] == "failed" {
                assert_eq!(messages["data"][0]["content"], "are you quick?");
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "the answer was never closed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_failing_upstream_falls_back_to_the_next_model_and_is_ejected_after_repeated_failures() {
    let upstream = MockUpstream::start().await;
    upstream.always_fail(Some(503));
    let test_db = db::sqlite();
    let env = openai_env(&test_db.url, &upstream.base_url())
        .with("SWITCHBOARD_FALLBACK_MODELS", "mock")
        .with("SWITCHBOARD_UPSTREAM_RETRIES", "0");
    let app = spawn_app(env).await;
    for i in 0..8 {
        let answer: Value = app
            .post("/v1/chat", json!({"system_id": "drillquiz", "user_id": "fb", "message": format!("turn {i}")}))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(answer["model"], "mock", "the fallback answered turn {i}");
        assert!(answer["answer"].as_str().unwrap().ends_with(&format!("turn {i}")));
    }
    assert_eq!(upstream.calls(), 5, "after five failures in a row the upstream is left alone");
    app.stop().await;
}

#[tokio::test]
async fn the_catalogue_has_configured_aliases_prices_and_the_upstreams_own_models() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchboard.toml");
    std::fs::write(
        &config,
        r#"
fallback_models = ["mock"]

[[models]]
id = "fast"
provider = "openai"
upstream_name = "gpt-test"
aliases = ["quick"]
context_window = 16000
input_usd_per_mtok = 150.0
output_usd_per_mtok = 600.0
"#,
    )
    .unwrap();
    let test_db = db::sqlite();
    let env = openai_env(&test_db.url, &upstream.base_url()).with("SWITCHBOARD_CONFIG", config.display().to_string());
    let app = spawn_app(env).await;

    let mut llm = app.llm().await;
    let mut request = tonic::Request::new(switchboard_proto::llm::v1::ListModelsRequest::default());
    request.metadata_mut().insert("x-api-key", SERVICE_KEY.parse().unwrap());
    let models = llm.list_models(request).await.unwrap().into_inner();
    let ids: Vec<&str> = models.models.iter().map(|m| m.id.as_str()).collect();
    assert!(ids.contains(&"fast") && ids.contains(&"gpt-test-mini") && ids.contains(&"mock"), "{ids:?}");
    assert_eq!(models.default_model, "gpt-test");

    // An alias reaches the upstream under the configured name, and is priced.
    let mut request = tonic::Request::new(switchboard_proto::llm::v1::CompleteRequest {
        model: "quick".into(),
        messages: vec![switchboard_proto::llm::v1::ChatMessage { role: 2, content: "price me".into() }],
        principal: Some(switchboard_proto::llm::v1::Principal { system_id: "d".into(), user_id: "m".into() }),
        ..Default::default()
    });
    request.metadata_mut().insert("x-api-key", SERVICE_KEY.parse().unwrap());
    let answer = llm.complete(request).await.unwrap().into_inner();
    assert_eq!(answer.model, "fast");
    assert_eq!(upstream.requests().last().unwrap()["model"], "gpt-test");
    let usage = answer.usage.unwrap();
    assert_eq!(answer.cost_micros, u64::from(usage.prompt_tokens) * 150 + u64::from(usage.completion_tokens) * 600);

    // A model only the upstream lists works by name; an unknown one is refused with the list.
    let listed = app
        .post("/v1/chat", json!({"system_id": "d", "user_id": "m", "message": "hi", "model": "gpt-test-mini"}))
        .await;
    assert_eq!(listed.status(), 200);
    assert_eq!(upstream.requests().last().unwrap()["model"], "gpt-test-mini");
    let unknown =
        app.post("/v1/chat", json!({"system_id": "d", "user_id": "m", "message": "hi", "model": "gpt-9"})).await;
    assert_eq!(unknown.status(), 422);
    let error: Value = unknown.json().await.unwrap();
    assert_eq!(error["detail"][0]["loc"], json!(["body", "model"]));
    assert!(error["detail"][0]["msg"].as_str().unwrap().contains("gpt-test-mini"), "{error}");
    app.stop().await;
}

/// A turn whose history comes from the cache does not see a change made to the store behind
/// its back; one that reads the store does.
async fn context_source_after_tampering(env_for: impl Fn(&str, &str) -> switchboard_kit::Env) -> String {
    let upstream = MockUpstream::start().await;
    let test_db = db::sqlite();
    let app = spawn_app(env_for(&test_db.url, &upstream.base_url())).await;
    let first: Value = app
        .post("/v1/chat", json!({"system_id": "drillquiz", "user_id": "ctx", "message": "original"}))
        .await
        .json()
        .await
        .unwrap();
    let id = first["conversation_id"].as_str().unwrap().to_owned();
    let db = switchboard_kit::db::Db::connect(&test_db.url, "DATABASE_URL").await.unwrap();
    let changed = switchboard_kit::db_run!(&db, |pool| {
        sqlx::query("UPDATE messages SET content = 'tampered' WHERE content = 'original'")
            .execute(pool)
            .await
            .unwrap()
            .rows_affected()
    });
    assert_eq!(changed, 1);
    app.post("/v1/chat", json!({"system_id": "drillquiz", "user_id": "ctx", "message": "next", "conversation_id": id}))
        .await;
    let sent = upstream.requests()[1]["messages"][0]["content"].as_str().unwrap().to_owned();
    app.stop().await;
    sent
}

#[tokio::test]
async fn a_turn_takes_its_history_from_the_context_cache_in_process_and_in_redis() {
    let local = context_source_after_tampering(openai_env).await;
    assert_eq!(local, "original", "in process: no history query");
    let redis_url = switchboard_e2e::redis_url().await;
    let shared = context_source_after_tampering(|db, url| {
        openai_env(db, url)
            .with("REDIS_URL", redis_url.clone())
            .with("SWITCHBOARD_REDIS_PREFIX", format!("sbctx-{}", std::process::id()))
    })
    .await;
    assert_eq!(shared, "original", "with Redis: no history query");
}

#[tokio::test]
async fn turns_of_one_conversation_queue_across_replicas_sharing_a_database() {
    let upstream = MockUpstream::start().await;
    upstream.set_delay(std::time::Duration::from_millis(60));
    let test_db = db::postgres().await;
    let env = || openai_env(&test_db.url, &upstream.base_url()).with("SWITCHBOARD_RATE_LIMIT_CHAT_PRINCIPAL", "off");
    // Two complete deployments on one database: two conversation services, no shared process.
    let (a, b) = (spawn_app(env()).await, spawn_app(env()).await);
    let first: Value = a
        .post("/v1/chat", json!({"system_id": "drillquiz", "user_id": "q", "message": "m0"}))
        .await
        .json()
        .await
        .unwrap();
    let id = first["conversation_id"].as_str().unwrap().to_owned();
    let sends = (1..=6).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        let body = json!({"system_id": "drillquiz", "user_id": "q", "message": format!("m{i}"), "conversation_id": id});
        async move { app.post("/v1/chat", body).await.status() }
    });
    let statuses = futures::future::join_all(sends).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    // Each turn saw every turn before it: the prompts grow by two messages each time.
    let mut sizes: Vec<usize> = upstream.requests().iter().map(|r| r["messages"].as_array().unwrap().len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![1, 3, 5, 7, 9, 11, 13]);
    let messages: Value =
        a.get(&format!("/v1/conversations/{id}/messages?system_id=drillquiz&user_id=q")).await.json().await.unwrap();
    assert_eq!(messages["data"].as_array().unwrap().len(), 14, "none lost");
    a.stop().await;
    b.stop().await;
}
