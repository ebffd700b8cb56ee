//! `/api/*`: seed 001's API family (`/api/chat`, `/api/users`, `/api/conversations`,
//! `/api/health`), every answer in the `{success, message, data}` envelope, errors included;
//! and, under `/api/v1/*`, seed 004's family (`v1::router`). What its routes share is here:
//! the envelope, whom a request acts for (`userId`), and conversations named by their
//! whole-number alias.

pub mod chat;
pub mod conversations;
pub mod health;
pub mod users;
pub mod v1;

use serde::Serialize;
use switchboard_proto::conversation::v1 as pb;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Family, RouteExt};
use crate::auth::{Caller, Principal};
use crate::error::{ApiError, Dialect};
use crate::ratelimit::Group;
use crate::state::AppState;

/// Seed 001's routes. An unknown `/api/…` path answers 404 in the envelope too.
pub fn router(state: &AppState) -> OpenApiRouter<AppState> {
    let routes = OpenApiRouter::new()
        .routes(routes!(chat::send).limit(state, Group::Chat))
        .routes(routes!(users::create, users::get).limit(state, Group::Api))
        .routes(routes!(conversations::create, conversations::list).limit(state, Group::Api))
        .routes(routes!(conversations::messages).limit(state, Group::Api))
        .routes(routes!(health::check))
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

/// The principal of a seed-001 request: a service key (`API_SECRET_KEY`, or an issued one)
/// acts for `userId` in its tenant (`default` for keys of every tenant); other credentials
/// act as themselves and may only name themselves.
pub fn act_for(caller: &Caller, user_id: &str, root: &str) -> Result<Principal, ApiError> {
    let renamed = |e: ApiError| e.renamed("user_id", &[root, "userId"]);
    if caller.0.service {
        let system_id = Some(caller.0.system_id.as_str()).filter(|s| !s.is_empty()).unwrap_or("default");
        caller.act_as(Some(system_id), Some(user_id), root).map_err(renamed)
    } else {
        caller.act_as(None, Some(user_id), root).map_err(renamed)
    }
}

/// The conversation `number`, as `principal` may read it (a service key may name none, see
/// `GetConversation`); 404 with `not_found` when it is missing or someone else's.
pub async fn conversation_by_number(
    state: &AppState,
    caller: &Caller,
    principal: Option<pb::Principal>,
    number: u64,
    not_found: &'static str,
) -> Result<pb::Conversation, ApiError> {
    let request = caller.request(pb::GetConversationRequest { principal, conversation_id: String::new(), number });
    let answer = state.conversations.clone().get_conversation(request).await.map_err(|status| {
        let mut err = ApiError::from(status);
        if err.status == axum::http::StatusCode::NOT_FOUND {
            err.message = not_found.into();
        }
        err
    })?;
    answer.into_inner().conversation.ok_or_else(|| ApiError::not_found(not_found))
}
