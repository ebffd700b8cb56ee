//! Credentials end to end: JWT attacks, issued keys, revocation across replicas, expiry,
//! rotation, users and chat tokens. Each attack is a request a real client could send.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchboard_e2e::{SERVICE_KEY, TestApp, base_env, redis_env, spawn_app};
use switchboard_kit::Env;
use switchboard_proto::auth::v1 as pb;
use switchboard_test_support::db;

const JWT_SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";
const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

fn auth_env(env: Env) -> Env {
    env.with("CHAT_GATEWAY_JWT_SECRET", JWT_SECRET).with("SWITCHBOARD_ADMIN_TOKEN", ADMIN_TOKEN)
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn sign(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn unsigned(header: &Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{signature}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()))
}

async fn status_with_bearer(app: &TestApp, path: &str, token: &str) -> u16 {
    app.client.get(format!("{}{path}", app.http)).bearer_auth(token).send().await.unwrap().status().as_u16()
}

const A_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo
4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u
+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyeh
kd3qqGElvW/VDL5AaWTg0nLVkjRo9z+40RQzuVaE8AkAFmxZzow3x+VJYKdjykkJ
0iT9wCS0DRTXu269V264Vf/3jvredZiKRkgwlL9xNAwxXFg0x/XFw005UWVRIkdg
cKWTjpBP2dPwVZ4WWC+9aGVd+Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbc
mwIDAQAB
-----END PUBLIC KEY-----";

#[tokio::test]
async fn jwt_attacks_are_refused_with_401() {
    let test_db = db::sqlite();
    // Two dozen failed checks from one address: above the default quota of failed attempts.
    let app = spawn_app(auth_env(base_env(&test_db.url)).with("SWITCHBOARD_RATE_LIMIT_LOGIN", "1000/m")).await;
    let path = "/v1/conversations";
    let claims = |extra: Value| {
        let mut c = json!({"system_id": "drillquiz", "user_id": "alice", "exp": now() + 600});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    // The control: a well-formed token is accepted.
    assert_eq!(status_with_bearer(&app, path, &sign(&claims(json!({})), JWT_SECRET.as_bytes())).await, 200);

    let attacks: Vec<(&str, String)> = vec![
        ("alg none", unsigned(&json!({"alg": "none", "typ": "JWT"}), &claims(json!({})), "")),
        ("alg None, signature kept", {
            let good = sign(&claims(json!({})), JWT_SECRET.as_bytes());
            let sig = good.rsplit('.').next().unwrap().to_owned();
            unsigned(&json!({"alg": "None", "typ": "JWT"}), &claims(json!({"user_id": "bob"})), &sig)
        }),
        ("wrong secret", sign(&claims(json!({})), b"another-secret-that-is-long-enough-000")),
        ("HS256 keyed with a public key", sign(&claims(json!({})), A_PUBLIC_KEY.as_bytes())),
        ("RS256 header", unsigned(&json!({"alg": "RS256", "typ": "JWT"}), &claims(json!({})), "c2lnbmF0dXJl")),
        ("expired", sign(&claims(json!({"exp": now() - 120})), JWT_SECRET.as_bytes())),
        ("missing exp", sign(&claims(json!({"exp": null})), JWT_SECRET.as_bytes())),
        ("future nbf", sign(&claims(json!({"nbf": now() + 3600})), JWT_SECRET.as_bytes())),
        ("missing user_id", sign(&claims(json!({"user_id": null})), JWT_SECRET.as_bytes())),
        ("tampered payload", {
            let good = sign(&claims(json!({})), JWT_SECRET.as_bytes());
            let parts: Vec<&str> = good.split('.').collect();
            let forged = URL_SAFE_NO_PAD.encode(claims(json!({"user_id": "admin"})).to_string());
            format!("{}.{forged}.{}", parts[0], parts[2])
        }),
        ("garbage", "not.a.jwt".to_owned()),
        ("one segment", "abc".to_owned()),
    ];
    for (name, token) in &attacks {
        assert_eq!(status_with_bearer(&app, path, token).await, 401, "{name}");
        let page = app.client.get(format!("{}{path}?token={token}", app.http)).send().await.unwrap();
        assert_eq!(page.status(), 401, "{name} as ?token=");
    }
    app.stop().await;
}

/// GHSA-h395-gr6q-cpjc (CVE-2026-25537): jsonwebtoken before 10.3 took an `nbf` or `exp` it
/// could not read as a number for an absent one, and skipped checking it.
#[tokio::test]
async fn a_token_whose_nbf_is_a_string_in_the_future_is_refused_with_401() {
    let test_db = db::sqlite();
    let app = spawn_app(auth_env(base_env(&test_db.url))).await;
    let claims = |nbf: Value| json!({"system_id": "drillquiz", "user_id": "alice", "exp": now() + 7200, "nbf": nbf});
    let numeric = sign(&claims(json!(now() + 3600)), JWT_SECRET.as_bytes());
    assert_eq!(status_with_bearer(&app, "/v1/conversations", &numeric).await, 401, "the control");
    let string = sign(&claims(json!((now() + 3600).to_string())), JWT_SECRET.as_bytes());
    assert_eq!(status_with_bearer(&app, "/v1/conversations", &string).await, 401, "nbf as a string");
    app.stop().await;
}

#[tokio::test]
async fn a_token_stops_working_after_logout() {
    let test_db = db::sqlite();
    let app = spawn_app(auth_env(base_env(&test_db.url))).await;
    let join = app
        .client
        .post(format!("{}/api/v1/users/join", app.http))
        .json(&json!({"username": "kim_01", "password": "Passw0rdX"}))
        .send()
        .await
        .unwrap();
    assert_eq!(join.status(), 201);
    let login: Value = app
        .client
        .post(format!("{}/api/v1/users/login", app.http))
        .json(&json!({"username": "kim_01", "password": "Passw0rdX"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(login["success"], true);
    assert_eq!(login["message"], "Welcome kim_01");
    let token = login["data"]["token"].as_str().unwrap().to_owned();
    assert_eq!(status_with_bearer(&app, "/users/me", &token).await, 200);

    let logout = app.client.post(format!("{}/api/v1/users/logout", app.http)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(logout.status(), 200);
    let body: Value = logout.json().await.unwrap();
    assert_eq!(body, json!({"success": true, "message": "good bye", "data": null, "errors": null}));
    assert_eq!(status_with_bearer(&app, "/users/me", &token).await, 401, "revoked at once, cache included");
    let again = app.client.post(format!("{}/api/v1/users/logout", app.http)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(again.status(), 200, "logging out twice is harmless");
    app.stop().await;
}

async fn create_key(app: &TestApp, body: Value) -> reqwest::Response {
    app.client
        .post(format!("{}/api-keys", app.http))
        .header("X-Admin-Token", ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn key_management_needs_the_admin_token_and_answers_in_seed_000s_shape() {
    let test_db = db::sqlite();
    let app = spawn_app(auth_env(base_env(&test_db.url))).await;

    let anonymous =
        app.client.post(format!("{}/api-keys", app.http)).json(&json!({"client_name": "x"})).send().await.unwrap();
    assert_eq!(anonymous.status(), 403);
    assert!(anonymous.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("admin"));
    let wrong = app
        .client
        .post(format!("{}/api-keys", app.http))
        .header("X-Admin-Token", "not-the-admin-token-000")
        .json(&json!({"client_name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);

    let created = create_key(&app, json!({"client_name": "quiz-bot", "expires_in_days": 30})).await;
    assert_eq!(created.status(), 200);
    let key: Value = created.json().await.unwrap();
    let plaintext = key["api_key"].as_str().unwrap().to_owned();
    assert!(plaintext.starts_with("sb_"));
    assert_eq!(key["client_name"], "quiz-bot");
    assert!(key["expires_at"].as_str().is_some());
    assert!(key["created_at"].as_str().is_some());

    let bad = create_key(&app, json!({"expires_in_days": 0})).await;
    assert_eq!(bad.status(), 422);
    assert!(bad.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("client_name"));
    let bad = create_key(&app, json!({"client_name": "x", "expires_in_days": -3})).await;
    assert_eq!(bad.status(), 422);
    assert!(bad.json::<Value>().await.unwrap()["error"].as_str().unwrap().starts_with("expires_in_days"));

    // A client key acts as itself: its own history.
    let chat = app
        .client
        .post(format!("{}/v1/chat", app.http))
        .header("X-API-Key", &plaintext)
        .json(&json!({"message": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    let as_other = app
        .client
        .post(format!("{}/v1/chat", app.http))
        .header("X-API-Key", &plaintext)
        .json(&json!({"system_id": "default", "user_id": "someone-else", "message": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(as_other.status(), 403);

    let listed: Value = app
        .client
        .get(format!("{}/api-keys", app.http))
        .header("X-Admin-Token", ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert!(listed["data"][0].get("api_key").is_none(), "listings never show secrets");
    assert!(!listed.to_string().contains(&plaintext[12..]));

    // Last use is recorded off the request path, within about a second.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let listed: Value = app
        .client
        .get(format!("{}/api-keys", app.http))
        .header("X-Admin-Token", ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed["data"][0]["last_used_at"].is_string(), "{listed}");

    let revoke = app.client.delete(format!("{}/api-keys/{plaintext}", app.http)).send().await.unwrap();
    assert_eq!(revoke.status(), 200, "holding the key is enough to revoke it");
    assert_eq!(revoke.json::<Value>().await.unwrap(), json!({"message": "API 키가 비활성화되었습니다."}));
    let after =
        app.client.get(format!("{}/v1/conversations", app.http)).header("X-API-Key", &plaintext).send().await.unwrap();
    assert_eq!(after.status(), 401);
    let missing = app.client.delete(format!("{}/api-keys/{plaintext}", app.http)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.json::<Value>().await.unwrap()["error"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn open_registration_issues_client_keys_to_anyone_but_never_service_keys() {
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url).with("SWITCHBOARD_OPEN_KEY_REGISTRATION", "true")).await;
    let open = app
        .client
        .post(format!("{}/api-keys", app.http))
        .json(&json!({"client_name": "gpt-action"}))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    let service = app
        .client
        .post(format!("{}/api-keys", app.http))
        .json(&json!({"client_name": "sneaky", "scope": "service"}))
        .send()
        .await
        .unwrap();
    assert_eq!(service.status(), 403);
    let list = app.client.get(format!("{}/api-keys", app.http)).send().await.unwrap();
    assert_eq!(list.status(), 403, "listing stays admin-only");
    app.stop().await;
}

#[tokio::test]
async fn an_expired_key_is_refused_and_a_rotated_key_hands_over() {
    let test_db = db::sqlite();
    let app = spawn_app(auth_env(base_env(&test_db.url))).await;
    let mut auth = pb::auth_service_client::AuthServiceClient::new(switchboard_e2e::grpc_channel(app.auth_port));
    let mut request = tonic::Request::new(pb::CreateApiKeyRequest {
        client_name: "short-lived".into(),
        system_id: String::new(),
        scope: pb::KeyScope::Client as i32,
        ttl_seconds: 1,
    });
    request.metadata_mut().insert("x-admin-token", ADMIN_TOKEN.parse().unwrap());
    let short = auth.create_api_key(request).await.unwrap().into_inner().secret;
    let use_key = |key: String| {
        let app = &app;
        async move {
            app.client
                .get(format!("{}/v1/conversations", app.http))
                .header("X-API-Key", key)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(use_key(short.clone()).await, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(use_key(short).await, 401, "expired");

    let key: Value = create_key(&app, json!({"client_name": "rotating"})).await.json().await.unwrap();
    let old = key["api_key"].as_str().unwrap().to_owned();
    assert_eq!(use_key(old.clone()).await, 200);
    let rotated = app
        .client
        .post(format!("{}/api-keys/{}/rotate", app.http, key["key_id"].as_str().unwrap()))
        .header("X-Admin-Token", ADMIN_TOKEN)
        .json(&json!({"overlap_seconds": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 200);
    let new = rotated.json::<Value>().await.unwrap()["api_key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(use_key(new).await, 200);
    assert_eq!(use_key(old).await, 401, "no overlap: the old key ends now");
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_key_is_refused_by_another_gateway_within_one_second() {
    let test_db = db::sqlite();
    let app = spawn_app(auth_env(redis_env(&test_db.url).await)).await;
    let replica = app.extra_gateway().await;
    let key: Value = create_key(&app, json!({"client_name": "fan-out"})).await.json().await.unwrap();
    let plaintext = key["api_key"].as_str().unwrap().to_owned();
    // `/users/me` answers from the gateway's own verification, so only the replica's cache is
    // asked: no service behind it (which would share the auth service's hub) gets a say.
    let on_replica = || {
        let (client, url, key) = (app.client.clone(), format!("{}/users/me", replica.http), plaintext.clone());
        async move { client.get(url).header("X-API-Key", key).send().await.unwrap().status().as_u16() }
    };
    // The replica has verified (and cached, for 60 s with Redis) the key.
    assert_eq!(on_replica().await, 200);
    assert_eq!(on_replica().await, 200);

    let revoked = app
        .client
        .delete(format!("{}/api-keys/{}", app.http, key["key_id"].as_str().unwrap()))
        .header("X-Admin-Token", ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let started = Instant::now();
    loop {
        if on_replica().await == 401 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "the replica still accepts the key after 1 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("revocation reached the other replica in {:?}", started.elapsed());
    replica.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn users_register_and_log_in_through_seed_002s_fastapi_routes() {
    let test_db = db::sqlite();
    let app = spawn_app(auth_env(base_env(&test_db.url))).await;
    let register = |body: Value| {
        let app = &app;
        async move { app.client.post(format!("{}/register", app.http)).json(&body).send().await.unwrap() }
    };
    let created = register(json!({"username": "Alice_1", "password": "Passw0rdX"})).await;
    assert_eq!(created.status(), 201);
    let user: Value = created.json().await.unwrap();
    assert_eq!(user["username"], "Alice_1");
    assert!(user.get("password").is_none() && !user.to_string().contains("Passw0rdX"));
    assert_eq!(
        register(json!({"username": "alice_1", "password": "Passw0rdX"})).await.status(),
        409,
        "names are case-insensitive"
    );

    for (body, field) in [
        (json!({"username": "al", "password": "Passw0rdX"}), "username"),
        (json!({"username": "al ice", "password": "Passw0rdX"}), "username"),
        (json!({"username": "bob_1", "password": "short1A"}), "password"),
        (json!({"username": "bob_1", "password": "nouppercase1"}), "password"),
        (json!({"username": "bob_1", "password": "NoDigitsHere"}), "password"),
        (json!({"username": "bob_1"}), "password"),
    ] {
        let response = register(body.clone()).await;
        assert_eq!(response.status(), 422, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["detail"][0]["loc"], json!(["body", field]), "{body}: {error}");
    }

    let token = |form: &'static [(&'static str, &'static str)]| {
        let app = &app;
        async move { app.client.post(format!("{}/token", app.http)).form(form).send().await.unwrap() }
    };
    let ok = token(&[("username", "alice_1"), ("password", "Passw0rdX"), ("grant_type", "password")]).await;
    assert_eq!(ok.status(), 200);
    let ok: Value = ok.json().await.unwrap();
    assert_eq!(ok["token_type"], "bearer");
    let access = ok["access_token"].as_str().unwrap();
    let me: Value = app
        .client
        .get(format!("{}/users/me", app.http))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "Alice_1");

    let wrong = token(&[("username", "alice_1"), ("password", "Passw0rdY")]).await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().contains_key("www-authenticate"));
    assert_eq!(wrong.json::<Value>().await.unwrap(), json!({"detail": "Incorrect username or password"}));
    let unknown = token(&[("username", "nobody_here"), ("password", "Passw0rdX")]).await;
    assert_eq!(unknown.status(), 401, "unknown users look exactly like wrong passwords");
    let missing = token(&[("username", "alice_1")]).await;
    assert_eq!(missing.status(), 422);
    app.stop().await;
}

#[tokio::test]
async fn profiles_follow_seed_001s_envelope() {
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url)).await;
    let post = |body: Value| {
        let app = &app;
        async move { app.post("/api/users", body).await }
    };
    let created = post(json!({"userId": "user123", "name": "홍길동", "email": "hong@example.com"})).await;
    assert_eq!(created.status(), 200);
    let body: Value = created.json().await.unwrap();
    assert_eq!(body["success"], true);
    assert_eq!(body["data"]["user_id"], "user123");
    assert_eq!(body["data"]["email"], "hong@example.com");

    let again = post(json!({"userId": "user123", "name": "x", "email": "x@example.com"})).await;
    assert_eq!(again.status(), 409);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["success"], false);
    assert!(again["message"].as_str().is_some_and(|m| m.contains("already exists")));

    let bad = post(json!({"userId": "u2", "name": "x", "email": "not-an-email"})).await;
    assert_eq!(bad.status(), 422);
    let bad: Value = bad.json().await.unwrap();
    assert!(bad["message"].as_str().unwrap().contains("email"), "{bad}");
    assert_eq!(bad["success"], false);

    let found: Value = app.get("/api/users?userId=user123").await.json().await.unwrap();
    assert_eq!(found["data"]["name"], "홍길동");
    let missing = app.get("/api/users?userId=nobody").await;
    assert_eq!(missing.status(), 404);
    let no_id = app.get("/api/users").await;
    assert_eq!(no_id.status(), 422);
    assert!(no_id.json::<Value>().await.unwrap()["message"].as_str().unwrap().contains("userId"));
    app.stop().await;
}

#[tokio::test]
async fn chat_tokens_carry_the_principal_and_widget_strings() {
    let test_db = db::sqlite();
    let env = auth_env(base_env(&test_db.url)).with("ALLOWED_CHAT_TOKEN_ORIGINS", "http://localhost:8080");
    let app = spawn_app(env).await;
    let get = |query: &str, origin: &str| {
        let (client, url, origin) =
            (app.client.clone(), format!("{}/v1/chat-token?{query}", app.http), origin.to_owned());
        async move { client.get(url).header("X-API-Key", SERVICE_KEY).header("Origin", origin).send().await.unwrap() }
    };
    let answer = get("system_id=drillquiz&user_id=anonymous&lang=ko", "http://localhost:8080").await;
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["ui"]["close"], "닫기");
    for key in ["title", "close", "open", "tokenError", "loading"] {
        assert!(answer["ui"][key].as_str().is_some_and(|s| !s.is_empty()), "{key}");
    }
    let token = answer["token"].as_str().unwrap();
    // The token acts as that user, and only that user.
    let page = app.client.get(format!("{}/v1/conversations?token={token}", app.http)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let other = app
        .client
        .get(format!("{}/v1/conversations?token={token}&system_id=drillquiz&user_id=someone", app.http))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403);

    let plain: Value = get("system_id=drillquiz&user_id=u1", "http://localhost:8080").await.json().await.unwrap();
    assert!(plain.get("ui").is_none());
    assert_eq!(get("system_id=drillquiz&user_id=u1", "https://evil.example").await.status(), 403);
    let bad_lang = get("system_id=drillquiz&user_id=u1&lang=fr", "http://localhost:8080").await;
    assert_eq!(bad_lang.status(), 422);
    assert_eq!(bad_lang.json::<Value>().await.unwrap()["detail"][0]["loc"], json!(["query", "lang"]));
    app.stop().await;
}

#[tokio::test]
async fn tenants_outside_allowed_system_ids_are_refused() {
    let test_db = db::sqlite();
    let app = spawn_app(auth_env(base_env(&test_db.url)).with("ALLOWED_SYSTEM_IDS", "drillquiz,cointutor")).await;
    let allowed = app.post("/v1/chat", json!({"system_id": "cointutor", "user_id": "u", "message": "hi"})).await;
    assert_eq!(allowed.status(), 200);
    let refused = app.post("/v1/chat", json!({"system_id": "elsewhere", "user_id": "u", "message": "hi"})).await;
    assert_eq!(refused.status(), 403);
    let token = sign(&json!({"system_id": "elsewhere", "user_id": "u", "exp": now() + 600}), JWT_SECRET.as_bytes());
    assert_eq!(status_with_bearer(&app, "/v1/conversations", &token).await, 403);
    let chat_token = app.get("/v1/chat-token?system_id=elsewhere&user_id=u").await;
    assert_eq!(chat_token.status(), 403);
    app.stop().await;
}
