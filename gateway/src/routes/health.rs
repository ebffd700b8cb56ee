//! `/healthz` (the process is up), `/readyz` (every gRPC service answers its health check)
//! and `/metrics` (Prometheus).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Map, Value, json};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::error::ApiError;
use crate::state::AppState;

/// Liveness: answers as long as the process serves HTTP.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: every service answers SERVING within a second.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let checks = state.channels.iter().map(|(name, channel)| {
        let mut client = HealthClient::new(channel.clone());
        async move {
            let mut request = tonic::Request::new(HealthCheckRequest { service: String::new() });
            request.set_timeout(Duration::from_secs(1));
            let status = match tokio::time::timeout(Duration::from_secs(1), client.check(request)).await {
                Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32 => "serving",
                Ok(Ok(_)) => "not_serving",
                Ok(Err(_)) | Err(_) => "unreachable",
            };
            (*name, status)
        }
    });
    let results = futures::future::join_all(checks).await;
    let ready = results.iter().all(|(_, s)| *s == "serving");
    let services: Map<String, Value> = results.into_iter().map(|(n, s)| (n.to_owned(), Value::from(s))).collect();
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(json!({"status": if ready { "ready" } else { "not_ready" }, "services": services})))
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.render())
}

/// Unknown paths.
pub async fn not_found() -> ApiError {
    ApiError::not_found("Not Found")
}
