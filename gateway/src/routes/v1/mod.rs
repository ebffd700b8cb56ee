//! The canonical API family (seed 003's shape, FastAPI errors): `/v1/chat`,
//! `/v1/chat-token`, `/v1/conversations*`, `/v1/cache/*`, `/v1/sync`, and spend: `/v1/usage`
//! and `/v1/budgets*`. The OpenAI paths under `/v1` are a family of their own
//! (`routes/openai/`).

pub mod budgets;
pub mod cache;
pub mod chat;
pub mod chat_token;
pub mod conversations;
pub mod sync;
pub mod usage;

use std::time::Duration;

use serde::Serialize;
use switchboard_proto::conversation::v1 as pb;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Family, RouteExt};
use crate::error::Dialect;
use crate::ratelimit::Group;
use crate::state::AppState;

/// The canonical API's routes.
pub fn router(state: &AppState) -> OpenApiRouter<AppState> {
    let routes = OpenApiRouter::new()
        .routes(routes!(chat::send).limit(state, Group::Chat))
        .routes(routes!(chat_token::issue).limit(state, Group::Api))
        .routes(routes!(conversations::list).limit(state, Group::Api))
        .routes(routes!(conversations::messages).limit(state, Group::Api))
        .routes(routes!(cache::list).limit(state, Group::Api))
        .routes(routes!(cache::messages).limit(state, Group::Api))
        .routes(routes!(sync::run).limit(state, Group::Api))
        // The admin token comes as `X-Admin-Token` only, which the limiter counts per address
        // as it does for `/api-keys`; other credentials are verified and counted as anywhere.
        .routes(routes!(usage::report).limit(state, Group::Api))
        .routes(routes!(budgets::list, budgets::set).limit(state, Group::Api))
        .routes(routes!(budgets::delete).limit(state, Group::Api));
    Family { tag: "chat", dialect: Dialect::FastApi }.serve(routes)
}

/// Deadline of a chat turn across the gRPC hops.
pub const TURN_DEADLINE: Duration = Duration::from_secs(300);
/// Deadline of a read.
pub const READ_DEADLINE: Duration = Duration::from_secs(15);

/// Token usage as answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageBody {
    /// Tokens sent to the model (history included).
    prompt_tokens: u32,
    /// Tokens of the answer.
    completion_tokens: u32,
    /// Their sum.
    total_tokens: u32,
}

impl From<pb::Usage> for UsageBody {
    fn from(u: pb::Usage) -> Self {
        Self { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens, total_tokens: u.total_tokens }
    }
}

/// A list answer: `{data, next_cursor}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListBody<T> {
    /// This page.
    data: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

impl<T> ListBody<T> {
    /// A page with its cursor (`None` on the last page).
    pub fn new(data: Vec<T>, next: String) -> Self {
        Self { data, next_cursor: (!next.is_empty()).then_some(next) }
    }
}
