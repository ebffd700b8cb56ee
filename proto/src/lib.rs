//! Switchboard's gRPC contracts, generated from `proto/switchboard/**.proto`.
//!
//! Each package is a module; [`FILE_DESCRIPTOR_SET`] holds all of them (with their imports)
//! for server reflection, so `grpcurl` and `buf curl` work without `.proto` files.

#![allow(clippy::all, missing_docs)]

/// `switchboard.common.v1`: the types every package shares.
pub mod common {
    pub mod v1 {
        tonic::include_proto!("switchboard.common.v1");
    }
}

/// `switchboard.auth.v1`: API keys, users, JWTs and chat tokens.
pub mod auth {
    pub mod v1 {
        tonic::include_proto!("switchboard.auth.v1");
        pub use crate::common::v1::Principal;
    }
}

/// `switchboard.conversation.v1`: conversations, messages and the chat turn.
pub mod conversation {
    pub mod v1 {
        tonic::include_proto!("switchboard.conversation.v1");
        pub use crate::common::v1::Principal;
    }
}

/// `switchboard.llm.v1`: models, completions and provider keys.
pub mod llm {
    pub mod v1 {
        tonic::include_proto!("switchboard.llm.v1");
        pub use crate::common::v1::Principal;
    }
}

/// Encoded `FileDescriptorSet` of every Switchboard package and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("switchboard_descriptor");
