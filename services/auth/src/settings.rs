//! Typed settings of the auth service.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use switchboard_kit::redis::RedisSettings;
use switchboard_kit::{ConfigError, Env};

/// Default listen address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:50051";
/// Shortest accepted JWT secret, in bytes.
pub const MIN_JWT_SECRET_BYTES: usize = 32;
/// Shortest accepted static key or admin token, in characters.
pub const MIN_STATIC_SECRET_CHARS: usize = 16;

/// Settings of the auth service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `SWITCHBOARD_AUTH_ADDR`.
    pub addr: SocketAddr,
    /// `AUTH_DATABASE_URL`, else `DATABASE_URL`.
    pub database_url: String,
    /// Which variable the URL came from.
    pub database_var: &'static str,
    /// `CHAT_GATEWAY_API_KEY`: static service keys (comma-separated).
    pub static_keys: Vec<SecretString>,
    /// `CHAT_GATEWAY_JWT_SECRET`: HS256 secret; JWTs are refused when unset.
    pub jwt_secret: Option<SecretString>,
    /// `SWITCHBOARD_JWT_TTL_SECS`: lifetime of login tokens.
    pub jwt_ttl: Duration,
    /// `ALLOWED_SYSTEM_IDS`: tenants allowed; empty for all.
    pub allowed_system_ids: Vec<String>,
    /// `ALLOWED_CHAT_TOKEN_ORIGINS`: origins allowed to get chat tokens; empty for all.
    pub allowed_chat_token_origins: Vec<String>,
    /// `SWITCHBOARD_REGISTRATION_SYSTEMS`: tenants where anyone may sign up with a password
    /// (default `default` only).
    pub registration_systems: Vec<String>,
    /// `SWITCHBOARD_ADMIN_TOKEN`: guards key management; admin calls are refused when unset.
    pub admin_token: Option<SecretString>,
    /// `SWITCHBOARD_OPEN_KEY_REGISTRATION`: anyone may create a client key (seed 000).
    pub open_key_registration: bool,
    /// `REDIS_URL`: revocations are published there for every replica.
    pub redis: Option<RedisSettings>,
}

impl Settings {
    /// Reads the settings, naming the variable at fault on error.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let addr = env.socket_addr("SWITCHBOARD_AUTH_ADDR", DEFAULT_ADDR)?;
        let (database_url, database_var) = env.database_url("AUTH_DATABASE_URL");
        let jwt_secret = env.secret("CHAT_GATEWAY_JWT_SECRET");
        if let Some(secret) = &jwt_secret
            && secret.expose_secret().len() < MIN_JWT_SECRET_BYTES
        {
            return Err(ConfigError::invalid(
                "CHAT_GATEWAY_JWT_SECRET",
                format!("must be at least {MIN_JWT_SECRET_BYTES} bytes (try `openssl rand -hex 32`)"),
            ));
        }
        let static_keys: Vec<SecretString> =
            env.list("CHAT_GATEWAY_API_KEY").into_iter().map(SecretString::from).collect();
        if static_keys.iter().any(|k| k.expose_secret().chars().count() < MIN_STATIC_SECRET_CHARS) {
            return Err(ConfigError::invalid(
                "CHAT_GATEWAY_API_KEY",
                format!("every key must be at least {MIN_STATIC_SECRET_CHARS} characters"),
            ));
        }
        let admin_token = env.secret("SWITCHBOARD_ADMIN_TOKEN");
        if admin_token.as_ref().is_some_and(|t| t.expose_secret().chars().count() < MIN_STATIC_SECRET_CHARS) {
            return Err(ConfigError::invalid(
                "SWITCHBOARD_ADMIN_TOKEN",
                format!("must be at least {MIN_STATIC_SECRET_CHARS} characters"),
            ));
        }
        let jwt_ttl: u64 = env.parse_or("SWITCHBOARD_JWT_TTL_SECS", 86_400)?;
        if !(60..=30 * 86_400).contains(&jwt_ttl) {
            return Err(ConfigError::invalid("SWITCHBOARD_JWT_TTL_SECS", "must be between 60 and 2592000 (30 days)"));
        }
        Ok(Self {
            addr,
            database_url,
            database_var,
            static_keys,
            jwt_secret,
            jwt_ttl: Duration::from_secs(jwt_ttl),
            allowed_system_ids: env.list("ALLOWED_SYSTEM_IDS"),
            allowed_chat_token_origins: env.list("ALLOWED_CHAT_TOKEN_ORIGINS"),
            registration_systems: match env.get("SWITCHBOARD_REGISTRATION_SYSTEMS") {
                Some(_) => env.list("SWITCHBOARD_REGISTRATION_SYSTEMS"),
                None => vec!["default".to_owned()],
            },
            admin_token,
            open_key_registration: env.flag("SWITCHBOARD_OPEN_KEY_REGISTRATION", false)?,
            redis: RedisSettings::from_env(env)?,
        })
    }
}
