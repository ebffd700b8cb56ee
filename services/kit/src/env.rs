//! Settings sources. Components read their settings from an [`Env`], which is the process
//! environment in production and a plain map in tests, so tests never mutate the process.

use std::collections::HashMap;
use std::str::FromStr;

use secrecy::SecretString;

/// A configuration problem, always naming the variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable is set to something that cannot be used.
    #[error("{var}: {reason}")]
    Invalid {
        /// The variable's name.
        var: String,
        /// What is wrong with it (never the value of a secret).
        reason: String,
    },
    /// A variable that is required is not set.
    #[error("{var} must be set: {reason}")]
    Missing {
        /// The variable's name.
        var: String,
        /// Why it is needed.
        reason: String,
    },
}

impl ConfigError {
    /// A variable is set to something unusable.
    pub fn invalid(var: &str, reason: impl Into<String>) -> Self {
        Self::Invalid { var: var.to_owned(), reason: reason.into() }
    }
}

/// A snapshot of configuration variables.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// The process environment.
    pub fn from_process() -> Self {
        Self { vars: std::env::vars().collect() }
    }

    /// A fixed set of variables, for tests and embedding.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self { vars: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }

    /// Sets one variable, returning the updated snapshot.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(key.into(), value.into());
        self
    }

    /// The variable's value, with surrounding blanks removed; `None` when unset or blank.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// The variable's value or a default.
    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    /// The variable parsed as `T`, `None` when unset.
    pub fn parse<T>(&self, key: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        self.get(key)
            .map(|raw| raw.parse::<T>().map_err(|e| ConfigError::invalid(key, format!("cannot parse {raw:?}: {e}"))))
            .transpose()
    }

    /// The variable parsed as `T`, or `default` when unset.
    pub fn parse_or<T>(&self, key: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        Ok(self.parse(key)?.unwrap_or(default))
    }

    /// A boolean flag: `true`/`1`/`yes`/`on` or `false`/`0`/`no`/`off`.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(other) => Err(ConfigError::invalid(key, format!("expected true or false, got {other:?}"))),
        }
    }

    /// A comma-separated list; empty when unset.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// A listen address (`host:port`), or `default` when unset.
    pub fn socket_addr(&self, key: &str, default: &str) -> Result<std::net::SocketAddr, ConfigError> {
        let raw = self.get_or(key, default);
        raw.parse().map_err(|e| ConfigError::invalid(key, format!("{raw:?} is not host:port ({e})")))
    }

    /// The database URL of a service: its own variable (`override_key`) when set, else
    /// `DATABASE_URL`, else the embedded SQLite default; with the variable it came from.
    pub fn database_url(&self, override_key: &'static str) -> (String, &'static str) {
        match self.get(override_key) {
            Some(url) => (url.to_owned(), override_key),
            None => (self.get_or("DATABASE_URL", crate::db::DEFAULT_DATABASE_URL).to_owned(), "DATABASE_URL"),
        }
    }

    /// A secret: kept wrapped so it is never printed by accident.
    pub fn secret(&self, key: &str) -> Option<SecretString> {
        self.get(key).map(|v| SecretString::from(v.to_owned()))
    }

    /// The variables whose names start with `prefix`.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.vars.iter().filter(move |(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.as_str(), v.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_values_count_as_unset_and_lists_split_on_commas() {
        let env = Env::from_pairs([("A", "  "), ("B", "x, y,,z "), ("C", "yes")]);
        assert_eq!(env.get("A"), None);
        assert_eq!(env.list("B"), vec!["x", "y", "z"]);
        assert!(env.flag("C", false).unwrap());
    }

    #[test]
    fn a_bad_value_names_the_variable() {
        let env = Env::from_pairs([("SWITCHBOARD_HTTP_ADDR", "nope"), ("FLAG", "maybe")]);
        let err = env.parse::<std::net::SocketAddr>("SWITCHBOARD_HTTP_ADDR").unwrap_err();
        assert!(err.to_string().starts_with("SWITCHBOARD_HTTP_ADDR:"), "{err}");
        assert!(env.flag("FLAG", false).unwrap_err().to_string().contains("FLAG"));
    }
}
