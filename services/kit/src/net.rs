//! Listening sockets.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// Where the auth service listens by default, and where its clients look for it.
pub const DEFAULT_AUTH_ADDR: &str = "127.0.0.1:50051";
/// Where the conversation service listens by default, and where its clients look for it.
pub const DEFAULT_CONVERSATIONS_ADDR: &str = "127.0.0.1:50052";
/// Where the LLM proxy listens by default, and where its clients look for it.
pub const DEFAULT_LLM_ADDR: &str = "127.0.0.1:50053";

/// Makes ring rustls's crypto provider for this process, the one sqlx and redis use; reqwest
/// needs a provider installed before its first client. Installing it again is harmless.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A listen address that cannot be bound, naming the variable it came from.
#[derive(Debug, thiserror::Error)]
#[error("{var}: cannot listen on {addr}: {source}")]
pub struct BindError {
    /// Variable the address came from.
    pub var: &'static str,
    /// Address.
    pub addr: SocketAddr,
    /// Cause.
    pub source: std::io::Error,
}

/// Binds `addr` (from variable `var`) and returns the listener with its actual address,
/// which differs from `addr` when the port is 0.
pub async fn bind(addr: SocketAddr, var: &'static str) -> Result<(TcpListener, SocketAddr), BindError> {
    let err = |source| BindError { var, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    Ok((listener, local))
}
