//! Errors of the LLM proxy and their gRPC status codes.

use switchboard_kit::grpc::{UPSTREAM_METADATA, UPSTREAM_STATUS_METADATA, invalid_field};
use tonic::{Code, Status};

use crate::providers::ProviderError;

/// What can go wrong in the LLM proxy.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The model is not in the catalogue.
    #[error("unknown model {name:?}; available models: {}", available.join(", "))]
    UnknownModel {
        /// Name asked for.
        name: String,
        /// Names that exist.
        available: Vec<String>,
    },
    /// The request is malformed.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// Offending field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The upstream failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// Storage failed.
    #[error("storage: {0}")]
    Store(#[from] sqlx::Error),
}

impl From<LlmError> for Status {
    fn from(err: LlmError) -> Self {
        match &err {
            LlmError::UnknownModel { .. } => invalid_field("model", err.to_string()),
            LlmError::InvalidArgument { field, .. } => invalid_field(field, err.to_string()),
            LlmError::Provider(p) => {
                let (code, kind) = match p {
                    ProviderError::Timeout => (Code::DeadlineExceeded, "timeout"),
                    ProviderError::Setup(_) => (Code::FailedPrecondition, "error"),
                    _ => (Code::Unavailable, "error"),
                };
                let mut status = Status::new(code, format!("model upstream: {p}"));
                status.metadata_mut().insert(UPSTREAM_METADATA, tonic::metadata::MetadataValue::from_static(kind));
                if let ProviderError::Status { status: http, .. } = p {
                    status.metadata_mut().insert(UPSTREAM_STATUS_METADATA, tonic::metadata::MetadataValue::from(*http));
                }
                status
            }
            LlmError::Store(e) => {
                tracing::error!(error = %e, "llm-proxy storage failure");
                Status::unavailable("storage unavailable")
            }
        }
    }
}
