//! Typed settings of the auth service.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use switchboard_kit::db::DatabaseUrl;
use switchboard_kit::redis::RedisSettings;
use switchboard_kit::{ConfigError, Env};

/// Default listen address.
pub const DEFAULT_ADDR: &str = switchboard_kit::net::DEFAULT_AUTH_ADDR;
/// Shortest accepted JWT secret, in bytes.
pub const MIN_JWT_SECRET_BYTES: usize = 32;
/// Shortest accepted static key or admin token, in characters.
pub const MIN_STATIC_SECRET_CHARS: usize = 16;

/// Settings of the auth service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `SWITCHBOARD_AUTH_ADDR`.
    pub addr: SocketAddr,
    /// `SWITCHBOARD_AUTH_METRICS_ADDR`: where `/metrics` is served (HTTP); off unless set.
    pub metrics_addr: Option<SocketAddr>,
    /// `AUTH_DATABASE_URL`, else `DATABASE_URL` (printed without its password).
    pub database_url: DatabaseUrl,
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
    /// `SWITCHBOARD_PASSWORD_HASH_CONCURRENCY`: password hashes run at once, each holding
    /// 19 MiB while it runs; default the number of cores.
    pub password_hash_concurrency: usize,
    /// `SWITCHBOARD_PASSWORD_HASH_QUEUE`: sign-ins and sign-ups that may wait for a free
    /// hashing slot (default 16); more are refused with UNAVAILABLE and a retry hint, which
    /// the gateway answers as 503 with `Retry-After`.
    pub password_hash_queue: usize,
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
        let mut static_keys: Vec<SecretString> =
            env.list("CHAT_GATEWAY_API_KEY").into_iter().map(SecretString::from).collect();
        if static_keys.iter().any(|k| k.expose_secret().chars().count() < MIN_STATIC_SECRET_CHARS) {
            return Err(ConfigError::invalid(
                "CHAT_GATEWAY_API_KEY",
                format!("every key must be at least {MIN_STATIC_SECRET_CHARS} characters"),
            ));
        }
        // Seed 001's secret is one more static service key.
        if let Some(secret) = env.secret("API_SECRET_KEY") {
            if secret.expose_secret().chars().count() < MIN_STATIC_SECRET_CHARS {
                return Err(ConfigError::invalid(
                    "API_SECRET_KEY",
                    format!("must be at least {MIN_STATIC_SECRET_CHARS} characters"),
                ));
            }
            static_keys.push(secret);
        }
        let admin_token = env.secret("SWITCHBOARD_ADMIN_TOKEN");
        if admin_token.as_ref().is_some_and(|t| t.expose_secret().chars().count() < MIN_STATIC_SECRET_CHARS) {
            return Err(ConfigError::invalid(
                "SWITCHBOARD_ADMIN_TOKEN",
                format!("must be at least {MIN_STATIC_SECRET_CHARS} characters"),
            ));
        }
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let password_hash_concurrency: usize = env.parse_or("SWITCHBOARD_PASSWORD_HASH_CONCURRENCY", cores)?;
        if !(1..=1024).contains(&password_hash_concurrency) {
            return Err(ConfigError::invalid("SWITCHBOARD_PASSWORD_HASH_CONCURRENCY", "must be between 1 and 1024"));
        }
        let password_hash_queue: usize = env.parse_or("SWITCHBOARD_PASSWORD_HASH_QUEUE", 16)?;
        if password_hash_queue > 100_000 {
            return Err(ConfigError::invalid("SWITCHBOARD_PASSWORD_HASH_QUEUE", "must be at most 100000"));
        }
        let jwt_ttl: u64 = env.parse_or("SWITCHBOARD_JWT_TTL_SECS", 86_400)?;
        if !(60..=30 * 86_400).contains(&jwt_ttl) {
            return Err(ConfigError::invalid("SWITCHBOARD_JWT_TTL_SECS", "must be between 60 and 2592000 (30 days)"));
        }
        Ok(Self {
            addr,
            metrics_addr: switchboard_kit::metrics::addr_from_env(env, "SWITCHBOARD_AUTH_METRICS_ADDR", "off")?,
            database_url: database_url.into(),
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
            password_hash_concurrency,
            password_hash_queue,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_secret() {
        let secrets = [
            "db-password-0123",
            "redis-password-0123",
            "jwt-secret-0123456789abcdef0123456789",
            "static-service-key-0123",
            "admin-token-0123456789",
        ];
        let env = Env::from_pairs([
            ("DATABASE_URL", format!("postgres://switchboard:{}@db.internal:5432/switchboard", secrets[0])),
            ("REDIS_URL", format!("redis://:{}@redis.internal:6379/0", secrets[1])),
            ("CHAT_GATEWAY_JWT_SECRET", secrets[2].to_owned()),
            ("CHAT_GATEWAY_API_KEY", secrets[3].to_owned()),
            ("SWITCHBOARD_ADMIN_TOKEN", secrets[4].to_owned()),
        ]);
        let printed = format!("{:?}", Settings::from_env(&env).unwrap());
        for secret in secrets {
            assert!(!printed.contains(secret), "{secret} is printed: {printed}");
        }
        assert!(printed.contains("db.internal"), "the rest of the URL stays readable: {printed}");
    }
}
