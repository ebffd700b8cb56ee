//! Typed settings of the gateway.

use std::net::SocketAddr;

use axum::http::HeaderValue;
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
    /// `SWITCHBOARD_HEADER_READ_TIMEOUT_SECS`: how long a client may take to send a request's
    /// headers before the connection is closed (slow-header attacks), default 10.
    pub header_read_timeout: std::time::Duration,
    /// `SWITCHBOARD_REQUEST_TIMEOUT_SECS`: longest a request may take until its answer starts
    /// (body read included; a stream, once started, is not cut), default 330 (a turn may take
    /// 300).
    pub request_timeout: std::time::Duration,
    /// Rate-limit quotas.
    pub rate_limits: RateLimitSettings,
    /// `SWITCHBOARD_CORS_ORIGINS`: browser origins allowed to call the API cross-origin
    /// (`https://app.example.com`); empty, the default, sends no CORS headers at all.
    pub cors_origins: Vec<HeaderValue>,
}

impl Settings {
    /// Reads the settings, naming the variable at fault on error.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let addr = env.socket_addr("SWITCHBOARD_HTTP_ADDR", DEFAULT_HTTP_ADDR)?;
        let body_limit = env.parse_or("SWITCHBOARD_BODY_LIMIT_BYTES", DEFAULT_BODY_LIMIT)?;
        let header_read_timeout: u64 = env.parse_or("SWITCHBOARD_HEADER_READ_TIMEOUT_SECS", 10)?;
        let request_timeout: u64 = env.parse_or("SWITCHBOARD_REQUEST_TIMEOUT_SECS", 330)?;
        if !(1..=3600).contains(&request_timeout) {
            return Err(ConfigError::invalid("SWITCHBOARD_REQUEST_TIMEOUT_SECS", "must be between 1 and 3600"));
        }
        if !(1..=300).contains(&header_read_timeout) {
            return Err(ConfigError::invalid("SWITCHBOARD_HEADER_READ_TIMEOUT_SECS", "must be between 1 and 300"));
        }
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
            header_read_timeout: std::time::Duration::from_secs(header_read_timeout),
            request_timeout: std::time::Duration::from_secs(request_timeout),
            rate_limits: RateLimitSettings::from_env(env)?,
            cors_origins: cors_origins(env)?,
        })
    }
}

/// Parses `SWITCHBOARD_CORS_ORIGINS`: comma-separated origins, each `http(s)://host[:port]`
/// exactly as a browser sends it in `Origin` (no path, no trailing slash, no wildcard).
fn cors_origins(env: &Env) -> Result<Vec<HeaderValue>, ConfigError> {
    const VAR: &str = "SWITCHBOARD_CORS_ORIGINS";
    env.list(VAR)
        .into_iter()
        .map(|origin| {
            let host = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"))
                .ok_or_else(|| ConfigError::invalid(VAR, format!("{origin:?} must start with https:// or http://")))?;
            let valid = !host.is_empty()
                && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
            if !valid {
                return Err(ConfigError::invalid(
                    VAR,
                    format!("{origin:?} is not an origin (scheme://host[:port], no path or wildcard)"),
                ));
            }
            HeaderValue::from_str(&origin).map_err(|e| ConfigError::invalid(VAR, e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins_are_off_by_default_and_must_be_origins() {
        assert!(cors_origins(&Env::default()).unwrap().is_empty());
        let env = Env::default().with("SWITCHBOARD_CORS_ORIGINS", "https://app.example.com, http://localhost:3000");
        assert_eq!(cors_origins(&env).unwrap(), ["https://app.example.com", "http://localhost:3000"]);
        for bad in ["*", "app.example.com", "https://app.example.com/", "https://app.example.com/path"] {
            let env = Env::default().with("SWITCHBOARD_CORS_ORIGINS", bad);
            let err = cors_origins(&env).unwrap_err().to_string();
            assert!(err.contains("SWITCHBOARD_CORS_ORIGINS"), "{bad}: {err}");
        }
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let env = Env::default().with("REDIS_URL", "redis://:redis-password-0123@redis.internal:6379/0");
        let printed = format!("{:?}", Settings::from_env(&env).unwrap());
        assert!(!printed.contains("redis-password-0123"), "{printed}");
    }
}
