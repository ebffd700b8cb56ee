//! ConversationService: conversations, messages and usage records, and the chat turn that
//! stores the user message, asks the LLM proxy and stores the answer.

mod api_usage;
mod context;
pub mod domain;
mod error;
mod grpc;
mod lease;
mod settings;
pub mod store;
mod turn;
mod usage;

use std::future::Future;
use std::sync::Arc;

use switchboard_kit::db::Db;
use switchboard_proto::conversation::v1::conversation_service_server::{ConversationServiceServer, SERVICE_NAME};
use switchboard_proto::llm::v1::llm_service_client::LlmServiceClient;
use tokio::net::TcpListener;

pub use error::ConversationError;
pub use settings::Settings;

/// This service's migrations (`migrations/conversations/`, with `sqlite/` and `postgres/` for the two
/// whose SQL differs).
pub static MIGRATIONS: switchboard_kit::db::Migrations = switchboard_kit::db::Migrations {
    shared: &SHARED_MIGRATIONS,
    sqlite: Some(&SQLITE_MIGRATIONS),
    postgres: Some(&POSTGRES_MIGRATIONS),
};
static SHARED_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/conversations");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/conversations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/conversations/postgres");

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Cannot bind the listen address.
    #[error(transparent)]
    Bind(#[from] switchboard_kit::net::BindError),
    /// The LLM proxy address is unusable.
    #[error("SWITCHBOARD_LLM_ADDR: {0}")]
    LlmAddr(#[from] tonic::transport::Error),
    /// Credential verification cannot be set up.
    #[error(transparent)]
    Verifier(#[from] switchboard_kit::auth::VerifierError),
    /// Database problem.
    #[error(transparent)]
    Db(#[from] switchboard_kit::db::DbError),
    /// The start-up sweep failed.
    #[error("sweeping answers left in progress: {0}")]
    Sweep(#[from] sqlx::Error),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] switchboard_kit::grpc::ServeError),
}

/// A built conversation service, bound to its port and ready to serve.
pub struct Application {
    listener: TcpListener,
    store: Arc<dyn store::ConversationStore>,
    idempotency: Arc<dyn store::IdempotencyStore>,
    sql: Arc<store::SqlStore>,
    llm: LlmServiceClient<switchboard_kit::grpc::Channel>,
    turn_settings: turn::TurnSettings,
    stale_turn: std::time::Duration,
    verifier: switchboard_kit::auth::Verifier,
    redis: Option<switchboard_kit::redis::Redis>,
    metrics: switchboard_kit::metrics::Served,
    context_lookups: switchboard_kit::metrics::CacheLookups,
}

impl Application {
    /// Opens the store (running migrations) and binds the listener; `hub` carries revocations
    /// between the components of one process.
    pub async fn build(settings: Settings, hub: &switchboard_kit::revocation::Hub) -> Result<Self, StartError> {
        let db = Db::connect(&settings.database_url, settings.database_var).await?;
        db.migrate(&MIGRATIONS).await?;
        let llm = LlmServiceClient::new(switchboard_kit::grpc::channel(&settings.llm_addr)?);
        let (listener, local) = switchboard_kit::net::bind(settings.addr, "SWITCHBOARD_CONVERSATIONS_ADDR").await?;
        let sql = Arc::new(store::SqlStore::new(db.clone()));
        let store: Arc<dyn store::ConversationStore> = sql.clone();
        let idempotency: Arc<dyn store::IdempotencyStore> = sql.clone();
        let mut registry = switchboard_kit::metrics::registry();
        let grpc = switchboard_kit::metrics::GrpcMetrics::register(&mut registry);
        let caches = switchboard_kit::metrics::CacheFamily::register(&mut registry);
        let context_lookups = switchboard_kit::metrics::CacheLookups::of(&caches, "context");
        let verifier = switchboard_kit::auth::Verifier::from_settings(&settings.verifier, hub)?.with_metrics(&caches);
        let metrics = switchboard_kit::metrics::Served::bind(
            registry,
            grpc,
            settings.metrics_addr,
            "SWITCHBOARD_CONVERSATIONS_METRICS_ADDR",
        )
        .await?;
        let redis = match &settings.verifier.redis {
            Some(r) => Some(switchboard_kit::redis::Redis::new(r).map_err(switchboard_kit::auth::VerifierError::from)?),
            None => None,
        };
        tracing::info!(
            addr = %local,
            backend = db.backend(),
            llm = %settings.llm_addr,
            "conversations listening"
        );
        let swept = sweep(&*store, settings.stale_turn).await?;
        if swept > 0 {
            tracing::warn!(answers = swept, "closed answers a previous run left in progress");
        }
        Ok(Self {
            listener,
            store,
            idempotency,
            sql,
            llm,
            turn_settings: turn::TurnSettings {
                history: settings.history_messages,
                queue_limit: settings.turn_queue_limit,
            },
            stale_turn: settings.stale_turn,
            verifier,
            redis,
            metrics,
            context_lookups,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    /// The port `/metrics` is served on, when it is.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.port()
    }

    /// Serves until `shutdown` resolves, then flushes pending usage records and closes the store.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), StartError> {
        let (usage, usage_task) = usage::UsageWriter::start(self.store.clone());
        let sweeper = tokio::spawn(sweep_periodically(self.store.clone(), self.stale_turn));
        let context = Arc::new(context::ContextCache::new(self.redis.clone()));
        let turns = turn::Turns::new(
            self.store.clone(),
            self.llm.clone(),
            usage,
            self.turn_settings,
            context,
            self.context_lookups,
        );
        let api_usage = api_usage::ApiUsageTally::default();
        let usage_store: Arc<dyn store::ApiUsageStore> = self.sql.clone();
        let (stop_counts, counts_stopped) = tokio::sync::oneshot::channel::<()>();
        let counts = tokio::spawn(api_usage.clone().run(usage_store.clone(), async move {
            let _ = counts_stopped.await;
        }));
        let service =
            grpc::ConversationGrpc::new(self.store, self.idempotency, turns, self.llm, (api_usage, usage_store));
        let routes = tonic::service::Routes::new(ConversationServiceServer::new(service));
        let (grpc, metrics) = self.metrics.start();
        let result =
            switchboard_kit::grpc::serve(self.listener, routes, &[SERVICE_NAME], Some(self.verifier), grpc, shutdown)
                .await;
        metrics.stop();
        sweeper.abort();
        let _ = stop_counts.send(());
        if let Err(e) = counts.await {
            tracing::error!(error = %e, "API usage writer failed");
        }
        // The server (and with it every UsageWriter clone) is gone: the writer drains and ends.
        if let Err(e) = usage_task.await {
            tracing::error!(error = %e, "usage writer task failed");
        }
        self.sql.close().await;
        tracing::info!("conversations stopped");
        Ok(result?)
    }
}

async fn sweep(store: &dyn store::ConversationStore, stale_after: std::time::Duration) -> Result<u64, sqlx::Error> {
    let now = switchboard_kit::time::now_ms();
    let age = i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX);
    store.sweep_in_progress(now.saturating_sub(age), now).await
}

/// Closes answers left in progress by a crashed replica, once a minute.
async fn sweep_periodically(store: Arc<dyn store::ConversationStore>, stale_after: std::time::Duration) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    tick.tick().await;
    loop {
        tick.tick().await;
        match sweep(&*store, stale_after).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(answers = n, "closed answers left in progress"),
            Err(e) => tracing::warn!(error = %e, "sweeping answers left in progress failed"),
        }
    }
}
