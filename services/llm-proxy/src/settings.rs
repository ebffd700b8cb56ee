//! Typed settings of the LLM proxy.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use switchboard_kit::auth::VerifierSettings;
use switchboard_kit::{ConfigError, Env};

/// Default listen (and connect) address.
pub const DEFAULT_ADDR: &str = switchboard_kit::net::DEFAULT_LLM_ADDR;
/// Default OpenAI-compatible base URL.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// Settings of the LLM proxy.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `SWITCHBOARD_LLM_ADDR`.
    pub addr: SocketAddr,
    /// `SWITCHBOARD_LLM_METRICS_ADDR`: where `/metrics` is served (HTTP); off unless set.
    pub metrics_addr: Option<SocketAddr>,
    /// `LLM_DATABASE_URL`, else `DATABASE_URL`.
    pub database_url: switchboard_kit::db::DatabaseUrl,
    /// Which variable the URL came from.
    pub database_var: &'static str,
    /// OpenAI-compatible upstream, when configured.
    pub openai: Option<OpenAiSettings>,
    /// Dify apps: `DIFY_BASE_URL`/`DIFY_API_KEY` and `DIFY_<SYSTEM>_BASE_URL`/`_API_KEY`.
    pub dify: crate::providers::dify::DifyApps,
    /// `SWITCHBOARD_DEFAULT_MODEL`.
    pub default_model: Option<String>,
    /// `SWITCHBOARD_UPSTREAM_TIMEOUT_SECS`: whole-request timeout for upstream calls.
    pub upstream_timeout: Duration,
    /// `SWITCHBOARD_ENCRYPTION_KEY`: 32 bytes (64 hex characters) sealing provider keys at
    /// rest; provider keys are off without it.
    pub encryption_key: Option<EncryptionKey>,
    /// `[[models]]` of the `SWITCHBOARD_CONFIG` file.
    pub models: Vec<ModelConfig>,
    /// `SWITCHBOARD_FALLBACK_MODELS`: models tried, in order, when the chosen one's upstream
    /// fails or is ejected.
    pub fallback_models: Vec<String>,
    /// `SWITCHBOARD_UPSTREAM_RETRIES`: retries of a failed upstream call (429, 5xx, connect).
    pub upstream_retries: u32,
    /// `[tenants.<system_id>]` of the `SWITCHBOARD_CONFIG` file: a tenant's default and
    /// allowed models.
    pub tenants: std::collections::HashMap<String, TenantConfig>,
    /// How callers' credentials are verified.
    pub verifier: VerifierSettings,
    /// `[[budgets]]` of the `SWITCHBOARD_CONFIG` file.
    pub budgets: Vec<crate::budgets::Budget>,
}

/// An OpenAI-compatible upstream (OpenAI, Ollama, vLLM, llama.cpp).
#[derive(Debug, Clone)]
pub struct OpenAiSettings {
    /// `OPENAI_BASE_URL`, without a trailing slash.
    pub base_url: String,
    /// `OPENAI_API_KEY`; optional for local servers such as Ollama.
    pub api_key: Option<SecretString>,
}

impl Settings {
    /// Reads the settings, naming the variable at fault on error.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let file = ConfigFile::load(env)?;
        let addr = env.socket_addr("SWITCHBOARD_LLM_ADDR", DEFAULT_ADDR)?;
        let (database_url, database_var) = env.database_url("LLM_DATABASE_URL");
        let api_key = env.secret("OPENAI_API_KEY");
        let base_url = env.get("OPENAI_BASE_URL");
        let openai = if api_key.is_some() || base_url.is_some() {
            let base_url = base_url.unwrap_or(DEFAULT_OPENAI_BASE_URL).trim_end_matches('/').to_owned();
            if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                return Err(ConfigError::invalid("OPENAI_BASE_URL", "must start with http:// or https://"));
            }
            Some(OpenAiSettings { base_url, api_key })
        } else {
            None
        };
        let timeout: u64 = env.parse_or("SWITCHBOARD_UPSTREAM_TIMEOUT_SECS", 120)?;
        if timeout == 0 {
            return Err(ConfigError::invalid("SWITCHBOARD_UPSTREAM_TIMEOUT_SECS", "must be at least 1"));
        }
        Ok(Self {
            addr,
            metrics_addr: switchboard_kit::metrics::addr_from_env(env, "SWITCHBOARD_LLM_METRICS_ADDR", "off")?,
            database_url: database_url.into(),
            database_var,
            openai,
            dify: dify_apps(env)?,
            default_model: env.get("SWITCHBOARD_DEFAULT_MODEL").map(str::to_owned).or(file.default_model),
            models: file.models,
            tenants: file.tenants,
            budgets: file.budgets,
            encryption_key: encryption_key(env)?,
            upstream_timeout: Duration::from_secs(timeout),
            fallback_models: Some(env.list("SWITCHBOARD_FALLBACK_MODELS"))
                .filter(|l| !l.is_empty())
                .unwrap_or(file.fallback_models),
            upstream_retries: {
                let retries: u32 = env.parse_or("SWITCHBOARD_UPSTREAM_RETRIES", 2)?;
                if retries > 10 {
                    return Err(ConfigError::invalid("SWITCHBOARD_UPSTREAM_RETRIES", "must be at most 10"));
                }
                retries
            },
            verifier: VerifierSettings::from_env(env, switchboard_kit::net::DEFAULT_AUTH_ADDR)?,
        })
    }
}

/// The key sealing provider keys; never printed.
#[derive(Clone)]
pub struct EncryptionKey(pub [u8; 32]);

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionKey(…)")
    }
}

fn encryption_key(env: &Env) -> Result<Option<EncryptionKey>, ConfigError> {
    use secrecy::ExposeSecret;
    let Some(raw) = env.secret("SWITCHBOARD_ENCRYPTION_KEY") else { return Ok(None) };
    let bytes = hex::decode(raw.expose_secret()).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or_else(|| {
        ConfigError::invalid(
            "SWITCHBOARD_ENCRYPTION_KEY",
            "must be 64 hex characters (32 bytes); try `openssl rand -hex 32`",
        )
    })?;
    Ok(Some(EncryptionKey(bytes)))
}

/// A model of the `SWITCHBOARD_CONFIG` file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Name clients ask for.
    pub id: String,
    /// `openai`, `dify` or `mock`.
    pub provider: String,
    /// Name at the upstream, when it differs from `id`.
    pub upstream_name: Option<String>,
    /// Other names for it.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Context window in tokens.
    pub context_window: Option<u32>,
    /// Price of prompt tokens, US dollars per million.
    pub input_usd_per_mtok: Option<f64>,
    /// Price of completion tokens, US dollars per million.
    pub output_usd_per_mtok: Option<f64>,
}

/// A tenant's table of the `SWITCHBOARD_CONFIG` file.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The tenant's default model (instead of the global one, or of its own Dify app).
    pub default_model: Option<String>,
    /// The only models the tenant may use; empty for every model.
    #[serde(default)]
    pub allowed_models: Vec<String>,
}

/// The optional TOML file named by `SWITCHBOARD_CONFIG` (providers, models, aliases). Its
/// values give way to environment variables of the same meaning. It holds no secrets.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    default_model: Option<String>,
    #[serde(default)]
    fallback_models: Vec<String>,
    #[serde(default)]
    models: Vec<ModelConfig>,
    #[serde(default)]
    tenants: std::collections::HashMap<String, TenantConfig>,
    #[serde(default, rename = "budgets")]
    budget_tables: Vec<crate::budgets::BudgetText>,
    #[serde(skip)]
    budgets: Vec<crate::budgets::Budget>,
}

impl ConfigFile {
    fn load(env: &Env) -> Result<Self, ConfigError> {
        let Some(path) = env.get("SWITCHBOARD_CONFIG") else { return Ok(Self::default()) };
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::invalid("SWITCHBOARD_CONFIG", format!("cannot read {path}: {e}")))?;
        let mut file: Self =
            toml::from_str(&text).map_err(|e| ConfigError::invalid("SWITCHBOARD_CONFIG", format!("{path}: {e}")))?;
        for table in &file.budget_tables {
            let budget = table
                .budget()
                .map_err(|e| ConfigError::invalid("SWITCHBOARD_CONFIG", format!("{path}: a [[budgets]] table: {e}")))?;
            if file.budgets.iter().any(|b| b.id() == budget.id()) {
                return Err(ConfigError::invalid(
                    "SWITCHBOARD_CONFIG",
                    format!("{path}: budget {} is defined twice", budget.id()),
                ));
            }
            file.budgets.push(budget);
        }
        for model in &file.models {
            if model.id.trim().is_empty() {
                return Err(ConfigError::invalid("SWITCHBOARD_CONFIG", format!("{path}: a model has an empty id")));
            }
        }
        Ok(file)
    }
}

/// Dify API base from a configured address: Dify's address as it is (seed 003), with `/v1`
/// added unless it is there already.
fn dify_base(var: &str, raw: &str) -> Result<String, ConfigError> {
    let raw = raw.trim_end_matches('/');
    if !(raw.starts_with("http://") || raw.starts_with("https://")) {
        return Err(ConfigError::invalid(var, "must start with http:// or https://"));
    }
    Ok(if raw.ends_with("/v1") { raw.to_owned() } else { format!("{raw}/v1") })
}

fn dify_apps(env: &Env) -> Result<crate::providers::dify::DifyApps, ConfigError> {
    use crate::providers::dify::{DifyApp, DifyApps};
    let common_base = env.get("DIFY_BASE_URL");
    let common_key = env.secret("DIFY_API_KEY");
    let mut apps = DifyApps::default();
    match (common_base, &common_key) {
        (Some(base), Some(key)) => {
            apps.common = Some(DifyApp { base_url: dify_base("DIFY_BASE_URL", base)?, api_key: key.clone() })
        }
        (Some(_), None) => return Err(ConfigError::invalid("DIFY_API_KEY", "must be set with DIFY_BASE_URL")),
        (None, Some(_)) => return Err(ConfigError::invalid("DIFY_BASE_URL", "must be set with DIFY_API_KEY")),
        (None, None) => {}
    }
    let systems: std::collections::BTreeSet<String> = env
        .with_prefix("DIFY_")
        .filter_map(|(k, _)| k.strip_suffix("_BASE_URL").or_else(|| k.strip_suffix("_API_KEY")))
        .filter_map(|k| k.strip_prefix("DIFY_"))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    for system in systems {
        let base_var = format!("DIFY_{system}_BASE_URL");
        let key_var = format!("DIFY_{system}_API_KEY");
        // An unset half falls back to the common value (seed 003).
        let base = env.get(&base_var).or(common_base);
        let key = env.secret(&key_var).or_else(|| common_key.clone());
        let (Some(base), Some(api_key)) = (base, key) else {
            let missing = if env.get(&base_var).is_none() { base_var } else { key_var };
            return Err(ConfigError::invalid(&missing, "is needed for this system (or set the common DIFY_ value)"));
        };
        apps.by_system.insert(system.to_ascii_lowercase(), DifyApp { base_url: dify_base(&base_var, base)?, api_key });
    }
    Ok(apps)
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn debug_output_never_shows_the_encryption_key_or_a_database_password() {
        let key = "ab".repeat(32);
        let env = Env::from_pairs([
            ("SWITCHBOARD_ENCRYPTION_KEY", key.as_str()),
            ("DATABASE_URL", "postgres://sb:db-password-0123@db.internal/switchboard"),
        ]);
        let printed = format!("{:?}", Settings::from_env(&env).unwrap());
        assert!(!printed.contains("db-password-0123"), "{printed}");
        assert!(!printed.contains("171, 171") && !printed.contains(&key), "the key bytes are printed: {printed}");
    }

    #[test]
    fn a_broken_config_file_is_named() {
        let dir = std::env::temp_dir().join(format!("sb-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[[models]]\nid = \"x\"\nprovider = \"openai\"\ncolour = \"blue\"\n").unwrap();
        let env = Env::from_pairs([("SWITCHBOARD_CONFIG", path.display().to_string())]);
        let err = Settings::from_env(&env).unwrap_err().to_string();
        assert!(err.starts_with("SWITCHBOARD_CONFIG") && err.contains("colour"), "{err}");
        let missing = Env::from_pairs([("SWITCHBOARD_CONFIG", "/nonexistent/switchboard.toml")]);
        assert!(Settings::from_env(&missing).unwrap_err().to_string().starts_with("SWITCHBOARD_CONFIG"));
    }

    #[test]
    fn dify_apps_fall_back_to_the_common_values_and_name_what_is_missing() {
        let env = Env::from_pairs([
            ("DIFY_BASE_URL", "https://dify.example.com/"),
            ("DIFY_API_KEY", "app-common"),
            ("DIFY_COINTUTOR_BASE_URL", "https://coin.example.com/v1"),
        ]);
        let apps = dify_apps(&env).unwrap();
        assert_eq!(apps.common.as_ref().unwrap().base_url, "https://dify.example.com/v1");
        let coin = apps.for_system("CoinTutor").unwrap();
        assert_eq!(coin.base_url, "https://coin.example.com/v1");
        assert_eq!(coin.api_key.expose_secret(), "app-common", "the unset key falls back to DIFY_API_KEY");
        assert_eq!(apps.for_system("drillquiz").unwrap().base_url, "https://dify.example.com/v1");

        let err = dify_apps(&Env::from_pairs([("DIFY_BASE_URL", "https://d.example.com")])).unwrap_err();
        assert!(err.to_string().starts_with("DIFY_API_KEY"), "{err}");
        let err = dify_apps(&Env::from_pairs([("DIFY_X_API_KEY", "app-x")])).unwrap_err();
        assert!(err.to_string().starts_with("DIFY_X_BASE_URL"), "{err}");
    }
}
