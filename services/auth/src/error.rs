//! Errors of the auth service and their gRPC status codes.

use tonic::Status;

/// What can go wrong in the auth service.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credential, or one that is unknown, expired, revoked or malformed. Deliberately
    /// vague: the caller learns nothing about which.
    #[error("invalid or missing credential")]
    Unauthenticated,
    /// The credential is valid but may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// A request field is invalid.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// Field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No such key.
    #[error("API key not found")]
    NotFound,
    /// Storage failed.
    #[error("storage: {0}")]
    Store(#[from] sqlx::Error),
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        match &err {
            AuthError::Unauthenticated => Status::unauthenticated(err.to_string()),
            AuthError::PermissionDenied(_) => Status::permission_denied(err.to_string()),
            AuthError::InvalidArgument { field, .. } => switchboard_kit::grpc::invalid_field(field, err.to_string()),
            AuthError::NotFound => Status::not_found(err.to_string()),
            AuthError::Store(e) => {
                tracing::error!(error = %e, "auth storage failure");
                Status::unavailable("auth storage unavailable")
            }
        }
    }
}
