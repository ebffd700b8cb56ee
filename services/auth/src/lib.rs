//! AuthService: resolves credentials (static service keys, issued API keys, JWTs) to
//! principals; issues, rotates and revokes API keys; registers users and logs them in and
//! out; keeps profiles; issues chat tokens. Revocations are announced on the revocation bus.

mod error;
mod grpc;
pub mod jwt;
pub mod keys;
mod last_used;
mod login_guard;
pub mod ops;
pub mod passwords;
mod settings;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use switchboard_kit::db::Db;
use switchboard_proto::auth::v1::auth_service_server::{AuthServiceServer, SERVICE_NAME};
use tokio::net::TcpListener;

pub use error::AuthError;
pub use settings::Settings;

/// This service's migrations (`migrations/auth/`: the same SQL on both backends).
pub static MIGRATIONS: switchboard_kit::db::Migrations =
    switchboard_kit::db::Migrations { shared: &SHARED_MIGRATIONS, sqlite: None, postgres: None };
static SHARED_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/auth");

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Cannot bind the listen address.
    #[error(transparent)]
    Bind(#[from] switchboard_kit::net::BindError),
    /// Database problem.
    #[error(transparent)]
    Db(#[from] switchboard_kit::db::DbError),
    /// Redis problem.
    #[error("REDIS_URL: {0}")]
    Redis(#[from] redis::RedisError),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] switchboard_kit::grpc::ServeError),
}

/// A built auth service, bound to its port and ready to serve.
pub struct Application {
    listener: TcpListener,
    db: Db,
    service: grpc::AuthGrpc,
    store: Arc<store::SqlStore>,
    last_used: last_used::LastUsed,
    metrics: switchboard_kit::metrics::Served,
}

impl Application {
    /// Opens the store (running migrations) and binds the listener; `hub` carries revocations
    /// between the components of one process.
    pub async fn build(settings: Settings, hub: &switchboard_kit::revocation::Hub) -> Result<Self, StartError> {
        let db = Db::connect(&settings.database_url, settings.database_var).await?;
        db.migrate(&MIGRATIONS).await?;
        let redis = settings.redis.as_ref().map(switchboard_kit::redis::Redis::new).transpose()?;
        let store = Arc::new(store::SqlStore::new(db.clone()));
        let last_used = last_used::LastUsed::default();
        let deps =
            grpc::Deps { keys: store.clone(), users: store.clone(), last_used: last_used.clone(), bus: hub.bus(redis) };
        let service = grpc::AuthGrpc::new(&settings, deps);
        let (listener, local) = switchboard_kit::net::bind(settings.addr, "SWITCHBOARD_AUTH_ADDR").await?;
        let mut registry = switchboard_kit::metrics::registry();
        let grpc = switchboard_kit::metrics::GrpcMetrics::register(&mut registry);
        let metrics = switchboard_kit::metrics::Served::bind(
            registry,
            grpc,
            settings.metrics_addr,
            "SWITCHBOARD_AUTH_METRICS_ADDR",
        )
        .await?;
        tracing::info!(
            addr = %local,
            backend = db.backend(),
            static_keys = settings.static_keys.len(),
            jwt = settings.jwt_secret.is_some(),
            admin = settings.admin_token.is_some(),
            redis = settings.redis.is_some(),
            "auth listening"
        );
        Ok(Self { listener, db, service, store, last_used, metrics })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    /// The port `/metrics` is served on, when it is.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.port()
    }

    /// Serves until `shutdown` resolves, then writes pending last-used times.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), StartError> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let flusher = tokio::spawn(self.last_used.clone().run(self.store.clone(), async move {
            let _ = stop_rx.await;
        }));
        let routes = tonic::service::Routes::new(AuthServiceServer::new(self.service));
        let (grpc, metrics) = self.metrics.start();
        let result = switchboard_kit::grpc::serve(self.listener, routes, &[SERVICE_NAME], None, grpc, shutdown).await;
        metrics.stop();
        let _ = stop_tx.send(());
        if let Err(e) = flusher.await {
            tracing::error!(error = %e, "last-used writer failed");
        }
        self.db.close().await;
        tracing::info!("auth stopped");
        Ok(result?)
    }
}
