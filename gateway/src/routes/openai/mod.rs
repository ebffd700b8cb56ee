//! The OpenAI-compatible API: `POST /v1/chat/completions` and `GET /v1/models`, so every
//! OpenAI SDK works through Switchboard. The key comes as `Authorization: Bearer` or
//! `X-API-Key`; errors are OpenAI's `{"error": {message, type, param, code}}`.
//!
//! Bodies pass through: the gateway reads only `stream` and `user` and hands the bytes to the
//! LLM service, which maps the model through the catalogue and forwards every other field.

pub mod chat_completions;
pub mod models;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Family, RouteExt};
use crate::error::Dialect;
use crate::ratelimit::Group;
use crate::state::AppState;

/// The OpenAI family's routes.
pub fn router(state: &AppState) -> OpenApiRouter<AppState> {
    let routes = OpenApiRouter::new()
        .routes(routes!(chat_completions::create).limit(state, Group::Chat))
        .routes(routes!(models::list).limit(state, Group::Api));
    Family { tag: "openai", dialect: Dialect::OpenAi }.serve(routes)
}
