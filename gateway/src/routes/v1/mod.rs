//! The canonical API (seed 003's shape): `/v1/chat`, `/v1/conversations`.

pub mod chat;
pub mod chat_token;
pub mod conversations;
pub mod sync;

use std::time::Duration;

use serde::Serialize;
use switchboard_proto::conversation::v1 as pb;

/// Deadline of a chat turn across the gRPC hops.
pub const TURN_DEADLINE: Duration = Duration::from_secs(300);
/// Deadline of a read.
pub const READ_DEADLINE: Duration = Duration::from_secs(15);

/// Token usage as answered.
#[derive(Debug, Serialize)]
pub struct UsageBody {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

impl From<pb::Usage> for UsageBody {
    fn from(u: pb::Usage) -> Self {
        Self { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens, total_tokens: u.total_tokens }
    }
}

/// A list answer: `{data, next_cursor}`.
#[derive(Debug, Serialize)]
pub struct ListBody<T> {
    data: Vec<T>,
    next_cursor: Option<String>,
}

impl<T> ListBody<T> {
    /// A page with its cursor (`None` on the last page).
    pub fn new(data: Vec<T>, next: String) -> Self {
        Self { data, next_cursor: (!next.is_empty()).then_some(next) }
    }
}
