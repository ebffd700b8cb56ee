//! Prometheus metrics: request counts and latencies per route and status.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::ErrorDetail;
use crate::state::AppState;

/// Labels of the HTTP metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

/// The gateway's metrics registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<HttpLabels, Counter>,
    latency: Family<HttpLabels, Histogram>,
    rate_limited: Family<GroupLabels, Counter>,
    rate_limit_allowed: Family<GroupLabels, Counter>,
    /// Hits and misses of the gateway's caches (verified credentials).
    pub caches: switchboard_kit::metrics::CacheFamily,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<ModelLabels, Counter>,
    budget_warnings: Family<ScopeLabels, Counter>,
    budget_refusals: Family<ScopeLabels, Counter>,
    /// Rate-limit decisions taken in-process because Redis could not be reached.
    pub rate_limit_fallbacks: Counter,
}

/// Labels of the rate-limit metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    group: &'static str,
}

/// Labels of budget metrics: the budget's scope (`tenant`, `user`, `key`), never its id.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    scope: &'static str,
}

impl ScopeLabels {
    fn of(budget_id: &str) -> Self {
        let scope = match budget_id.split(':').next() {
            Some("tenant") => "tenant",
            Some("user") => "user",
            Some("key") => "key",
            _ => "other",
        };
        Self { scope }
    }
}

/// Labels of completion metrics: values come from the model catalogue, so they are bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    provider: String,
    model: String,
}

/// [`ModelLabels`] and which tokens (`prompt` or `completion`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    provider: String,
    model: String,
    kind: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = switchboard_kit::metrics::registry();
        let requests = Family::<HttpLabels, Counter>::default();
        let latency = switchboard_kit::metrics::latency_family::<HttpLabels>();
        registry.register("http_requests", "HTTP requests handled", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency", latency.clone());
        let rate_limited = Family::<GroupLabels, Counter>::default();
        registry.register("rate_limited_requests", "Requests refused with 429, by route group", rate_limited.clone());
        let rate_limit_allowed = Family::<GroupLabels, Counter>::default();
        registry.register(
            "rate_limit_allowed_requests",
            "Requests a rate limit let through, by route group",
            rate_limit_allowed.clone(),
        );
        let caches = switchboard_kit::metrics::CacheFamily::register(&mut registry);
        let rate_limit_fallbacks = Counter::default();
        registry.register(
            "rate_limit_fallbacks",
            "Rate-limit decisions taken in-process because Redis could not be reached",
            rate_limit_fallbacks.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register("completion_tokens", "Tokens of OpenAI-compatible completions, by model", tokens.clone());
        let cost = Family::<ModelLabels, Counter>::default();
        registry.register(
            "completion_cost_micro_usd",
            "Estimated cost of OpenAI-compatible completions in micro-dollars, by model",
            cost.clone(),
        );
        let budget_warnings = Family::<ScopeLabels, Counter>::default();
        registry.register(
            "budget_warnings",
            "Completions that brought a budget to or past its warning level, by budget scope",
            budget_warnings.clone(),
        );
        let budget_refusals = Family::<ScopeLabels, Counter>::default();
        registry.register("budget_refusals", "Calls refused by a budget, by budget scope", budget_refusals.clone());
        Self {
            registry,
            requests,
            latency,
            rate_limited,
            rate_limit_allowed,
            caches,
            tokens,
            cost,
            budget_warnings,
            budget_refusals,
            rate_limit_fallbacks,
        }
    }
}

impl Metrics {
    /// Counts a 429 of `group`.
    pub fn rate_limited(&self, group: &'static str) {
        self.rate_limited.get_or_create(&GroupLabels { group }).inc();
    }

    /// Counts a request a rate limit of `group` let through.
    pub fn rate_limit_allowed(&self, group: &'static str) {
        self.rate_limit_allowed.get_or_create(&GroupLabels { group }).inc();
    }

    /// Counts one completion's tokens and cost.
    pub fn completion(&self, account: &switchboard_proto::llm::v1::CompletionAccount) {
        let usage = account.usage.unwrap_or_default();
        for (kind, n) in [("prompt", usage.prompt_tokens), ("completion", usage.completion_tokens)] {
            let labels = TokenLabels { provider: account.provider.clone(), model: account.model.clone(), kind };
            self.tokens.get_or_create(&labels).inc_by(u64::from(n));
        }
        let labels = ModelLabels { provider: account.provider.clone(), model: account.model.clone() };
        self.cost.get_or_create(&labels).inc_by(account.cost_micros);
        for id in &account.budget_warnings {
            self.budget_warnings.get_or_create(&ScopeLabels::of(id)).inc();
        }
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        switchboard_kit::metrics::render(&self.registry)
    }
}

/// Middleware recording each request, and logging failed ones once with their detail.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method()).to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    if let Some(ErrorDetail(detail)) = response.extensions().get::<ErrorDetail>() {
        tracing::warn!(%method, %route, status, detail, "request failed");
    }
    // A budget's refusal reads "budget <id> ...".
    if let Some(error) = response.extensions().get::<crate::error::ApiError>()
        && error.kind == "insufficient_quota"
    {
        let id = error.message.strip_prefix("budget ").unwrap_or_default();
        state.metrics.budget_refusals.get_or_create(&ScopeLabels::of(id)).inc();
    }
    let labels = HttpLabels { method, route, status };
    state.metrics.requests.get_or_create(&labels).inc();
    state.metrics.latency.get_or_create(&labels).observe(elapsed.as_secs_f64());
    response
}

/// A bounded label for an HTTP method: the standard ones by name, anything else `other`
/// (a client inventing methods must not grow the series without bound).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
