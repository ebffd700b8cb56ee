//! The `switchboard` binary as a user runs it: every component in one process on embedded
//! defaults, answering the README's walk-through, and stopping cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
    let client = reqwest::Client::new();

    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "switchboard did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

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
}
