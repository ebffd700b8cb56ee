//! Storage of the conversation service. [`ConversationStore`] is the seam; [`SqlStore`]
//! implements it for SQLite and PostgreSQL with the same queries.

mod sql;

use async_trait::async_trait;

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

/// Conversations, messages and usage records.
#[async_trait]
pub trait ConversationStore: Send + Sync + 'static {
    /// Creates an empty conversation.
    async fn create_conversation(&self, owner: &Principal, title: &str) -> Result<Conversation, sqlx::Error>;
    /// A conversation, only if `owner` owns it.
    async fn get_conversation(&self, owner: &Principal, id: &str) -> Result<Option<Conversation>, sqlx::Error>;
    /// The owner's conversations, most recently updated first.
    async fn list_conversations(
        &self,
        owner: &Principal,
        filter: &ConversationFilter,
        page: &PageRequest,
    ) -> Result<Page<Conversation>, sqlx::Error>;
    /// Appends a message and bumps its conversation, atomically.
    async fn append_message(&self, message: NewMessage) -> Result<Message, sqlx::Error>;
    /// Sets a message's final content and status.
    async fn finish_message(&self, id: &str, outcome: MessageOutcome) -> Result<(), sqlx::Error>;
    /// Messages of a conversation, oldest first.
    async fn list_messages(&self, conversation_id: &str, page: &PageRequest) -> Result<Page<Message>, sqlx::Error>;
    /// The last `limit` complete or partial messages, oldest first: the context of a turn.
    async fn recent_messages(&self, conversation_id: &str, limit: u32) -> Result<Vec<Message>, sqlx::Error>;
    /// Deletes the owner's conversations and messages; returns how many conversations.
    async fn clear_history(&self, owner: &Principal) -> Result<u64, sqlx::Error>;
    /// Writes usage records in one transaction.
    async fn record_usage(&self, records: &[UsageRecord]) -> Result<(), sqlx::Error>;
}
