//! The OpenAI-compatible API: `POST /v1/chat/completions` and `GET /v1/models`, so every
//! OpenAI SDK works through Switchboard. The key comes as `Authorization: Bearer` or
//! `X-API-Key`; errors are OpenAI's `{"error": {message, type, param, code}}`.
//!
//! Bodies pass through: the gateway reads only `stream` and `user` and hands the bytes to the
//! LLM service, which maps the model through the catalogue and forwards every other field.

pub mod chat_completions;
pub mod models;

use axum::Router;
use axum::routing::{get, post};

use crate::state::AppState;

/// The OpenAI family's routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/chat/completions", post(chat_completions::create)).route("/v1/models", get(models::list))
}
