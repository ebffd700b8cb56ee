//! Typed settings of the gateway.

use std::net::SocketAddr;

use switchboard_kit::auth::VerifierSettings;

use crate::ratelimit::RateLimitSettings;
use switchboard_kit::{ConfigError, Env};

/// Default HTTP listen address.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// Default request body limit.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Settings of the gateway.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `SWITCHBOARD_HTTP_ADDR`.
    pub addr: SocketAddr,
    /// `SWITCHBOARD_AUTH_ADDR` (where the auth service listens), Redis and the cache TTL.
    pub verifier: VerifierSettings,
    /// `SWITCHBOARD_CONVERSATIONS_ADDR`: where the conversation service listens.
    pub conversations_addr: String,
    /// `SWITCHBOARD_LLM_ADDR`: where the LLM proxy listens.
    pub llm_addr: String,
    /// `SWITCHBOARD_BODY_LIMIT_BYTES`: largest accepted request body.
    pub body_limit: usize,
    /// Rate-limit quotas.
    pub rate_limits: RateLimitSettings,
}

impl Settings {
    /// Reads the settings, naming the variable at fault on error.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let addr = env.socket_addr("SWITCHBOARD_HTTP_ADDR", DEFAULT_HTTP_ADDR)?;
        let body_limit = env.parse_or("SWITCHBOARD_BODY_LIMIT_BYTES", DEFAULT_BODY_LIMIT)?;
        if body_limit < 1024 {
            return Err(ConfigError::invalid("SWITCHBOARD_BODY_LIMIT_BYTES", "must be at least 1024"));
        }
        Ok(Self {
            addr,
            verifier: VerifierSettings::from_env(env, switchboard_auth::settings_default_addr())?,
            conversations_addr: env
                .get_or("SWITCHBOARD_CONVERSATIONS_ADDR", switchboard_conversations::settings_default_addr())
                .to_owned(),
            llm_addr: env.get_or("SWITCHBOARD_LLM_ADDR", switchboard_llm_proxy::settings_default_addr()).to_owned(),
            body_limit,
            rate_limits: RateLimitSettings::from_env(env)?,
        })
    }
}
