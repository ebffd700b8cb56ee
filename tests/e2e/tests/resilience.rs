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
