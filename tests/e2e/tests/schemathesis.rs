//! Schemathesis (property-based API testing, from PyPI) against the live `/openapi.json`: it
//! generates requests from the document, valid and invalid, and checks that none is answered
//! with a 5xx and that every answer matches its documented schema. Every optional feature is
//! switched on so no route answers 503 for want of configuration. `make tools` installs it
//! next to the `openai` SDK (`SWITCHBOARD_PYTHON`'s virtualenv).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use switchboard_e2e::{SERVICE_KEY, TestApp, openai_env, spawn_app};
use switchboard_test_support::{MockUpstream, db};

const ADMIN_TOKEN: &str = "admin-token-for-schemathesis-01";
/// Bounded so the run stays well under a minute; the seed makes CI runs repeatable.
const MAX_EXAMPLES: &str = "10";
const SEED: &str = "20260101";

/// `schemathesis` of the virtualenv `make tools` makes.
fn schemathesis() -> PathBuf {
    let python = std::env::var("SWITCHBOARD_PYTHON").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/switchboard/tools/venv/bin/python")
    });
    let cli = python.with_file_name("schemathesis");
    assert!(cli.exists(), "the Schemathesis test needs {}: run `make tools`", cli.display());
    cli
}

/// Runs Schemathesis with `headers` on every request; panics with its report on a failure.
async fn run(app: &TestApp, who: &str, headers: &[String]) {
    let mut args = vec![
        "run".to_owned(),
        format!("{}/openapi.json", app.http),
        "--checks".into(),
        "not_a_server_error,response_schema_conformance".into(),
        "--max-examples".into(),
        MAX_EXAMPLES.into(),
        "--seed".into(),
        SEED.into(),
        "--generation-database".into(),
        "none".into(),
        "--request-timeout".into(),
        "10".into(),
        "--no-color".into(),
    ];
    for header in headers {
        args.extend(["--header".to_owned(), header.clone()]);
    }
    let workdir = tempfile::tempdir().unwrap();
    let cwd = workdir.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(schemathesis()).args(&args).current_dir(cwd).output().expect("cannot run schemathesis")
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    let tail: String = report.chars().rev().take(12_000).collect::<Vec<_>>().into_iter().rev().collect();
    assert!(
        output.status.success(),
        "Schemathesis found failures as {who}:\n{tail}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("generated"), "Schemathesis ran no test cases as {who}:\n{tail}");
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_off_its_schema() {
    let upstream = MockUpstream::start().await;
    let test_db = db::sqlite();
    let mut env = openai_env(&test_db.url, &upstream.base_url())
        .with("SWITCHBOARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .with("CHAT_GATEWAY_JWT_SECRET", "0123456789abcdef0123456789abcdef-schemathesis")
        .with("SWITCHBOARD_ENCRYPTION_KEY", "4a".repeat(32));
    // Thousands of requests from one address: quotas would answer most of them with 429.
    for quota in ["CHAT", "CHAT_PRINCIPAL", "API", "API_PRINCIPAL", "LOGIN"] {
        env = env.with(format!("SWITCHBOARD_RATE_LIMIT_{quota}"), "off");
    }
    let app = spawn_app(env).await;
    let client_key: Value = app
        .client
        .post(format!("{}/api-keys", app.http))
        .header("X-Admin-Token", ADMIN_TOKEN)
        .json(&json!({"client_name": "schemathesis"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_key = client_key["api_key"].as_str().unwrap();

    // The client key first: the admin run below may rotate or revoke keys it lists.
    run(&app, "a client key", &[format!("X-API-Key: {client_key}")]).await;
    run(
        &app,
        "the service key and the admin token",
        &[format!("X-API-Key: {SERVICE_KEY}"), format!("X-Admin-Token: {ADMIN_TOKEN}")],
    )
    .await;
    app.stop().await;
}
