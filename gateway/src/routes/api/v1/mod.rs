//! `/api/v1/*`: seed 004's API family, every answer in the `{success, message, data, errors}`
//! envelope, errors included. Its paths end in `/` as Django's do; each is served without the
//! slash as well.

pub mod conversations;
pub mod keys;
pub mod users;

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::Dialect;
use crate::ratelimit::Group;
use crate::routes::{Family, RouteExt};
use crate::state::AppState;

/// Seed 004's routes. An unknown `/api/v1/…` path answers 404 in the envelope too.
pub fn router(state: &AppState) -> OpenApiRouter<AppState> {
    let routes = OpenApiRouter::new()
        .routes(routes!(users::join).limit(state, Group::Login))
        .routes(routes!(users::login).limit(state, Group::Login))
        .routes(routes!(users::logout).limit(state, Group::Login))
        .routes(routes!(keys::list, keys::add).slash_twin().limit(state, Group::Api))
        .routes(routes!(keys::delete).slash_twin().limit(state, Group::Api))
        .routes(routes!(keys::statistics).limit(state, Group::Api))
        .routes(routes!(conversations::list, conversations::create).slash_twin().limit(state, Group::Api))
        .routes(routes!(conversations::messages).limit(state, Group::Api))
        .routes(routes!(conversations::post_message).limit(state, Group::Chat))
        // OpenAPI has no catch-all path parameter: this 404 stays undocumented.
        .route("/api/v1/{*rest}", crate::routes::not_found_route(state));
    Family { tag: "chatbot", dialect: Dialect::EnvelopeWithErrors }.serve(routes)
}

/// A successful seed-004 answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    /// Always `true` (errors say `false`).
    success: bool,
    /// What was done.
    message: String,
    /// The answer (`null` for none).
    data: T,
    /// Always `null` (errors name the fields at fault here).
    errors: Option<BTreeMap<String, Vec<String>>>,
}

/// A successful seed-004 envelope.
pub fn envelope<T>(message: impl Into<String>, data: T) -> Envelope<T> {
    Envelope { success: true, message: message.into(), data, errors: None }
}
