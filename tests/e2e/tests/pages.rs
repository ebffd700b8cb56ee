//! The chat page, the widget and the history browser in a real browser (issue: pages): runs
//! `tests/browser/pages.mjs`, which drives Debian's Chromium with `playwright-core`, against a
//! running Switchboard whose upstream streams word by word. `make test` installs both (`make
//! tools`); without them this test fails, naming what is missing — it never skips.
//!
//! Screenshots land in `$SWITCHBOARD_ARTIFACTS/pages/` (`make test` sets it under
//! `~/.cache/switchboard/artifacts`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use switchboard_e2e::{SERVICE_KEY, openai_env, spawn_app};
use switchboard_test_support::{MockUpstream, db};

const JWT_SECRET: &str = "pages-secret-0123456789abcdef-0123456789abcdef";
/// The only site allowed to frame the chat page; `http://evil.test` is not.
const ALLOWED_ORIGIN: &str = "http://drillquiz.test";
const FOREIGN_ORIGIN: &str = "http://evil.test";

fn required(var: &str, default: Option<&str>, what: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).or_else(|| default.map(PathBuf::from));
    match path {
        Some(path) if path.exists() => path,
        _ => panic!("the browser test needs {what} (${var}): run `make tools`, which installs it"),
    }
}

fn expired_token() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({"system_id": "drillquiz", "user_id": "browser-user", "exp": now - 3600});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pages_work_in_headless_chromium() {
    let chromium = required("SWITCHBOARD_CHROMIUM", Some("/usr/bin/chromium"), "Chromium");
    let playwright = required("SWITCHBOARD_PLAYWRIGHT", None, "the playwright-core package");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../browser/pages.mjs");
    let artifacts = std::env::var_os("SWITCHBOARD_ARTIFACTS")
        .map_or_else(|| std::env::temp_dir().join("switchboard-artifacts"), PathBuf::from)
        .join("pages");

    let upstream = MockUpstream::start().await;
    // Word by word, slowly enough that the page shows the answer arrive in pieces.
    upstream.set_chunk_delay(Duration::from_millis(120));
    let db = db::sqlite();
    let app = spawn_app(
        openai_env(&db.url, &upstream.base_url())
            .with("CHAT_GATEWAY_JWT_SECRET", JWT_SECRET)
            .with("ALLOWED_CHAT_TOKEN_ORIGINS", ALLOWED_ORIGIN),
    )
    .await;
    let issued: Value = app
        .client
        .get(format!("{}/v1/chat-token?system_id=drillquiz&user_id=browser-user&lang=ko", app.http))
        .header("x-api-key", SERVICE_KEY)
        .header("origin", ALLOWED_ORIGIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = issued["token"].as_str().expect("a chat token").to_owned();

    let output = tokio::task::spawn_blocking({
        let http = app.http.clone();
        move || {
            Command::new("node")
                .arg(&script)
                .env("SB_GATEWAY", http)
                .env("SB_CHROMIUM", chromium)
                .env("SB_PLAYWRIGHT", playwright)
                .env("SB_ARTIFACTS", &artifacts)
                .env("SB_TOKEN", token)
                .env("SB_EXPIRED_TOKEN", expired_token())
                .env("SB_API_KEY", SERVICE_KEY)
                .env("SB_SYSTEM_ID", "drillquiz")
                .env("SB_USER_ID", "browser-user")
                .env("SB_ALLOWED_ORIGIN", ALLOWED_ORIGIN)
                .env("SB_FOREIGN_ORIGIN", FOREIGN_ORIGIN)
                .output()
                .expect("cannot run node (Node.js is needed for the browser test)")
        }
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    println!("{report}");
    assert!(
        output.status.success(),
        "the browser checks failed ({}):\n{report}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("ok - ") && !report.contains("not ok"), "{report}");

    // What the browser did is in the store: the Korean conversation, whole, and the stopped
    // answer kept as partial next to its retry.
    let read = |path: String| {
        let request = app.client.get(format!("{}{path}", app.http)).header("x-api-key", SERVICE_KEY);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let listed = read("/v1/conversations?system_id=drillquiz&user_id=browser-user&limit=100".into()).await;
    let conversations = listed["data"].as_array().unwrap();
    let korean = conversations.iter().find(|c| c["title"].as_str().unwrap().contains("안녕하세요")).expect("stored");
    let messages = read(format!("/v1/conversations/{}/messages", korean["id"].as_str().unwrap())).await;
    let contents: Vec<(&str, &str, &str)> = messages["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["status"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        contents[..2],
        [
            ("user", "complete", "안녕하세요 오늘 날씨 어때요"),
            ("assistant", "complete", "upstream reply to: 안녕하세요 오늘 날씨 어때요")
        ],
        "{contents:?}"
    );
    let stopped = conversations.iter().find(|c| c["title"].as_str().unwrap().starts_with("count one")).expect("stored");
    let messages = read(format!("/v1/conversations/{}/messages", stopped["id"].as_str().unwrap())).await;
    let statuses: Vec<&str> =
        messages["data"].as_array().unwrap().iter().map(|m| m["status"].as_str().unwrap()).collect();
    assert!(statuses.contains(&"partial") && statuses.last() == Some(&"complete"), "{statuses:?}");
    app.stop().await;
}

/// The history page's listing: a service key naming no user gets every user of its tenant
/// (each with its `user_id`), a key of another tenant is refused, a client key still sees only
/// its own.
#[tokio::test]
async fn a_service_key_lists_every_user_of_its_tenant_and_no_other() {
    let upstream = MockUpstream::start().await;
    let db = db::sqlite();
    let app = spawn_app(switchboard_e2e::with_admin(openai_env(&db.url, &upstream.base_url()))).await;
    for (system_id, user_id) in [("drillquiz", "alice"), ("drillquiz", "bob"), ("cointutor", "carol")] {
        let body =
            serde_json::json!({"system_id": system_id, "user_id": user_id, "message": format!("hi from {user_id}")});
        let answer = app.client.post(format!("{}/v1/chat", app.http)).header("x-api-key", SERVICE_KEY).json(&body);
        assert_eq!(answer.send().await.unwrap().status(), 200);
    }
    let list = |key: String, query: &'static str| {
        let request = app.client.get(format!("{}/v1/cache/conversations{query}", app.http)).header("x-api-key", key);
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = list(SERVICE_KEY.to_owned(), "?system_id=drillquiz").await;
    assert_eq!(status, 200, "{body}");
    let mut users: Vec<&str> =
        body["data"].as_array().unwrap().iter().map(|c| c["user_id"].as_str().unwrap()).collect();
    users.sort_unstable();
    assert_eq!(users, ["alice", "bob"], "{body}");
    assert!(body["data"].as_array().unwrap().iter().all(|c| c["system_id"] == "drillquiz"));

    // A static key serves every tenant, so it must say which.
    let (status, body) = list(SERVICE_KEY.to_owned(), "").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("system_id"), "{body}");

    let cointutor = app
        .issue_key(serde_json::json!({"client_name": "tutor-backend", "scope": "service", "system_id": "cointutor"}))
        .await["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = list(cointutor.clone(), "?system_id=drillquiz").await;
    assert_eq!(status, 403, "{body}");
    // Bound to its tenant, it need not name it.
    let (status, body) = list(cointutor, "").await;
    assert_eq!(status, 200, "{body}");
    let users: Vec<&str> = body["data"].as_array().unwrap().iter().map(|c| c["user_id"].as_str().unwrap()).collect();
    assert_eq!(users, ["carol"]);

    let (client, _) = app.client_key("history-reader").await;
    let (status, body) = list(client, "").await;
    assert_eq!((status, body["data"].as_array().unwrap().len()), (200, 0), "a client key sees only its own: {body}");
    app.stop().await;
}
