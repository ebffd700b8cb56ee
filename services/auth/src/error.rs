//! Errors of the auth service and their gRPC status codes.

use tonic::Status;

/// What can go wrong in the auth service.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credential, or one that is unknown, expired, revoked or malformed. Deliberately
    /// vague: the caller learns nothing about which.
    #[error("invalid or missing credential")]
    Unauthenticated,
    /// Wrong username or password (the same answer for both).
    #[error("incorrect username or password")]
    BadLogin,
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
    /// Something that must be unique already exists.
    #[error("{0}")]
    Conflict(String),
    /// Not found.
    #[error("{0}")]
    NotFound(String),
    /// A feature needs configuration it does not have.
    #[error("{0}")]
    NotConfigured(String),
    /// Too many password checks at once: this one was shed to bound memory.
    #[error("too many sign-ins at once; retry in {retry_after_secs} s")]
    Overloaded {
        /// Seconds to wait before retrying.
        retry_after_secs: u64,
    },
    /// Too many failed sign-ins for one account: refused until the window passes.
    #[error("too many failed sign-ins for this account; retry in {retry_after_secs} s")]
    AccountLocked {
        /// Seconds to wait before retrying.
        retry_after_secs: u64,
    },
    /// Storage failed.
    #[error("storage: {0}")]
    Store(#[from] sqlx::Error),
    /// Anything else.
    #[error("{0}")]
    Unexpected(String),
}

impl AuthError {
    /// An invalid field.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { field, reason: reason.into() }
    }
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        match &err {
            AuthError::Unauthenticated | AuthError::BadLogin => Status::unauthenticated(err.to_string()),
            AuthError::PermissionDenied(_) => Status::permission_denied(err.to_string()),
            AuthError::InvalidArgument { field, .. } => switchboard_kit::grpc::invalid_field(field, err.to_string()),
            AuthError::Conflict(_) => Status::already_exists(err.to_string()),
            AuthError::NotFound(_) => Status::not_found(err.to_string()),
            AuthError::NotConfigured(_) => Status::failed_precondition(err.to_string()),
            AuthError::Overloaded { retry_after_secs } => {
                switchboard_kit::grpc::shed(err.to_string(), *retry_after_secs)
            }
            AuthError::AccountLocked { retry_after_secs } => {
                let mut status = Status::resource_exhausted(err.to_string());
                if let Ok(value) = retry_after_secs.to_string().parse() {
                    status.metadata_mut().insert(switchboard_kit::grpc::RETRY_AFTER_METADATA, value);
                }
                status
            }
            AuthError::Store(e) => {
                tracing::error!(error = %e, "auth storage failure");
                Status::unavailable("auth storage unavailable")
            }
            AuthError::Unexpected(e) => {
                tracing::error!(error = %e, "auth failure");
                Status::internal("internal error")
            }
        }
    }
}
