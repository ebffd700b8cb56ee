//! Rate limits: shared by replicas through Redis, per credential and per principal, with the
//! IETF `RateLimit` headers, and an in-process fallback when Redis is down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use switchboard_e2e::{SERVICE_KEY, base_env, redis_env, spawn_app};
use switchboard_test_support::db;

#[tokio::test]
async fn two_gateways_sharing_redis_admit_at_most_the_limit_together() {
    let test_db = db::sqlite();
    let env = redis_env(&test_db.url)
        .await
        .with("SWITCHBOARD_RATE_LIMIT_API", "5/m")
        .with("SWITCHBOARD_RATE_LIMIT_API_PRINCIPAL", "off");
    let app = spawn_app(env).await;
    let replica = app.extra_gateway().await;
    let mut admitted = 0;
    let mut refused = Vec::new();
    for i in 0..12 {
        let base = if i % 2 == 0 { &app.http } else { &replica.http };
        let response = app
            .client
            .get(format!("{base}/v1/conversations?system_id=drillquiz&user_id=u"))
            .header("X-API-Key", SERVICE_KEY)
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => {
                admitted += 1;
                assert_eq!(response.headers()["ratelimit-policy"], "\"api\";q=5;w=60");
                let state = response.headers()["ratelimit"].to_str().unwrap().to_owned();
                assert!(state.starts_with(&format!("\"api\";r={};t=", 5 - admitted)), "{state}");
            }
            429 => refused.push(response),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(admitted, 5, "both replicas together admit the quota once");
    assert_eq!(refused.len(), 7);
    let last = refused.pop().unwrap();
    let retry_after: u64 = last.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(last.headers()["ratelimit"].to_str().unwrap().contains("r=0"));
    let body: Value = last.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("rate limit"));
    replica.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_principal_is_limited_on_a_budget_of_its_own() {
    let test_db = db::sqlite();
    let env = base_env(&test_db.url).with("SWITCHBOARD_RATE_LIMIT_CHAT_PRINCIPAL", "2/m");
    let app = spawn_app(env).await;
    let chat = |user: &str| app.post("/v1/chat", json!({"system_id": "drillquiz", "user_id": user, "message": "hi"}));
    assert_eq!(chat("busy").await.status(), 200);
    assert_eq!(chat("busy").await.status(), 200);
    let third = chat("busy").await;
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("retry-after"));
    assert_eq!(chat("calm").await.status(), 200, "another user has a budget of their own");
    app.stop().await;
}

#[tokio::test]
async fn login_attempts_are_limited_per_client_address_in_each_routes_dialect() {
    let test_db = db::sqlite();
    let env = base_env(&test_db.url)
        .with("CHAT_GATEWAY_JWT_SECRET", "0123456789abcdef0123456789abcdef-rl")
        .with("SWITCHBOARD_RATE_LIMIT_LOGIN", "3/m");
    let app = spawn_app(env).await;
    for _ in 0..3 {
        let r = app
            .client
            .post(format!("{}/token", app.http))
            .form(&[("username", "x_x"), ("password", "y")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let fastapi = app
        .client
        .post(format!("{}/token", app.http))
        .form(&[("username", "x_x"), ("password", "y")])
        .send()
        .await
        .unwrap();
    assert_eq!(fastapi.status(), 429);
    assert!(fastapi.json::<Value>().await.unwrap()["detail"].is_string());
    let envelope = app
        .client
        .post(format!("{}/api/v1/users/login", app.http))
        .json(&json!({"username": "x_x", "password": "y"}))
        .send()
        .await
        .unwrap();
    assert_eq!(envelope.status(), 429);
    assert!(envelope.headers().contains_key("retry-after"));
    let body: Value = envelope.json().await.unwrap();
    assert_eq!(body["success"], false);
    assert!(body["message"].as_str().unwrap().contains("rate limit"));
    app.stop().await;
}

#[tokio::test]
async fn when_redis_is_down_limits_still_hold_in_process_and_the_fallback_is_counted() {
    let test_db = db::sqlite();
    // Nothing listens on port 1.
    let env = base_env(&test_db.url)
        .with("REDIS_URL", "redis://127.0.0.1:1")
        .with("SWITCHBOARD_RATE_LIMIT_API", "3/m")
        .with("SWITCHBOARD_RATE_LIMIT_API_PRINCIPAL", "off");
    let app = spawn_app(env).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(app.get("/v1/conversations?system_id=drillquiz&user_id=u").await.status().as_u16());
    }
    assert_eq!(statuses, vec![200, 200, 200, 429]);
    let metrics = app.client.get(format!("{}/metrics", app.http)).send().await.unwrap().text().await.unwrap();
    let fallbacks: f64 = metrics
        .lines()
        .find(|l| l.starts_with("switchboard_rate_limit_fallbacks_total"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .parse()
        .unwrap();
    assert!(fallbacks >= 4.0, "{metrics}");
    assert!(metrics.contains("switchboard_rate_limited_requests_total{group=\"api\"} 1"), "{metrics}");
    app.stop().await;
}

/// A loopback port that accepts connections and never answers, as a hung or partitioned
/// Redis does; the task holds the sockets open until it is aborted.
async fn silent_port() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, task)
}

async fn fallbacks(app: &switchboard_e2e::TestApp) -> f64 {
    let metrics = app.client.get(format!("{}/metrics", app.http)).send().await.unwrap().text().await.unwrap();
    metrics
        .lines()
        .find(|l| l.starts_with("switchboard_rate_limit_fallbacks_total"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn when_redis_hangs_fifty_concurrent_requests_are_answered_within_a_second() {
    let test_db = db::sqlite();
    let (port, silent) = silent_port().await;
    let env = base_env(&test_db.url)
        .with("REDIS_URL", format!("redis://127.0.0.1:{port}"))
        .with("SWITCHBOARD_RATE_LIMIT_API", "1000/m")
        .with("SWITCHBOARD_RATE_LIMIT_API_PRINCIPAL", "off");
    let app = spawn_app(env).await;
    let path = "/v1/conversations?system_id=drillquiz&user_id=u";
    // The first request meets the hung Redis first, and connects the services' channels.
    assert_eq!(app.get(path).await.status(), 200);
    let started = std::time::Instant::now();
    let responses = futures::future::join_all((0..50).map(|_| app.get(path))).await;
    let elapsed = started.elapsed();
    assert!(
        responses.iter().all(|r| r.status() == 200),
        "{:?}",
        responses.iter().map(|r| r.status()).collect::<Vec<_>>()
    );
    assert!(elapsed < std::time::Duration::from_secs(1), "50 requests took {elapsed:?} with Redis hung");
    assert!(fallbacks(&app).await >= 51.0, "the in-process limiter answered every request");
    silent.abort();
    app.stop().await;
}

#[tokio::test]
async fn when_redis_refuses_connections_fifty_concurrent_requests_are_answered_within_a_second() {
    let test_db = db::sqlite();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let env = base_env(&test_db.url)
        .with("REDIS_URL", format!("redis://127.0.0.1:{closed}"))
        .with("SWITCHBOARD_RATE_LIMIT_API", "1000/m")
        .with("SWITCHBOARD_RATE_LIMIT_API_PRINCIPAL", "off");
    let app = spawn_app(env).await;
    let path = "/v1/conversations?system_id=drillquiz&user_id=u";
    assert_eq!(app.get(path).await.status(), 200);
    let started = std::time::Instant::now();
    let responses = futures::future::join_all((0..50).map(|_| app.get(path))).await;
    let elapsed = started.elapsed();
    assert!(responses.iter().all(|r| r.status() == 200));
    assert!(elapsed < std::time::Duration::from_secs(1), "50 requests took {elapsed:?} with Redis refusing");
    assert!(fallbacks(&app).await >= 51.0);
    app.stop().await;
}

#[tokio::test]
async fn fresh_random_keys_do_not_each_get_a_fresh_bucket() {
    let test_db = db::sqlite();
    let env = base_env(&test_db.url).with("SWITCHBOARD_RATE_LIMIT_LOGIN", "5/m");
    let app = spawn_app(env).await;
    let mut statuses = Vec::new();
    for i in 0..12 {
        let key = format!("sb_{:012x}_{}", i, "0".repeat(64));
        let response = app
            .client
            .get(format!("{}/v1/conversations?system_id=d&user_id=u", app.http))
            .header("X-API-Key", key)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses[..5], [401; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "failed attempts are limited per client address: {statuses:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_key_holder_cannot_dodge_the_limit_by_rewriting_the_same_credential() {
    let test_db = db::sqlite();
    let secret = "0123456789abcdef0123456789abcdef-test-secret";
    let env = base_env(&test_db.url)
        .with("CHAT_GATEWAY_JWT_SECRET", secret)
        .with("SWITCHBOARD_RATE_LIMIT_API", "3/m")
        .with("SWITCHBOARD_RATE_LIMIT_API_PRINCIPAL", "off");
    let app = spawn_app(env).await;
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"system_id": "drillquiz", "user_id": "u", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let mut statuses = Vec::new();
    for i in 0..8 {
        // The same token: in the query with a different tail each time, or as a header
        // spelled differently.
        let request = match i % 3 {
            0 => app.client.get(format!("{}/v1/conversations?token={token}&n={i}", app.http)),
            1 => app
                .client
                .get(format!("{}/v1/conversations", app.http))
                .header("authorization", format!("bearer {token}")),
            _ => app
                .client
                .get(format!("{}/v1/conversations?x={i}", app.http))
                .header("Authorization", format!("Bearer  {token}")),
        };
        statuses.push(request.send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses[..3], [200; 3], "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| *s == 429), "one verified token is one bucket: {statuses:?}");
    app.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_address_has_its_own_login_bucket() {
    let test_db = db::sqlite();
    let login = |app: &switchboard_e2e::TestApp, forwarded_for: &'static str| {
        let request = app
            .client
            .post(format!("{}/token", app.http))
            .header("X-Forwarded-For", forwarded_for)
            .form(&[("username", "nobody"), ("password", "Wrong-passw0rd")]);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // Trusted: the proxy on loopback speaks for two different clients.
    let env = base_env(&test_db.url)
        .with("CHAT_GATEWAY_JWT_SECRET", "0123456789abcdef0123456789abcdef-test-secret")
        .with("SWITCHBOARD_RATE_LIMIT_LOGIN", "2/m")
        .with("SWITCHBOARD_TRUSTED_PROXIES", "127.0.0.0/8,::1/128");
    let app = spawn_app(env).await;
    let first: Vec<u16> = futures_like(&app, &login, "203.0.113.7", 3).await;
    assert_eq!(first, [401, 401, 429], "{first:?}");
    assert_eq!(login(&app, "198.51.100.9").await, 401, "another client behind the proxy has its own bucket");
    // A spoofed header from a client the gateway does not trust changes nothing.
    assert_eq!(login(&app, "10.0.0.1, 203.0.113.7").await, 429, "the rightmost untrusted address counts");
    app.stop().await;

    let test_db = db::sqlite();
    let env = base_env(&test_db.url)
        .with("CHAT_GATEWAY_JWT_SECRET", "0123456789abcdef0123456789abcdef-test-secret")
        .with("SWITCHBOARD_RATE_LIMIT_LOGIN", "2/m");
    let app = spawn_app(env).await;
    let statuses = futures_like(&app, &login, "203.0.113.7", 2).await;
    assert_eq!(statuses, [401, 401]);
    assert_eq!(login(&app, "198.51.100.9").await, 429, "untrusted X-Forwarded-For is ignored: one socket, one bucket");
    app.stop().await;
}

async fn futures_like<'a, F, Fut>(
    app: &'a switchboard_e2e::TestApp,
    login: &F,
    from: &'static str,
    n: usize,
) -> Vec<u16>
where
    F: Fn(&'a switchboard_e2e::TestApp, &'static str) -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let mut statuses = Vec::new();
    for _ in 0..n {
        statuses.push(login(app, from).await);
    }
    statuses
}
