//! A shared Redis connection (`REDIS_URL`), opened lazily and re-established by itself, with
//! short timeouts so a Redis outage degrades features instead of stalling requests.
//!
//! No lock is ever held across a connect: at most one connect is in flight, callers that find
//! no live connection fail at once (so their in-process fallback answers), and after a failure
//! the next attempt waits for a backoff that doubles up to [`MAX_BACKOFF`]. A command that
//! fails because the connection is gone or too slow drops it, so later callers fail fast too.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value};
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use crate::{ConfigError, Env};

/// How long one connect, and one command, may take.
const TIMEOUT: Duration = Duration::from_millis(500);
/// Wait after the first failed connect before the next attempt.
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between attempts while Redis stays away.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

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

/// A lazily connected Redis handle, cheap to clone (one pointer).
#[derive(Clone)]
pub struct Redis {
    shared: Arc<Shared>,
}

struct Shared {
    client: redis::Client,
    prefix: String,
    link: Arc<Mutex<Link>>,
}

/// The state of the shared connection. Guarded by a plain mutex, held only to read or
/// update it, never across an await.
#[derive(Default)]
struct Link {
    /// The live connection and its generation.
    live: Option<(u64, MultiplexedConnection)>,
    /// Counts connections made, so a failure on an old one does not drop a newer one.
    generation: u64,
    /// Whether a connect is in flight.
    connecting: bool,
    /// Whether a connect was ever attempted: only the first caller waits for one.
    attempted: bool,
    /// No connect before this instant.
    retry_at: Option<Instant>,
    /// The wait after the next failure.
    backoff: Duration,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("prefix", &self.shared.prefix).finish_non_exhaustive()
    }
}

fn unavailable() -> RedisError {
    RedisError::from((ErrorKind::Io, "Redis is unreachable; reconnecting in the background"))
}

impl Redis {
    /// A handle for `settings`; nothing is connected yet.
    pub fn new(settings: &RedisSettings) -> Result<Self, RedisError> {
        let shared = Shared {
            client: redis::Client::open(settings.url.expose_secret())?,
            prefix: settings.prefix.clone(),
            link: Arc::new(Mutex::new(Link { backoff: MIN_BACKOFF, ..Link::default() })),
        };
        Ok(Self { shared: Arc::new(shared) })
    }

    /// `prefix:name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.shared.prefix)
    }

    /// The underlying client (for pub/sub connections).
    pub fn client(&self) -> &redis::Client {
        &self.shared.client
    }

    /// A multiplexed connection, or an error at once when there is none: the very first call
    /// waits for the connect (at most a second); every later connect runs in the background
    /// while callers fail fast.
    pub async fn conn(&self) -> Result<Conn, RedisError> {
        let (attempt, wait) = {
            let mut link = self.shared.link.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((generation, conn)) = &link.live {
                return Ok(Conn { inner: conn.clone(), generation: *generation, link: self.shared.link.clone() });
            }
            if link.connecting || link.retry_at.is_some_and(|at| Instant::now() < at) {
                return Err(unavailable());
            }
            let wait = !link.attempted;
            link.connecting = true;
            link.attempted = true;
            // Spawned so that a caller giving up does not leave `connecting` set.
            (tokio::spawn(connect(self.shared.client.clone(), self.shared.link.clone())), wait)
        };
        if !wait {
            return Err(unavailable());
        }
        match attempt.await {
            Ok(result) => result,
            Err(e) => Err(RedisError::from((ErrorKind::Io, "Redis connect task failed", e.to_string()))),
        }
    }
}

/// One connect attempt; records its outcome in `link`.
async fn connect(client: redis::Client, link: Arc<Mutex<Link>>) -> Result<Conn, RedisError> {
    let config = AsyncConnectionConfig::new().set_connection_timeout(Some(TIMEOUT)).set_response_timeout(Some(TIMEOUT));
    // The connection timeout covers the TCP connect; this one also covers the handshake.
    let result =
        match tokio::time::timeout(TIMEOUT * 2, client.get_multiplexed_async_connection_with_config(&config)).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::from((ErrorKind::Io, "Redis connect timed out"))),
        };
    let mut state = link.lock().unwrap_or_else(PoisonError::into_inner);
    state.connecting = false;
    match result {
        Ok(conn) => {
            state.generation += 1;
            state.live = Some((state.generation, conn.clone()));
            // The backoff is reset by the first command that succeeds, not by the connect: a
            // Redis that accepts connections but never answers must not be retried at once.
            state.retry_at = None;
            tracing::info!("connected to Redis");
            Ok(Conn { inner: conn, generation: state.generation, link: link.clone() })
        }
        Err(e) => {
            tracing::warn!(error = %e, retry_in = ?state.backoff, "cannot connect to Redis");
            state.retry_at = Some(Instant::now() + state.backoff);
            state.backoff = (state.backoff * 2).min(MAX_BACKOFF);
            Err(e)
        }
    }
}

/// A connection from [`Redis::conn`]. A command failing because the connection is gone or
/// timed out drops the shared connection, so that the next callers fail fast while it is
/// re-established in the background.
#[derive(Clone)]
pub struct Conn {
    inner: MultiplexedConnection,
    generation: u64,
    link: Arc<Mutex<Link>>,
}

impl Conn {
    fn observe<T>(&self, result: &Result<T, RedisError>) {
        let Err(e) = result else {
            let mut link = self.link.lock().unwrap_or_else(PoisonError::into_inner);
            link.backoff = MIN_BACKOFF;
            return;
        };
        if !(e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error()) {
            return;
        }
        let mut link = self.link.lock().unwrap_or_else(PoisonError::into_inner);
        if link.live.as_ref().is_some_and(|(generation, _)| *generation == self.generation) {
            tracing::warn!(error = %e, "Redis connection lost");
            link.live = None;
            link.retry_at = Some(Instant::now() + link.backoff);
            link.backoff = (link.backoff * 2).min(MAX_BACKOFF);
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.inner.req_packed_command(cmd).await;
            self.observe(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self.inner.req_packed_commands(pipeline, offset, count).await;
            self.observe(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}
