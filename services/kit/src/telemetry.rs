//! Logging and tracing set-up: log lines, and OpenTelemetry traces exported over OTLP/gRPC
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. The W3C trace context (`traceparent`) is carried
//! over HTTP and gRPC, so one chat turn is one trace across every component and the model
//! upstream. With no endpoint nothing is exported and the request spans are not even made:
//! [`exporting`] is one relaxed atomic load on the hot path.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, FilterFn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// Where log lines go: standard output for the components (what container runtimes collect),
/// standard error for the operator's commands, whose standard output is their answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logs {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported; request spans are made only then.
#[inline]
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The variable naming the OTLP/gRPC endpoint, e.g. `http://otel-collector:4317`.
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// What must outlive the process's work: the span exporter, flushed by [`Telemetry::shutdown`].
#[must_use = "call shutdown() before exiting, or buffered spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered and stops the exporter.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            // The exporter's own thread flushes; waiting for it must not hold a runtime worker.
            let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = flushed {
                eprintln!("switchboard: cannot flush traces: {e}");
            }
        }
    }
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{ENDPOINT_VAR}: {0}")]
pub struct TelemetryError(String);

/// Installs the global subscriber: `RUST_LOG` filter (default `info`), human output on a
/// terminal and JSON lines when `SWITCHBOARD_LOG_FORMAT=json`; and, when `endpoint` is given,
/// spans of Switchboard's own code exported over OTLP/gRPC as `service_name`, with the trace
/// id in every log line of a traced request. Must run inside the Tokio runtime. Installs
/// nothing when a subscriber is already installed (tests start many components in one process).
pub fn init(service_name: &str, endpoint: Option<&str>, logs: Logs) -> Result<Telemetry, TelemetryError> {
    let provider = match endpoint.map(str::trim).filter(|e| !e.is_empty()) {
        Some(endpoint) => Some(provider(service_name, endpoint)?),
        None => None,
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,hyper=warn,tower=warn"));
    let json = std::env::var("SWITCHBOARD_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let writer = move || -> Box<dyn std::io::Write> {
        match logs {
            Logs::Stdout => Box::new(std::io::stdout()),
            Logs::Stderr => Box::new(std::io::stderr()),
        }
    };
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = if json {
        // The span list carries the root span's `trace_id` into every line of the request.
        tracing_subscriber::fmt::layer().json().with_current_span(false).with_writer(writer).with_filter(filter).boxed()
    } else {
        let ansi = match logs {
            Logs::Stdout => std::io::IsTerminal::is_terminal(&std::io::stdout()),
            Logs::Stderr => std::io::IsTerminal::is_terminal(&std::io::stderr()),
        };
        tracing_subscriber::fmt::layer().compact().with_ansi(ansi).with_writer(writer).with_filter(filter).boxed()
    };
    let otel = provider.as_ref().map(|provider| {
        // Switchboard's spans, and its warnings as span events; nothing of the libraries.
        let ours = FilterFn::new(|meta| {
            meta.target().starts_with("switchboard")
                && (meta.is_span() || *meta.level() <= tracing::Level::WARN)
                && *meta.level() <= tracing::Level::INFO
        });
        tracing_opentelemetry::layer().with_tracer(provider.tracer("switchboard")).with_filter(ours).boxed()
    });
    let installed = tracing_subscriber::registry().with(fmt).with(otel).try_init().is_ok();
    if installed && provider.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!(service = service_name, endpoint = endpoint.unwrap_or_default(), "exporting traces over OTLP");
    }
    Ok(Telemetry { provider: provider.filter(|_| installed) })
}

fn provider(service_name: &str, endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig as _;
    if endpoint.starts_with("https://") {
        return Err(TelemetryError(
            "TLS to the collector is not built in: use a collector on the pod network (http://…:4317)".into(),
        ));
    }
    if !endpoint.starts_with("http://") {
        return Err(TelemetryError(format!("must be an http:// URL of an OTLP/gRPC collector, not {endpoint:?}")));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TelemetryError(e.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service_name.to_owned()).build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// Makes `span` a child of the trace context carried in `headers` (HTTP headers or gRPC
/// metadata), if any, and records its trace id in the span's `trace_id` field.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let trace_id = span.context().span().span_context().trace_id();
    span.record("trace_id", tracing::field::display(trace_id));
}

/// Writes the current span's trace context into `headers` as `traceparent` (and
/// `tracestate`), for the next hop. Does nothing when traces are not exported.
pub fn inject(headers: &mut http::HeaderMap) {
    if !exporting() {
        return;
    }
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value))
        {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unusable_collector_endpoint_is_refused_naming_the_variable() {
        for endpoint in ["https://collector:4317", "collector:4317", "grpc://collector:4317"] {
            let error = provider("switchboard-test", endpoint).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.starts_with(ENDPOINT_VAR), "{endpoint}: {error:?}");
        }
    }

    #[tokio::test]
    async fn a_collector_url_makes_an_exporter_without_connecting() {
        let provider = provider("switchboard-test", "http://127.0.0.1:9").unwrap();
        drop(provider);
    }
}
