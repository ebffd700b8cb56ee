//! Errors of the conversation service and their gRPC status codes.

use switchboard_kit::grpc::invalid_field;
use tonic::{Code, Status};

/// What can go wrong in the conversation service.
#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    /// A request field is invalid.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// Field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The conversation does not exist or belongs to someone else.
    #[error("conversation not found")]
    NotFound,
    /// The LLM proxy failed; its status is passed on as it is.
    #[error("llm: {}", .0.message())]
    Llm(Status),
    /// Storage failed.
    #[error("storage: {0}")]
    Store(#[from] sqlx::Error),
    /// Another replica's turn of the conversation outlasted the caller's patience.
    #[error("another turn of this conversation is still running; try again")]
    Busy,
    /// The store is behind: this many turns already wait on it.
    #[error(
        "the conversation store is behind: {waiting} turns already wait on it (SWITCHBOARD_TURN_QUEUE_LIMIT); retry shortly"
    )]
    Overloaded {
        /// Turns waiting.
        waiting: usize,
    },
}

impl From<crate::lease::LeaseError> for ConversationError {
    fn from(e: crate::lease::LeaseError) -> Self {
        match e {
            crate::lease::LeaseError::Busy => Self::Busy,
            crate::lease::LeaseError::NotFound => Self::NotFound,
            crate::lease::LeaseError::Store(e) => Self::Store(e),
        }
    }
}

impl ConversationError {
    /// An invalid field.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { field, reason: reason.into() }
    }
}

impl From<ConversationError> for Status {
    fn from(err: ConversationError) -> Self {
        match err {
            ConversationError::InvalidArgument { field, .. } => invalid_field(field, err.to_string()),
            ConversationError::NotFound => Status::not_found("conversation not found"),
            ConversationError::Busy => Status::aborted(err.to_string()),
            ConversationError::Overloaded { .. } => switchboard_kit::grpc::shed(err.to_string(), 1),
            ConversationError::Llm(status) => {
                // The LLM proxy being unreachable is a dependency outage, not an upstream error.
                if status.code() == Code::Unknown {
                    Status::unavailable(format!("llm-proxy: {}", status.message()))
                } else {
                    status
                }
            }
            ConversationError::Store(e) => {
                tracing::error!(error = %e, "conversation storage failure");
                Status::unavailable("conversation storage unavailable")
            }
        }
    }
}
