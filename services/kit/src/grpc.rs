//! gRPC serving and client channels. Every server gets `grpc.health.v1` health and server
//! reflection (`v1` and `v1alpha`, with the health descriptors too), so `grpcurl` and
//! `buf curl` work against it with no `.proto` files; every socket sets `TCP_NODELAY`.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::ServingStatus;

/// Why a gRPC server stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not be built from the descriptor sets.
    #[error("building the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `routes` on `listener` until `shutdown` resolves, with health reporting each of
/// `service_names` as SERVING (and NOT_SERVING once shutdown begins). With a `verifier`,
/// every call but health and reflection must carry a valid credential.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    service_names: &[&str],
    verifier: Option<crate::auth::Verifier>,
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

    let names: Vec<String> = service_names.iter().map(|s| (*s).to_owned()).collect();
    let shutdown = async move {
        shutdown.await;
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
        .layer(crate::auth::GrpcAuthLayer::new(verifier))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// A lazily connecting client channel to `addr` (`host:port` or a URL), with `TCP_NODELAY`,
/// a connect timeout and HTTP/2 keep-alive. Connection happens on first use, so components
/// can start in any order.
pub fn channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    let uri = if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") };
    Ok(Endpoint::from_shared(uri)?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(3))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .connect_lazy())
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
    let raw = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (amount, unit) = raw.split_at(raw.len().checked_sub(1)?);
    if amount.is_empty() || amount.len() > 8 {
        return None;
    }
    let amount: u64 = amount.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    };
    std::time::Instant::now().checked_add(timeout)
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
        let server = tokio::spawn(serve(listener, Routes::default(), &["test.Service"], None, async move {
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
