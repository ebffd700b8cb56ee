//! `/api/*`: seed 001's API family (`/api/chat`, `/api/users`, `/api/conversations`,
//! `/api/health`), every answer in the `{success, message, data}` envelope, errors included;
//! and, under `/api/v1/*`, seed 004's family (`v1::router`).

pub mod chat;
pub mod conversations;
mod envelope;
pub mod health;
pub mod users;
pub mod v1;

use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::HttpMethod;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Family, RouteExt, provisional};
use crate::error::Dialect;
use crate::ratelimit::Group;
use crate::state::AppState;

/// Seed 001's routes. An unknown `/api/…` path answers 404 in the envelope too.
pub fn router(state: &AppState) -> OpenApiRouter<AppState> {
    let routes = OpenApiRouter::new()
        .routes(
            provisional(HttpMethod::Post, "/api/chat", chat::send, "sendApiChat", "Sends a message for `userId`.")
                .limit(state, Group::Chat),
        )
        .routes(routes!(users::create, users::get).limit(state, Group::Api))
        .routes(
            provisional(
                HttpMethod::Post,
                "/api/conversations",
                conversations::create,
                "createApiConversation",
                "Opens a conversation for `userId`.",
            )
            .limit(state, Group::Api),
        )
        .routes(
            provisional(
                HttpMethod::Get,
                "/api/conversations",
                conversations::list,
                "listApiConversations",
                "Lists the conversations of `userId`.",
            )
            .limit(state, Group::Api),
        )
        .routes(
            provisional(
                HttpMethod::Get,
                "/api/conversations/{id}/messages",
                conversations::messages,
                "listApiConversationMessages",
                "Lists a conversation's messages.",
            )
            .limit(state, Group::Api),
        )
        .routes(provisional(
            HttpMethod::Get,
            "/api/health",
            health::check,
            "getApiHealth",
            "Whether the store and the cache answer.",
        ))
        // OpenAPI has no catch-all path parameter: this 404 stays undocumented.
        .route("/api/{*rest}", super::not_found_route(state));
    Family { tag: "gpts", dialect: Dialect::Envelope }.serve(routes)
}

/// A successful seed-001 answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    /// Always `true` (errors say `false`).
    success: bool,
    /// What was done.
    message: &'static str,
    /// The answer.
    data: T,
}

impl<T> Envelope<T> {
    /// `{success: true, message, data}`.
    pub fn ok(message: &'static str, data: T) -> Self {
        Self { success: true, message, data }
    }
}
