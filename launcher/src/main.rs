//! `switchboard`: runs every component in one process (the default), or one component alone.

use clap::{Parser, Subcommand};
use switchboard_kit::db::Migrations;
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
    /// Check every component's settings without starting anything; exits non-zero naming the
    /// first variable that is wrong.
    CheckConfig,
    /// Issue, list, revoke or rotate API keys in the auth database (`AUTH_DATABASE_URL` or
    /// `DATABASE_URL`); revocations reach running replicas over Redis when `REDIS_URL` is set.
    Keys {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// List, set or delete budgets in the LLM proxy's database (`LLM_DATABASE_URL` or
    /// `DATABASE_URL`); running replicas pick changes up within 5 seconds.
    Budgets {
        #[command(subcommand)]
        action: BudgetAction,
    },
}

#[derive(Subcommand, Clone)]
enum KeyAction {
    /// Issue a key; its plaintext is printed once and only a digest is stored.
    Create {
        /// The tenant.
        #[arg(long, default_value = "default")]
        system_id: String,
        /// Who the key is for (shown in listings and logs).
        #[arg(long)]
        name: String,
        /// client (acts as itself) or service (acts for any user of its tenant).
        #[arg(long, default_value = "client")]
        scope: String,
        /// Lifetime in seconds; 0 for a key that does not expire.
        #[arg(long, default_value_t = 0)]
        ttl_seconds: i64,
    },
    /// Keys, newest first (never their secrets).
    List {
        /// Only this tenant's.
        #[arg(long)]
        system_id: Option<String>,
        /// Include revoked and expired keys.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a key by id.
    Revoke {
        /// The key's id.
        id: String,
    },
    /// Issue a successor; the old key keeps working for the overlap.
    Rotate {
        /// The key's id.
        id: String,
        /// Seconds the old key keeps working.
        #[arg(long, default_value_t = 0)]
        overlap_seconds: i64,
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
    let command = Cli::parse().command.unwrap_or(Command::All);
    let env = Env::from_process();
    // Components export traces (when an endpoint is set) as `switchboard-<component>`; the
    // operator's commands log to stderr, their stdout being their answer.
    let service = match command {
        Command::All => Some("switchboard"),
        Command::Gateway => Some("switchboard-gateway"),
        Command::Auth => Some("switchboard-auth"),
        Command::Conversations => Some("switchboard-conversations"),
        Command::LlmProxy => Some("switchboard-llm-proxy"),
        _ => None,
    };
    let (endpoint, logs) = match service {
        Some(_) => (env.get(telemetry::ENDPOINT_VAR), telemetry::Logs::Stdout),
        None => (None, telemetry::Logs::Stderr),
    };
    let telemetry = match telemetry::init(service.unwrap_or("switchboard"), endpoint, logs) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("switchboard: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = run(command, env).await;
    telemetry.shutdown().await;
    match outcome {
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
    // Read by every component's gRPC server as it starts: checked first, so a typo stops the
    // process before any component runs.
    if matches!(
        command,
        Command::All
            | Command::Auth
            | Command::Conversations
            | Command::LlmProxy
            | Command::Gateway
            | Command::CheckConfig
    ) {
        switchboard_kit::grpc::in_process_calls(&env)?;
    }
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
            migrate(&a.database_url, a.database_var, &switchboard_auth::MIGRATIONS).await?;
            migrate(&c.database_url, c.database_var, &switchboard_conversations::MIGRATIONS).await?;
            migrate(&l.database_url, l.database_var, &switchboard_llm_proxy::MIGRATIONS).await?;
            tracing::info!("migrations applied");
        }
        Command::Budgets { action } => budgets(action, &env).await?,
        Command::Keys { action } => keys(action, &env).await?,
        Command::CheckConfig => {
            let (a, c, l, g) = (auth()?, conversations()?, llm()?, gateway()?);
            println!("configuration OK");
            println!("  gateway        http {}", g.addr);
            println!("  auth           grpc {}  store {:?}", a.addr, a.database_url);
            println!("  conversations  grpc {}  store {:?}", c.addr, c.database_url);
            println!("  llm-proxy      grpc {}  store {:?}", l.addr, l.database_url);
            println!("  redis          {}", if a.redis.is_some() { "on" } else { "off (single replica only)" });
        }
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

async fn keys(action: KeyAction, env: &Env) -> anyhow::Result<()> {
    let operator = switchboard_auth::ops::Operator::open(switchboard_auth::Settings::from_env(env)?).await?;
    let issued = |verb: &str, issued: switchboard_auth::ops::IssuedKey| {
        println!("key {} {verb} for {:?}", issued.key.id, issued.key.client_name);
        println!("secret (shown once): {}", issued.secret);
    };
    let result = async {
        match action {
            KeyAction::Create { system_id, name, scope, ttl_seconds } => {
                issued("issued", operator.create_key(&system_id, &name, &scope, ttl_seconds).await?);
            }
            KeyAction::List { system_id, all } => print!("{}", operator.list_keys(system_id.as_deref(), all).await?),
            KeyAction::Revoke { id } => println!("key {} revoked", operator.revoke_key(&id).await?.id),
            KeyAction::Rotate { id, overlap_seconds } => {
                issued("issued as the successor", operator.rotate_key(&id, overlap_seconds).await?);
            }
        }
        anyhow::Ok(())
    }
    .await;
    operator.close().await;
    result
}

async fn migrate(url: &str, var: &'static str, migrations: &Migrations) -> anyhow::Result<()> {
    let db = switchboard_kit::db::Db::connect(url, var).await?;
    db.migrate(migrations).await?;
    db.close().await;
    Ok(())
}
