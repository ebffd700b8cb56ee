//! The shared Redis connection against a real Redis behind a proxy the test switches off and
//! on: callers fail fast while it is away, and it is used again once it is back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_kit::redis::{MAX_BACKOFF, Redis, RedisSettings};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The test Redis (`SWITCHBOARD_TEST_REDIS_URL`, default local) as `host:port`.
fn redis_addr() -> String {
    let url = std::env::var("SWITCHBOARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    host.split('/').next().unwrap().to_owned()
}

/// A TCP proxy to the test Redis that can be switched off: then it drops every connection it
/// carries and every new one.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    carried: Arc<Mutex<Vec<JoinHandle<()>>>>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(up: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, accepted) = (Arc::new(AtomicBool::new(up)), Arc::new(AtomicUsize::new(0)));
        let carried = Arc::new(Mutex::new(Vec::new()));
        let target = redis_addr();
        let task = tokio::spawn({
            let (up, accepted, carried) = (up.clone(), accepted.clone(), carried.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    if !up.load(Ordering::SeqCst) {
                        continue;
                    }
                    let target = target.clone();
                    carried.lock().unwrap().push(tokio::spawn(async move {
                        let mut server = TcpStream::connect(target).await.unwrap();
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }));
                }
            }
        });
        Self { port, up, accepted, carried, task }
    }

    fn switch(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            self.carried.lock().unwrap().drain(..).for_each(|t| t.abort());
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn redis(&self) -> Redis {
        let url = format!("redis://127.0.0.1:{}", self.port).into();
        Redis::new(&RedisSettings { url, prefix: "sbtest-kit".into() }).unwrap()
    }
}

async fn ping(redis: &Redis) -> Result<String, redis::RedisError> {
    let mut conn = redis.conn().await?;
    redis::cmd("PING").query_async::<String>(&mut conn).await
}

/// Calls [`ping`] until it answers, for at most twice the longest backoff.
async fn until_it_answers(redis: &Redis) -> Duration {
    let started = Instant::now();
    while ping(redis).await.is_err() {
        assert!(started.elapsed() < MAX_BACKOFF * 2, "Redis is back but still not used after {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn while_redis_is_away_callers_fail_fast_and_only_one_connect_is_tried_at_a_time() {
    let proxy = Proxy::start(false).await;
    let redis = proxy.redis();
    assert!(ping(&redis).await.is_err(), "the first caller waits for the connect, which fails");
    let accepted = proxy.accepted();
    assert_eq!(accepted, 1);
    let started = Instant::now();
    let results = futures::future::join_all((0..100).map(|_| ping(&redis))).await;
    assert!(results.iter().all(Result::is_err));
    assert!(started.elapsed() < Duration::from_millis(100), "{:?}", started.elapsed());
    assert!(proxy.accepted() <= accepted + 1, "at most one connect is in flight: {}", proxy.accepted());
    proxy.task.abort();
}

#[tokio::test]
async fn redis_is_used_again_once_it_comes_back_and_a_lost_connection_fails_fast() {
    let proxy = Proxy::start(true).await;
    let redis = proxy.redis();
    assert_eq!(ping(&redis).await.unwrap(), "PONG");
    // Redis goes away: the command on the open connection fails, and the callers after it
    // fail at once instead of waiting on a dead connection.
    proxy.switch(false);
    assert!(ping(&redis).await.is_err());
    let started = Instant::now();
    let results = futures::future::join_all((0..100).map(|_| ping(&redis))).await;
    assert!(results.iter().all(Result::is_err));
    assert!(started.elapsed() < Duration::from_millis(100), "{:?}", started.elapsed());
    // Back again: a background connect picks it up within the backoff.
    proxy.switch(true);
    let took = until_it_answers(&redis).await;
    assert!(took < MAX_BACKOFF, "{took:?}");
    proxy.task.abort();
}

#[tokio::test]
async fn a_revocation_published_just_after_the_connection_dropped_still_reaches_other_replicas() {
    use futures::StreamExt;
    let proxy = Proxy::start(true).await;
    let redis = proxy.redis();
    let bus = switchboard_kit::revocation::Hub::default().bus(Some(redis.clone()));
    assert_eq!(ping(&redis).await.unwrap(), "PONG");
    // Another replica, listening on Redis directly.
    let direct = redis::Client::open(format!("redis://{}", redis_addr())).unwrap();
    let mut replica = direct.get_async_pubsub().await.unwrap();
    replica.subscribe(redis.key("revocations")).await.unwrap();
    // Redis restarts: the publisher's connection is dead, and Redis is back at once.
    proxy.switch(false);
    proxy.switch(true);
    bus.publish("key_revoked_during_blip").await;
    let mut messages = replica.on_message();
    let received = tokio::time::timeout(Duration::from_secs(3), messages.next()).await.unwrap().unwrap();
    assert_eq!(received.get_payload::<String>().unwrap(), "key_revoked_during_blip");
    proxy.task.abort();
}

#[test]
fn a_rediss_url_is_accepted_for_managed_redis_with_tls() {
    let env = switchboard_kit::Env::from_pairs([("REDIS_URL", "rediss://user:secret@redis.example.com:6380/0")]);
    let settings = switchboard_kit::redis::RedisSettings::from_env(&env).unwrap().unwrap();
    if let Err(e) = switchboard_kit::redis::Redis::new(&settings) {
        panic!("rediss:// refused: {e}");
    }
}
