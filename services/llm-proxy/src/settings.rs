//! Typed settings of the LLM proxy.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use switchboard_kit::auth::VerifierSettings;
use switchboard_kit::{ConfigError, Env};

/// Default listen (and connect) address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:50053";
/// Default OpenAI-compatible base URL.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// Settings of the LLM proxy.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `SWITCHBOARD_LLM_ADDR`.
    pub addr: SocketAddr,
    /// `LLM_DATABASE_URL`, else `DATABASE_URL`.
    pub database_url: String,
    /// Which variable the URL came from.
    pub database_var: &'static str,
    /// OpenAI-compatible upstream, when configured.
    pub openai: Option<OpenAiSettings>,
    /// `SWITCHBOARD_DEFAULT_MODEL`.
    pub default_model: Option<String>,
    /// `SWITCHBOARD_UPSTREAM_TIMEOUT_SECS`: whole-request timeout for upstream calls.
    pub upstream_timeout: Duration,
    /// `SWITCHBOARD_UPSTREAM_RETRIES`: retries of a failed upstream call (429, 5xx, connect).
    pub upstream_retries: u32,
    /// How callers' credentials are verified.
    pub verifier: VerifierSettings,
}

/// An OpenAI-compatible upstream (OpenAI, Ollama, vLLM, llama.cpp).
#[derive(Debug, Clone)]
pub struct OpenAiSettings {
    /// `OPENAI_BASE_URL`, without a trailing slash.
    pub base_url: String,
    /// `OPENAI_API_KEY`; optional for local servers such as Ollama.
    pub api_key: Option<SecretString>,
}

impl Settings {
    /// Reads the settings, naming the variable at fault on error.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let addr = env.socket_addr("SWITCHBOARD_LLM_ADDR", DEFAULT_ADDR)?;
        let (database_url, database_var) = env.database_url("LLM_DATABASE_URL");
        let api_key = env.secret("OPENAI_API_KEY");
        let base_url = env.get("OPENAI_BASE_URL");
        let openai = if api_key.is_some() || base_url.is_some() {
            let base_url = base_url.unwrap_or(DEFAULT_OPENAI_BASE_URL).trim_end_matches('/').to_owned();
            if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                return Err(ConfigError::invalid("OPENAI_BASE_URL", "must start with http:// or https://"));
            }
            Some(OpenAiSettings { base_url, api_key })
        } else {
            None
        };
        let timeout: u64 = env.parse_or("SWITCHBOARD_UPSTREAM_TIMEOUT_SECS", 120)?;
        if timeout == 0 {
            return Err(ConfigError::invalid("SWITCHBOARD_UPSTREAM_TIMEOUT_SECS", "must be at least 1"));
        }
        Ok(Self {
            addr,
            database_url,
            database_var,
            openai,
            default_model: env.get("SWITCHBOARD_DEFAULT_MODEL").map(str::to_owned),
            upstream_timeout: Duration::from_secs(timeout),
            upstream_retries: {
                let retries: u32 = env.parse_or("SWITCHBOARD_UPSTREAM_RETRIES", 2)?;
                if retries > 10 {
                    return Err(ConfigError::invalid("SWITCHBOARD_UPSTREAM_RETRIES", "must be at most 10"));
                }
                retries
            },
            verifier: VerifierSettings::from_env(env, "127.0.0.1:50051")?,
        })
    }
}
