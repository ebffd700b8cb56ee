//! Storage of the conversation service. [`ConversationStore`] is the seam; [`SqlStore`]
//! implements it for SQLite and PostgreSQL with the same queries.

mod api_usage;
mod group_commit;
mod idempotency;
mod pg_turns;
mod sql;

use async_trait::async_trait;

pub use pg_turns::{KEPT_FOR_CLOSINGS, KEPT_FOR_OPENINGS};
pub use sql::SqlStore;

use crate::domain::{
    Conversation, Message, MessageOutcome, MessageStatus, Page, PageRequest, Principal, Role, UsageRecord,
};

/// Filters of a conversation listing.
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    /// Only conversations updated at or after (Unix ms).
    pub from: Option<i64>,
    /// Only conversations updated at or before (Unix ms).
    pub to: Option<i64>,
}

/// A message to append.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Conversation.
    pub conversation_id: String,
    /// Author.
    pub role: Role,
    /// Text.
    pub content: String,
    /// Initial status.
    pub status: MessageStatus,
    /// Model.
    pub model: String,
}

/// A conversation held upstream (Dify).
#[derive(Debug, Clone)]
pub struct UpstreamConversation {
    /// The upstream's id.
    pub id: String,
    /// Its name.
    pub title: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// A message held upstream, one side of an exchange.
#[derive(Debug, Clone)]
pub struct UpstreamMessage {
    /// The upstream's id of the message (`<exchange id>:q` or `:a`).
    pub id: String,
    /// Author.
    pub role: Role,
    /// Text.
    pub content: String,
    /// Unix ms.
    pub created_at: i64,
}

/// A turn to open: see [`ConversationStore::open_turn`].
#[derive(Debug, Clone, Copy)]
pub struct TurnOpening<'a> {
    /// Whose conversation.
    pub owner: &'a Principal,
    /// The conversation (chosen by the caller when it is created).
    pub conversation_id: &'a str,
    /// The title of a conversation to create; `None` continues an existing one.
    pub create: Option<&'a str>,
    /// Who takes the turn lease.
    pub holder: &'a str,
    /// Now (Unix ms): the messages' time, and what the lease's expiry is compared with.
    pub now: i64,
    /// Until when the lease holds (Unix ms).
    pub until: i64,
    /// The user's message.
    pub message: &'a str,
    /// The model asked for (empty: the LLM proxy chooses), stored on the answer row.
    pub model: &'a str,
}

/// A turn opened: the conversation as it was before the turn, and the two rows written.
#[derive(Debug, Clone)]
pub struct OpenedTurn {
    /// The conversation, its message count not counting this turn's two rows.
    pub conversation: Conversation,
    /// The stored user message.
    pub user_message: Message,
    /// The answer row, `in_progress`.
    pub assistant: Message,
}

/// Conversations, messages and usage records.
#[async_trait]
pub trait ConversationStore: Send + Sync + 'static {
    /// Creates an empty conversation.
    async fn create_conversation(&self, owner: &Principal, title: &str) -> Result<Conversation, sqlx::Error>;
    /// A conversation, only if `owner` owns it.
    async fn get_conversation(&self, owner: &Principal, id: &str) -> Result<Option<Conversation>, sqlx::Error>;
    /// A conversation by id alone, whoever owns it (for service credentials, which check the
    /// owner themselves).
    async fn find_conversation(&self, id: &str) -> Result<Option<Conversation>, sqlx::Error>;
    /// A conversation by its whole-number alias, whoever owns it (callers check the owner).
    async fn find_conversation_by_number(&self, number: i64) -> Result<Option<Conversation>, sqlx::Error>;
    /// The owner's conversations, most recently updated first.
    async fn list_conversations(
        &self,
        owner: &Principal,
        filter: &ConversationFilter,
        page: &PageRequest,
    ) -> Result<Page<Conversation>, sqlx::Error>;
    /// Every user's conversations of a tenant, most recently updated first (for service
    /// credentials browsing a tenant's history).
    async fn list_tenant_conversations(
        &self,
        system_id: &str,
        filter: &ConversationFilter,
        page: &PageRequest,
    ) -> Result<Page<Conversation>, sqlx::Error>;
    /// Appends messages (in order, in one transaction) and bumps their conversations.
    async fn append_messages(&self, messages: Vec<NewMessage>) -> Result<Vec<Message>, sqlx::Error>;
    /// Appends one message and bumps its conversation, atomically.
    async fn append_message(&self, message: NewMessage) -> Result<Message, sqlx::Error> {
        self.append_messages(vec![message]).await?.pop().ok_or(sqlx::Error::RowNotFound)
    }
    /// Sets a message's final content and status.
    async fn finish_message(&self, id: &str, outcome: MessageOutcome) -> Result<(), sqlx::Error>;
    /// Messages of a conversation, oldest first.
    async fn list_messages(&self, conversation_id: &str, page: &PageRequest) -> Result<Page<Message>, sqlx::Error>;
    /// The last `limit` complete or partial messages, oldest first: the context of a turn.
    async fn recent_messages(&self, conversation_id: &str, limit: u32) -> Result<Vec<Message>, sqlx::Error>;
    /// Deletes the owner's conversations, messages and remembered idempotent answers (which
    /// hold message text); returns the ids of the conversations deleted.
    async fn clear_history(&self, owner: &Principal) -> Result<Vec<String>, sqlx::Error>;
    /// Closes answers left `in_progress` since before `before` (Unix ms) by a crash:
    /// `partial` when they hold text, `failed` otherwise. Returns how many.
    async fn sweep_in_progress(&self, before: i64, now: i64) -> Result<u64, sqlx::Error>;
    /// Remembers the upstream (Dify) ids of a conversation and of one exchange's messages.
    async fn link_upstream(
        &self,
        conversation_id: &str,
        upstream_conversation_id: &str,
        messages: &[(&str, String)],
    ) -> Result<(), sqlx::Error>;
    /// Every principal with conversations, optionally of one tenant.
    async fn principals(&self, system_id: Option<&str>) -> Result<Vec<Principal>, sqlx::Error>;
    /// Our conversation for an upstream one, created when missing; true when created.
    async fn upsert_upstream_conversation(
        &self,
        owner: &Principal,
        upstream: &UpstreamConversation,
    ) -> Result<(String, bool), sqlx::Error>;
    /// Stores an upstream message unless it is already there; true when it was added.
    async fn upsert_upstream_message(
        &self,
        conversation_id: &str,
        message: &UpstreamMessage,
    ) -> Result<bool, sqlx::Error>;
    /// Takes (or renews) the turn lease of `owner`'s conversation for `holder` until `until`
    /// (Unix ms); false while another holder has an unexpired lease, or when the conversation
    /// is not `owner`'s.
    async fn lease_turn(
        &self,
        conversation_id: &str,
        owner: &Principal,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, sqlx::Error>;
    /// Opens a turn in one transaction (one commit): takes the turn lease for `holder` (a new
    /// conversation is created holding it), and appends the user message and the answer row,
    /// `in_progress`. `None`, with nothing written, while another holder's lease runs or when
    /// the conversation is not the owner's.
    async fn open_turn(&self, turn: TurnOpening<'_>) -> Result<Option<OpenedTurn>, sqlx::Error>;
    /// Closes a turn in one transaction: stores the answer's outcome and gives the lease back
    /// if `holder` still holds it.
    async fn close_turn(
        &self,
        conversation_id: &str,
        message_id: &str,
        outcome: MessageOutcome,
        holder: &str,
    ) -> Result<(), sqlx::Error>;
    /// Gives the lease back, if `owner` still holds it.
    async fn release_turn(&self, conversation_id: &str, owner: &str) -> Result<(), sqlx::Error>;
    /// Writes usage records in one transaction.
    async fn record_usage(&self, records: &[UsageRecord]) -> Result<(), sqlx::Error>;
}

/// What an idempotency key says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First use: go ahead, then [`IdempotencyStore::finish`] or [`IdempotencyStore::release`].
    New,
    /// Already answered: the stored answer (encoded).
    Replay(Vec<u8>),
    /// The first request with this key is still running.
    InProgress,
    /// The key was used with a different request.
    Mismatch,
}

/// Idempotency keys of chat POSTs.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` for a request on `terms`; keys created before `terms.expired_before` are
    /// forgotten first, and a claim still in progress past its lease is taken over.
    async fn claim(&self, owner: &Principal, key: &str, terms: &ClaimTerms<'_>) -> Result<Claim, sqlx::Error>;
    /// Stores the answer of a key `holder` claimed.
    async fn finish(&self, owner: &Principal, key: &str, holder: &str, response: &[u8]) -> Result<(), sqlx::Error>;
    /// Forgets a key `holder` claimed whose request failed, so that a retry runs again.
    async fn release(&self, owner: &Principal, key: &str, holder: &str) -> Result<(), sqlx::Error>;
}

/// What a claim of an idempotency key states.
#[derive(Debug, Clone, Copy)]
pub struct ClaimTerms<'a> {
    /// Fingerprint of the request.
    pub hash: &'a str,
    /// Who claims it (one turn).
    pub holder: &'a str,
    /// Now, Unix ms.
    pub now: i64,
    /// Until when the claim is the holder's alone, Unix ms.
    pub lease_until: i64,
    /// Keys created before this (Unix ms) are forgotten.
    pub expired_before: i64,
}

/// `(system_id, user_id, endpoint)`: what one API usage row counts.
pub type ApiUsageKey = (String, String, String);

/// Requests counted for one principal and endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiUsageCount {
    /// Requests.
    pub requests: i64,
    /// First request, Unix ms.
    pub first_at: i64,
    /// Last request, Unix ms.
    pub last_at: i64,
}

/// A principal's usage of one endpoint, as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiUsageRow {
    /// Endpoint.
    pub endpoint: String,
    /// Requests.
    pub request_count: i64,
    /// Last request, Unix ms.
    pub last_request_at: i64,
    /// First request, Unix ms.
    pub created_at: i64,
}

/// Seed 001's API usage table.
#[async_trait]
pub trait ApiUsageStore: Send + Sync + 'static {
    /// Adds counts, keyed `(system_id, user_id, endpoint)`, in one transaction.
    async fn add_api_usage(&self, counts: &[(ApiUsageKey, ApiUsageCount)]) -> Result<(), sqlx::Error>;
    /// A principal's usage, most recently used endpoint first.
    async fn api_usage(&self, owner: &Principal) -> Result<Vec<ApiUsageRow>, sqlx::Error>;
}
