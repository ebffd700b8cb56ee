//! Revocation fan-out. When a key or token is revoked, every replica's verification cache
//! must forget it within a second. In-process, a broadcast channel carries the news to every
//! component of the process; with Redis, revocations are published on a channel every
//! replica subscribes to, and forwarded to the same in-process channel.

use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;

use crate::redis::Redis;

/// What was revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// One credential, by its revocation id (key id or JWT `jti`).
    One(String),
    /// Anything may have been revoked (the Redis subscription was lost for a while).
    All,
}

fn local() -> &'static broadcast::Sender<Revocation> {
    static LOCAL: OnceLock<broadcast::Sender<Revocation>> = OnceLock::new();
    LOCAL.get_or_init(|| broadcast::channel(1024).0)
}

/// Listens for revocations in this process.
pub fn subscribe() -> broadcast::Receiver<Revocation> {
    local().subscribe()
}

/// Publishes and relays revocations.
#[derive(Debug, Clone)]
pub struct RevocationBus {
    redis: Option<Redis>,
}

impl RevocationBus {
    /// A bus; with Redis, also starts relaying the Redis channel into this process.
    pub fn new(redis: Option<Redis>) -> Self {
        if let Some(redis) = &redis {
            tokio::spawn(relay(redis.clone()));
        }
        Self { redis }
    }

    /// Announces a revocation to this process and, with Redis, to every replica.
    pub async fn publish(&self, id: &str) {
        let _ = local().send(Revocation::One(id.to_owned()));
        if let Some(redis) = &self.redis {
            let sent = async {
                let mut conn = redis.conn().await?;
                redis::cmd("PUBLISH").arg(redis.key("revocations")).arg(id).query_async::<i64>(&mut conn).await
            };
            if let Err(e) = sent.await {
                tracing::error!(error = %e, "cannot publish a revocation to Redis; other replicas learn of it when their cache entries expire");
            }
        }
    }
}

async fn relay(redis: Redis) {
    let channel = redis.key("revocations");
    let mut delay = Duration::from_millis(100);
    let mut connected_before = false;
    loop {
        match redis.client().get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    if connected_before {
                        // Revocations may have been missed while disconnected.
                        let _ = local().send(Revocation::All);
                    }
                    connected_before = true;
                    delay = Duration::from_millis(100);
                    tracing::debug!(%channel, "listening for revocations");
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        if let Ok(id) = msg.get_payload::<String>() {
                            let _ = local().send(Revocation::One(id));
                        }
                    }
                    tracing::warn!("revocation subscription lost; reconnecting");
                }
                Err(e) => tracing::warn!(error = %e, "cannot subscribe to revocations"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot connect to Redis for revocations"),
        }
        let _ = local().send(Revocation::All);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
