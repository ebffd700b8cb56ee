//! `GET /api/health` (seed 001): whether the store and the cache answer, in the envelope;
//! 503 when one does not.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use utoipa::ToSchema;

use crate::state::AppState;

/// `data` of the answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GptsHealthData)]
pub struct HealthData {
    /// The conversation store answers (through its service).
    database: bool,
    /// The shared Redis answers; `null` when none is configured (caches run in process).
    redis: Option<bool>,
    /// When it was checked, RFC 3339.
    timestamp: String,
}

/// The answer, healthy or not.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GptsHealth)]
pub struct HealthBody {
    /// Whether every service is healthy.
    success: bool,
    /// `All services are healthy` or `Some services are unhealthy`.
    message: &'static str,
    /// What answered.
    data: HealthData,
}

/// Whether the store and the cache answer.
///
/// Checks the store and the cache: 200 when both answer, 503 (with the same body) when one
/// does not.
#[utoipa::path(get, path = "/api/health", operation_id = "getApiHealth", security(()),
    responses(
        (status = 200, description = "Every service is healthy.", body = HealthBody),
        (status = 503, description = "A service is unhealthy.", body = HealthBody),
    ))]
pub async fn check(State(state): State<AppState>) -> (StatusCode, Json<HealthBody>) {
    let store = state.channels.iter().find(|(name, _)| *name == "conversations").map(|(_, c)| c.clone());
    let database = match store {
        Some(channel) => {
            let mut request = tonic::Request::new(HealthCheckRequest { service: String::new() });
            request.set_timeout(Duration::from_secs(1));
            let answer = tokio::time::timeout(Duration::from_secs(1), HealthClient::new(channel).check(request)).await;
            matches!(answer, Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32)
        }
        None => false,
    };
    let redis = state.limiter.redis_ok().await;
    let healthy = database && redis != Some(false);
    let timestamp = switchboard_kit::time::timestamp_rfc3339(Some(&switchboard_kit::time::to_timestamp(
        switchboard_kit::time::now_ms(),
    )))
    .unwrap_or_default();
    let body = HealthBody {
        success: healthy,
        message: if healthy { "All services are healthy" } else { "Some services are unhealthy" },
        data: HealthData { database, redis, timestamp },
    };
    (if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}
