//! Upstream providers. Each speaks one wire format; the catalogue routes a model to one.

pub mod dify;
pub mod mock;
pub mod openai;

use std::time::Duration;

use crate::resilience::Breaker;

/// Author of a prompt message.
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
    /// Wire name shared by OpenAI-compatible APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// One prompt message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Author.
    pub role: Role,
    /// Text.
    pub content: String,
}

/// What a provider is asked for.
#[derive(Debug, Clone)]
pub struct CompletionRequest {
    /// The model's name at the upstream.
    pub model: String,
    /// Prompt, oldest first.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Completion token cap.
    pub max_tokens: Option<u32>,
    /// Tenant of the principal (picks the Dify app).
    pub system_id: String,
    /// User of the principal.
    pub user_id: String,
    /// Language hint (Dify `inputs.language`).
    pub lang: String,
    /// The upstream's conversation id, for stateful upstreams (Dify).
    pub upstream_conversation_id: String,
}

/// Token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Completion tokens.
    pub completion_tokens: u32,
}

/// What a provider answered.
#[derive(Debug, Clone)]
pub struct CompletionOutput {
    /// Answer text.
    pub content: String,
    /// Token counts.
    pub usage: TokenUsage,
    /// Why generation stopped.
    pub finish_reason: String,
    /// The upstream's conversation id (Dify), to remember for the next turn.
    pub upstream_conversation_id: String,
    /// The upstream's message id (Dify).
    pub upstream_message_id: String,
}

/// A piece of a streamed completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// More text, in order.
    Delta(String),
    /// The end, with usage.
    Done {
        /// Token counts.
        usage: TokenUsage,
        /// Why generation stopped.
        finish_reason: String,
        /// The upstream's conversation id (Dify).
        upstream_conversation_id: String,
        /// The upstream's message id (Dify).
        upstream_message_id: String,
    },
}

/// A streamed completion.
pub type EventStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

/// A pass-through stream: the `data:` payloads of an OpenAI-compatible upstream's events.
pub type RawStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<String, ProviderError>> + Send>>;

/// An upstream failure, classified for retries and for the client's status code.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The upstream answered with an error status.
    #[error("upstream answered HTTP {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Short excerpt of the upstream's error (never request secrets).
        message: String,
        /// Upstream's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The upstream could not be reached.
    #[error("cannot reach the upstream: {0}")]
    Connect(String),
    /// The upstream did not answer in time.
    #[error("the upstream did not answer in time")]
    Timeout,
    /// The upstream answered something unreadable.
    #[error("unreadable upstream answer: {0}")]
    InvalidResponse(String),
    /// A provider could not be set up.
    #[error("provider set-up: {0}")]
    Setup(String),
    /// The upstream failed repeatedly and is ejected for a cool-down.
    #[error("the upstream is ejected after repeated failures; next try in {} s", retry_in.as_secs() + 1)]
    Ejected {
        /// Time left in the cool-down.
        retry_in: Duration,
    },
}

/// A configured provider.
#[derive(Debug, Clone)]
pub enum Provider {
    /// The built-in deterministic model.
    Mock(mock::Mock),
    /// An OpenAI-compatible upstream.
    OpenAi(openai::OpenAi),
    /// Dify chat apps, one per tenant or one for all.
    Dify(dify::Dify),
}

impl Provider {
    /// Provider name as shown in the catalogue.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Mock(_) => "mock",
            Self::OpenAi(_) => "openai",
            Self::Dify(_) => "dify",
        }
    }

    /// The breaker of the upstream serving `request` (each Dify app has its own).
    fn breaker(&self, request: &CompletionRequest) -> Option<&Breaker> {
        match self {
            Self::Mock(_) => None,
            Self::OpenAi(p) => Some(p.breaker()),
            Self::Dify(p) => p.breaker(&request.system_id),
        }
    }

    /// One completion.
    pub async fn complete(&self, request: &CompletionRequest) -> Result<CompletionOutput, ProviderError> {
        if let Some(breaker) = self.breaker(request) {
            breaker.allow()?;
        }
        let outcome = match self {
            Self::Mock(p) => Ok(p.complete(request)),
            Self::OpenAi(p) => p.complete(request).await,
            Self::Dify(p) => p.complete(request).await,
        };
        if let Some(breaker) = self.breaker(request) {
            breaker.record(&outcome);
        }
        outcome
    }

    /// One completion, streamed as it is produced.
    pub async fn stream(&self, request: &CompletionRequest) -> Result<EventStream, ProviderError> {
        if let Some(breaker) = self.breaker(request) {
            breaker.allow()?;
        }
        let outcome = match self {
            Self::Mock(p) => Ok(p.stream(request)),
            Self::OpenAi(p) => p.stream(request).await,
            Self::Dify(p) => p.stream(request).await,
        };
        if let Some(breaker) = self.breaker(request) {
            breaker.record(&outcome);
        }
        outcome
    }
}

/// Rough token count for providers that report none: about four characters a token.
pub fn estimate_tokens(text: &str) -> u32 {
    tokens_in_chars(text.chars().count())
}

/// [`estimate_tokens`] of a text of `chars` characters (for a text counted as it grows).
pub fn tokens_in_chars(chars: usize) -> u32 {
    u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX)
}

/// Drops the oldest messages until the prompt fits `window` tokens with `reserve` left for
/// the answer. System messages and the newest message are always kept; a window of 0 means
/// unknown, and nothing is dropped.
pub fn trim_to_window(messages: &mut Vec<ChatMessage>, window: u32, reserve: u32) {
    if window == 0 {
        return;
    }
    let budget = window.saturating_sub(reserve);
    let mut total: u32 = messages.iter().map(|m| estimate_tokens(&m.content)).sum();
    let mut i = 0;
    while total > budget && i + 1 < messages.len() {
        if messages[i].role == Role::System {
            i += 1;
            continue;
        }
        total = total.saturating_sub(estimate_tokens(&messages[i].content));
        messages.remove(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(role: Role, content: &str) -> ChatMessage {
        ChatMessage { role, content: content.into() }
    }

    #[test]
    fn trimming_drops_the_oldest_turns_and_keeps_system_and_newest() {
        let word = "x".repeat(40); // 10 tokens
        let mut messages = vec![
            m(Role::System, &word),
            m(Role::User, &word),
            m(Role::Assistant, &word),
            m(Role::User, &word),
            m(Role::Assistant, &word),
            m(Role::User, "newest"),
        ];
        trim_to_window(&mut messages, 40, 5);
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[0].role, Role::System);
        assert_eq!(messages.last().unwrap().content, "newest");
        let mut untouched = messages.clone();
        trim_to_window(&mut untouched, 0, 0);
        assert_eq!(untouched, messages, "an unknown window trims nothing");
        let mut tiny = vec![m(Role::User, &word)];
        trim_to_window(&mut tiny, 1, 0);
        assert_eq!(tiny.len(), 1, "the newest message always goes");
    }
}
