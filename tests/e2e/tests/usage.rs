//! Spend reports and budgets end to end: `/v1/usage` (JSON and CSV) and `UsageService` over
//! gRPC with totals computed by hand, budgets set through the admin API and the configuration
//! file refusing calls before the upstream in each API's error shape, and 200 concurrent calls
//! through two replicas sharing Redis and PostgreSQL against one budget.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_e2e::{
    ADMIN_TOKEN, SERVICE_KEY, TestApp, base_env, grpc_channel, openai_env, redis_env, spawn_app, with_admin,
};
use switchboard_proto::llm::v1 as pb;
use switchboard_proto::llm::v1::usage_service_client::UsageServiceClient;
use switchboard_test_support::MockUpstream;
use switchboard_test_support::db;

/// A priced model answered by the built-in mock: $1000 per million prompt tokens (1,000
/// micro-dollars a token) and $2000 per million completion tokens.
const PRICED: &str = "[[models]]\nid = \"priced\"\nprovider = \"mock\"\ncontext_window = 8192\n\
                      input_usd_per_mtok = 1000.0\noutput_usd_per_mtok = 2000.0\n";

fn config(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("switchboard.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn complete(app: &TestApp, http: &str, key: &str, body: Value) -> reqwest::Response {
    app.client.post(format!("{http}/v1/chat/completions")).bearer_auth(key).json(&body).send().await.unwrap()
}

async fn usage_as(app: &TestApp, header: (&str, &str), query: &str) -> reqwest::Response {
    app.client.get(format!("{}/v1/usage?{query}", app.http)).header(header.0, header.1).send().await.unwrap()
}

/// Waits until the rollups (written once a second) hold `requests` completions.
async fn await_requests(app: &TestApp, requests: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let report: Value = usage_as(app, ("X-Admin-Token", ADMIN_TOKEN), "").await.json().await.unwrap();
        if report["totals"]["requests"] == requests || Instant::now() > deadline {
            assert_eq!(report["totals"]["requests"], requests, "{report}");
            return report;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn spend_is_reported_per_tenant_user_key_and_model_and_exported_as_csv() {
    let dir = tempfile::tempdir().unwrap();
    let test_db = db::sqlite();
    let env = with_admin(base_env(&test_db.url)).with("SWITCHBOARD_CONFIG", config(&dir, PRICED));
    let app = spawn_app(env).await;
    let (key, key_id) = app.client_key("reporting").await;
    let me = format!("key_{key_id}");

    // Two priced calls by the client key: "hello there" is 3 tokens in (11 characters / 4,
    // rounded up), "mock reply #1: hello there" 7 out: 3 × 1000 + 7 × 2000 = 17,000 µ$ each.
    for _ in 0..2 {
        let body = json!({"model": "priced", "messages": [{"role": "user", "content": "hello there"}]});
        assert_eq!(complete(&app, &app.http, &key, body).await.status(), 200);
    }
    // One unpriced call for bob through the service key: "hi" 1 in, "mock reply #1: hi" 5 out.
    let body = json!({"model": "mock", "user": "bob", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(complete(&app, &app.http, SERVICE_KEY, body).await.status(), 200);
    await_requests(&app, 3).await;

    let admin = ("X-Admin-Token", ADMIN_TOKEN);
    let report: Value = usage_as(&app, admin, "group_by=user,model").await.json().await.unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{report}");
    let bob = rows.iter().find(|r| r["user_id"] == "bob").unwrap();
    assert_eq!(
        (bob["system_id"].as_str(), bob["model"].as_str(), &bob["requests"], &bob["prompt_tokens"]),
        (Some("default"), Some("mock"), &json!(1), &json!(1))
    );
    assert_eq!(bob["completion_tokens"], 5);
    assert_eq!(bob["unpriced_requests"], 1);
    assert!(bob["cost_usd"].is_null(), "an unpriced model's cost is unknown, not free: {bob}");
    let mine = rows.iter().find(|r| r["user_id"] == me.as_str()).unwrap();
    assert_eq!(
        (&mine["requests"], &mine["prompt_tokens"], &mine["completion_tokens"]),
        (&json!(2), &json!(6), &json!(14))
    );
    assert_eq!(mine["cost_micros"], 34_000);
    assert_eq!(mine["cost_usd"], 0.034);
    assert_eq!(report["totals"]["requests"], 3);
    assert_eq!(report["totals"]["total_tokens"], 26);
    assert_eq!(report["totals"]["cost_micros"], 34_000);
    assert_eq!(report["totals"]["unpriced_requests"], 1);

    // By key: the client key's calls under its id, the service key's under none.
    let by_key: Value = usage_as(&app, admin, "group_by=key").await.json().await.unwrap();
    let keyed = by_key["rows"].as_array().unwrap().iter().find(|r| r["key_id"] == key_id.as_str()).unwrap();
    assert_eq!(keyed["requests"], 2, "{by_key}");

    // A client key sees its own spend only, and may not ask for anyone else's.
    let own: Value = usage_as(&app, ("X-API-Key", &key), "").await.json().await.unwrap();
    assert_eq!((&own["totals"]["requests"], &own["totals"]["cost_micros"]), (&json!(2), &json!(34_000)), "{own}");
    assert_eq!(usage_as(&app, ("X-API-Key", &key), "user_id=bob").await.status(), 403);
    assert_eq!(usage_as(&app, ("X-API-Key", &key), "system_id=drillquiz").await.status(), 403);
    // Bad input names its field; no credential is refused.
    let bad: Value = usage_as(&app, admin, "group_by=colour").await.json().await.unwrap();
    assert!(bad.to_string().contains("group_by"), "{bad}");
    let bad: Value = usage_as(&app, admin, "from=yesterday").await.json().await.unwrap();
    assert!(bad.to_string().contains("from"), "{bad}");
    assert_eq!(app.client.get(format!("{}/v1/usage", app.http)).send().await.unwrap().status(), 401);
    assert_eq!(usage_as(&app, ("X-Admin-Token", "not-the-admin-token-0123456789"), "").await.status(), 403);

    // CSV: a header, one line per group, and the total.
    let csv = usage_as(&app, admin, "group_by=user,model&format=csv").await;
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "period_start,system_id,user_id,key_id,model,requests,prompt_tokens,completion_tokens,total_tokens,cost_usd,unpriced_requests"
    );
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines.iter().any(|l| l.contains(&me) && l.contains(",priced,2,6,14,20,0.034")), "{text}");
    assert!(lines[3].starts_with("total,") && lines[3].contains(",3,7,19,26,"), "{text}");

    // The same over gRPC, as a backend would ask with its service key.
    let mut grpc = UsageServiceClient::new(grpc_channel(app.llm_port));
    let mut request = tonic::Request::new(pb::GetUsageReportRequest {
        group_by: vec![pb::UsageDimension::Tenant as i32, pb::UsageDimension::Day as i32],
        ..Default::default()
    });
    request.metadata_mut().insert("x-api-key", SERVICE_KEY.parse().unwrap());
    let answer = grpc.get_usage_report(request).await.unwrap().into_inner();
    assert_eq!(answer.rows.len(), 1);
    assert_eq!((answer.rows[0].system_id.as_str(), answer.rows[0].requests), ("default", 3));
    assert!(answer.rows[0].period_start.is_some());
    assert_eq!(answer.totals.unwrap().cost_micros, 34_000);
    app.stop().await;
}

#[tokio::test]
async fn a_budget_refuses_calls_before_the_upstream_in_each_apis_error_shape() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A tenant budget from the configuration file, read-only through the API.
    let file = "[[budgets]]\nscope = \"tenant\"\nsystem_id = \"cointutor\"\nperiod = \"month\"\nmax_usd = 50.0\n";
    let test_db = db::sqlite();
    let env = with_admin(openai_env(&test_db.url, &upstream.base_url())).with("SWITCHBOARD_CONFIG", config(&dir, file));
    let app = spawn_app(env).await;
    let (key, key_id) = app.client_key("capped").await;
    let admin = |request: reqwest::RequestBuilder| request.header("X-Admin-Token", ADMIN_TOKEN);

    // A client key may not set budgets; the admin token may.
    let budget = json!({"scope": "key", "system_id": "default", "key_id": key_id, "period": "day", "max_tokens": 1});
    let put = |request: reqwest::RequestBuilder| request.json(&budget);
    let refused =
        put(app.client.put(format!("{}/v1/budgets", app.http)).header("X-API-Key", &key)).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let set = put(admin(app.client.put(format!("{}/v1/budgets", app.http)))).send().await.unwrap();
    assert_eq!(set.status(), 200);
    let set: Value = set.json().await.unwrap();
    let id = format!("key:default:{key_id}:day");
    assert_eq!(set["id"], id.as_str());
    // A bad budget names its field.
    let bad = admin(app.client.put(format!("{}/v1/budgets", app.http)))
        .json(&json!({"scope": "key", "system_id": "default", "period": "fortnight", "max_tokens": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    assert!(bad.text().await.unwrap().contains("period"));

    // OpenAI API: 429 insufficient_quota, before any upstream call.
    let calls = upstream.calls();
    let body = json!({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 5});
    let answer = complete(&app, &app.http, &key, body).await;
    assert_eq!(answer.status(), 429);
    assert!(answer.headers().contains_key("retry-after"), "a day budget says when it resets");
    let error: Value = answer.json().await.unwrap();
    assert_eq!(error["error"]["type"], "insufficient_quota", "{error}");
    assert_eq!(error["error"]["code"], "insufficient_quota", "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains(&id), "{error}");
    // The canonical chat API: 429 in FastAPI's shape, naming the budget.
    let chat = app
        .client
        .post(format!("{}/v1/chat", app.http))
        .header("X-API-Key", &key)
        .json(&json!({"message": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 429);
    let detail: Value = chat.json().await.unwrap();
    assert!(detail["detail"].as_str().unwrap().contains(&id), "{detail}");
    assert_eq!(upstream.calls(), calls, "a refused call never reaches the upstream");

    // The key sees the budget that applies to it; the admin sees it and the file's.
    let mine: Value = app
        .client
        .get(format!("{}/v1/budgets", app.http))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["data"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine["data"][0]["id"], id.as_str());
    let all: Value =
        admin(app.client.get(format!("{}/v1/budgets", app.http))).send().await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = all["data"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"tenant:cointutor:month") && ids.contains(&id.as_str()), "{all}");
    let from_file = all["data"].as_array().unwrap().iter().find(|b| b["source"] == "config").unwrap();
    assert_eq!(from_file["max_usd"], 50.0);
    let change_file =
        admin(app.client.delete(format!("{}/v1/budgets/tenant:cointutor:month", app.http))).send().await.unwrap();
    assert_eq!(change_file.status(), 409, "the file's budgets are changed in the file");

    // Deleting the budget lets the key call again.
    let deleted = admin(app.client.delete(format!("{}/v1/budgets/{id}", app.http))).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    let body = json!({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 5});
    assert_eq!(complete(&app, &app.http, &key, body).await.status(), 200);
    assert_eq!(upstream.calls(), calls + 1);
    let gone = admin(app.client.delete(format!("{}/v1/budgets/{id}", app.http))).send().await.unwrap();
    assert_eq!(gone.status(), 404);

    // A call that brings a budget past its warning level is served and counted.
    let warned = json!({"scope": "key", "system_id": "default", "key_id": key_id, "period": "day", "max_tokens": 100, "warn_percent": 5});
    assert_eq!(
        admin(app.client.put(format!("{}/v1/budgets", app.http))).json(&warned).send().await.unwrap().status(),
        200
    );
    let body = json!({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 5});
    assert_eq!(complete(&app, &app.http, &key, body).await.status(), 200);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("switchboard_budget_refusals_total{scope=\"key\"} 2"), "{metrics}");
    assert!(metrics.contains("switchboard_budget_warnings_total{scope=\"key\"} 1"), "{metrics}");
    app.stop().await;
}

/// 200 concurrent calls, half through each of two replicas (each its own gateway and LLM
/// proxy) sharing PostgreSQL and Redis, against one tenant budget: the spend stays within one
/// call's worst case of the ceiling, and every refusal is `insufficient_quota`.
#[tokio::test]
async fn two_hundred_concurrent_calls_through_two_replicas_do_not_overspend_a_budget() {
    let dir = tempfile::tempdir().unwrap();
    let test_db = db::postgres().await;
    let env = with_admin(redis_env(&test_db.url).await)
        .with("SWITCHBOARD_CONFIG", config(&dir, PRICED))
        .with("SWITCHBOARD_RATE_LIMIT_CHAT", "off")
        .with("SWITCHBOARD_RATE_LIMIT_CHAT_PRINCIPAL", "off")
        .with("SWITCHBOARD_RATE_LIMIT_API", "off")
        .with("SWITCHBOARD_RATE_LIMIT_API_PRINCIPAL", "off");
    let a = spawn_app(env.clone()).await;
    let b = spawn_app(env).await;
    // $0.30: "hi" (1 token) with max_tokens 16 may cost 1 × 1000 + 16 × 2000 = 33,000 µ$ and
    // really costs 1 × 1000 + 5 × 2000 = 11,000 µ$ ("mock reply #1: hi").
    const LIMIT: i64 = 300_000;
    const WORST: i64 = 33_000;
    const ACTUAL: i64 = 11_000;
    let set = a
        .client
        .put(format!("{}/v1/budgets", a.http))
        .header("X-Admin-Token", ADMIN_TOKEN)
        .json(&json!({"scope": "tenant", "system_id": "default", "period": "month", "max_usd": 0.3}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    // Replica b learns of the budget within its reload interval.
    tokio::time::sleep(switchboard_llm_proxy::budgets::RELOAD_INTERVAL + Duration::from_millis(500)).await;

    let body = |i: usize| json!({"model": "priced", "user": format!("burst-{i}"), "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]});
    let calls = (0..200).map(|i| {
        let (app, http) = if i % 2 == 0 { (&a, a.http.clone()) } else { (&b, b.http.clone()) };
        let body = body(i);
        async move {
            let answer = complete(app, &http, SERVICE_KEY, body).await;
            let status = answer.status().as_u16();
            (status, answer.json::<Value>().await.unwrap())
        }
    });
    let answers = futures::future::join_all(calls).await;
    let served = answers.iter().filter(|(s, _)| *s == 200).count() as i64;
    for (status, body) in &answers {
        if *status != 200 {
            assert_eq!(*status, 429, "{body}");
            assert_eq!(body["error"]["type"], "insufficient_quota", "{body}");
        }
    }
    assert!((1..200).contains(&served), "the budget admitted {served} of 200");
    // What the rollups (the report) say was spent, once both replicas have written theirs.
    let report = await_requests(&a, served).await;
    let spent = report["totals"]["cost_micros"].as_i64().unwrap();
    assert_eq!(spent, served * ACTUAL);
    assert!(spent <= LIMIT + WORST, "spent {spent} µ$ against a {LIMIT} µ$ budget");

    // The concurrent reservations held back calls the budget could still pay for; one by one
    // the rest of it is usable, and then every call is refused.
    let mut more = 0;
    loop {
        let answer = complete(&b, &b.http, SERVICE_KEY, body(1000 + more)).await;
        if answer.status() == 429 {
            break;
        }
        assert_eq!(answer.status(), 200);
        more += 1;
        assert!(more < 100);
        // A call's reservation is settled just after its answer: let it land before the next.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = (served + more as i64) * ACTUAL;
    eprintln!(
        "burst: {served} of 200 served concurrently, {spent} µ$ spent; {more} more one by one; {total} µ$ of {LIMIT} µ$"
    );
    assert!(total <= LIMIT && total + WORST > LIMIT, "spent {total} µ$ of {LIMIT} µ$ when the budget refused");
    a.stop().await;
    b.stop().await;
}

/// A client that leaves a stream halfway still pays for what was produced: leaving early
/// must not make a completion free or let it slip past a budget.
#[tokio::test]
async fn a_stream_the_caller_leaves_halfway_is_still_counted() {
    use futures::StreamExt;
    let upstream = MockUpstream::start().await;
    upstream.set_chunk_delay(Duration::from_millis(300));
    let test_db = db::sqlite();
    let app = spawn_app(with_admin(openai_env(&test_db.url, &upstream.base_url()))).await;
    let body = json!({
        "stream": true,
        "user": "leaver",
        "messages": [{"role": "user", "content": "tell me a long story about switchboards"}],
    });
    let answer = complete(&app, &app.http, SERVICE_KEY, body).await;
    assert_eq!(answer.status(), 200);
    let mut chunks = answer.bytes_stream();
    let first = chunks.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(chunks);
    let report = await_requests(&app, 1).await;
    assert!(report["totals"]["prompt_tokens"].as_i64().unwrap() > 0, "{report}");
    app.stop().await;
}
