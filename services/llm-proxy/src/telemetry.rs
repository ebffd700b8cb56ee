//! What the LLM proxy tells operators about the model upstreams: metrics by provider and
//! model (latency, time to first token, tokens, cost, failures, retries, ejections) and, when
//! traces are exported, a span per upstream call following the OpenTelemetry GenAI semantic
//! conventions (`gen_ai.request.model`, `gen_ai.usage.input_tokens`, ...). Model labels come
//! from the catalogue, so they are bounded.

use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use switchboard_kit::metrics::{Registry, latency_family};
use tracing::field::Empty;

use crate::catalogue::ModelEntry;
use crate::providers::{ProviderError, TokenUsage};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    provider: &'static str,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    provider: &'static str,
    model: String,
    stream: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    provider: &'static str,
    model: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    provider: &'static str,
    model: String,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: &'static str,
}

/// The upstream metrics of one LLM proxy.
#[derive(Clone)]
pub struct UpstreamMetrics {
    completions: Family<ModelLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<DurationLabels, Histogram>,
    first_token: Family<ModelLabels, Histogram>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<ModelLabels, Counter>,
}

/// Retries and ejections are decided deep in the providers' resilience code, which every
/// proxy of a process shares: counted process-wide.
static RETRIES: LazyLock<Family<ProviderLabels, Counter>> = LazyLock::new(Family::default);
static EJECTIONS: LazyLock<Family<ProviderLabels, Counter>> = LazyLock::new(Family::default);

/// Counts a retry of a call to `provider`.
pub fn retried(provider: &'static str) {
    RETRIES.get_or_create(&ProviderLabels { provider }).inc();
}

/// Counts `provider`'s ejection by its circuit breaker.
pub fn ejected(provider: &'static str) {
    EJECTIONS.get_or_create(&ProviderLabels { provider }).inc();
}

impl Default for UpstreamMetrics {
    /// Families in no registry.
    fn default() -> Self {
        Self {
            completions: Family::default(),
            failures: Family::default(),
            duration: latency_family(),
            first_token: latency_family(),
            tokens: Family::default(),
            cost: Family::default(),
        }
    }
}

impl UpstreamMetrics {
    /// The families, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "upstream_completions",
            "Completions the model upstreams answered, by provider and model",
            m.completions.clone(),
        );
        registry.register(
            "upstream_failures",
            "Upstream calls that failed for good (after retries), by provider, model and error",
            m.failures.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time from the first attempt to the end of the answer (streamed or not), by provider and model",
            m.duration.clone(),
        );
        registry.register(
            "upstream_time_to_first_token_seconds",
            "Time from the first attempt to the first streamed token, by provider and model",
            m.first_token.clone(),
        );
        registry.register(
            "upstream_tokens",
            "Tokens of answered completions, by provider, model and kind (input or output)",
            m.tokens.clone(),
        );
        registry.register(
            "upstream_cost_micro_usd",
            "Estimated cost of answered completions in micro-dollars, by provider and model",
            m.cost.clone(),
        );
        registry.register("upstream_retries", "Retried upstream calls, by provider", RETRIES.clone());
        registry.register(
            "upstream_ejections",
            "Upstreams ejected by their circuit breaker after consecutive failures, by provider",
            EJECTIONS.clone(),
        );
        m
    }

    /// Counts an answered completion.
    pub(crate) fn answered(&self, entry: &ModelEntry, call: &UpstreamCall, usage: TokenUsage, cost_micros: u64) {
        let (provider, model) = (entry.provider.name(), entry.id.clone());
        for (kind, n) in [("input", usage.prompt_tokens), ("output", usage.completion_tokens)] {
            self.tokens.get_or_create(&TokenLabels { provider, model: model.clone(), kind }).inc_by(u64::from(n));
        }
        self.cost.get_or_create(&ModelLabels { provider, model: model.clone() }).inc_by(cost_micros);
        let labels = DurationLabels { provider, model: model.clone(), stream: call.streamed };
        self.duration.get_or_create(&labels).observe(call.started.elapsed().as_secs_f64());
        self.completions.get_or_create(&ModelLabels { provider, model }).inc();
    }

    /// Counts a call that failed for good, and marks its span.
    pub(crate) fn failed(&self, entry: &ModelEntry, call: &UpstreamCall, error: &ProviderError) {
        let kind = error_kind(error);
        let labels = FailureLabels { provider: entry.provider.name(), model: entry.id.clone(), error: kind };
        self.failures.get_or_create(&labels).inc();
        call.span.record("error.type", kind);
        call.span.record("otel.status_code", "ERROR");
    }
}

/// A bounded name for a provider error.
fn error_kind(error: &ProviderError) -> &'static str {
    match error {
        ProviderError::Status { status: 429, .. } => "rate_limited",
        ProviderError::Status { status: 400..=499, .. } => "refused",
        ProviderError::Status { .. } => "server_error",
        ProviderError::Connect(_) => "connect",
        ProviderError::Timeout => "timeout",
        ProviderError::InvalidResponse(_) => "invalid_response",
        ProviderError::Setup(_) => "setup",
        ProviderError::Ejected { .. } => "ejected",
    }
}

/// One call to a model upstream as it goes: when it began, whether it streams, and its span.
pub(crate) struct UpstreamCall {
    pub(crate) started: Instant,
    pub(crate) streamed: bool,
    pub(crate) span: tracing::Span,
    first_token_seen: bool,
}

impl UpstreamCall {
    /// A call to `entry`, started now; its span (when traces are exported) is a child of the
    /// current one.
    pub(crate) fn start(entry: &ModelEntry, streamed: bool) -> Self {
        Self { started: Instant::now(), streamed, span: span(entry, streamed), first_token_seen: false }
    }

    /// Notes a streamed token; the first one's time is counted.
    pub(crate) fn token(&mut self, metrics: &UpstreamMetrics, entry: &ModelEntry) {
        if !self.first_token_seen {
            self.first_token_seen = true;
            let labels = ModelLabels { provider: entry.provider.name(), model: entry.id.clone() };
            metrics.first_token.get_or_create(&labels).observe(self.started.elapsed().as_secs_f64());
        }
    }

    /// Records the answer's model and tokens on the span.
    pub(crate) fn answered(&self, model: &str, usage: TokenUsage) {
        self.span.record("gen_ai.response.model", model);
        self.span.record("gen_ai.usage.input_tokens", i64::from(usage.prompt_tokens));
        self.span.record("gen_ai.usage.output_tokens", i64::from(usage.completion_tokens));
    }

    /// Records why the answer ended on the span.
    pub(crate) fn finished(&self, finish_reason: &str) {
        if !finish_reason.is_empty() {
            self.span.record("gen_ai.response.finish_reasons", tracing::field::debug([finish_reason]));
        }
    }
}

/// The GenAI client span of a call to `entry`, or none when traces are not exported.
fn span(entry: &ModelEntry, streamed: bool) -> tracing::Span {
    if !switchboard_kit::telemetry::exporting() {
        return tracing::Span::none();
    }
    let model = entry.upstream_name();
    let provider = entry.provider.name();
    tracing::info_span!(
        target: "switchboard::upstream",
        "chat",
        otel.name = %format_args!("chat {model}"),
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = provider,
        gen_ai.system = provider,
        gen_ai.request.model = %model,
        gen_ai.request.stream = streamed,
        gen_ai.response.model = Empty,
        gen_ai.response.finish_reasons = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        error.type = Empty,
    )
}
