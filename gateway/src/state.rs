//! The gateway's shared state: gRPC clients and metrics, cheap to clone per request.

use std::sync::Arc;

use switchboard_kit::auth::Verifier;
use switchboard_kit::grpc::Channel;
use switchboard_proto::auth::v1::auth_service_client::AuthServiceClient;
use switchboard_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
use switchboard_proto::llm::v1::llm_service_client::LlmServiceClient;
use switchboard_proto::llm::v1::usage_service_client::UsageServiceClient;

use crate::metrics::Metrics;
use crate::ratelimit::Limiter;

/// Everything a handler needs. Cloned for every request (and by every route's middleware), so
/// a clone is one reference count: the clients and settings live behind one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state of a gateway.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    /// AuthService client.
    pub auth: AuthServiceClient<Channel>,
    /// ConversationService client.
    pub conversations: ConversationServiceClient<Channel>,
    /// LlmService client.
    pub llm: LlmServiceClient<Channel>,
    /// UsageService client (served by the LLM proxy, on the same channel as `llm`).
    pub usage: UsageServiceClient<Channel>,
    /// Channels by service, for readiness checks.
    pub channels: Arc<[(&'static str, Channel)]>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Credential verification (cached, revocation-aware).
    pub verifier: Verifier,
    /// Rate limits.
    pub limiter: Arc<Limiter>,
    /// Who may frame the embedded chat page: `frame-ancestors` sources, from
    /// `ALLOWED_CHAT_TOKEN_ORIGINS` (`*` when unset).
    pub chat_frame_ancestors: Arc<str>,
}
