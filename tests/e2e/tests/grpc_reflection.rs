//! Operators inspect the gRPC services with reflection clients and no `.proto` files at
//! hand. `buf curl` (from the npm package `@bufbuild/buf`, installed by `make tools`) plays
//! grpcurl's part: it lists the services over both reflection versions, calls health, and one
//! RPC on each service.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use switchboard_e2e::{SERVICE_KEY, base_env, spawn_app};
use switchboard_test_support::db;

/// `SWITCHBOARD_BUF`, else `buf` on the PATH, else the copy `make tools` installs.
fn buf() -> PathBuf {
    if let Some(path) = std::env::var_os("SWITCHBOARD_BUF") {
        return PathBuf::from(path);
    }
    if Command::new("buf").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return PathBuf::from("buf");
    }
    let cached =
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/switchboard/tools/node_modules/.bin/buf");
    assert!(
        cached.exists(),
        "buf is required for this test: run `make tools` (npm install @bufbuild/buf) or set SWITCHBOARD_BUF"
    );
    cached
}

fn buf_curl(args: &[&str]) -> String {
    let output = Command::new(buf())
        .args(["curl", "--protocol", "grpc", "--http2-prior-knowledge"])
        .args(args)
        .output()
        .expect("buf runs");
    assert!(
        output.status.success(),
        "buf curl {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Whether the server of `service` also serves `other`: the LLM proxy serves usage and budgets.
fn serves(service: &str, other: &str) -> bool {
    other == service || (service == "switchboard.llm.v1.LlmService" && other == "switchboard.llm.v1.UsageService")
}

#[tokio::test]
async fn buf_curl_lists_services_checks_health_and_calls_each_service_by_reflection() {
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url)).await;
    let services = [
        (app.auth_port, "switchboard.auth.v1.AuthService"),
        (app.conversations_port, "switchboard.conversation.v1.ConversationService"),
        (app.llm_port, "switchboard.llm.v1.LlmService"),
    ];
    let ports: Vec<(u16, &str)> = services.to_vec();
    tokio::task::spawn_blocking(move || {
        for (port, service) in ports {
            let base = format!("http://127.0.0.1:{port}");
            for reflection in ["grpc-v1", "grpc-v1alpha"] {
                let listed = buf_curl(&["--reflect-protocol", reflection, "--list-services", &base]);
                let listed: Vec<&str> = listed.lines().collect();
                assert!(listed.contains(&service), "{reflection} on {port}: {listed:?}");
                assert!(listed.contains(&"grpc.health.v1.Health"), "{reflection} on {port}: {listed:?}");
                let others = listed.iter().filter(|s| s.starts_with("switchboard.") && !serves(service, s)).count();
                assert_eq!(others, 0, "only the service served here is advertised: {listed:?}");
            }
            let methods = buf_curl(&["--list-methods", &base]);
            let own = methods.lines().filter(|m| m.starts_with(&format!("{service}/"))).count();
            assert!(own >= 3, "{methods}");
            assert!(
                methods
                    .lines()
                    .all(|m| !m.starts_with("switchboard.") || serves(service, m.split('/').next().unwrap())),
                "{methods}"
            );

            let health: Value =
                serde_json::from_str(&buf_curl(&["-d", "{}", &format!("{base}/grpc.health.v1.Health/Check")])).unwrap();
            assert_eq!(health["status"], "SERVING");
            let named = format!("{{\"service\": \"{service}\"}}");
            let health: Value =
                serde_json::from_str(&buf_curl(&["-d", &named, &format!("{base}/grpc.health.v1.Health/Check")]))
                    .unwrap();
            assert_eq!(health["status"], "SERVING");
        }

        let auth = format!("http://127.0.0.1:{}/switchboard.auth.v1.AuthService/Authenticate", services[0].0);
        let body = format!("{{\"kind\": \"CREDENTIAL_KIND_API_KEY\", \"credential\": \"{SERVICE_KEY}\"}}");
        let answer: Value = serde_json::from_str(&buf_curl(&["-d", &body, &auth])).unwrap();
        assert_eq!(answer["scope"], "KEY_SCOPE_SERVICE");

        let list = format!(
            "http://127.0.0.1:{}/switchboard.conversation.v1.ConversationService/ListConversations",
            services[1].0
        );
        let key_header = format!("x-api-key: {SERVICE_KEY}");
        let principal = r#"{"principal": {"system_id": "drillquiz", "user_id": "ops"}}"#;
        let refused = Command::new(buf())
            .args(["curl", "--protocol", "grpc", "--http2-prior-knowledge", "-d", principal, &list])
            .output()
            .unwrap();
        assert!(!refused.status.success());
        assert!(String::from_utf8_lossy(&refused.stderr).contains("unauthenticated"), "no key, no data");
        let answer = buf_curl(&["-H", &key_header, "-d", principal, &list]);
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert!(answer.get("conversations").is_none(), "a new user has no conversations: {answer}");

        let models = format!("http://127.0.0.1:{}/switchboard.llm.v1.LlmService/ListModels", services[2].0);
        let answer: Value = serde_json::from_str(&buf_curl(&["-H", &key_header, "-d", "{}", &models])).unwrap();
        assert_eq!(answer["defaultModel"], "mock");
        assert_eq!(answer["models"][0]["id"], "mock");

        let report = format!("http://127.0.0.1:{}/switchboard.llm.v1.UsageService/GetUsageReport", services[2].0);
        let body = r#"{"group_by": ["USAGE_DIMENSION_TENANT"]}"#;
        let answer: Value = serde_json::from_str(&buf_curl(&["-H", &key_header, "-d", body, &report])).unwrap();
        assert!(answer["from"].is_string() && answer["totals"].is_object(), "{answer}");
    })
    .await
    .unwrap();
    app.stop().await;
}
