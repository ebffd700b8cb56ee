//! The Switchboard edge gateway: the REST APIs (one module per API family, documented at
//! `/openapi.json`) over the three gRPC services, with credential checks, rate limits, CORS,
//! metrics and health endpoints.

pub mod admin;
pub mod auth;
mod client_addr;
pub mod error;
pub mod extract;
pub mod metrics;
mod openapi;
pub mod ratelimit;
mod routes;
mod settings;
pub mod state;

use std::future::Future;
use std::sync::Arc;

use switchboard_proto::auth::v1::auth_service_client::AuthServiceClient;
use switchboard_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
use switchboard_proto::llm::v1::llm_service_client::LlmServiceClient;
use tokio::net::TcpListener;

pub use settings::Settings;
use state::AppState;

/// Why the gateway could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Cannot bind the listen address.
    #[error(transparent)]
    Bind(#[from] switchboard_kit::net::BindError),
    /// A service address is unusable.
    #[error("{var}: {source}")]
    ServiceAddr {
        /// Variable.
        var: &'static str,
        /// Cause.
        source: tonic::transport::Error,
    },
    /// Credential verification cannot be set up.
    #[error(transparent)]
    Verifier(#[from] switchboard_kit::auth::VerifierError),
    /// The Redis URL is unusable.
    #[error("REDIS_URL: {0}")]
    Redis(#[from] redis::RedisError),
    /// Serving failed.
    #[error("serving HTTP: {0}")]
    Serve(#[from] std::io::Error),
}

/// A built gateway, bound to its port and ready to serve.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    header_read_timeout: std::time::Duration,
}

impl Application {
    /// Creates the service clients (connecting lazily) and binds the listener; `hub` carries
    /// revocations between the components of one process.
    pub async fn build(settings: Settings, hub: &switchboard_kit::revocation::Hub) -> Result<Self, StartError> {
        let channel = |addr: &str, var| {
            switchboard_kit::grpc::channel(addr).map_err(|source| StartError::ServiceAddr { var, source })
        };
        let auth = channel(&settings.verifier.auth_addr, "SWITCHBOARD_AUTH_ADDR")?;
        let conversations = channel(&settings.conversations_addr, "SWITCHBOARD_CONVERSATIONS_ADDR")?;
        let llm = channel(&settings.llm_addr, "SWITCHBOARD_LLM_ADDR")?;
        let metrics = Arc::new(metrics::Metrics::default());
        let redis = settings.verifier.redis.as_ref().map(switchboard_kit::redis::Redis::new).transpose()?;
        let fallbacks = metrics.rate_limit_fallbacks.clone();
        let limiter = ratelimit::Limiter::new(
            settings.rate_limits.clone(),
            redis,
            Box::new(move || {
                fallbacks.inc();
            }),
        );
        let state = AppState::new(state::Shared {
            auth: AuthServiceClient::new(auth.clone()),
            conversations: ConversationServiceClient::new(conversations.clone()),
            llm: LlmServiceClient::new(llm.clone()),
            usage: switchboard_proto::llm::v1::usage_service_client::UsageServiceClient::new(llm.clone()),
            channels: Arc::new([("auth", auth), ("conversations", conversations), ("llm-proxy", llm)]),
            metrics: metrics.clone(),
            limiter: Arc::new(limiter),
            verifier: switchboard_kit::auth::Verifier::from_settings(&settings.verifier, hub)?
                .with_metrics(&metrics.caches),
            chat_frame_ancestors: settings.chat_frame_ancestors.clone().into(),
        });
        let (listener, local) = switchboard_kit::net::bind(settings.addr, "SWITCHBOARD_HTTP_ADDR").await?;
        tracing::info!(
            addr = %local,
            auth = %settings.verifier.auth_addr,
            conversations = %settings.conversations_addr,
            llm = %settings.llm_addr,
            "gateway listening"
        );
        Ok(Self {
            listener,
            router: routes::router(state, &settings),
            header_read_timeout: settings.header_read_timeout,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    /// Serves until `shutdown` resolves, letting in-flight requests finish. Each connection
    /// has `TCP_NODELAY`, its peer address (for rate limits) and a deadline for its headers.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
        use tower::ServiceExt;

        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(self.header_read_timeout);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY");
            }
            let router = self.router.clone();
            let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                router.clone().oneshot(request.map(axum::body::Body::new))
            });
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service).into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        drop(self.listener);
        graceful.shutdown().await;
        tracing::info!("gateway stopped");
        Ok(())
    }
}
