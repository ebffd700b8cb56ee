//! Typed settings of the auth service.

use std::net::SocketAddr;

use secrecy::{ExposeSecret, SecretString};
use switchboard_kit::{ConfigError, Env};

/// Default listen address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:50051";
/// Shortest accepted JWT secret, in bytes.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

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
    /// `ALLOWED_SYSTEM_IDS`: tenants allowed; empty for all.
    pub allowed_system_ids: Vec<String>,
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
        if static_keys.iter().any(|k| k.expose_secret().len() < 16) {
            return Err(ConfigError::invalid("CHAT_GATEWAY_API_KEY", "every key must be at least 16 characters"));
        }
        Ok(Self {
            addr,
            database_url,
            database_var,
            static_keys,
            jwt_secret,
            allowed_system_ids: env.list("ALLOWED_SYSTEM_IDS"),
        })
    }
}
