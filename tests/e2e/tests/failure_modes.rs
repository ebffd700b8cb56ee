//! Failure modes with figures: a deadline on a slow upstream, an upstream that always fails,
//! and one upstream of two failing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_e2e::{openai_env, spawn_app};
use switchboard_test_support::{MockUpstream, db};

#[tokio::test]
async fn a_two_second_deadline_on_a_slow_upstream_answers_504_in_time_and_cancels_the_upstream_call() {
    let upstream = MockUpstream::start().await;
    upstream.set_delay(Duration::from_secs(10));
    let test_db = db::sqlite();
    let env = openai_env(&test_db.url, &upstream.base_url()).with("SWITCHBOARD_UPSTREAM_TIMEOUT_SECS", "2");
    let app = spawn_app(env).await;
    let started = Instant::now();
    let answer = app.post("/v1/chat", json!({"system_id": "drillquiz", "user_id": "slow", "message": "hi"})).await;
    let took = started.elapsed();
    assert_eq!(answer.status(), 504, "{}", answer.text().await.unwrap());
    // The figure is 2.1 s; the bound leaves room for a loaded CI machine.
    assert!(took < Duration::from_millis(2500), "answered after {took:?}");
    println!("deadline 2 s: 504 after {} ms", took.as_millis());
    // The upstream saw the call go away (no retries of a timeout).
    let until = Instant::now() + Duration::from_secs(2);
    while upstream.abandoned() < upstream.calls() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(upstream.calls(), 1);
    assert_eq!(upstream.abandoned(), 1, "the upstream request was not cancelled");
    app.stop().await;
}

#[tokio::test]
async fn an_upstream_that_always_answers_503_sees_at_most_1_2_attempts_per_request() {
    let upstream = MockUpstream::start().await;
    upstream.always_fail(Some(503));
    let test_db = db::sqlite();
    let env = openai_env(&test_db.url, &upstream.base_url())
        .with("SWITCHBOARD_RATE_LIMIT_CHAT_PRINCIPAL", "off")
        .with("SWITCHBOARD_RATE_LIMIT_CHAT", "off");
    let app = spawn_app(env).await;
    let requests = 100;
    for i in 0..requests {
        let answer = app.post("/v1/chat", json!({"system_id": "d", "user_id": "u", "message": format!("m{i}")})).await;
        assert_eq!(answer.status(), 502);
    }
    let attempts = upstream.calls();
    println!("always 503: {requests} requests, {attempts} upstream attempts");
    assert!(attempts * 10 <= requests * 12, "{attempts} attempts for {requests} requests");

    app.stop().await;

    // Nothing is retried once the first byte of a stream has arrived.
    let upstream = MockUpstream::start().await;
    upstream.cut_stream_after(Some(2));
    let test_db = db::sqlite();
    let app = spawn_app(openai_env(&test_db.url, &upstream.base_url())).await;
    let before = upstream.calls();
    let body = app
        .post("/v1/chat", json!({"system_id": "d", "user_id": "s", "message": "one two three four", "stream": true}))
        .await
        .text()
        .await
        .unwrap();
    assert!(!body.contains("event: done"), "the broken stream was reported done: {body}");
    assert_eq!(upstream.calls() - before, 1, "a broken stream was retried");
    app.stop().await;
}

#[tokio::test]
async fn one_of_two_upstreams_failing_is_ejected_and_99_percent_of_calls_succeed() {
    let upstream = MockUpstream::start().await;
    upstream.always_fail(Some(500));
    let test_db = db::sqlite();
    let env = openai_env(&test_db.url, &upstream.base_url())
        .with("SWITCHBOARD_FALLBACK_MODELS", "mock")
        .with("SWITCHBOARD_RATE_LIMIT_CHAT_PRINCIPAL", "off")
        .with("SWITCHBOARD_RATE_LIMIT_CHAT", "off");
    let app = spawn_app(env).await;
    let calls = 200;
    let mut succeeded = 0;
    for i in 0..calls {
        let answer = app.post("/v1/chat", json!({"system_id": "d", "user_id": "u", "message": format!("m{i}")})).await;
        if answer.status() == 200 && answer.json::<Value>().await.unwrap()["model"] == "mock" {
            succeeded += 1;
        }
    }
    let attempts = upstream.calls();
    println!("one upstream failing: {succeeded}/{calls} calls answered, {attempts} attempts on the failing one");
    assert!(succeeded * 100 >= calls * 99, "{succeeded} of {calls}");
    assert!(attempts < 20, "the failing upstream was not ejected: {attempts} attempts");
    app.stop().await;
}
