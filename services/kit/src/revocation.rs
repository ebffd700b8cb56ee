//! Revocation fan-out. When a key or token is revoked, every replica's verification cache
//! must forget it within a second. A [`Hub`] carries the news to every component it is given
//! to (the launcher gives one hub to all four); with Redis, revocations are also published on
//! a channel every replica subscribes to, and relayed into each replica's hub.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;

use crate::redis::Redis;

/// How long a revocation keeps trying to reach Redis before giving up on other replicas.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(2);

/// What was revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// One credential, by its revocation id (key id or JWT `jti`).
    One(String),
    /// Anything may have been revoked (the Redis subscription was lost for a while).
    All,
}

/// The components of one deployment unit that share revocation news: every component the
/// launcher starts in one process, or one component on its own.
#[derive(Debug, Clone)]
pub struct Hub {
    local: broadcast::Sender<Revocation>,
    relaying: Arc<OnceLock<()>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self { local: broadcast::channel(1024).0, relaying: Arc::new(OnceLock::new()) }
    }
}

impl Hub {
    /// Listens for revocations.
    pub fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.local.subscribe()
    }

    /// Relays the Redis revocation channel into this hub (once, however often it is asked).
    pub fn relay_from(&self, redis: &Redis) {
        if self.relaying.set(()).is_ok() {
            tokio::spawn(relay(redis.clone(), self.local.clone()));
        }
    }

    /// A bus that publishes into this hub and, with Redis, to every replica.
    pub fn bus(&self, redis: Option<Redis>) -> RevocationBus {
        if let Some(redis) = &redis {
            self.relay_from(redis);
        }
        RevocationBus { hub: self.clone(), redis }
    }
}

/// Publishes revocations.
#[derive(Debug, Clone)]
pub struct RevocationBus {
    hub: Hub,
    redis: Option<Redis>,
}

impl RevocationBus {
    /// Announces a revocation to this hub and, with Redis, to every replica.
    pub async fn publish(&self, id: &str) {
        let _ = self.hub.local.send(Revocation::One(id.to_owned()));
        let Some(redis) = &self.redis else { return };
        // Unlike a rate limit, a revocation has no in-process stand-in: it waits a little for
        // a connection being re-established rather than failing fast.
        let started = tokio::time::Instant::now();
        loop {
            let sent = async {
                let mut conn = redis.conn().await?;
                redis::cmd("PUBLISH").arg(redis.key("revocations")).arg(id).query_async::<i64>(&mut conn).await
            };
            match sent.await {
                Ok(_) => return,
                Err(e) if started.elapsed() >= PUBLISH_PATIENCE => {
                    tracing::error!(error = %e, "cannot publish a revocation to Redis; other replicas learn of it when their cache entries expire");
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

async fn relay(redis: Redis, local: broadcast::Sender<Revocation>) {
    let channel = redis.key("revocations");
    let mut delay = Duration::from_millis(100);
    let mut connected_before = false;
    loop {
        match redis.client().get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    if connected_before {
                        // Revocations may have been missed while disconnected.
                        let _ = local.send(Revocation::All);
                    }
                    connected_before = true;
                    delay = Duration::from_millis(100);
                    tracing::debug!(%channel, "listening for revocations");
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        if let Ok(id) = msg.get_payload::<String>() {
                            let _ = local.send(Revocation::One(id));
                        }
                    }
                    tracing::warn!("revocation subscription lost; reconnecting");
                }
                Err(e) => tracing::warn!(error = %e, "cannot subscribe to revocations"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot connect to Redis for revocations"),
        }
        let _ = local.send(Revocation::All);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
