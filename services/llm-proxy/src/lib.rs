//! LlmService: the model catalogue, each principal's model choice, and completions through
//! the configured providers (OpenAI-compatible upstreams and the built-in `mock` model).

pub mod budgets;
pub mod catalogue;
mod error;
mod grpc;
mod key_usage;
pub mod openai_compat;
pub mod ops;
pub mod providers;
pub mod resilience;
pub mod sealing;
mod settings;
pub mod store;
pub mod telemetry;
pub mod usage;

use std::future::Future;
use std::sync::Arc;

use switchboard_kit::db::Db;
use switchboard_proto::llm::v1::llm_service_server::{LlmServiceServer, SERVICE_NAME};
use switchboard_proto::llm::v1::usage_service_server::{SERVICE_NAME as USAGE_SERVICE_NAME, UsageServiceServer};
use tokio::net::TcpListener;

pub use error::LlmError;
pub use settings::Settings;

/// A built LLM proxy, bound to its port and ready to serve.
pub struct Application {
    listener: TcpListener,
    service: grpc::LlmGrpc,
    db: Db,
    verifier: switchboard_kit::auth::Verifier,
    store: Arc<store::SqlStore>,
    tally: key_usage::KeyUsageTally,
    usage: usage::UsageRollups,
    usage_service: grpc::UsageGrpc,
    budgets: budgets::Budgets,
    metrics: switchboard_kit::metrics::Served,
}

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Cannot bind the listen address.
    #[error(transparent)]
    Bind(#[from] switchboard_kit::net::BindError),
    /// Database problem.
    #[error(transparent)]
    Db(#[from] switchboard_kit::db::DbError),
    /// Credential verification cannot be set up.
    #[error(transparent)]
    Verifier(#[from] switchboard_kit::auth::VerifierError),
    /// The stored budgets cannot be read.
    #[error("cannot read budgets: {0}")]
    Budgets(sqlx::Error),
    /// The Redis URL is unusable.
    #[error("REDIS_URL: {0}")]
    Redis(#[from] redis::RedisError),
    /// Provider set-up problem.
    #[error(transparent)]
    Provider(#[from] providers::ProviderError),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] switchboard_kit::grpc::ServeError),
}

/// This service's migrations (`migrations/llm-proxy/`: the same SQL on both backends).
pub static MIGRATIONS: switchboard_kit::db::Migrations =
    switchboard_kit::db::Migrations { shared: &SHARED_MIGRATIONS, sqlite: None, postgres: None };
static SHARED_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/llm-proxy");

impl Application {
    /// Opens the store (running migrations), sets up the providers and binds the listener;
    /// `hub` carries revocations between the components of one process.
    pub async fn build(settings: Settings, hub: &switchboard_kit::revocation::Hub) -> Result<Self, StartError> {
        Self::build_with_clock(settings, hub, budgets::system_clock()).await
    }

    /// [`Self::build`] with the clock budgets read (tests move it across period boundaries).
    pub async fn build_with_clock(
        settings: Settings,
        hub: &switchboard_kit::revocation::Hub,
        clock: budgets::Clock,
    ) -> Result<Self, StartError> {
        let db = Db::connect(&settings.database_url, settings.database_var).await?;
        db.migrate(&MIGRATIONS).await?;
        let catalogue = Arc::new(catalogue::Catalogue::from_settings(&settings)?);
        // The upstream's own model list: waited for briefly at start, then refreshed.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), catalogue.discover()).await;
        let store = Arc::new(store::SqlStore::new(db.clone()));
        let tally = key_usage::KeyUsageTally::default();
        let usage = usage::UsageRollups::default();
        let mut registry = switchboard_kit::metrics::registry();
        let grpc_metrics = switchboard_kit::metrics::GrpcMetrics::register(&mut registry);
        let caches = switchboard_kit::metrics::CacheFamily::register(&mut registry);
        let upstream_metrics = telemetry::UpstreamMetrics::register(&mut registry);
        let verifier = switchboard_kit::auth::Verifier::from_settings(&settings.verifier, hub)?.with_metrics(&caches);
        let (listener, local) = switchboard_kit::net::bind(settings.addr, "SWITCHBOARD_LLM_ADDR").await?;
        let metrics = switchboard_kit::metrics::Served::bind(
            registry,
            grpc_metrics,
            settings.metrics_addr,
            "SWITCHBOARD_LLM_METRICS_ADDR",
        )
        .await?;
        tracing::info!(
            addr = %local,
            backend = db.backend(),
            default_model = %catalogue.default_model(),
            "llm-proxy listening"
        );
        let redis = match &settings.verifier.redis {
            Some(r) => Some(switchboard_kit::redis::Redis::new(r)?),
            None => None,
        };
        let budgets = budgets::Budgets {
            book: budgets::BudgetBook::new(settings.budgets.clone()),
            ledger: budgets::ledger::Ledger::new(redis, store.clone(), clock),
        };
        grpc::reload_budgets(&*store, &budgets.book).await.map_err(StartError::Budgets)?;
        budgets.ledger.connect().await;
        let usage_service = grpc::UsageGrpc::new(store.clone(), store.clone(), budgets.clone());
        let deps = grpc::Deps {
            budgets: budgets.clone(),
            choices: Arc::new(store::CachedChoices::new(store.clone(), store::CHOICE_TTL).with_metrics(&caches)),
            keys: store.clone(),
            sealer: settings.encryption_key.as_ref().map(|k| sealing::Sealer::new(&k.0)),
            tally: tally.clone(),
            usage: usage.clone(),
            upstream_timeout: settings.upstream_timeout,
            metrics: upstream_metrics,
        };
        Ok(Self {
            listener,
            service: grpc::LlmGrpc::new(catalogue, deps),
            db,
            verifier,
            store,
            tally,
            usage,
            usage_service,
            budgets,
            metrics,
        })
    }

    /// The port `/metrics` is served on, when it is.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.port()
    }

    /// The bound port (useful when built on port 0).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    /// Serves until `shutdown` resolves, then closes the store.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), StartError> {
        let catalogue = self.service.catalogue();
        let discovery = tokio::spawn(async move {
            let mut tick = tokio::time::interval(catalogue::DISCOVERY_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                catalogue.discover().await;
            }
        });
        let (stop_tally, tally_stopped) = tokio::sync::oneshot::channel::<()>();
        let tally = tokio::spawn(self.tally.clone().run(self.store.clone(), async move {
            let _ = tally_stopped.await;
        }));
        let (stop_usage, usage_stopped) = tokio::sync::oneshot::channel::<()>();
        let usage = tokio::spawn(self.usage.clone().run(self.store.clone(), async move {
            let _ = usage_stopped.await;
        }));
        // Budgets set through another replica arrive within a reload interval.
        let (store, book) = (self.store.clone(), self.budgets.book.clone());
        let reload = tokio::spawn(async move {
            let mut tick = tokio::time::interval(budgets::RELOAD_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = grpc::reload_budgets(&*store, &book).await {
                    tracing::warn!(error = %e, "cannot re-read budgets; keeping the last ones read");
                }
            }
        });
        let routes = tonic::service::Routes::new(LlmServiceServer::new(self.service))
            .add_service(UsageServiceServer::new(self.usage_service));
        let (grpc_metrics, metrics) = self.metrics.start();
        let result = switchboard_kit::grpc::serve(
            self.listener,
            routes,
            &[SERVICE_NAME, USAGE_SERVICE_NAME],
            Some(self.verifier),
            grpc_metrics,
            shutdown,
        )
        .await;
        metrics.stop();
        discovery.abort();
        reload.abort();
        let _ = stop_tally.send(());
        if let Err(e) = tally.await {
            tracing::error!(error = %e, "provider key usage writer failed");
        }
        let _ = stop_usage.send(());
        if let Err(e) = usage.await {
            tracing::error!(error = %e, "usage rollup writer failed");
        }
        self.db.close().await;
        tracing::info!("llm-proxy stopped");
        Ok(result?)
    }
}
