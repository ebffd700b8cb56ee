//! A shared Redis connection (`REDIS_URL`), opened lazily and re-established by itself, with
//! short timeouts so a Redis outage degrades features instead of stalling requests.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use crate::{ConfigError, Env};

/// Redis settings.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `REDIS_URL` (may hold a password, so kept secret).
    pub url: SecretString,
    /// `SWITCHBOARD_REDIS_PREFIX`: prefix of every key and channel, so deployments can share
    /// one Redis.
    pub prefix: String,
}

impl RedisSettings {
    /// `None` when `REDIS_URL` is unset (in-process mode).
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let Some(url) = env.secret("REDIS_URL") else { return Ok(None) };
        if redis::Client::open(url.expose_secret()).is_err() {
            return Err(ConfigError::invalid("REDIS_URL", "is not a redis:// or rediss:// URL"));
        }
        let prefix = env.get_or("SWITCHBOARD_REDIS_PREFIX", "switchboard").to_owned();
        Ok(Some(Self { url, prefix }))
    }
}

/// A lazily connected Redis handle, cheap to clone.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    prefix: Arc<str>,
    manager: Arc<Mutex<Option<ConnectionManager>>>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl Redis {
    /// A handle for `settings`; nothing is connected yet.
    pub fn new(settings: &RedisSettings) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(settings.url.expose_secret())?,
            prefix: Arc::from(settings.prefix.as_str()),
            manager: Arc::new(Mutex::new(None)),
        })
    }

    /// `prefix:name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// The underlying client (for pub/sub connections).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// A multiplexed connection; the first call connects.
    pub async fn conn(&self) -> Result<ConnectionManager, redis::RedisError> {
        let mut guard = self.manager.lock().await;
        if let Some(manager) = guard.as_ref() {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1);
        let manager = self.client.get_connection_manager_with_config(config).await?;
        *guard = Some(manager.clone());
        Ok(manager)
    }
}
