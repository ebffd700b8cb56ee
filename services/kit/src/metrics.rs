//! Prometheus metrics every component shares: a registry served as `/metrics` on a port of
//! its own (the services) or beside the API (the gateway), gRPC calls served by RPC and
//! status, and cache lookups. Every label value comes from a closed set, so a client cannot
//! grow the series: RPCs this build does not define are counted as `unknown`.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::Frame;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
pub use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Latency buckets in seconds, from half a millisecond (an in-memory call) to two minutes (a
/// long streamed answer).
pub const LATENCY_BUCKETS: [f64; 17] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// A registry whose series are all named `switchboard_…`.
pub fn registry() -> Registry {
    Registry::with_prefix("switchboard")
}

/// A histogram family with [`LATENCY_BUCKETS`].
pub fn latency_family<L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static>()
-> Family<L, Histogram> {
    Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS))
}

/// The registry in the OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    out
}

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` from `registry` on `listener` until the task is aborted; every other
/// path is 404. Plain HTTP/1.1, for a scraper on the pod network.
async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let service = move |request: http::Request<hyper::body::Incoming>| {
        let registry = registry.clone();
        async move {
            if request.uri().path() == "/metrics" && request.method() == http::Method::GET {
                http::Response::builder()
                    .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
                    .body(http_body_util::Full::new(Bytes::from(render(&registry))))
            } else {
                http::Response::builder()
                    .status(http::StatusCode::NOT_FOUND)
                    .body(http_body_util::Full::new(Bytes::from_static(b"not found: metrics are at /metrics\n")))
            }
        }
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let service = service.clone();
        tokio::spawn(async move {
            let connection =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(service));
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

/// Binds a service's metrics listener, unless `addr` is `None` (metrics off).
pub async fn bind(addr: Option<SocketAddr>, var: &'static str) -> Result<Option<TcpListener>, crate::net::BindError> {
    match addr {
        Some(addr) => {
            let (listener, local) = crate::net::bind(addr, var).await?;
            tracing::info!(addr = %local, "metrics at http://{local}/metrics");
            Ok(Some(listener))
        }
        None => Ok(None),
    }
}

/// A service's metrics: its registry, its gRPC families, and the listener that serves them
/// (none when metrics are off).
pub struct Served {
    registry: Registry,
    grpc: GrpcMetrics,
    listener: Option<TcpListener>,
}

impl Served {
    /// Binds `addr` (from variable `var`), when given, to serve `registry`, in which `grpc`
    /// is registered.
    pub async fn bind(
        registry: Registry,
        grpc: GrpcMetrics,
        addr: Option<SocketAddr>,
        var: &'static str,
    ) -> Result<Self, crate::net::BindError> {
        Ok(Self { registry, grpc, listener: bind(addr, var).await? })
    }

    /// The port `/metrics` is served on, when it is.
    pub fn port(&self) -> Option<u16> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.port())
    }

    /// Starts serving `/metrics`; returns the families the gRPC server records into.
    pub fn start(self) -> (GrpcMetrics, Serving) {
        let registry = Arc::new(self.registry);
        let task = self.listener.map(|l| tokio::spawn(serve(l, registry)));
        (self.grpc, Serving(task))
    }
}

/// `/metrics` being served, until [`Serving::stop`].
pub struct Serving(Option<tokio::task::JoinHandle<()>>);

impl Serving {
    /// Stops serving.
    pub fn stop(self) {
        if let Some(task) = self.0 {
            task.abort();
        }
    }
}

/// Reads a metrics address: `off` turns metrics off.
pub fn addr_from_env(
    env: &crate::Env,
    var: &'static str,
    default: &str,
) -> Result<Option<SocketAddr>, crate::ConfigError> {
    if env.get_or(var, default).eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    env.socket_addr(var, default).map(Some)
}

/// Labels of a cache lookup.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
    result: &'static str,
}

/// Hits and misses of one named cache.
#[derive(Clone, Debug, Default)]
pub struct CacheLookups {
    hit: Counter,
    miss: Counter,
}

impl CacheLookups {
    /// The lookups of cache `name`, counted in `registry` as `switchboard_cache_lookups_total`.
    /// Several caches may share the family: register it once with [`CacheFamily`].
    pub fn of(family: &CacheFamily, name: &'static str) -> Self {
        // One statement each: a family's guard held across a second insertion would deadlock.
        let hit = family.0.get_or_create(&CacheLabels { cache: name, result: "hit" }).clone();
        let miss = family.0.get_or_create(&CacheLabels { cache: name, result: "miss" }).clone();
        Self { hit, miss }
    }

    /// Counts one lookup.
    pub fn record(&self, hit: bool) {
        if hit {
            self.hit.inc()
        } else {
            self.miss.inc()
        };
    }
}

/// `switchboard_cache_lookups_total{cache, result}` of one registry.
#[derive(Clone, Debug, Default)]
pub struct CacheFamily(Family<CacheLabels, Counter>);

impl CacheFamily {
    /// The family, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let family = Self::default();
        registry.register("cache_lookups", "Cache lookups, by cache and hit or miss", family.0.clone());
        family
    }
}

/// Labels of a served gRPC call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    service: &'static str,
    method: &'static str,
}

/// [`RpcLabels`] and the call's gRPC status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcStatusLabels {
    service: &'static str,
    method: &'static str,
    code: &'static str,
}

/// gRPC calls served: `switchboard_grpc_server_requests_total{service, method, code}` and
/// `switchboard_grpc_server_duration_seconds{service, method}` (to the end of the answer,
/// stream included).
#[derive(Clone, Debug)]
pub struct GrpcMetrics {
    requests: Family<RpcStatusLabels, Counter>,
    duration: Family<RpcLabels, Histogram>,
}

impl Default for GrpcMetrics {
    /// Families in no registry.
    fn default() -> Self {
        Self { requests: Family::default(), duration: latency_family() }
    }
}

impl GrpcMetrics {
    /// The families, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register("grpc_server_requests", "gRPC calls served, by RPC and status", metrics.requests.clone());
        registry.register(
            "grpc_server_duration_seconds",
            "Time to serve a gRPC call to the end of its answer, by RPC",
            metrics.duration.clone(),
        );
        metrics
    }

    fn record(&self, (service, method): Rpc, code: &'static str, elapsed: std::time::Duration) {
        self.duration.get_or_create(&RpcLabels { service, method }).observe(elapsed.as_secs_f64());
        self.requests.get_or_create(&RpcStatusLabels { service, method, code }).inc();
    }
}

/// `(service, method)` of a served call.
type Rpc = (&'static str, &'static str);

/// Every RPC this build defines, by path (`/package.Service/Method`), with health and
/// reflection. A closed set, so its names are kept for the life of the process.
static KNOWN_RPCS: LazyLock<HashMap<String, Rpc>> = LazyLock::new(|| {
    use prost::Message as _;
    let mut known = HashMap::new();
    for set in [
        switchboard_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ] {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else { continue };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let service_name = format!("{package}.{}", service.name.unwrap_or_default());
                let service_label: &'static str = Box::leak(service_name.clone().into_boxed_str());
                for method in service.method {
                    let method = method.name.unwrap_or_default();
                    let path = format!("/{service_name}/{method}");
                    known.insert(path, (service_label, &*Box::leak(method.into_boxed_str())));
                }
            }
        }
    }
    known
});

/// `(service, method)` of a request path, or `("unknown", "unknown")` for one this build
/// does not define.
fn rpc_of(path: &str) -> Rpc {
    KNOWN_RPCS.get(path).copied().unwrap_or(("unknown", "unknown"))
}

/// The name of a gRPC status code.
fn code_name(code: &[u8]) -> &'static str {
    match code {
        b"0" => "OK",
        b"1" => "CANCELLED",
        b"2" => "UNKNOWN",
        b"3" => "INVALID_ARGUMENT",
        b"4" => "DEADLINE_EXCEEDED",
        b"5" => "NOT_FOUND",
        b"6" => "ALREADY_EXISTS",
        b"7" => "PERMISSION_DENIED",
        b"8" => "RESOURCE_EXHAUSTED",
        b"9" => "FAILED_PRECONDITION",
        b"10" => "ABORTED",
        b"11" => "OUT_OF_RANGE",
        b"12" => "UNIMPLEMENTED",
        b"13" => "INTERNAL",
        b"14" => "UNAVAILABLE",
        b"15" => "DATA_LOSS",
        b"16" => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// A layer recording every call a gRPC server serves in [`GrpcMetrics`].
#[derive(Clone)]
pub struct GrpcMetricsLayer(pub GrpcMetrics);

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = ObservedGrpc<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ObservedGrpc { inner, metrics: self.0.clone() }
    }
}

/// The service [`GrpcMetricsLayer`] makes.
#[derive(Clone)]
pub struct ObservedGrpc<S> {
    inner: S,
    metrics: GrpcMetrics,
}

impl<S, B> tower::Service<http::Request<B>> for ObservedGrpc<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let rpc = rpc_of(request.uri().path());
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            // A status in the headers is a trailers-only answer: the call is over.
            let recorder = Recorder { metrics, rpc, started, done: false };
            if let Some(code) = response.headers().get("grpc-status") {
                recorder.finish(code_name(code.as_bytes()));
                return Ok(response);
            }
            Ok(response.map(|body| tonic::body::Body::new(ObservedBody { inner: body, recorder })))
        })
    }
}

/// Records a call once: at its status, or when its answer is dropped unfinished.
struct Recorder {
    metrics: GrpcMetrics,
    rpc: Rpc,
    started: Instant,
    done: bool,
}

impl Recorder {
    fn finish(mut self, code: &'static str) {
        self.record(code);
    }

    fn record(&mut self, code: &'static str) {
        if !self.done {
            self.done = true;
            self.metrics.record(self.rpc, code, self.started.elapsed());
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // The client went away before the status was sent.
        self.record("CANCELLED");
    }
}

/// An answer's body, watched for the trailers carrying its status.
struct ObservedBody {
    inner: tonic::body::Body,
    recorder: Recorder,
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = trailers.get("grpc-status").map_or("UNKNOWN", |c| code_name(c.as_bytes()));
                    self.recorder.record(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.recorder.record("INTERNAL"),
            Poll::Ready(None) => self.recorder.record("UNKNOWN"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_rpcs_are_labelled_by_name_and_anything_else_is_unknown() {
        assert_eq!(
            rpc_of("/switchboard.auth.v1.AuthService/Authenticate"),
            ("switchboard.auth.v1.AuthService", "Authenticate")
        );
        assert_eq!(rpc_of("/grpc.health.v1.Health/Check").1, "Check");
        for path in ["/switchboard.auth.v1.AuthService/Made-Up", "/x/y", "/", "", "/a/b/c"] {
            assert_eq!(rpc_of(path), ("unknown", "unknown"), "{path}");
        }
    }
}
