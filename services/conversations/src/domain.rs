//! Validated types and rules of the conversation store.

use crate::error::ConversationError;

/// Longest accepted user message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 32_000;
/// Longest generated title, in characters.
const TITLE_CHARS: usize = 60;

/// Who owns a conversation: a tenant and a user within it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// Tenant.
    pub system_id: String,
    /// User.
    pub user_id: String,
}

impl From<&Principal> for switchboard_proto::common::v1::Principal {
    fn from(p: &Principal) -> Self {
        Self { system_id: p.system_id.clone(), user_id: p.user_id.clone() }
    }
}

impl Principal {
    /// Validates the ids: a tenant of 1-64 of `[A-Za-z0-9_.-]` and a user id of 1-128
    /// printable characters.
    pub fn parse(system_id: &str, user_id: &str) -> Result<Self, ConversationError> {
        let system_id = system_id.trim();
        let user_id = user_id.trim();
        if system_id.is_empty() {
            return Err(ConversationError::invalid("system_id", "is required"));
        }
        if system_id.len() > 64 || !system_id.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
            return Err(ConversationError::invalid("system_id", "must be 1-64 of letters, digits, '_', '.', '-'"));
        }
        if user_id.is_empty() {
            return Err(ConversationError::invalid("user_id", "is required"));
        }
        if user_id.chars().count() > 128 || user_id.chars().any(char::is_control) {
            return Err(ConversationError::invalid("user_id", "must be 1-128 printable characters"));
        }
        Ok(Self { system_id: system_id.to_owned(), user_id: user_id.to_owned() })
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Instructions.
    System,
    /// End user.
    User,
    /// Model.
    Assistant,
}

impl Role {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Self {
        match s {
            "system" => Self::System,
            "assistant" => Self::Assistant,
            _ => Self::User,
        }
    }
}

/// Lifecycle of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageStatus {
    /// Fully written.
    Complete,
    /// Being produced.
    InProgress,
    /// The upstream failed.
    Failed,
    /// The client went away mid-stream.
    Partial,
}

impl MessageStatus {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::InProgress => "in_progress",
            Self::Failed => "failed",
            Self::Partial => "partial",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Self {
        match s {
            "in_progress" => Self::InProgress,
            "failed" => Self::Failed,
            "partial" => Self::Partial,
            _ => Self::Complete,
        }
    }
}

/// A stored conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// Id.
    pub id: String,
    /// Owner.
    pub owner: Principal,
    /// Title.
    pub title: String,
    /// Upstream (Dify) conversation id.
    pub upstream_id: Option<String>,
    /// Created, Unix ms.
    pub created_at: i64,
    /// Last message, Unix ms.
    pub updated_at: i64,
    /// Number of messages.
    pub message_count: i64,
    /// Whole-number alias (for APIs with integer ids), in creation order.
    pub number: i64,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Id.
    pub id: String,
    /// Conversation.
    pub conversation_id: String,
    /// Author.
    pub role: Role,
    /// Text.
    pub content: String,
    /// Lifecycle.
    pub status: MessageStatus,
    /// Model (assistant messages).
    pub model: String,
    /// Prompt tokens (assistant messages).
    pub prompt_tokens: i64,
    /// Completion tokens (assistant messages).
    pub completion_tokens: i64,
    /// Failure reason.
    pub error: String,
    /// Created, Unix ms.
    pub created_at: i64,
    /// Whole-number alias (for APIs with integer ids), in creation order.
    pub number: i64,
}

/// How a message ends up.
#[derive(Debug, Clone)]
pub struct MessageOutcome {
    /// Final status.
    pub status: MessageStatus,
    /// Final text.
    pub content: String,
    /// Model that answered.
    pub model: String,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Failure reason.
    pub error: String,
}

/// One completion's usage, recorded per turn.
#[derive(Debug, Clone)]
pub struct UsageRecord {
    /// Whose turn.
    pub owner: Principal,
    /// Conversation.
    pub conversation_id: String,
    /// Assistant message.
    pub message_id: String,
    /// API key used (public id), if any.
    pub key_id: String,
    /// Model.
    pub model: String,
    /// Provider.
    pub provider: String,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Upstream latency.
    pub latency_ms: i64,
    /// Cost estimate.
    pub cost_micros: i64,
    /// When, Unix ms.
    pub created_at: i64,
}

/// A page request: size and an opaque cursor.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// Page size (already clamped).
    pub size: u32,
    /// Cursor from the previous page.
    pub cursor: Option<Cursor>,
}

/// Position in a list ordered by `(time, id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Time of the last item seen, Unix ms.
    pub time: i64,
    /// Id of the last item seen.
    pub id: String,
}

impl Cursor {
    /// Opaque text form.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.time, self.id)
    }

    /// Parses the text form; `field` names the request field for errors.
    pub fn decode(raw: &str, field: &'static str) -> Result<Option<Self>, ConversationError> {
        if raw.is_empty() {
            return Ok(None);
        }
        let bad = || ConversationError::invalid(field, "is not a cursor returned by this API");
        let (time, id) = raw.split_once('.').ok_or_else(bad)?;
        let time = time.parse().map_err(|_| bad())?;
        if id.is_empty() {
            return Err(bad());
        }
        Ok(Some(Self { time, id: id.to_owned() }))
    }
}

/// A page of results.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// Items.
    pub items: Vec<T>,
    /// Cursor of the next page, when there is one.
    pub next: Option<Cursor>,
}

/// Clamps a requested page size: `default` for 0, at most `max`.
pub fn page_size(requested: u32, default: u32, max: u32) -> u32 {
    if requested == 0 { default } else { requested.min(max) }
}

/// A conversation title from its first message: the first line, at most 60 characters.
pub fn title_from(message: &str) -> String {
    let line = message.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default();
    if line.chars().count() <= TITLE_CHARS {
        line.to_owned()
    } else {
        let cut: String = line.chars().take(TITLE_CHARS - 1).collect();
        format!("{}…", cut.trim_end())
    }
}

/// A new time-ordered id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_are_validated_with_the_field_named() {
        assert!(Principal::parse("drillquiz", "12345").is_ok());
        let err = Principal::parse("", "u").unwrap_err();
        assert!(err.to_string().starts_with("system_id"), "{err}");
        let err = Principal::parse("drill quiz", "u").unwrap_err();
        assert!(err.to_string().starts_with("system_id"), "{err}");
        let err = Principal::parse("drillquiz", " ").unwrap_err();
        assert!(err.to_string().starts_with("user_id"), "{err}");
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        let c = Cursor { time: 42, id: "0192-abc".into() };
        assert_eq!(Cursor::decode(&c.encode(), "cursor").unwrap(), Some(c));
        assert_eq!(Cursor::decode("", "cursor").unwrap(), None);
        assert!(Cursor::decode("nope", "cursor").is_err());
        assert!(Cursor::decode("x.y", "cursor").is_err());
    }

    #[test]
    fn titles_take_the_first_line_and_are_shortened() {
        assert_eq!(title_from("\n  Hello there \nsecond"), "Hello there");
        let long = "a".repeat(100);
        let t = title_from(&long);
        assert_eq!(t.chars().count(), 60);
        assert!(t.ends_with('…'));
    }
}
