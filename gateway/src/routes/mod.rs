//! The HTTP surface. A route's path tells its file: `/v1/chat` is `routes/v1/chat.rs`,
//! `/api/v1/users/join` is `routes/api/v1/users.rs`, `/api-keys` is `routes/api_keys.rs`,
//! `/register` is `routes/users.rs`.
//!
//! Each API family answers errors in the dialect its clients know (`error::dialect_of`):
//!
//! | paths | from | errors |
//! |---|---|---|
//! | `/v1/*`, `/register`, `/token`, `/users/*` | seeds 003, 002 | FastAPI `{"detail": ...}` |
//! | `/api-keys*`, `/models`, `/model`, `/query`, `/history` | seed 000 | `{"error": "..."}` |
//! | `/api/*` | seed 001 | `{success, message, data}` |
//! | `/api/v1/*` | seed 004 | `{success, message, data, errors}` |
//! | `/v1/chat/completions`, `/v1/models` | OpenAI | `{"error": {message, type, param, code}}` |

mod api;
mod api_keys;
mod classic;
mod health;
mod openai;
mod users;
mod v1;

use axum::Router;
use axum::routing::{delete, get, post};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::state::AppState;

/// The span of a request: method and route template, never the raw path or query, which
/// can hold credentials (`/api-keys/{api_key}`, `?token=`).
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let route = request.extensions().get::<axum::extract::MatchedPath>().map_or("unmatched", |p| p.as_str());
    tracing::debug_span!("request", method = %request.method(), route)
}

/// Every route, with body limit, metrics and tracing.
pub fn router(state: AppState, body_limit: usize) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/chat", post(v1::chat::send))
        .route("/v1/chat-token", get(v1::chat_token::issue))
        .route("/v1/conversations", get(v1::conversations::list))
        .route("/v1/conversations/{id}/messages", get(v1::conversations::messages))
        .route("/v1/sync", post(v1::sync::run))
        // The store is the cache of seed 003: both paths read it.
        .route("/v1/cache/conversations", get(v1::conversations::list))
        .route("/v1/cache/conversations/{id}/messages", get(v1::conversations::messages))
        .route("/register", post(users::register))
        .route("/token", post(users::token))
        .route("/users/me", get(users::me))
        .route("/api-keys", post(api_keys::create).get(api_keys::list))
        .route("/api-keys/{api_key}", delete(api_keys::revoke))
        .route("/api-keys/{id}/rotate", post(api_keys::rotate))
        .route("/models", get(classic::models))
        .route("/model", get(classic::current_model).post(classic::set_model))
        .route("/query", post(classic::query))
        .route("/history", get(classic::history).delete(classic::clear_history))
        .route("/api/users", post(api::users::create).get(api::users::get))
        .route("/api/v1/users/join", post(api::v1::users::join))
        .route("/api/v1/users/login", post(api::v1::users::login))
        .route("/api/v1/users/logout", post(api::v1::users::logout))
        .route("/api/v1/keys", get(api::v1::keys::list).post(api::v1::keys::add))
        .route("/api/v1/keys/", get(api::v1::keys::list).post(api::v1::keys::add))
        .route("/api/v1/keys/{pk}", delete(api::v1::keys::delete))
        .route("/api/v1/keys/{pk}/", delete(api::v1::keys::delete))
        .route("/api/v1/keys/{pk}/statics", get(api::v1::keys::statistics))
        .merge(openai::router())
        .fallback(health::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::ratelimit::enforce))
        .layer(axum::middleware::from_fn(crate::error::render_in_dialect))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::metrics::track))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state)
}
