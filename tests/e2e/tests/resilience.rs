//! What the services must survive from a security review's point of view: floods of password
//! logins, absurd gRPC deadlines, a hung auth service. Every test here failed before its fix.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use switchboard_e2e::{SERVICE_KEY, base_env, spawn_app};
use switchboard_test_support::db;

const JWT_SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";
const PASSWORD: &str = "Passw0rdX";

#[tokio::test]
async fn logins_beyond_the_password_hashing_bound_are_shed_with_503_and_retry_after() {
    let test_db = db::sqlite();
    let env = base_env(&test_db.url)
        .with("CHAT_GATEWAY_JWT_SECRET", JWT_SECRET)
        .with("SWITCHBOARD_RATE_LIMIT_LOGIN", "off")
        .with("SWITCHBOARD_PASSWORD_HASH_CONCURRENCY", "1")
        .with("SWITCHBOARD_PASSWORD_HASH_QUEUE", "0");
    let app = spawn_app(env).await;
    let registered = app
        .client
        .post(format!("{}/register", app.http))
        .json(&json!({"username": "flood_1", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let login = || {
        app.client.post(format!("{}/token", app.http)).form(&[("username", "flood_1"), ("password", PASSWORD)]).send()
    };
    let responses = futures::future::join_all((0..20).map(|_| login())).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.as_ref().unwrap().status().as_u16()).collect();
    assert!(statuses.iter().all(|s| [200, 503].contains(s)), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(statuses.contains(&503), "one hash at a time and no queue: the rest are shed: {statuses:?}");
    for response in responses.into_iter().map(Result::unwrap).filter(|r| r.status() == 503) {
        let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=5).contains(&retry_after), "{retry_after}");
    }
    assert_eq!(login().await.unwrap().status(), 200, "shedding ends with the burst");
    app.stop().await;
}

#[tokio::test]
async fn absurd_grpc_timeouts_are_served_instead_of_panicking() {
    use switchboard_proto::conversation::v1 as pb;
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url)).await;
    // The largest the gRPC spec allows (8 digits of hours), and one a raw client can send
    // anyway: tonic ignores it, Switchboard's own deadline reading must too.
    for timeout in ["99999999H", "9999999999999999999S"] {
        let mut request = tonic::Request::new(pb::SendMessageRequest {
            principal: Some(pb::Principal { system_id: "drillquiz".into(), user_id: "patient".into() }),
            message: "take your time".into(),
            ..Default::default()
        });
        request.metadata_mut().insert("x-api-key", SERVICE_KEY.parse().unwrap());
        request.metadata_mut().insert("grpc-timeout", timeout.parse().unwrap());
        let answer = app.conversations().await.send_message(request).await;
        let content = answer.unwrap().into_inner().assistant_message.map(|m| m.content).unwrap_or_default();
        assert!(content.contains("take your time"), "{timeout}: {content:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_hung_auth_service_makes_the_gateway_answer_503_within_three_seconds() {
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url)).await;
    // An auth service that accepts connections and never answers.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_addr = hung.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            held.push(socket);
        }
    });
    let env = app
        .env
        .clone()
        .with("SWITCHBOARD_AUTH_ADDR", hung_addr.to_string())
        .with("SWITCHBOARD_HTTP_ADDR", "127.0.0.1:0");
    let gateway = switchboard_gateway::Application::build(
        switchboard_gateway::Settings::from_env(&env).unwrap(),
        &switchboard_kit::revocation::Hub::default(),
    )
    .await
    .unwrap();
    let url = format!("http://127.0.0.1:{}/v1/conversations?system_id=drillquiz&user_id=u", gateway.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(gateway.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let started = std::time::Instant::now();
    let response = app
        .client
        .get(url)
        .header("X-API-Key", SERVICE_KEY)
        .timeout(std::time::Duration::from_secs(6))
        .send()
        .await
        .expect("the gateway answers while the auth service hangs");
    assert_eq!(response.status(), 503);
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "{:?}", started.elapsed());
    let _ = stop.send(());
    serving.abort();
    holder.abort();
    app.stop().await;
}

/// A store that cannot keep up (here: another connection holds SQLite's write lock) gets at
/// most `SWITCHBOARD_TURN_QUEUE_LIMIT` turns waiting on it; the rest are refused at once with
/// 503 and `Retry-After`, before anything of theirs is stored, so a flood past the store's
/// capacity costs neither unbounded memory nor ever longer waits, and loses no message.
#[tokio::test]
async fn turns_beyond_the_store_queue_limit_are_shed_at_once_with_503_and_store_nothing() {
    use sqlx::Connection as _;
    use std::time::{Duration, Instant};
    use switchboard_test_support::MockUpstream;
    let upstream = MockUpstream::start().await;
    let test_db = db::sqlite();
    let env = switchboard_e2e::openai_env(&test_db.url, &upstream.base_url())
        .with("SWITCHBOARD_RATE_LIMIT_CHAT", "off")
        .with("SWITCHBOARD_RATE_LIMIT_CHAT_PRINCIPAL", "off")
        .with("SWITCHBOARD_TURN_QUEUE_LIMIT", "2");
    let app = spawn_app(env).await;
    let turn = |user: String| app.post("/v1/chat", json!({"system_id": "drillquiz", "user_id": user, "message": "hi"}));
    assert_eq!(turn("warm".into()).await.status(), 200);

    let mut blocker = sqlx::SqliteConnection::connect(&test_db.url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut blocker).await.unwrap();
    let started = Instant::now();
    let hold = Duration::from_millis(1500);
    let crowd = futures::future::join_all((0..8).map(|i| {
        let turn = turn(format!("crowd-{i}"));
        async move {
            let response = turn.await;
            (started.elapsed(), response)
        }
    }));
    let release = async {
        tokio::time::sleep(hold).await;
        sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    };
    let (answers, ()) = tokio::join!(crowd, release);

    let mut served = 0;
    for (after, response) in answers {
        match response.status().as_u16() {
            200 => served += 1,
            503 => {
                assert!(after < hold, "shed at once, not after waiting for the store: {after:?}");
                assert_eq!(response.headers()["retry-after"], "1");
                let body: serde_json::Value = response.json().await.unwrap();
                assert!(body["detail"].as_str().unwrap().contains("too busy"), "{body}");
            }
            other => panic!("unexpected {other}: {}", response.text().await.unwrap_or_default()),
        }
    }
    assert_eq!(served, 2, "the two turns within the limit wait for the store and are served");

    let db = switchboard_kit::db::Db::connect(&test_db.url, "DATABASE_URL").await.unwrap();
    let (conversations, messages): (i64, i64) = switchboard_kit::db_run!(&db, |pool| {
        sqlx::query_as("SELECT (SELECT COUNT(*) FROM conversations), (SELECT COUNT(*) FROM messages)")
            .fetch_one(pool)
            .await
            .unwrap()
    });
    assert_eq!((conversations, messages), (3, 6), "the warm-up and the two served turns, nothing of the shed ones");
    assert_eq!(turn("after".into()).await.status(), 200, "shedding ends with the flood");
    app.stop().await;
}
