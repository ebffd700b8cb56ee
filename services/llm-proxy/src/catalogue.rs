//! The model catalogue: which models exist, their aliases, the default, and which provider
//! serves each.

use crate::error::LlmError;
use crate::providers::{Provider, ProviderError, dify::Dify, mock::Mock, openai::OpenAi};
use crate::resilience::RetryPolicy;
use crate::settings::Settings;

/// Name of the built-in model.
pub const MOCK_MODEL: &str = "mock";
/// Name of the Dify model (the tenant's Dify app).
pub const DIFY_MODEL: &str = "dify";
/// Default model when an OpenAI-compatible upstream is configured and none is named.
pub const DEFAULT_OPENAI_MODEL: &str = "gpt-4o-mini";

/// One model of the catalogue.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    /// Name clients ask for.
    pub id: String,
    /// Other names for it.
    pub aliases: Vec<String>,
    /// Context window in tokens (0 when unknown).
    pub context_window: u32,
    /// Who serves it.
    pub provider: Provider,
}

/// The catalogue.
#[derive(Debug)]
pub struct Catalogue {
    models: Vec<ModelEntry>,
    default_model: String,
    fallbacks: Vec<String>,
}

impl Catalogue {
    /// Builds the catalogue from settings: `mock` always, plus the default model on the
    /// OpenAI-compatible upstream when one is configured.
    pub fn from_settings(settings: &Settings) -> Result<Self, ProviderError> {
        let retry = RetryPolicy { max_retries: settings.upstream_retries, ..RetryPolicy::default() };
        let mut models = vec![ModelEntry {
            id: MOCK_MODEL.into(),
            aliases: vec![],
            context_window: 8192,
            provider: Provider::Mock(Mock),
        }];
        if !settings.dify.is_empty() {
            let dify = Dify::new(settings.dify.clone(), settings.upstream_timeout, retry)?;
            models.push(ModelEntry {
                id: DIFY_MODEL.into(),
                aliases: vec![],
                context_window: 0,
                provider: Provider::Dify(dify),
            });
        }
        let requested = settings.default_model.clone();
        if let Some(openai) = &settings.openai {
            let name = requested
                .clone()
                .filter(|n| n != MOCK_MODEL && n != DIFY_MODEL)
                .unwrap_or_else(|| DEFAULT_OPENAI_MODEL.to_owned());
            let client =
                OpenAi::new(openai.base_url.clone(), openai.api_key.clone(), settings.upstream_timeout, retry)?;
            models.push(ModelEntry {
                id: name,
                aliases: vec![],
                context_window: 0,
                provider: Provider::OpenAi(client),
            });
        }
        let default_model = match requested {
            Some(name) if models.iter().any(|m| m.id == name) => name,
            Some(name) => {
                return Err(ProviderError::Setup(format!(
                    "SWITCHBOARD_DEFAULT_MODEL is {name:?} but no upstream serves it: set OPENAI_API_KEY or OPENAI_BASE_URL, \
                     configure Dify, or use \"mock\""
                )));
            }
            // Dify first (seed 003's gateway), then the OpenAI upstream, then the mock.
            None => models.iter().find(|m| m.id != MOCK_MODEL).map_or(MOCK_MODEL.to_owned(), |m| m.id.clone()),
        };
        if let Some(unknown) = settings.fallback_models.iter().find(|f| !models.iter().any(|m| &m.id == *f)) {
            return Err(ProviderError::Setup(format!(
                "SWITCHBOARD_FALLBACK_MODELS names {unknown:?}, which no upstream serves"
            )));
        }
        Ok(Self { models, default_model, fallbacks: settings.fallback_models.clone() })
    }

    /// `first`, then the fallback models other than it, in order.
    pub fn chain<'a>(&'a self, first: &'a ModelEntry) -> Vec<&'a ModelEntry> {
        let mut chain = vec![first];
        for name in &self.fallbacks {
            if let Some(m) = self.models.iter().find(|m| &m.id == name)
                && !chain.iter().any(|c| c.id == m.id)
            {
                chain.push(m);
            }
        }
        chain
    }

    /// The Dify provider, when one is configured.
    pub fn dify(&self) -> Option<&Dify> {
        self.models.iter().find_map(|m| match &m.provider {
            Provider::Dify(d) => Some(d),
            _ => None,
        })
    }

    /// The default model's name.
    pub fn default_model(&self) -> &str {
        &self.default_model
    }

    /// Every model.
    pub fn models(&self) -> &[ModelEntry] {
        &self.models
    }

    /// Resolves a name or alias; an empty name is the default.
    pub fn resolve(&self, name: &str) -> Result<&ModelEntry, LlmError> {
        let wanted = if name.trim().is_empty() { self.default_model.as_str() } else { name.trim() };
        self.models.iter().find(|m| m.id == wanted || m.aliases.iter().any(|a| a == wanted)).ok_or_else(|| {
            LlmError::UnknownModel {
                name: wanted.to_owned(),
                available: self.models.iter().map(|m| m.id.clone()).collect(),
            }
        })
    }
}
