//! Streaming turns end to end: Server-Sent Events from the gateway, token by token, and what
//! is stored when the stream ends well, when the client leaves, and when the upstream breaks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_e2e::{SERVICE_KEY, TestApp, base_env, openai_env, spawn_app};
use switchboard_test_support::{MockUpstream, db};

/// `(event, data)` pairs of a complete SSE body.
fn parse_sse(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut event = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim().to_owned();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            (!data.is_empty()).then(|| (event, serde_json::from_str(&data).unwrap()))
        })
        .collect()
}

async fn stream_chat(app: &TestApp, body: Value) -> reqwest::Response {
    app.client.post(format!("{}/v1/chat", app.http)).header("X-API-Key", SERVICE_KEY).json(&body).send().await.unwrap()
}

async fn stored_messages(app: &TestApp, conversation_id: &str, user: &str) -> Vec<Value> {
    let page: Value = app
        .get(&format!("/v1/conversations/{conversation_id}/messages?system_id=drillquiz&user_id={user}"))
        .await
        .json()
        .await
        .unwrap();
    page["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_streamed_turn_sends_start_deltas_and_done_then_is_stored() {
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url)).await;
    let response = stream_chat(
        &app,
        json!({"system_id": "drillquiz", "user_id": "s1", "message": "tell me more please", "stream": true}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let events = parse_sse(&response.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names.first(), Some(&"start"));
    assert_eq!(names.last(), Some(&"done"));
    assert!(names.iter().filter(|n| **n == "delta").count() >= 4, "token by token: {names:?}");
    let text: String = events.iter().filter(|(e, _)| e == "delta").map(|(_, d)| d["delta"].as_str().unwrap()).collect();
    let (_, start) = &events[0];
    let (_, done) = events.last().unwrap();
    assert_eq!(text, "mock reply #1: tell me more please");
    assert_eq!(done["answer"], text.as_str());
    assert_eq!(done["message_id"], start["message_id"]);
    assert!(events.iter().filter(|(e, _)| e == "delta").all(|(_, d)| d["message_id"] == start["message_id"]));
    assert!(done["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    let stored = stored_messages(&app, start["conversation_id"].as_str().unwrap(), "s1").await;
    assert_eq!(stored[1]["content"], text.as_str());
    assert_eq!(stored[1]["status"], "complete");
    app.stop().await;
}

#[tokio::test]
async fn accept_event_stream_also_streams_and_an_openai_upstream_is_passed_through() {
    let upstream = MockUpstream::start().await;
    let test_db = db::sqlite();
    let app = spawn_app(openai_env(&test_db.url, &upstream.base_url())).await;
    let response = app
        .client
        .post(format!("{}/v1/chat", app.http))
        .header("X-API-Key", SERVICE_KEY)
        .header("Accept", "text/event-stream")
        .json(&json!({"system_id": "drillquiz", "user_id": "s2", "message": "stream this"}))
        .send()
        .await
        .unwrap();
    let events = parse_sse(&response.text().await.unwrap());
    let text: String = events.iter().filter(|(e, _)| e == "delta").map(|(_, d)| d["delta"].as_str().unwrap()).collect();
    assert_eq!(text, "upstream reply to: stream this");
    assert_eq!(upstream.requests()[0]["stream"], true, "the upstream was asked to stream");
    assert_eq!(events.last().unwrap().0, "done");
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_leaves_a_partial_answer_with_what_it_was_sent() {
    let upstream = MockUpstream::start().await;
    upstream.set_chunk_delay(Duration::from_millis(150));
    let test_db = db::sqlite();
    let app = spawn_app(openai_env(&test_db.url, &upstream.base_url())).await;
    let long = "one two three four five six seven eight nine ten eleven twelve";
    let mut response =
        stream_chat(&app, json!({"system_id": "drillquiz", "user_id": "s3", "message": long, "stream": true})).await;
    let mut received = String::new();
    while parse_sse(&received).iter().filter(|(e, _)| e == "delta").count() < 2 {
        let chunk = response.chunk().await.unwrap().expect("more events");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    let events = parse_sse(&received);
    let conversation_id = events[0].1["conversation_id"].as_str().unwrap().to_owned();
    let seen: String = events.iter().filter(|(e, _)| e == "delta").map(|(_, d)| d["delta"].as_str().unwrap()).collect();
    drop(response);

    let full = format!("upstream reply to: {long}");
    let started = Instant::now();
    let answer = loop {
        let stored = stored_messages(&app, &conversation_id, "s3").await;
        if stored[1]["status"] != "in_progress" {
            break stored[1].clone();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the answer stayed in_progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(answer["status"], "partial");
    let kept = answer["content"].as_str().unwrap();
    assert!(kept.starts_with(&seen), "{kept:?} keeps what the client saw ({seen:?})");
    assert!(full.starts_with(kept) && kept.len() < full.len(), "{kept:?} is a strict prefix of the answer");
    app.stop().await;
}

#[tokio::test]
async fn an_upstream_that_breaks_mid_stream_ends_with_an_error_event_and_never_stays_in_progress() {
    let upstream = MockUpstream::start().await;
    upstream.cut_stream_after(Some(2));
    // Spaced out, as a real stream is, so the break comes after the answer has begun.
    upstream.set_chunk_delay(Duration::from_millis(30));
    let test_db = db::sqlite();
    let app = spawn_app(openai_env(&test_db.url, &upstream.base_url())).await;
    let response = stream_chat(
        &app,
        json!({"system_id": "drillquiz", "user_id": "s4", "message": "break please", "stream": true}),
    )
    .await;
    let status = response.status();
    let text = response.text().await.unwrap();
    let events = parse_sse(&text);
    assert_eq!(events.last().map(|e| e.0.as_str()), Some("error"), "{status} {text}");
    assert!(events.last().unwrap().1["status"].as_u64().unwrap() >= 500);
    let conversation_id = events[0].1["conversation_id"].as_str().unwrap();
    let stored = stored_messages(&app, conversation_id, "s4").await;
    assert_eq!(stored[0]["content"], "break please", "the user message is kept");
    assert_eq!(stored[1]["status"], "partial");
    assert_eq!(stored[1]["content"], "upstream reply ");
    assert!(!stored[1]["error"].as_str().unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_streamed_request_with_an_idempotency_key_is_replayed_not_run_twice() {
    let upstream = MockUpstream::start().await;
    let test_db = db::sqlite();
    let app = spawn_app(openai_env(&test_db.url, &upstream.base_url())).await;
    let send = || {
        app.client
            .post(format!("{}/v1/chat", app.http))
            .header("X-API-Key", SERVICE_KEY)
            .header("Idempotency-Key", "stream-once")
            .json(&json!({"system_id": "drillquiz", "user_id": "s5", "message": "only once", "stream": true}))
            .send()
    };
    let first = parse_sse(&send().await.unwrap().text().await.unwrap());
    let second = parse_sse(&send().await.unwrap().text().await.unwrap());
    assert_eq!(first.last().unwrap().0, "done");
    assert_eq!(first.last(), second.last(), "the same stored answer");
    assert_eq!(first.last().unwrap().1["answer"], "upstream reply to: only once");
    assert_eq!(upstream.calls(), 1);
    app.stop().await;
}
