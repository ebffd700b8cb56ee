//! The `switchboard` binary as a user runs it: every component in one process on embedded
//! defaults, answering the README's walk-through, and stopping cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn free_port() -> u16 {
    switchboard_test_support::stack::free_port().unwrap()
}

#[tokio::test]
async fn the_launcher_serves_the_walk_through_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (http, auth, conversations, llm) = (free_port(), free_port(), free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CHAT_GATEWAY_API_KEY", "launcher-test-key-123456")
        .env("SWITCHBOARD_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("SWITCHBOARD_AUTH_ADDR", format!("127.0.0.1:{auth}"))
        .env("SWITCHBOARD_CONVERSATIONS_ADDR", format!("127.0.0.1:{conversations}"))
        .env("SWITCHBOARD_LLM_ADDR", format!("127.0.0.1:{llm}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{http}");
    let client = switchboard_test_support::http().build().unwrap();
    switchboard_test_support::wait_ready(&client, &base).await;

    let answer: Value = client
        .post(format!("{base}/v1/chat"))
        .header("X-API-Key", "launcher-test-key-123456")
        .json(&json!({"system_id": "drillquiz", "user_id": "12345", "message": "hello"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["answer"], "mock reply #1: hello");
    assert!(dir.path().join("data/switchboard.db").exists(), "the default SQLite file is created under ./data/");

    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "switchboard did not stop within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "clean exit after SIGTERM, got {status}");
}

#[test]
fn a_bad_setting_stops_the_start_with_the_variable_named() {
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .env_clear()
        .env("CHAT_GATEWAY_JWT_SECRET", "too-short")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CHAT_GATEWAY_JWT_SECRET"), "{stderr}");
    assert!(!stderr.contains("too-short"), "the secret itself is not printed: {stderr}");

    // A setting read by every component's server is checked before any of them starts: the
    // process stops instead of leaving the other components running.
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .current_dir(dir.path())
        .env_clear()
        .env("SWITCHBOARD_GRPC_IN_PROCESS", "maybe")
        .env("SWITCHBOARD_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("SWITCHBOARD_AUTH_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("SWITCHBOARD_CONVERSATIONS_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("SWITCHBOARD_LLM_ADDR", format!("127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("switchboard kept running with SWITCHBOARD_GRPC_IN_PROCESS=maybe");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("SWITCHBOARD_GRPC_IN_PROCESS"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "nothing was started or created");
}

#[tokio::test]
async fn secrets_never_reach_the_logs_or_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let (http, auth, conversations, llm) = (free_port(), free_port(), free_port(), free_port());
    let log_path = dir.path().join("switchboard.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let static_key = "static-service-key-5f2d9a7c";
    let admin_token = "admin-token-8c1e4b6d2a9f";
    let jwt_secret = "jwt-secret-3b7e1f9c5d2a8e4b6f0c1d3e5a7b9c2d";
    let password = "Passw0rd-7f3a9c";
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "debug")
        .env("CHAT_GATEWAY_API_KEY", static_key)
        .env("SWITCHBOARD_ADMIN_TOKEN", admin_token)
        .env("CHAT_GATEWAY_JWT_SECRET", jwt_secret)
        .env("SWITCHBOARD_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("SWITCHBOARD_AUTH_ADDR", format!("127.0.0.1:{auth}"))
        .env("SWITCHBOARD_CONVERSATIONS_ADDR", format!("127.0.0.1:{conversations}"))
        .env("SWITCHBOARD_LLM_ADDR", format!("127.0.0.1:{llm}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{http}");
    let client = switchboard_test_support::http().build().unwrap();
    switchboard_test_support::wait_ready(&client, &base).await;

    let key: Value = client
        .post(format!("{base}/api-keys"))
        .header("X-Admin-Token", admin_token)
        .json(&json!({"client_name": "log-check"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let plaintext = key["api_key"].as_str().unwrap().to_owned();
    let secret_part = plaintext.rsplit('_').next().unwrap().to_owned();
    let chat = client
        .post(format!("{base}/v1/chat"))
        .header("X-API-Key", &plaintext)
        .json(&json!({"message": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    let wrong =
        client.get(format!("{base}/users/me")).header("X-API-Key", format!("{plaintext}x")).send().await.unwrap();
    assert_eq!(wrong.status(), 401);

    let joined = client
        .post(format!("{base}/register"))
        .json(&json!({"username": "logcheck", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(joined.status(), 201);
    let token: Value = client
        .post(format!("{base}/token"))
        .form(&[("username", "logcheck"), ("password", password)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwt = token["access_token"].as_str().unwrap().to_owned();
    assert_eq!(client.get(format!("{base}/users/me")).bearer_auth(&jwt).send().await.unwrap().status(), 200);
    let static_use = client
        .get(format!("{base}/v1/conversations?system_id=s&user_id=u"))
        .header("X-API-Key", static_key)
        .send()
        .await;
    assert_eq!(static_use.unwrap().status(), 200);
    let revoked = client.delete(format!("{base}/api-keys/{plaintext}")).send().await.unwrap();
    assert_eq!(revoked.status(), 200);

    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "switchboard did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }

    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains("API key issued") && logs.contains("API key revoked"), "debug logging was on:\n{logs}");
    for (what, secret) in [
        ("issued key", plaintext.as_str()),
        ("issued key's secret part", secret_part.as_str()),
        ("static key", static_key),
        ("admin token", admin_token),
        ("JWT secret", jwt_secret),
        ("password", password),
        ("user's JWT", jwt.as_str()),
    ] {
        let leak = logs.lines().find(|l| l.contains(secret));
        assert!(leak.is_none(), "the {what} is in the logs: {leak:?}");
    }
    let mut database = Vec::new();
    for entry in std::fs::read_dir(dir.path().join("data")).unwrap() {
        database.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let database = String::from_utf8_lossy(&database);
    assert!(database.contains("log-check"), "the database files were read");
    for (what, secret) in [("issued key's secret part", secret_part.as_str()), ("password", password)] {
        assert!(!database.contains(secret), "the {what} is in the database");
    }
}
