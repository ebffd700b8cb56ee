//! The OpenAI-compatible API end to end: fields pass through both ways, aliases and errors
//! follow OpenAI's conventions, usage is counted per key, and the official `openai` Python
//! package works against it unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_e2e::{SERVICE_KEY, TestApp, openai_env, spawn_app, with_admin};
use switchboard_test_support::{MockUpstream, db};

async fn client_key(app: &TestApp) -> (String, String) {
    app.client_key("sdk-app").await
}

async fn completions(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    app.client.post(format!("{}/v1/chat/completions", app.http)).bearer_auth(key).json(&body).send().await.unwrap()
}

#[tokio::test]
async fn every_request_and_response_field_passes_through() {
    let upstream = MockUpstream::start().await;
    let test_db = db::sqlite();
    let app = spawn_app(with_admin(openai_env(&test_db.url, &upstream.base_url()))).await;
    let (key, _) = client_key(&app).await;
    let request = json!({
        "model": "gpt-test",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "look it up"}],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        "tool_choice": "auto", "response_format": {"type": "text"}, "seed": 42, "n": 1, "stop": ["\n\n"],
        "logprobs": true, "top_logprobs": 2, "user": "end-user-7", "temperature": 0.2, "max_tokens": 50,
        "frequency_penalty": 0.1, "metadata": {"trace": "abc"}
    });
    let answer = completions(&app, &key, request.clone()).await;
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    let sent = upstream.requests().last().unwrap().clone();
    for (field, value) in request.as_object().unwrap() {
        assert_eq!(&sent[field], value, "request field {field} did not reach the upstream unchanged");
    }
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(body["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "lookup");
    assert_eq!(body["choices"][0]["logprobs"], json!({"content": []}));
    assert_eq!(body["system_fingerprint"], "fp_mock");
    app.stop().await;
}

#[tokio::test]
async fn aliases_map_to_the_upstream_name_and_errors_take_openais_shape() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchboard.toml");
    std::fs::write(
        &config,
        "[[models]]\nid = \"fast\"\nprovider = \"openai\"\nupstream_name = \"gpt-test\"\naliases = [\"quick\"]\n",
    )
    .unwrap();
    let test_db = db::sqlite();
    let env = with_admin(openai_env(&test_db.url, &upstream.base_url()))
        .with("SWITCHBOARD_CONFIG", config.display().to_string());
    let app = spawn_app(env).await;
    let (key, _) = client_key(&app).await;

    let aliased =
        completions(&app, &key, json!({"model": "quick", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(aliased.status(), 200);
    assert_eq!(upstream.requests().last().unwrap()["model"], "gpt-test");

    let unknown =
        completions(&app, &key, json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(unknown.status(), 400);
    let error: Value = unknown.json().await.unwrap();
    assert_eq!(error["error"]["param"], "model", "{error}");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(error["error"]["message"].as_str().unwrap().contains("gpt-test"), "lists the models: {error}");

    let not_json = app
        .client
        .post(format!("{}/v1/chat/completions", app.http))
        .header("X-API-Key", &key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    assert!(not_json.json::<Value>().await.unwrap()["error"]["message"].is_string());

    let anonymous = app
        .client
        .post(format!("{}/v1/chat/completions", app.http))
        .json(&json!({"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.json::<Value>().await.unwrap()["error"]["type"], "authentication_error");

    // A service key acts for the end user it names in `user`, and must name one.
    let service = app
        .client
        .post(format!("{}/v1/chat/completions", app.http))
        .header("X-API-Key", SERVICE_KEY)
        .json(&json!({"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(service.status(), 400);
    assert_eq!(service.json::<Value>().await.unwrap()["error"]["param"], "user");
    let service = app
        .client
        .post(format!("{}/v1/chat/completions", app.http))
        .header("X-API-Key", SERVICE_KEY)
        .json(&json!({"model": "gpt-test", "user": "u-1", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(service.status(), 200);

    // An upstream that fails is a 502, in OpenAI's shape.
    upstream.always_fail(Some(503));
    let failed =
        completions(&app, &key, json!({"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(failed.status(), 502);
    assert_eq!(failed.json::<Value>().await.unwrap()["error"]["type"], "api_error");
    app.stop().await;
}

#[tokio::test]
async fn a_stream_ends_with_done_and_carries_usage_only_when_asked() {
    let upstream = MockUpstream::start().await;
    let test_db = db::sqlite();
    let app = spawn_app(with_admin(openai_env(&test_db.url, &upstream.base_url()))).await;
    let (key, _) = client_key(&app).await;
    for include_usage in [false, true] {
        let mut body =
            json!({"model": "gpt-test", "stream": true, "messages": [{"role": "user", "content": "one two three"}]});
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let text = completions(&app, &key, body).await.text().await.unwrap();
        let payloads: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
        assert_eq!(payloads.last(), Some(&"[DONE]"), "{text}");
        let chunks: Vec<Value> =
            payloads[..payloads.len() - 1].iter().map(|p| serde_json::from_str(p).unwrap()).collect();
        let content: String =
            chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
        assert_eq!(content, "upstream reply to: one two three");
        let usage_chunks = chunks.iter().filter(|c| c["usage"].is_object()).count();
        assert_eq!(usage_chunks, usize::from(include_usage), "include_usage={include_usage}: {text}");
    }
    app.stop().await;
}

#[tokio::test]
async fn usage_is_counted_per_key_and_principal_off_the_request_path() {
    let upstream = MockUpstream::start().await;
    let test_db = db::sqlite();
    let app = spawn_app(with_admin(openai_env(&test_db.url, &upstream.base_url()))).await;
    let (key, key_id) = client_key(&app).await;
    let mut expected_prompt = 0;
    for text in ["one", "two words", "three more words"] {
        let answer: Value =
            completions(&app, &key, json!({"model": "gpt-test", "messages": [{"role": "user", "content": text}]}))
                .await
                .json()
                .await
                .unwrap();
        expected_prompt += answer["usage"]["prompt_tokens"].as_i64().unwrap();
    }
    // The rollup is written within a second or so, off the request path.
    let pool = sqlx::SqlitePool::connect(&test_db.url).await.unwrap();
    let mut row = None;
    for _ in 0..50 {
        row = sqlx::query_as::<_, (String, String, i64, i64)>(
            "SELECT user_id, model, requests, prompt_tokens FROM usage_rollups WHERE key_id = $1",
        )
        .bind(&key_id)
        .fetch_optional(&pool)
        .await
        .unwrap();
        if row.as_ref().is_some_and(|r| r.2 == 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (user_id, model, requests, prompt_tokens) = row.expect("no usage rollup was written");
    assert_eq!(user_id, format!("key_{key_id}"));
    assert_eq!(model, "gpt-test");
    assert_eq!(requests, 3);
    assert_eq!(prompt_tokens, expected_prompt);
    app.stop().await;
}

/// The virtualenv Python with the `openai` package (`make tools` makes it).
fn python() -> PathBuf {
    let path = std::env::var("SWITCHBOARD_PYTHON").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/switchboard/tools/venv/bin/python")
    });
    assert!(path.exists(), "the openai SDK test needs {}: run `make tools`", path.display());
    path
}

#[tokio::test]
async fn the_official_openai_sdk_works_unchanged() {
    let upstream = MockUpstream::start().await;
    let test_db = db::sqlite();
    let app = spawn_app(with_admin(openai_env(&test_db.url, &upstream.base_url()))).await;
    let (key, _) = client_key(&app).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openai_sdk/check.py");
    let base_url = format!("{}/v1", app.http);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python()).arg(script).args([base_url.as_str(), key.as_str(), "gpt-test"]).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("all checks passed"),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    app.stop().await;
}
