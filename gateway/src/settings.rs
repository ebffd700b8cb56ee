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
    /// `ALLOWED_CHAT_TOKEN_ORIGINS` (seed 003): the sites that may frame the chat page with
    /// `embed=1`, as `frame-ancestors` sources; `*` (any site) when unset, as seed 003 allows.
    pub chat_frame_ancestors: String,
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
            verifier: VerifierSettings::from_env(env, switchboard_kit::net::DEFAULT_AUTH_ADDR)?,
            conversations_addr: env
                .get_or("SWITCHBOARD_CONVERSATIONS_ADDR", switchboard_kit::net::DEFAULT_CONVERSATIONS_ADDR)
                .to_owned(),
            llm_addr: env.get_or("SWITCHBOARD_LLM_ADDR", switchboard_kit::net::DEFAULT_LLM_ADDR).to_owned(),
            body_limit,
            header_read_timeout: std::time::Duration::from_secs(header_read_timeout),
            request_timeout: std::time::Duration::from_secs(request_timeout),
            rate_limits: RateLimitSettings::from_env(env)?,
            cors_origins: origins(env, "SWITCHBOARD_CORS_ORIGINS")?,
            chat_frame_ancestors: chat_frame_ancestors(env)?,
        })
    }
}

/// `ALLOWED_CHAT_TOKEN_ORIGINS` as `frame-ancestors` sources (`*` when unset).
fn chat_frame_ancestors(env: &Env) -> Result<String, ConfigError> {
    let origins = origins(env, "ALLOWED_CHAT_TOKEN_ORIGINS")?;
    if origins.is_empty() {
        return Ok("*".to_owned());
    }
    Ok(origins.iter().filter_map(|o| o.to_str().ok()).collect::<Vec<_>>().join(" "))
}

/// Parses a list of comma-separated origins (`VAR`), each `http(s)://host[:port]` exactly as a
/// browser sends it in `Origin` (no path, no trailing slash, no wildcard).
fn origins(env: &Env, var: &'static str) -> Result<Vec<HeaderValue>, ConfigError> {
    env.list(var)
        .into_iter()
        .map(|origin| {
            let host = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"))
                .ok_or_else(|| ConfigError::invalid(var, format!("{origin:?} must start with https:// or http://")))?;
            let valid = !host.is_empty()
                && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
            if !valid {
                return Err(ConfigError::invalid(
                    var,
                    format!("{origin:?} is not an origin (scheme://host[:port], no path or wildcard)"),
                ));
            }
            HeaderValue::from_str(&origin).map_err(|e| ConfigError::invalid(var, e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins_are_off_by_default_and_must_be_origins() {
        let cors_origins = |env: &Env| origins(env, "SWITCHBOARD_CORS_ORIGINS");
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
    fn the_chat_page_may_be_framed_by_the_chat_token_origins_or_any_site_when_unset() {
        assert_eq!(chat_frame_ancestors(&Env::default()).unwrap(), "*");
        let env = Env::default().with("ALLOWED_CHAT_TOKEN_ORIGINS", "https://drillquiz.example,http://localhost:8080");
        assert_eq!(chat_frame_ancestors(&env).unwrap(), "https://drillquiz.example http://localhost:8080");
        // A source list that could close the directive and open another is refused at start.
        let env = Env::default().with("ALLOWED_CHAT_TOKEN_ORIGINS", "https://a.example; script-src *");
        let err = chat_frame_ancestors(&env).unwrap_err().to_string();
        assert!(err.contains("ALLOWED_CHAT_TOKEN_ORIGINS"), "{err}");
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let env = Env::default().with("REDIS_URL", "redis://:redis-password-0123@redis.internal:6379/0");
        let printed = format!("{:?}", Settings::from_env(&env).unwrap());
        assert!(!printed.contains("redis-password-0123"), "{printed}");
    }
}
