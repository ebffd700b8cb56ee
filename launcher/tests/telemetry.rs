//! Telemetry as an operator sees it, with Switchboard run one process per component (as on
//! Kubernetes) against a real OTLP/gRPC receiver and a real OpenAI-compatible upstream:
//! one chat turn is one trace across all four components and the upstream call, and every
//! component serves `/metrics` with the series a dashboard needs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;
use switchboard_test_support::MockUpstream;
use switchboard_test_support::stack::{Stack, free_port};

const KEY: &str = "telemetry-test-service-key";

/// A span as received, with the `service.name` of the process that sent it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    span: Span,
}

/// An OTLP/gRPC trace receiver keeping every span it is sent.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.0.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let attributes = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
            let service = text(&attributes, "service.name").unwrap_or_default();
            for scope in resource_spans.scope_spans {
                kept.extend(scope.spans.into_iter().map(|span| Received { service: service.clone(), span }));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn value(attributes: &[KeyValue], key: &str) -> Option<AnyValue> {
    attributes.iter().find(|kv| kv.key == key)?.value.clone()?.value
}

fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    match value(attributes, key)? {
        AnyValue::StringValue(s) => Some(s),
        other => Some(format!("{other:?}")),
    }
}

fn int(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match value(attributes, key)? {
        AnyValue::IntValue(n) => Some(n),
        _ => None,
    }
}

async fn receiver() -> (Receiver, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let receiver = Receiver::default();
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    });
    (receiver, port)
}

/// The four components as processes, exporting to `otlp_port`, each service's `/metrics` on a
/// port of its own (returned by part).
async fn stack(dir: &Path, upstream: &MockUpstream, otlp_port: u16) -> (Stack, BTreeMap<&'static str, u16>) {
    let metrics: BTreeMap<&'static str, u16> =
        [("auth", free_port().unwrap()), ("conversations", free_port().unwrap()), ("llm-proxy", free_port().unwrap())]
            .into();
    let settings = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{otlp_port}")),
        // Exported every 100 ms rather than every 5 s, so the test does not wait.
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("CHAT_GATEWAY_API_KEY", KEY.to_owned()),
        ("OPENAI_BASE_URL", upstream.base_url()),
        ("OPENAI_API_KEY", "sk-upstream-test".to_owned()),
        ("SWITCHBOARD_DEFAULT_MODEL", "gpt-test".to_owned()),
        ("SWITCHBOARD_LOG_FORMAT", "json".to_owned()),
        ("auth:SWITCHBOARD_AUTH_METRICS_ADDR", format!("127.0.0.1:{}", metrics["auth"])),
        ("conversations:SWITCHBOARD_CONVERSATIONS_METRICS_ADDR", format!("127.0.0.1:{}", metrics["conversations"])),
        ("llm-proxy:SWITCHBOARD_LLM_METRICS_ADDR", format!("127.0.0.1:{}", metrics["llm-proxy"])),
    ];
    let db = format!("sqlite://{}/switchboard.db", dir.display());
    let bin = Path::new(env!("CARGO_BIN_EXE_switchboard"));
    let stack = Stack::start("telemetry", bin, dir, &db, &settings).await.unwrap();
    (stack, metrics)
}

async fn chat(stack: &Stack, traceparent: Option<&str>) {
    let mut request = switchboard_test_support::http()
        .build()
        .unwrap()
        .post(format!("{}/v1/chat", stack.http))
        .header("X-API-Key", KEY)
        .json(&json!({"system_id": "drillquiz", "user_id": "12345", "message": "hello"}));
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let answer = request.send().await.unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
}

#[tokio::test]
async fn one_chat_turn_is_one_trace_across_every_component_and_the_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockUpstream::start().await;
    let (receiver, otlp_port) = receiver().await;
    let (mut stack, _) = stack(dir.path(), &upstream, otlp_port).await;

    // The caller's own trace: every span of the turn must join it. The upstream fails once,
    // so the turn logs a retry.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    upstream.fail_next(&[503]);
    chat(&stack, Some(&format!("00-{trace_id}-00f067aa0ba902b7-01"))).await;

    let wanted: BTreeSet<&str> =
        ["switchboard-gateway", "switchboard-auth", "switchboard-conversations", "switchboard-llm-proxy"].into();
    let deadline = Instant::now() + Duration::from_secs(15);
    let spans = loop {
        let spans: Vec<Received> =
            receiver.0.lock().unwrap().iter().filter(|r| hex(&r.span.trace_id) == trace_id).cloned().collect();
        let services: BTreeSet<&str> = spans.iter().map(|r| r.service.as_str()).collect();
        let upstream_span = spans.iter().any(|r| text(&r.span.attributes, "gen_ai.request.model").is_some());
        if services.is_superset(&wanted) && upstream_span {
            break spans;
        }
        assert!(Instant::now() < deadline, "spans of the turn's trace by service: {services:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The gateway's server span continues the caller's span.
    let root = spans.iter().find(|r| r.service == "switchboard-gateway" && r.span.name == "POST /v1/chat").unwrap();
    assert_eq!(hex(&root.span.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(int(&root.span.attributes, "http.response.status_code"), Some(200));
    // Each service's RPC span is a child of a span of the same trace.
    let ids: BTreeSet<String> = spans.iter().map(|r| hex(&r.span.span_id)).collect();
    for (service, rpc) in [
        ("switchboard-conversations", "switchboard.conversation.v1.ConversationService/SendMessage"),
        ("switchboard-llm-proxy", "switchboard.llm.v1.LlmService/Complete"),
        ("switchboard-auth", "switchboard.auth.v1.AuthService/Authenticate"),
    ] {
        let span = spans.iter().find(|r| r.service == service && r.span.name == rpc);
        let span = span.unwrap_or_else(|| panic!("no {rpc} span from {service}: {spans:#?}"));
        assert!(ids.contains(&hex(&span.span.parent_span_id)), "{rpc}'s parent is in the trace");
    }

    // The upstream call, with the GenAI semantic conventions.
    let call = spans.iter().find(|r| text(&r.span.attributes, "gen_ai.request.model").is_some()).unwrap();
    assert_eq!(call.service, "switchboard-llm-proxy");
    assert_eq!(call.span.name, "chat gpt-test");
    let attributes = &call.span.attributes;
    assert_eq!(text(attributes, "gen_ai.operation.name").as_deref(), Some("chat"));
    assert_eq!(text(attributes, "gen_ai.provider.name").as_deref(), Some("openai"));
    assert_eq!(text(attributes, "gen_ai.request.model").as_deref(), Some("gpt-test"));
    assert!(int(attributes, "gen_ai.usage.input_tokens").is_some_and(|n| n > 0), "{attributes:?}");
    assert!(int(attributes, "gen_ai.usage.output_tokens").is_some_and(|n| n > 0), "{attributes:?}");
    // The upstream was called within the same trace, as a child of the call's span.
    let sent = upstream.traceparents();
    let sent = sent.last().cloned().flatten().expect("the upstream got a traceparent");
    assert_eq!(sent, format!("00-{trace_id}-{}-01", hex(&call.span.span_id)));

    // A log line of the turn carries its trace id.
    let log = std::fs::read_to_string(dir.path().join("telemetry-llm-proxy.log")).unwrap();
    let retry = log.lines().find(|l| l.contains("retrying the upstream")).expect("the retry is logged");
    assert!(retry.contains(trace_id), "{retry}");
    stack.stop_all().await;
}

#[tokio::test]
async fn every_component_serves_metrics_with_the_series_of_a_turn() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockUpstream::start().await;
    let (_receiver, otlp_port) = receiver().await;
    let (mut stack, ports) = stack(dir.path(), &upstream, otlp_port).await;
    chat(&stack, None).await;
    // One failure the retry absorbs, then a refusal no retry can help.
    upstream.fail_next(&[503]);
    chat(&stack, None).await;
    upstream.always_fail(Some(400));
    let refused = switchboard_test_support::http()
        .build()
        .unwrap()
        .post(format!("{}/v1/chat", stack.http))
        .header("X-API-Key", KEY)
        .json(&json!({"system_id": "drillquiz", "user_id": "12345", "message": "hello"}))
        .send()
        .await
        .unwrap();
    assert!(!refused.status().is_success());
    upstream.always_fail(None);

    let client = switchboard_test_support::http().build().unwrap();
    let scrape = |url: String| {
        let client = client.clone();
        async move {
            let answer = client.get(&url).send().await.unwrap();
            assert_eq!(answer.status(), 200, "{url}");
            let kind = answer.headers()["content-type"].to_str().unwrap().to_owned();
            assert!(kind.starts_with("application/openmetrics-text"), "{url}: {kind}");
            answer.text().await.unwrap()
        }
    };
    let series = |text: &str, name: &str, labels: &[&str]| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|label| l.contains(label)))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };

    let gateway = scrape(format!("{}/metrics", stack.http)).await;
    assert_eq!(series(&gateway, "switchboard_http_requests_total", &[r#"route="/v1/chat""#, r#"status="200""#]), 2.0);
    assert_eq!(series(&gateway, "switchboard_http_request_duration_seconds_count", &[r#"route="/v1/chat""#]), 3.0);
    assert!(series(&gateway, "switchboard_cache_lookups_total", &[r#"cache="credentials""#]) >= 2.0, "{gateway}");
    assert_eq!(series(&gateway, "switchboard_rate_limit_allowed_requests_total", &[r#"group="chat""#]), 3.0);

    let auth = scrape(format!("http://127.0.0.1:{}/metrics", ports["auth"])).await;
    assert!(
        series(&auth, "switchboard_grpc_server_requests_total", &[r#"method="Authenticate""#, r#"code="OK""#]) >= 1.0,
        "{auth}"
    );
    assert!(series(&auth, "switchboard_grpc_server_duration_seconds_count", &[r#"method="Authenticate""#]) >= 1.0);

    let conversations = scrape(format!("http://127.0.0.1:{}/metrics", ports["conversations"])).await;
    assert_eq!(
        series(&conversations, "switchboard_grpc_server_requests_total", &[r#"method="SendMessage""#, r#"code="OK""#]),
        2.0,
        "{conversations}"
    );
    assert!(series(&conversations, "switchboard_cache_lookups_total", &[r#"cache="credentials""#]) >= 2.0);

    let llm = scrape(format!("http://127.0.0.1:{}/metrics", ports["llm-proxy"])).await;
    let model = [r#"provider="openai""#, r#"model="gpt-test""#];
    assert_eq!(series(&llm, "switchboard_grpc_server_requests_total", &[r#"method="Complete""#, r#"code="OK""#]), 2.0);
    assert_eq!(series(&llm, "switchboard_upstream_completions_total", &model), 2.0, "{llm}");
    assert_eq!(series(&llm, "switchboard_upstream_duration_seconds_count", &model), 2.0);
    assert!(series(&llm, "switchboard_upstream_tokens_total", &[model[0], r#"kind="output""#]) > 0.0);
    assert!(series(&llm, "switchboard_cache_lookups_total", &[r#"cache="model_choices""#]) >= 2.0);
    assert_eq!(series(&llm, "switchboard_upstream_retries_total", &[model[0]]), 1.0, "{llm}");
    assert_eq!(series(&llm, "switchboard_upstream_failures_total", &[model[0], model[1], r#"error="refused""#]), 1.0);

    // Nothing but /metrics is served on a metrics port.
    let other = client.get(format!("http://127.0.0.1:{}/", ports["auth"])).send().await.unwrap();
    assert_eq!(other.status(), 404);
    stack.stop_all().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
