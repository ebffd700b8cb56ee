//! gRPC serving and client channels. Every server gets `grpc.health.v1` health and server
//! reflection (`v1` and `v1alpha`, with the health descriptors too), so `grpcurl` and
//! `buf curl` work against it with no `.proto` files, metrics of every call, and a span per
//! call continuing the caller's trace when traces are exported; every socket sets
//! `TCP_NODELAY`. A client channel to a DNS name spreads its calls over every address the
//! name resolves to, re-resolving as replicas come and go.
//!
//! When the caller and the server share a process (`switchboard` with no subcommand runs
//! every component in one), a channel to the server's loopback port calls it directly: the
//! same layers (credentials, metrics, traces), codec and handlers, with no socket, HTTP/2
//! framing or task hand-off between them. `SWITCHBOARD_GRPC_IN_PROCESS=off` sends such calls
//! over loopback TCP instead.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::channel::Change;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic_health::ServingStatus;
use tower::ServiceExt;
use tracing::Instrument as _;

/// Why a gRPC server stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not be built from the descriptor sets.
    #[error("building the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// `SWITCHBOARD_GRPC_IN_PROCESS` is neither on nor off.
    #[error(transparent)]
    Config(#[from] crate::env::ConfigError),
}

/// Whether calls between components of one process skip the network (`on`, the default).
pub const IN_PROCESS_VAR: &str = "SWITCHBOARD_GRPC_IN_PROCESS";

/// [`IN_PROCESS_VAR`]: whether this process's servers take calls from its own clients without
/// the network. Checked with the other settings before anything starts, and again by each
/// server as it starts.
pub fn in_process_calls(env: &crate::env::Env) -> Result<bool, crate::env::ConfigError> {
    env.flag(IN_PROCESS_VAR, true)
}

/// A server of this process as a service: its routes under the layers the network server adds.
type LocalServer = tower::util::BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    tower::BoxError,
>;

/// This process's gRPC servers reachable on loopback, by port, each with the number of its
/// registration (so a stopped server removes only its own entry).
static LOCAL: LazyLock<RwLock<HashMap<u16, (u64, LocalServer)>>> = LazyLock::new(Default::default);
static REGISTRATIONS: AtomicU64 = AtomicU64::new(0);

fn local_server(port: u16) -> Option<LocalServer> {
    LOCAL.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&port).map(|(_, server)| server.clone())
}

/// A server's entry in [`LOCAL`], removed when dropped (or by [`Registration::remove`]).
struct Registration(Option<(u16, u64)>);

impl Registration {
    /// Registers `server` under the port of `listener` when that is on loopback (or every
    /// address) and in-process calls are on.
    fn new(listener: &TcpListener, server: LocalServer) -> Result<Self, ServeError> {
        let on = in_process_calls(&crate::env::Env::from_process())?;
        let Some(addr) = listener.local_addr().ok().filter(|a| on && (a.ip().is_loopback() || a.ip().is_unspecified()))
        else {
            return Ok(Self(None));
        };
        let id = REGISTRATIONS.fetch_add(1, Ordering::Relaxed);
        LOCAL.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(addr.port(), (id, server));
        Ok(Self(Some((addr.port(), id))))
    }

    fn remove(registered: Option<(u16, u64)>) {
        let Some((port, id)) = registered else { return };
        let mut local = LOCAL.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if local.get(&port).is_some_and(|(current, _)| *current == id) {
            local.remove(&port);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        Self::remove(self.0.take());
    }
}

/// Serves `routes` on `listener` until `shutdown` resolves, with health reporting each of
/// `service_names` as SERVING (and NOT_SERVING once shutdown begins), every call counted in
/// `metrics`. With a `verifier`, every call but health and reflection must carry a valid
/// credential.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    service_names: &[&str],
    verifier: Option<crate::auth::Verifier>,
    metrics: crate::metrics::GrpcMetrics,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (mut reporter, health) = tonic_health::server::health_reporter();
    for name in service_names {
        reporter.set_service_status(*name, ServingStatus::Serving).await;
    }
    // Reflection advertises what this server serves, not every service of the descriptor set.
    let reflection = || {
        let builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(switchboard_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
            .include_reflection_service(false)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection");
        service_names.iter().fold(builder, |b, name| b.with_service_name(*name))
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let routes = routes.add_service(health).add_service(reflection_v1).add_service(reflection_v1alpha);

    // The same layers as the network server's below, for callers in this process.
    let local = tower::ServiceBuilder::new()
        .layer(crate::metrics::GrpcMetricsLayer(metrics.clone()))
        .layer(TraceLayer)
        .layer(crate::auth::GrpcAuthLayer::new(verifier.clone()))
        .service(routes.clone());
    let local =
        ServiceExt::<http::Request<tonic::body::Body>>::map_err(local, |never| -> tower::BoxError { match never {} });
    let registration = Registration::new(&listener, LocalServer::new(local))?;
    let registered = registration.0;

    let names: Vec<String> = service_names.iter().map(|s| (*s).to_owned()).collect();
    let shutdown = async move {
        shutdown.await;
        // New calls from this process go to the network, and are refused there, as others'.
        Registration::remove(registered);
        reporter.set_service_status("", ServingStatus::NotServing).await;
        for name in &names {
            reporter.set_service_status(name, ServingStatus::NotServing).await;
        }
        // A health `Watch` ends only when its status is dropped: one left open would keep the
        // drain, and the process, from ever finishing. Watchers still see NOT_SERVING first.
        reporter.clear_service_status("").await;
        for name in &names {
            reporter.clear_service_status(name).await;
        }
    };
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .tcp_nodelay(true)
        .layer(crate::metrics::GrpcMetricsLayer(metrics))
        .layer(TraceLayer)
        .layer(crate::auth::GrpcAuthLayer::new(verifier))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    drop(registration);
    Ok(())
}

/// A client channel to a Switchboard service; each call carries the caller's trace context
/// (when traces are exported). A call to a server of this process on loopback is made
/// in-process (see the module's documentation).
pub struct Channel {
    remote: tonic::transport::Channel,
    /// The loopback port of the server, when the address names one.
    loopback_port: Option<u16>,
    /// The in-process server `poll_ready` found for the next call.
    ready: Option<LocalServer>,
}

impl Channel {
    fn new(remote: tonic::transport::Channel, loopback_port: Option<u16>) -> Self {
        Self { remote, loopback_port, ready: None }
    }
}

impl Clone for Channel {
    fn clone(&self) -> Self {
        Self::new(self.remote.clone(), self.loopback_port)
    }
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("remote", &self.remote).field("loopback_port", &self.loopback_port).finish()
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tower::BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.ready = self.loopback_port.and_then(local_server);
        if self.ready.is_some() {
            return Poll::Ready(Ok(()));
        }
        self.remote.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        crate::telemetry::inject(request.headers_mut());
        let Some(mut server) = self.ready.take() else {
            return ResponseFuture::Remote(self.remote.call(request));
        };
        // The network server ends a call at its `grpc-timeout`; so does this one, alike.
        let deadline = request.headers().get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(timeout_of);
        let call = server.call(request);
        ResponseFuture::Local(match deadline.and_then(|t| tokio::time::Instant::now().checked_add(t)) {
            None => call,
            Some(at) => Box::pin(async move {
                match tokio::time::timeout_at(at, call).await {
                    Ok(answer) => answer,
                    Err(_) => Err(Box::new(tonic::TimeoutExpired(())) as tower::BoxError),
                }
            }),
        })
    }
}

/// A call's answer on a [`Channel`]: over the network or from a server of this process.
pub enum ResponseFuture {
    /// Over the network.
    Remote(tonic::transport::channel::ResponseFuture),
    /// In-process.
    Local(Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, tower::BoxError>> + Send>>),
}

impl Future for ResponseFuture {
    type Output = Result<http::Response<tonic::body::Body>, tower::BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Remote(remote) => Pin::new(remote).poll(cx).map_err(Into::into),
            Self::Local(local) => local.as_mut().poll(cx),
        }
    }
}

/// How often a channel to a DNS name looks the name up again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(5);

/// A lazily connecting client channel to `addr` (`host:port` or a URL), with `TCP_NODELAY`,
/// a connect timeout and HTTP/2 keep-alive. Connection happens on first use, so components
/// can start in any order.
///
/// An IP address (or `localhost`) is one connection. A DNS name, such as a Kubernetes
/// headless Service's, is looked up every [`RESOLVE_EVERY`] and the calls are spread over
/// every address it names (one HTTP/2 connection each), so added replicas take load at once
/// and removed ones are dropped.
pub fn channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    let uri = if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") };
    let endpoint = configure(Endpoint::from_shared(uri)?);
    let host = endpoint.uri().host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
    let ip = host.parse::<std::net::IpAddr>().ok();
    if ip.is_some() || host.eq_ignore_ascii_case("localhost") {
        let loopback = ip.is_none_or(|ip| ip.is_loopback());
        let port = endpoint.uri().port_u16().filter(|_| loopback);
        return Ok(Channel::new(endpoint.connect_lazy(), port));
    }
    let port = endpoint.uri().port_u16().unwrap_or(80);
    let name = format!("{host}:{port}");
    let resolve = move || {
        let name = name.clone();
        async move { tokio::net::lookup_host(name).await.map(|addrs| addrs.collect::<BTreeSet<_>>()) }
    };
    Ok(balanced(endpoint, resolve, RESOLVE_EVERY))
}

fn configure(endpoint: Endpoint) -> Endpoint {
    endpoint
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(3))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
}

/// A channel balancing over the addresses `resolve` returns, asked again every `every` until
/// the channel is dropped. A failed lookup keeps the addresses known so far.
fn balanced<R, F>(endpoint: Endpoint, resolve: R, every: Duration) -> Channel
where
    R: Fn() -> F + Send + 'static,
    F: Future<Output = std::io::Result<BTreeSet<SocketAddr>>> + Send,
{
    let (channel, changes) = tonic::transport::Channel::balance_channel::<SocketAddr>(64);
    let scheme = endpoint.uri().scheme_str().unwrap_or("http").to_owned();
    let name = endpoint.uri().authority().map(ToString::to_string).unwrap_or_default();
    tokio::spawn(async move {
        let mut known = BTreeSet::new();
        let mut failing = false;
        loop {
            match resolve().await {
                Ok(found) => {
                    failing = false;
                    for gone in known.difference(&found) {
                        if changes.send(Change::Remove(*gone)).await.is_err() {
                            return;
                        }
                    }
                    for new in found.difference(&known) {
                        let Ok(at) = Endpoint::from_shared(format!("{scheme}://{new}")) else { continue };
                        if changes.send(Change::Insert(*new, configure(at))).await.is_err() {
                            return;
                        }
                    }
                    if found != known {
                        tracing::info!(service = %name, addresses = ?found, "gRPC replicas");
                    }
                    known = found;
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(service = %name, error = %e, "cannot resolve a gRPC service; keeping its known replicas");
                }
                Err(_) => {}
            }
            tokio::time::sleep(every).await;
            if changes.is_closed() {
                return;
            }
        }
    });
    Channel::new(channel, None)
}

/// A span per served call, continuing the caller's trace (when traces are exported).
#[derive(Clone, Copy)]
struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Traced(inner)
    }
}

#[derive(Clone)]
struct Traced<S>(S);

impl<S, B> tower::Service<http::Request<B>> for Traced<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    // No allocation when traces are off: the call's own future, as it is.
    type Future = futures::future::Either<S::Future, tracing::instrument::Instrumented<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !crate::telemetry::exporting() {
            return futures::future::Either::Left(self.0.call(request));
        }
        let path = request.uri().path();
        let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or(("unknown", "unknown"));
        let span = tracing::info_span!(
            target: "switchboard::grpc",
            "grpc",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            trace_id = tracing::field::Empty,
        );
        crate::telemetry::continue_trace(&span, request.headers());
        futures::future::Either::Right(self.0.call(request).instrument(span))
    }
}

/// Metadata key naming the request field an `INVALID_ARGUMENT` status is about, so the
/// gateway can name it in a 422.
pub const FIELD_METADATA: &str = "sb-field";
/// Metadata key marking a status caused by the model upstream rather than by Switchboard:
/// `error` (the gateway answers 502) or `timeout` (504).
pub const UPSTREAM_METADATA: &str = "sb-upstream";
/// Metadata key carrying the HTTP status the model upstream answered with, when it failed
/// with one: what may be told to end users (its own words may not).
pub const UPSTREAM_STATUS_METADATA: &str = "sb-upstream-status";

/// Metadata key of a status for load that was shed: seconds to wait before retrying, which
/// the gateway answers as `Retry-After`.
pub const RETRY_AFTER_METADATA: &str = "sb-retry-after";

/// Metadata naming the budget that refused a call (RESOURCE_EXHAUSTED): the gateway answers
/// it as exhausted quota (OpenAI's `insufficient_quota`), not as a rate limit.
pub const BUDGET_METADATA: &str = "sb-budget";

/// `UNAVAILABLE` for a request shed under load, telling the caller when to retry.
pub fn shed(message: String, retry_after_secs: u64) -> tonic::Status {
    let mut status = tonic::Status::unavailable(message);
    if let Ok(value) = retry_after_secs.to_string().parse() {
        status.metadata_mut().insert(RETRY_AFTER_METADATA, value);
    }
    status
}

/// `INVALID_ARGUMENT` about one request field.
pub fn invalid_field(field: &'static str, message: String) -> tonic::Status {
    let mut status = tonic::Status::invalid_argument(message);
    status.metadata_mut().insert(FIELD_METADATA, tonic::metadata::MetadataValue::from_static(field));
    status
}

/// The deadline a caller set with `grpc-timeout`, as an instant, if any. A value the gRPC
/// spec does not allow (more than 8 digits) counts as none, as in tonic; so does one too far
/// away for the clock to represent.
pub fn deadline(metadata: &tonic::metadata::MetadataMap) -> Option<std::time::Instant> {
    let timeout = timeout_of(metadata.get("grpc-timeout")?.to_str().ok()?)?;
    std::time::Instant::now().checked_add(timeout)
}

/// A `grpc-timeout` value as a duration; `None` for one the gRPC spec does not allow.
fn timeout_of(raw: &str) -> Option<Duration> {
    let (amount, unit) = raw.split_at(raw.len().checked_sub(1)?);
    if amount.is_empty() || amount.len() > 8 {
        return None;
    }
    let amount: u64 = amount.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Passes what is left of `deadline` on to an outgoing call, keeping `margin` to record the
/// outcome before the caller gives up.
pub fn propagate<T>(request: &mut tonic::Request<T>, deadline: Option<std::time::Instant>, margin: Duration) {
    if let Some(deadline) = deadline {
        let left = deadline.saturating_duration_since(std::time::Instant::now()).saturating_sub(margin);
        request.set_timeout(left.max(Duration::from_millis(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_open_health_watch_sees_not_serving_and_does_not_hold_up_the_drain() {
        use tonic_health::pb::HealthCheckRequest;
        use tonic_health::pb::health_client::HealthClient;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics = crate::metrics::GrpcMetrics::default();
        let server = tokio::spawn(serve(listener, Routes::default(), &["test.Service"], None, metrics, async move {
            let _ = stopped.await;
        }));
        let mut health = HealthClient::new(channel(&format!("127.0.0.1:{port}")).unwrap());
        let request = HealthCheckRequest { service: "test.Service".into() };
        let mut watch = health.watch(request).await.unwrap().into_inner();
        assert_eq!(watch.message().await.unwrap().unwrap().status, ServingStatus::Serving as i32);
        stop.send(()).unwrap();
        assert_eq!(watch.message().await.unwrap().unwrap().status, ServingStatus::NotServing as i32);
        // The watch is still held here: the server must finish anyway.
        let finished = tokio::time::timeout(Duration::from_secs(5), server).await;
        assert!(matches!(finished, Ok(Ok(Ok(())))), "the drain waited on an open health watch: {finished:?}");
        drop(watch);
    }

    /// A health server on loopback counting its calls; stops when the sender is dropped.
    async fn counted_server() -> (SocketAddr, crate::metrics::Registry, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut registry = crate::metrics::registry();
        let metrics = crate::metrics::GrpcMetrics::register(&mut registry);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, Routes::default(), &["test.Service"], None, metrics, async move {
            let _ = stopped.await;
        }));
        (addr, registry, stop)
    }

    /// Health checks a server has answered, read from its `/metrics` text.
    fn checks(registry: &crate::metrics::Registry) -> u64 {
        crate::metrics::render(registry)
            .lines()
            .find(|l| {
                l.starts_with("switchboard_grpc_server_requests_total{")
                    && l.contains(r#"method="Check""#)
                    && l.contains(r#"code="OK""#)
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn a_balanced_channel_spreads_calls_over_every_resolved_replica_and_follows_changes() {
        use std::sync::{Arc, Mutex};
        use tonic_health::pb::HealthCheckRequest;
        use tonic_health::pb::health_client::HealthClient;
        let (a, a_metrics, _stop_a) = counted_server().await;
        let (b, b_metrics, _stop_b) = counted_server().await;
        let replicas = Arc::new(Mutex::new(BTreeSet::from([a, b])));
        let resolved = replicas.clone();
        let resolve = move || {
            let found = resolved.lock().unwrap().clone();
            async move { Ok(found) }
        };
        let endpoint = configure(Endpoint::from_static("http://switchboard-auth.test:50051"));
        let mut health = HealthClient::new(balanced(endpoint, resolve, Duration::from_millis(50)));
        for _ in 0..60 {
            let answer = health.check(HealthCheckRequest { service: String::new() }).await.unwrap();
            assert_eq!(answer.get_ref().status, ServingStatus::Serving as i32);
        }
        let (on_a, on_b) = (checks(&a_metrics), checks(&b_metrics));
        assert_eq!(on_a + on_b, 60, "every call counted once");
        assert!(on_a >= 10 && on_b >= 10, "calls spread over both replicas: {on_a} and {on_b}");

        // B goes away from the name: after the next lookup, calls reach A only.
        replicas.lock().unwrap().remove(&b);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before_b = checks(&b_metrics);
        for _ in 0..30 {
            health.check(HealthCheckRequest { service: String::new() }).await.unwrap();
        }
        assert_eq!(checks(&b_metrics), before_b, "a replica the name no longer resolves to gets no calls");
        assert_eq!(checks(&a_metrics), on_a + 30);
    }

    /// A service answering every call with a status naming how the call arrived: `tcp` when
    /// the network server's connection details are on it, `in-process` otherwise. `Slow`
    /// takes 300 ms first.
    #[derive(Clone)]
    struct Echo;

    impl tonic::server::NamedService for Echo {
        const NAME: &'static str = "test.Echo";
    }

    impl tower::Service<http::Request<tonic::body::Body>> for Echo {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
            let tcp = request.extensions().get::<tonic::transport::server::TcpConnectInfo>().is_some();
            let slow = request.uri().path().ends_with("/Slow");
            Box::pin(async move {
                if slow {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Ok(tonic::Status::not_found(if tcp { "tcp" } else { "in-process" }).into_http())
            })
        }
    }

    /// Calls `method` of [`Echo`] on `channel`, with `timeout` if any; the status it answers.
    async fn echo<C>(channel: C, method: &'static str, timeout: Option<Duration>) -> tonic::Status
    where
        C: tonic::client::GrpcService<tonic::body::Body>,
        C::Error: Into<tower::BoxError>,
        C::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        <C::ResponseBody as http_body::Body>::Error: Into<tower::BoxError> + Send,
    {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| tonic::Status::unknown(e.into().to_string())).unwrap();
        let mut request = tonic::Request::new(());
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        let path = http::uri::PathAndQuery::from_static(method);
        let answer: Result<tonic::Response<()>, _> =
            grpc.unary(request, path, tonic_prost::ProstCodec::<(), ()>::default()).await;
        answer.expect_err("Echo answers with a status")
    }

    #[tokio::test]
    async fn a_call_to_a_server_of_this_process_skips_the_network_until_it_stops() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut registry = crate::metrics::registry();
        let metrics = crate::metrics::GrpcMetrics::register(&mut registry);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let routes = Routes::new(Echo);
        let server = tokio::spawn(serve(listener, routes, &["test.Echo"], None, metrics, async move {
            let _ = stopped.await;
        }));
        // Until the server task has started, calls would go over TCP (and be answered there).
        while local_server(port).is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ours = channel(&format!("127.0.0.1:{port}")).unwrap();
        let theirs = Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect_lazy();
        assert_eq!(echo(ours.clone(), "/test.Echo/Call", None).await.message(), "in-process");
        assert_eq!(echo(theirs.clone(), "/test.Echo/Call", None).await.message(), "tcp", "a plain client uses TCP");
        let localhost = channel(&format!("localhost:{port}")).unwrap();
        assert_eq!(echo(localhost, "/test.Echo/Call", None).await.message(), "in-process");

        // The same layers as over the network: the call is counted.
        let mut health = tonic_health::pb::health_client::HealthClient::new(ours.clone());
        health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
        assert_eq!(checks(&registry), 1, "the in-process call passed the metrics layer");

        // A deadline ends the call as the network server would.
        let late = echo(ours.clone(), "/test.Echo/Slow", Some(Duration::from_millis(50))).await;
        let late_tcp = echo(theirs, "/test.Echo/Slow", Some(Duration::from_millis(50))).await;
        assert_eq!((late.code(), late.message()), (tonic::Code::Cancelled, "Timeout expired"));
        assert_eq!((late_tcp.code(), late_tcp.message()), (late.code(), late.message()));

        // Once the server stops, calls go to the network, where nobody answers.
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        assert!(local_server(port).is_none(), "a stopped server is no longer called in-process");
        assert_eq!(echo(ours, "/test.Echo/Call", None).await.code(), tonic::Code::Unavailable);
    }

    #[test]
    fn a_stopped_server_removes_only_its_own_registration() {
        let port = 1;
        let server = || {
            LocalServer::new(tower::service_fn(|_: http::Request<tonic::body::Body>| async {
                Ok::<_, tower::BoxError>(tonic::Status::ok("").into_http())
            }))
        };
        LOCAL.write().unwrap().insert(port, (u64::MAX, server()));
        Registration::remove(Some((port, 7)));
        assert!(local_server(port).is_some(), "another server's entry stays");
        Registration::remove(Some((port, u64::MAX)));
        assert!(local_server(port).is_none());
    }

    #[test]
    fn grpc_timeouts_become_deadlines() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        assert!(deadline(&metadata).is_none());
        metadata.insert("grpc-timeout", "1500m".parse().unwrap());
        let left = deadline(&metadata).unwrap().saturating_duration_since(std::time::Instant::now());
        assert!(left > Duration::from_millis(1400) && left <= Duration::from_millis(1500), "{left:?}");
        metadata.insert("grpc-timeout", "2Z".parse().unwrap());
        assert!(deadline(&metadata).is_none());
    }

    #[test]
    fn absurd_grpc_timeouts_do_not_panic() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("grpc-timeout", "99999999H".parse().unwrap());
        let left = deadline(&metadata).unwrap().saturating_duration_since(std::time::Instant::now());
        assert!(left > Duration::from_secs(99_999_998 * 3600), "{left:?}");
        for beyond_the_spec in ["9999999999999999999S", "18446744073709551615n", "123456789m", "H"] {
            metadata.insert("grpc-timeout", beyond_the_spec.parse().unwrap());
            assert!(deadline(&metadata).is_none(), "{beyond_the_spec}");
        }
    }
}
