//! `switchboard`: runs every component in one process (the default), or one component alone.

use clap::{Parser, Subcommand};
use switchboard_kit::db::Migrator;
use switchboard_kit::revocation::Hub;
use switchboard_kit::{Env, shutdown, telemetry};
use tokio::sync::watch;

/// mimalloc: under load it spends less CPU per request than glibc's allocator (`make bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Switchboard: a multi-tenant LLM chat gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Clone)]
enum Command {
    /// Gateway and the three services in one process, each on its own port (default).
    All,
    /// The HTTP gateway alone.
    Gateway,
    /// The auth service alone.
    Auth,
    /// The conversation service alone.
    Conversations,
    /// The LLM proxy alone.
    LlmProxy,
    /// Apply every service's database migrations, then exit.
    Migrate,
    /// List, set or delete budgets in the LLM proxy's database (`LLM_DATABASE_URL` or
    /// `DATABASE_URL`); running replicas pick changes up within 5 seconds.
    Budgets {
        #[command(subcommand)]
        action: BudgetAction,
    },
}

#[derive(Subcommand, Clone)]
enum BudgetAction {
    /// Every budget with its spend in the current period.
    List {
        /// Only this tenant's.
        #[arg(long)]
        system_id: Option<String>,
    },
    /// Create or replace a budget (its id follows from scope, tenant, subject and period).
    Set {
        /// tenant, user or key.
        #[arg(long)]
        scope: String,
        /// The tenant.
        #[arg(long)]
        system_id: String,
        /// The user, for --scope user.
        #[arg(long)]
        user_id: Option<String>,
        /// The API key id, for --scope key.
        #[arg(long)]
        key_id: Option<String>,
        /// day, month or total.
        #[arg(long)]
        period: String,
        /// Spend limit in US dollars.
        #[arg(long)]
        max_usd: Option<f64>,
        /// Token limit (prompt + completion).
        #[arg(long)]
        max_tokens: Option<i64>,
        /// Warning threshold in percent of a limit (default 80).
        #[arg(long)]
        warn_percent: Option<u32>,
    },
    /// Delete a budget by id (e.g. `user:drillquiz:12345:month`).
    Delete {
        /// The budget's id.
        id: String,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    telemetry::init_subscriber();
    let command = Cli::parse().command.unwrap_or(Command::All);
    match run(command, Env::from_process()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("switchboard: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, env: Env) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown::signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    // One hub for every component of this process: a revocation reaches them all at once.
    let hub = Hub::default();
    let auth = || switchboard_auth::Settings::from_env(&env);
    let conversations = || switchboard_conversations::Settings::from_env(&env);
    let llm = || switchboard_llm_proxy::Settings::from_env(&env);
    let gateway = || switchboard_gateway::Settings::from_env(&env);
    match command {
        Command::Auth => {
            switchboard_auth::Application::build(auth()?, &hub).await?.run_until_stopped(stopped()).await?
        }
        Command::Conversations => {
            switchboard_conversations::Application::build(conversations()?, &hub)
                .await?
                .run_until_stopped(stopped())
                .await?
        }
        Command::LlmProxy => {
            switchboard_llm_proxy::Application::build(llm()?, &hub).await?.run_until_stopped(stopped()).await?
        }
        Command::Gateway => {
            switchboard_gateway::Application::build(gateway()?, &hub).await?.run_until_stopped(stopped()).await?
        }
        Command::Migrate => {
            let (a, c, l) = (auth()?, conversations()?, llm()?);
            migrate(
                &a.database_url,
                a.database_var,
                &switchboard_auth::SQLITE_MIGRATIONS,
                &switchboard_auth::POSTGRES_MIGRATIONS,
            )
            .await?;
            migrate(
                &c.database_url,
                c.database_var,
                &switchboard_conversations::SQLITE_MIGRATIONS,
                &switchboard_conversations::POSTGRES_MIGRATIONS,
            )
            .await?;
            migrate(
                &l.database_url,
                l.database_var,
                &switchboard_llm_proxy::SQLITE_MIGRATIONS,
                &switchboard_llm_proxy::POSTGRES_MIGRATIONS,
            )
            .await?;
            tracing::info!("migrations applied");
        }
        Command::Budgets { action } => budgets(action, &env).await?,
        Command::All => {
            // Validate every setting before starting anything, so a typo fails fast.
            let (a, c, l, g) = (auth()?, conversations()?, llm()?, gateway()?);
            let auth = switchboard_auth::Application::build(a, &hub).await?;
            let llm = switchboard_llm_proxy::Application::build(l, &hub).await?;
            let conversations = switchboard_conversations::Application::build(c, &hub).await?;
            let gateway = switchboard_gateway::Application::build(g, &hub).await?;
            tracing::info!(port = gateway.port(), "switchboard is up: http://127.0.0.1:{}/healthz", gateway.port());
            let (a, l, c, g) = tokio::join!(
                auth.run_until_stopped(stopped()),
                llm.run_until_stopped(stopped()),
                conversations.run_until_stopped(stopped()),
                gateway.run_until_stopped(stopped()),
            );
            a?;
            l?;
            c?;
            g?;
        }
    }
    Ok(())
}

async fn budgets(action: BudgetAction, env: &Env) -> anyhow::Result<()> {
    use switchboard_llm_proxy::budgets::BudgetText;
    use switchboard_llm_proxy::ops;
    let settings = switchboard_llm_proxy::Settings::from_env(env)?;
    match action {
        BudgetAction::List { system_id } => print!("{}", ops::list_budgets(&settings, system_id.as_deref()).await?),
        BudgetAction::Set { scope, system_id, user_id, key_id, period, max_usd, max_tokens, warn_percent } => {
            let (user_id, key_id) = (user_id.unwrap_or_default(), key_id.unwrap_or_default());
            let args = BudgetText { scope, system_id, user_id, key_id, period, max_usd, max_tokens, warn_percent };
            println!("budget {} set", ops::set_budget(&settings, &args).await?);
        }
        BudgetAction::Delete { id } => {
            ops::delete_budget(&settings, &id).await?;
            println!("budget {id} deleted");
        }
    }
    Ok(())
}

async fn migrate(url: &str, var: &'static str, sqlite: &Migrator, postgres: &Migrator) -> anyhow::Result<()> {
    let db = switchboard_kit::db::Db::connect(url, var).await?;
    db.migrate(sqlite, postgres).await?;
    db.close().await;
    Ok(())
}
