//! The model catalogue: which models exist, their aliases, context windows and prices, the
//! default and the fallbacks, and which provider serves each. Models come from three places:
//! the built-in `mock` and the configured upstreams, the `[[models]]` of `SWITCHBOARD_CONFIG`,
//! and the models the OpenAI-compatible upstream lists at `/models` (refreshed in the
//! background).

use std::sync::RwLock;
use std::time::Duration;

use crate::error::LlmError;
use crate::providers::{Provider, ProviderError, dify::Dify, mock::Mock, openai::OpenAi};
use crate::resilience::RetryPolicy;
use crate::settings::{ModelConfig, Settings};

/// Name of the built-in model.
pub const MOCK_MODEL: &str = "mock";
/// Name of the Dify model (the tenant's Dify app).
pub const DIFY_MODEL: &str = "dify";
/// Default model when an OpenAI-compatible upstream is configured and none is named.
pub const DEFAULT_OPENAI_MODEL: &str = "gpt-4o-mini";
/// How often the upstream's model list is fetched again.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(600);

/// Prices in US dollars per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pricing {
    /// Prompt tokens.
    pub input_usd_per_mtok: f64,
    /// Completion tokens.
    pub output_usd_per_mtok: f64,
}

impl Pricing {
    /// Cost of a completion in micro-dollars (a dollar per million tokens is a micro-dollar
    /// per token).
    pub fn cost_micros(&self, prompt_tokens: u32, completion_tokens: u32) -> u64 {
        let micros = f64::from(prompt_tokens) * self.input_usd_per_mtok
            + f64::from(completion_tokens) * self.output_usd_per_mtok;
        micros.round().max(0.0) as u64
    }
}

/// One model of the catalogue.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    /// Name clients ask for.
    pub id: String,
    /// Name at the upstream, when it differs.
    pub upstream: Option<String>,
    /// Other names for it.
    pub aliases: Vec<String>,
    /// Context window in tokens (0 when unknown).
    pub context_window: u32,
    /// Prices, when known.
    pub pricing: Option<Pricing>,
    /// Who serves it.
    pub provider: Provider,
}

impl ModelEntry {
    fn new(id: &str, provider: Provider) -> Self {
        Self { id: id.to_owned(), upstream: None, aliases: vec![], context_window: 0, pricing: None, provider }
    }

    /// The name to send upstream.
    pub fn upstream_name(&self) -> &str {
        self.upstream.as_deref().unwrap_or(&self.id)
    }

    /// Cost of a completion in micro-dollars; 0 when the price is unknown.
    pub fn cost_micros(&self, prompt_tokens: u32, completion_tokens: u32) -> u64 {
        self.pricing.map_or(0, |p| p.cost_micros(prompt_tokens, completion_tokens))
    }
}

/// The catalogue.
#[derive(Debug)]
pub struct Catalogue {
    models: Vec<ModelEntry>,
    discovered: RwLock<Vec<ModelEntry>>,
    openai: Option<OpenAi>,
    default_model: String,
    fallbacks: Vec<String>,
    tenants: std::collections::HashMap<String, Tenant>,
}

/// How one tenant is routed.
#[derive(Debug, Clone, Default)]
struct Tenant {
    /// Resolved default model.
    default_model: Option<String>,
    /// Resolved ids of the models it may use; empty for all.
    allowed: Vec<String>,
}

impl Catalogue {
    /// Builds the catalogue from settings.
    pub fn from_settings(settings: &Settings) -> Result<Self, ProviderError> {
        let retry = RetryPolicy { max_retries: settings.upstream_retries, ..RetryPolicy::default() };
        let mut mock = ModelEntry::new(MOCK_MODEL, Provider::Mock(Mock));
        mock.context_window = 8192;
        let mut models = vec![mock];
        let dify = if settings.dify.is_empty() {
            None
        } else {
            let dify = Dify::new(settings.dify.clone(), settings.upstream_timeout, retry)?;
            models.push(ModelEntry::new(DIFY_MODEL, Provider::Dify(dify.clone())));
            Some(dify)
        };
        let openai = match &settings.openai {
            Some(o) => Some(OpenAi::new(o.base_url.clone(), o.api_key.clone(), settings.upstream_timeout, retry)?),
            None => None,
        };
        for configured in &settings.models {
            let provider = match configured.provider.as_str() {
                "mock" => Provider::Mock(Mock),
                "openai" => Provider::OpenAi(openai.clone().ok_or_else(|| {
                    ProviderError::Setup(format!("model {:?} needs OPENAI_API_KEY or OPENAI_BASE_URL", configured.id))
                })?),
                "dify" => Provider::Dify(dify.clone().ok_or_else(|| {
                    ProviderError::Setup(format!("model {:?} needs a Dify app (DIFY_BASE_URL)", configured.id))
                })?),
                other => {
                    return Err(ProviderError::Setup(format!("model {:?}: unknown provider {other:?}", configured.id)));
                }
            };
            models.retain(|m| m.id != configured.id);
            models.push(entry_from_config(configured, provider));
        }
        let requested = settings.default_model.clone();
        if let Some(openai) = &openai {
            // The default model (or gpt-4o-mini) is always served by the OpenAI upstream.
            let name = requested
                .clone()
                .filter(|n| !models.iter().any(|m| &m.id == n || m.aliases.contains(n)))
                .unwrap_or_else(|| DEFAULT_OPENAI_MODEL.to_owned());
            if !models.iter().any(|m| m.id == name) {
                models.push(ModelEntry::new(&name, Provider::OpenAi(openai.clone())));
            }
        }
        let catalogue = Self {
            models,
            discovered: RwLock::new(Vec::new()),
            openai,
            default_model: String::new(),
            fallbacks: vec![],
            tenants: std::collections::HashMap::new(),
        };
        let default_model = match requested {
            Some(name) => match catalogue.resolve(&name) {
                Ok(m) => m.id,
                Err(_) => {
                    return Err(ProviderError::Setup(format!(
                        "SWITCHBOARD_DEFAULT_MODEL is {name:?} but no upstream serves it: set OPENAI_API_KEY or \
                         OPENAI_BASE_URL, configure Dify, or use \"mock\""
                    )));
                }
            },
            // Dify first (seed 003's gateway), then the OpenAI upstream, then the mock.
            None => {
                catalogue.models.iter().find(|m| m.id != MOCK_MODEL).map_or(MOCK_MODEL.to_owned(), |m| m.id.clone())
            }
        };
        for fallback in &settings.fallback_models {
            if catalogue.resolve(fallback).is_err() {
                return Err(ProviderError::Setup(format!(
                    "SWITCHBOARD_FALLBACK_MODELS names {fallback:?}, which no upstream serves"
                )));
            }
        }
        let mut tenants = std::collections::HashMap::new();
        // A tenant with a Dify app of its own is routed to it by default (seed 003).
        if dify.is_some() {
            for system_id in settings.dify.by_system.keys() {
                tenants
                    .insert(system_id.clone(), Tenant { default_model: Some(DIFY_MODEL.to_owned()), allowed: vec![] });
            }
        }
        for (system_id, config) in &settings.tenants {
            let resolve = |name: &String| {
                catalogue.resolve(name).map(|m| m.id).map_err(|_| {
                    ProviderError::Setup(format!(
                        "SWITCHBOARD_CONFIG: [tenants.{system_id}] names model {name:?}, which no upstream serves"
                    ))
                })
            };
            let tenant = tenants.entry(system_id.to_ascii_lowercase()).or_insert_with(Tenant::default);
            if let Some(name) = &config.default_model {
                tenant.default_model = Some(resolve(name)?);
            }
            tenant.allowed = config.allowed_models.iter().map(resolve).collect::<Result<_, _>>()?;
            if tenant.default_model.is_none() && !tenant.allowed.is_empty() && !tenant.allowed.contains(&default_model)
            {
                tenant.default_model = tenant.allowed.first().cloned();
            }
            if let Some(default) = tenant.default_model.as_ref().filter(|_| !tenant.allowed.is_empty())
                && !tenant.allowed.contains(default)
            {
                return Err(ProviderError::Setup(format!(
                    "SWITCHBOARD_CONFIG: [tenants.{system_id}] default model {default:?} is not among its allowed_models"
                )));
            }
        }
        Ok(Self { default_model, fallbacks: settings.fallback_models.clone(), tenants, ..catalogue })
    }

    /// The default model's name.
    pub fn default_model(&self) -> &str {
        &self.default_model
    }

    /// The default model of tenant `system_id`: its own (configured, or its Dify app), else
    /// the global one.
    pub fn default_for(&self, system_id: &str) -> &str {
        self.tenants
            .get(&system_id.to_ascii_lowercase())
            .and_then(|t| t.default_model.as_deref())
            .unwrap_or(&self.default_model)
    }

    /// Whether tenant `system_id` may use model `id` (a resolved id).
    pub fn allows(&self, system_id: &str, id: &str) -> bool {
        self.tenants
            .get(&system_id.to_ascii_lowercase())
            .is_none_or(|t| t.allowed.is_empty() || t.allowed.iter().any(|a| a == id))
    }

    /// `name` (empty for the tenant's default) resolved for tenant `system_id`, refused when
    /// the tenant may not use it.
    pub fn resolve_for(&self, system_id: &str, name: &str) -> Result<ModelEntry, LlmError> {
        let name = if name.trim().is_empty() { self.default_for(system_id) } else { name };
        let entry = self.resolve(name)?;
        if !self.allows(system_id, &entry.id) {
            let allowed =
                self.tenants.get(&system_id.to_ascii_lowercase()).map(|t| t.allowed.clone()).unwrap_or_default();
            return Err(LlmError::UnknownModel { name: entry.id, available: allowed });
        }
        Ok(entry)
    }

    /// Every model: configured ones, then the ones the upstream listed.
    pub fn models(&self) -> Vec<ModelEntry> {
        let discovered = self.discovered.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.models.iter().chain(discovered.iter()).cloned().collect()
    }

    /// The OpenAI-compatible upstream, when one is configured.
    pub fn openai(&self) -> Option<&OpenAi> {
        self.openai.as_ref()
    }

    /// The Dify provider, when one is configured.
    pub fn dify(&self) -> Option<&Dify> {
        self.models.iter().find_map(|m| match &m.provider {
            Provider::Dify(d) => Some(d),
            _ => None,
        })
    }

    /// Resolves a name or alias; an empty name is the default.
    pub fn resolve(&self, name: &str) -> Result<ModelEntry, LlmError> {
        let wanted = if name.trim().is_empty() { self.default_model.as_str() } else { name.trim() };
        let matches = |m: &&ModelEntry| m.id == wanted || m.aliases.iter().any(|a| a == wanted);
        if let Some(m) = self.models.iter().find(matches) {
            return Ok(m.clone());
        }
        let discovered = self.discovered.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(m) = discovered.iter().find(matches) {
            return Ok(m.clone());
        }
        let mut available: Vec<String> = self.models.iter().chain(discovered.iter()).map(|m| m.id.clone()).collect();
        available.dedup();
        Err(LlmError::UnknownModel { name: wanted.to_owned(), available })
    }

    /// `first`, then the fallback models other than it that tenant `system_id` may use, in order.
    pub fn chain(&self, system_id: &str, first: ModelEntry) -> Vec<ModelEntry> {
        let mut chain = vec![first];
        for name in &self.fallbacks {
            if let Ok(m) = self.resolve_for(system_id, name)
                && !chain.iter().any(|c| c.id == m.id)
            {
                chain.push(m);
            }
        }
        chain
    }

    /// Asks the OpenAI-compatible upstream which models it serves, and adds the new ones.
    pub async fn discover(&self) {
        let Some(openai) = &self.openai else { return };
        match openai.list_models().await {
            Ok(names) => {
                let found: Vec<ModelEntry> = names
                    .iter()
                    .filter(|n| !self.models.iter().any(|m| &m.id == *n || m.aliases.contains(n)))
                    .map(|n| ModelEntry::new(n, Provider::OpenAi(openai.clone())))
                    .collect();
                tracing::info!(models = found.len(), "upstream models discovered");
                *self.discovered.write().unwrap_or_else(std::sync::PoisonError::into_inner) = found;
            }
            Err(e) => tracing::warn!(error = %e, "cannot list the upstream's models; keeping the ones known"),
        }
    }
}

fn entry_from_config(c: &ModelConfig, provider: Provider) -> ModelEntry {
    ModelEntry {
        id: c.id.clone(),
        upstream: c.upstream_name.clone(),
        aliases: c.aliases.clone(),
        context_window: c.context_window.unwrap_or(0),
        pricing: match (c.input_usd_per_mtok, c.output_usd_per_mtok) {
            (None, None) => None,
            (i, o) => Some(Pricing { input_usd_per_mtok: i.unwrap_or(0.0), output_usd_per_mtok: o.unwrap_or(0.0) }),
        },
        provider,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_per_million_tokens() {
        let p = Pricing { input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.60 };
        // 1000 prompt tokens at $0.15/M = 150 micro-dollars; 500 completion at $0.60/M = 300.
        assert_eq!(p.cost_micros(1000, 500), 450);
    }
}
