//! ConversationService: conversations, messages and usage records, and the chat turn that
//! stores the user message, asks the LLM proxy and stores the answer.

pub mod domain;
mod error;
mod grpc;
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

/// Migrations for SQLite.
pub static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/conversations/sqlite");
/// Migrations for PostgreSQL.
pub static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/conversations/postgres");

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
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] switchboard_kit::grpc::ServeError),
}

/// A built conversation service, bound to its port and ready to serve.
pub struct Application {
    listener: TcpListener,
    db: Db,
    store: Arc<dyn store::ConversationStore>,
    llm: LlmServiceClient<tonic::transport::Channel>,
    history: u32,
    verifier: switchboard_kit::auth::Verifier,
}

impl Application {
    /// Opens the store (running migrations) and binds the listener; `hub` carries revocations
    /// between the components of one process.
    pub async fn build(settings: Settings, hub: &switchboard_kit::revocation::Hub) -> Result<Self, StartError> {
        let db = Db::connect(&settings.database_url, settings.database_var).await?;
        db.migrate(&SQLITE_MIGRATIONS, &POSTGRES_MIGRATIONS).await?;
        let llm = LlmServiceClient::new(switchboard_kit::grpc::channel(&settings.llm_addr)?);
        let (listener, local) = switchboard_kit::net::bind(settings.addr, "SWITCHBOARD_CONVERSATIONS_ADDR").await?;
        let store: Arc<dyn store::ConversationStore> = Arc::new(store::SqlStore::new(db.clone()));
        let verifier = switchboard_kit::auth::Verifier::from_settings(&settings.verifier, hub)?;
        tracing::info!(
            addr = %local,
            backend = db.backend(),
            llm = %settings.llm_addr,
            "conversations listening"
        );
        Ok(Self { listener, db, store, llm, history: settings.history_messages, verifier })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    /// Serves until `shutdown` resolves, then flushes pending usage records and closes the store.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), StartError> {
        let (usage, usage_task) = usage::UsageWriter::start(self.store.clone());
        let turns = turn::Turns::new(self.store.clone(), self.llm, usage, self.history);
        let service = grpc::ConversationGrpc::new(self.store, turns);
        let routes = tonic::service::Routes::new(ConversationServiceServer::new(service));
        let result =
            switchboard_kit::grpc::serve(self.listener, routes, &[SERVICE_NAME], Some(self.verifier), shutdown).await;
        // The server (and with it every UsageWriter clone) is gone: the writer drains and ends.
        if let Err(e) = usage_task.await {
            tracing::error!(error = %e, "usage writer task failed");
        }
        self.db.close().await;
        tracing::info!("conversations stopped");
        Ok(result?)
    }
}

/// Default listen address of this service, which is also where clients find it.
pub fn settings_default_addr() -> &'static str {
    settings::DEFAULT_ADDR
}
