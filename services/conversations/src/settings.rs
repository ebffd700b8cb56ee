//! Typed settings of the conversation service.

use std::net::SocketAddr;

use switchboard_kit::auth::VerifierSettings;
use switchboard_kit::{ConfigError, Env};

/// Default listen address.
pub const DEFAULT_ADDR: &str = switchboard_kit::net::DEFAULT_CONVERSATIONS_ADDR;
/// Default address of the LLM proxy.
pub const DEFAULT_LLM_ADDR: &str = switchboard_kit::net::DEFAULT_LLM_ADDR;
/// Default address of the auth service.
pub const DEFAULT_AUTH_ADDR: &str = switchboard_kit::net::DEFAULT_AUTH_ADDR;

/// Default of `SWITCHBOARD_TURN_QUEUE_LIMIT`: at a saturated store's pace (a few hundred turns
/// a second on SQLite) a full queue is well under a second's wait, and its memory a few MB.
pub const DEFAULT_TURN_QUEUE_LIMIT: usize = 256;

/// Settings of the conversation service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `SWITCHBOARD_CONVERSATIONS_ADDR`.
    pub addr: SocketAddr,
    /// `SWITCHBOARD_CONVERSATIONS_METRICS_ADDR`: where `/metrics` is served (HTTP); off unless set.
    pub metrics_addr: Option<SocketAddr>,
    /// `CONVERSATIONS_DATABASE_URL`, else `DATABASE_URL`.
    pub database_url: switchboard_kit::db::DatabaseUrl,
    /// Which variable the URL came from.
    pub database_var: &'static str,
    /// `SWITCHBOARD_LLM_ADDR`: where the LLM proxy listens.
    pub llm_addr: String,
    /// `SWITCHBOARD_HISTORY_MESSAGES`: prior messages sent upstream with a turn.
    pub history_messages: u32,
    /// `SWITCHBOARD_TURN_QUEUE_LIMIT`: turns that may wait on the store at once to store their
    /// user message; more are refused with `UNAVAILABLE` and a retry-after of one second.
    pub turn_queue_limit: usize,
    /// `SWITCHBOARD_TURN_TIMEOUT_SECS`: an answer still `in_progress` after this long was
    /// left by a crash, and the sweeper closes it.
    pub stale_turn: std::time::Duration,
    /// How callers' credentials are verified.
    pub verifier: VerifierSettings,
}

impl Settings {
    /// Reads the settings, naming the variable at fault on error.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let addr = env.socket_addr("SWITCHBOARD_CONVERSATIONS_ADDR", DEFAULT_ADDR)?;
        let (database_url, database_var) = env.database_url("CONVERSATIONS_DATABASE_URL");
        let history_messages = env.parse_or("SWITCHBOARD_HISTORY_MESSAGES", 50)?;
        if history_messages == 0 || history_messages > 1000 {
            return Err(ConfigError::invalid("SWITCHBOARD_HISTORY_MESSAGES", "must be between 1 and 1000"));
        }
        let turn_queue_limit = env.parse_or("SWITCHBOARD_TURN_QUEUE_LIMIT", DEFAULT_TURN_QUEUE_LIMIT)?;
        if !(1..=65_536).contains(&turn_queue_limit) {
            return Err(ConfigError::invalid("SWITCHBOARD_TURN_QUEUE_LIMIT", "must be between 1 and 65536"));
        }
        Ok(Self {
            addr,
            metrics_addr: switchboard_kit::metrics::addr_from_env(
                env,
                "SWITCHBOARD_CONVERSATIONS_METRICS_ADDR",
                "off",
            )?,
            database_url: database_url.into(),
            database_var,
            llm_addr: env.get_or("SWITCHBOARD_LLM_ADDR", DEFAULT_LLM_ADDR).to_owned(),
            history_messages,
            turn_queue_limit,
            stale_turn: std::time::Duration::from_secs(env.parse_or("SWITCHBOARD_TURN_TIMEOUT_SECS", 600)?),
            verifier: VerifierSettings::from_env(env, DEFAULT_AUTH_ADDR)?,
        })
    }
}
