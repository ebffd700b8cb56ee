//! The ops family: `/healthz` (the process is up), `/readyz` (the gateway can serve, and how
//! each gRPC service behind it answers its health check) and `/metrics` (Prometheus). No credential, no rate limit. The documentation
//! routes (`/openapi.json`, `/docs`, `/redoc`) are in `docs.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Family;
use crate::error::Dialect;
use crate::state::AppState;

/// The ops family's routes.
pub fn router() -> OpenApiRouter<AppState> {
    let routes = OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(metrics));
    Family { tag: "ops", dialect: Dialect::FastApi }.serve(routes)
}

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    status: &'static str,
}

/// Readiness of the gateway and each service behind it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` when every service is `serving`; `degraded` when some are (what needs the others
    /// fails, the rest works: with the LLM proxy down, history still reads); `not_ready` when
    /// none is.
    status: &'static str,
    /// `serving`, `not_serving` or `unreachable`, by service (`auth`, `conversations`, `llm-proxy`).
    services: BTreeMap<&'static str, &'static str>,
}

/// Liveness: answers as long as the process serves HTTP.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", security(()),
    responses((status = 200, description = "The process serves HTTP.", body = Liveness)))]
pub async fn healthz() -> Json<Liveness> {
    Json(Liveness { status: "ok" })
}

/// Readiness: the gateway takes traffic while at least one service behind it answers SERVING
/// within a second, so one service going down does not take every gateway replica out of its
/// load balancer; the body says which service is down.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", security(()),
    responses(
        (status = 200, description = "Every service is serving (`ready`), or some are (`degraded`).", body = Readiness),
        (status = 503, description = "No service is serving.", body = Readiness),
    ))]
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
    let services: BTreeMap<_, _> = futures::future::join_all(checks).await.into_iter().collect();
    let serving = services.values().filter(|s| **s == "serving").count();
    let (code, status) = match serving {
        0 => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
        n if n == services.len() => (StatusCode::OK, "ready"),
        _ => (StatusCode::OK, "degraded"),
    };
    (code, Json(Readiness { status, services }))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", security(()),
    responses((status = 200, description = "Metrics in the OpenMetrics text format.", body = String,
        content_type = "application/openmetrics-text")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, switchboard_kit::metrics::CONTENT_TYPE)], state.metrics.render())
}
