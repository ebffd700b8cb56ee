//! The HTTP surface. A route's path tells its file: `/v1/chat` is `routes/v1/chat.rs`.

mod health;
mod v1;

use axum::Router;
use axum::routing::{get, post};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::state::AppState;

/// Every route, with body limit, metrics and tracing.
pub fn router(state: AppState, body_limit: usize) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/chat", post(v1::chat::send))
        .route("/v1/conversations", get(v1::conversations::list))
        .route("/v1/conversations/{id}/messages", get(v1::conversations::messages))
        .fallback(health::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::metrics::track))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
