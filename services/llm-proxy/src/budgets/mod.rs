//! Budgets: ceilings on what a tenant, a user or an API key may spend (micro-dollars) or use
//! (tokens) per UTC day, per UTC month or in total. A completion reserves its worst case
//! against every budget that applies before the upstream is called, and settles with what it
//! really used; a call that would pass a ceiling is refused (RESOURCE_EXHAUSTED) instead.
//!
//! Budgets come from the configuration file (read-only) and from the database (set through
//! `UsageService`); every replica re-reads the database every [`RELOAD_INTERVAL`]. What has
//! been spent is kept by the [`ledger`]: in Redis when it is configured (shared by every
//! replica), in process otherwise, seeded from the usage rollups when a period starts.

pub mod ledger;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use time::OffsetDateTime;

use crate::error::LlmError;

/// How often each replica re-reads the budgets set through the API.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// Warning threshold when none is given, in percent of a limit.
pub const DEFAULT_WARN_PERCENT: u32 = 80;

/// The time now, in Unix ms: the real clock in service, a hand-moved one in tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The real clock.
pub fn system_clock() -> Clock {
    Arc::new(switchboard_kit::time::now_ms)
}

/// What a budget caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Everything spent in a tenant.
    Tenant,
    /// One user of a tenant.
    User,
    /// Everything spent through one API key.
    Key,
}

impl Scope {
    /// Name in ids, the database and the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::User => "user",
            Self::Key => "key",
        }
    }

    /// The scope named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "tenant" => Some(Self::Tenant),
            "user" => Some(Self::User),
            "key" => Some(Self::Key),
            _ => None,
        }
    }
}

/// When a budget starts afresh (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// Every UTC day.
    Day,
    /// Every UTC month.
    Month,
    /// Never.
    Total,
}

const DAY_MS: i64 = 86_400_000;

impl Period {
    /// Name in ids, the database and the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
            Self::Total => "total",
        }
    }

    /// The period named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "day" => Some(Self::Day),
            "month" => Some(Self::Month),
            "total" => Some(Self::Total),
            _ => None,
        }
    }

    /// The window holding `now` (Unix ms): its start, and its end unless it never ends.
    pub fn window(self, now: i64) -> (i64, Option<i64>) {
        match self {
            Self::Total => (0, None),
            Self::Day => {
                let start = now - now.rem_euclid(DAY_MS);
                (start, Some(start + DAY_MS))
            }
            Self::Month => {
                let at =
                    OffsetDateTime::from_unix_timestamp(now.div_euclid(1000)).unwrap_or(OffsetDateTime::UNIX_EPOCH);
                let first = |year: i32, month: time::Month| {
                    time::Date::from_calendar_date(year, month, 1)
                        .map(|d| d.midnight().assume_utc().unix_timestamp() * 1000)
                        .unwrap_or(0)
                };
                let start = first(at.year(), at.month());
                let end = match at.month() {
                    time::Month::December => first(at.year() + 1, time::Month::January),
                    month => first(at.year(), month.next()),
                };
                (start, Some(end))
            }
        }
    }

    /// Words for messages: "today", "this month", "in total".
    fn words(self) -> &'static str {
        match self {
            Self::Day => "today",
            Self::Month => "this month",
            Self::Total => "in total",
        }
    }
}

/// One budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// What it caps.
    pub scope: Scope,
    /// Tenant.
    pub system_id: String,
    /// The user (scope user) or the API key id (scope key); empty for a tenant.
    pub subject: String,
    /// When it resets.
    pub period: Period,
    /// Spend limit, micro-dollars.
    pub max_cost_micros: Option<i64>,
    /// Token limit (prompt + completion).
    pub max_tokens: Option<i64>,
    /// Percent of a limit at which it warns.
    pub warn_percent: u32,
    /// Defined in the configuration file (read-only through the API).
    pub from_config: bool,
}

impl Budget {
    /// A budget, checked: a subject where the scope needs one, at least one limit, no
    /// negative limit, a warning percent in 1..=100. Errors name the field.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scope: Scope,
        system_id: &str,
        subject: &str,
        period: Period,
        max_cost_micros: Option<i64>,
        max_tokens: Option<i64>,
        warn_percent: Option<u32>,
    ) -> Result<Self, LlmError> {
        let invalid = |field, reason: &str| LlmError::InvalidArgument { field, reason: reason.to_owned() };
        let system_id = system_id.trim();
        let subject = subject.trim();
        if system_id.is_empty() {
            return Err(invalid("system_id", "is required"));
        }
        match scope {
            Scope::Tenant if !subject.is_empty() => {
                return Err(invalid("user_id", "a tenant budget names no user or key"));
            }
            Scope::User if subject.is_empty() => return Err(invalid("user_id", "is required for a user budget")),
            Scope::Key if subject.is_empty() => return Err(invalid("key_id", "is required for a key budget")),
            _ => {}
        }
        if max_cost_micros.is_none() && max_tokens.is_none() {
            return Err(invalid("max_cost_micros", "a budget needs a spend limit, a token limit or both"));
        }
        if max_cost_micros.is_some_and(|m| m < 0) {
            return Err(invalid("max_cost_micros", "must not be negative"));
        }
        if max_tokens.is_some_and(|m| m < 0) {
            return Err(invalid("max_tokens", "must not be negative"));
        }
        let warn_percent = warn_percent.filter(|p| *p != 0).unwrap_or(DEFAULT_WARN_PERCENT);
        if warn_percent > 100 {
            return Err(invalid("warn_percent", "must be between 1 and 100"));
        }
        Ok(Self {
            scope,
            system_id: system_id.to_owned(),
            subject: subject.to_owned(),
            period,
            max_cost_micros,
            max_tokens,
            warn_percent,
            from_config: false,
        })
    }

    /// `<scope>:<system_id>[:<subject>]:<period>`, e.g. `user:drillquiz:12345:month`.
    pub fn id(&self) -> String {
        match self.scope {
            Scope::Tenant => format!("tenant:{}:{}", self.system_id, self.period.name()),
            scope => format!("{}:{}:{}:{}", scope.name(), self.system_id, self.subject, self.period.name()),
        }
    }

    /// Whether a completion for `(system_id, user_id)` through API key `key_id` counts here.
    pub fn applies(&self, system_id: &str, user_id: &str, key_id: &str) -> bool {
        self.system_id == system_id
            && match self.scope {
                Scope::Tenant => true,
                Scope::User => self.subject == user_id,
                Scope::Key => !key_id.is_empty() && self.subject == key_id,
            }
    }

    /// Whether `spent` is at or past the warning threshold of a limit.
    pub fn warns(&self, spent: Spent) -> bool {
        let past = |limit: Option<i64>, used: i64| {
            limit.is_some_and(|l| i128::from(used) * 100 >= i128::from(l) * i128::from(self.warn_percent))
        };
        past(self.max_cost_micros, spent.cost_micros) || past(self.max_tokens, spent.tokens)
    }

    /// Whether `spent` has reached a limit.
    pub fn exhausted(&self, spent: Spent) -> bool {
        self.max_cost_micros.is_some_and(|l| spent.cost_micros >= l)
            || self.max_tokens.is_some_and(|l| spent.tokens >= l)
    }
}

/// A budget as people write it: a `[[budgets]]` table of the configuration file, or the
/// `switchboard budgets set` arguments. Scope and period by name, the spend limit in dollars.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetText {
    /// `tenant`, `user` or `key`.
    pub scope: String,
    /// Tenant.
    pub system_id: String,
    /// User, for a user budget.
    #[serde(default)]
    pub user_id: String,
    /// API key id, for a key budget.
    #[serde(default)]
    pub key_id: String,
    /// `day`, `month` or `total`.
    pub period: String,
    /// Spend limit in US dollars.
    pub max_usd: Option<f64>,
    /// Token limit.
    pub max_tokens: Option<i64>,
    /// Warning threshold in percent (default 80).
    pub warn_percent: Option<u32>,
}

impl BudgetText {
    /// The budget, checked; an error names the field (`max_usd: must be ...`).
    pub fn budget(&self) -> Result<Budget, String> {
        let scope =
            Scope::parse(&self.scope).ok_or_else(|| format!("scope {:?}: use tenant, user or key", self.scope))?;
        let period =
            Period::parse(&self.period).ok_or_else(|| format!("period {:?}: use day, month or total", self.period))?;
        let max_cost_micros = match self.max_usd {
            Some(usd) if !usd.is_finite() || usd < 0.0 => return Err("max_usd: must be a non-negative number".into()),
            Some(usd) => Some((usd * 1e6).round() as i64),
            None => None,
        };
        let subject = match scope {
            Scope::Tenant => "",
            Scope::User => &self.user_id,
            Scope::Key => &self.key_id,
        };
        Budget::new(scope, &self.system_id, subject, period, max_cost_micros, self.max_tokens, self.warn_percent)
            .map_err(|e| e.to_string())
    }
}

/// What was spent against a budget in its window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    /// Micro-dollars.
    pub cost_micros: i64,
    /// Tokens.
    pub tokens: i64,
}

/// US dollars from micro-dollars, for messages: `$4.99`, `$0.0123`.
pub fn usd(micros: i64) -> String {
    if micros == 0 {
        return "$0.00".to_owned();
    }
    let dollars = micros as f64 / 1e6;
    if micros.abs() >= 10_000 { format!("${dollars:.2}") } else { format!("${dollars:.4}") }
}

/// Why a call was refused.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The budget.
    pub budget: Budget,
    /// What its window holds, reservations of calls in flight included.
    pub spent: Spent,
    /// The refused call's worst case.
    pub wanted: Spent,
    /// When the window ends (Unix ms); `None` for total budgets.
    pub resets_at: Option<i64>,
    /// Now, Unix ms.
    pub now: i64,
}

impl Refusal {
    /// The status: RESOURCE_EXHAUSTED naming the budget, what is spent of which limit and when
    /// it resets, with `sb-budget` and `sb-retry-after` metadata.
    pub fn status(&self) -> tonic::Status {
        let b = &self.budget;
        let id = b.id();
        let (what, spent, limit, wanted) = match (b.max_cost_micros, b.max_tokens) {
            (Some(limit), _) if self.spent.cost_micros + self.wanted.cost_micros > limit => {
                ("spend", usd(self.spent.cost_micros), usd(limit), usd(self.wanted.cost_micros))
            }
            (_, Some(limit)) => (
                "tokens",
                format!("{} tokens", self.spent.tokens),
                format!("{limit} tokens"),
                format!("{} tokens", self.wanted.tokens),
            ),
            (Some(limit), None) => ("spend", usd(self.spent.cost_micros), usd(limit), usd(self.wanted.cost_micros)),
            (None, None) => ("spend", String::new(), String::new(), String::new()),
        };
        let reset = match self.resets_at {
            Some(at) => format!("it resets at {}", switchboard_kit::time::rfc3339(at)),
            None => "it does not reset (a total budget)".to_owned(),
        };
        let message = if b.exhausted(self.spent) {
            format!("budget {id} is exhausted: {spent} of {limit} used {}; {reset}", b.period.words())
        } else {
            format!(
                "budget {id} ({what}) cannot cover this request: {spent} of {limit} used {}, and this request may \
                 use up to {wanted} (lower max_tokens, or wait: {reset})",
                b.period.words()
            )
        };
        let mut status = tonic::Status::resource_exhausted(message);
        if let Ok(value) = id.parse() {
            status.metadata_mut().insert(switchboard_kit::grpc::BUDGET_METADATA, value);
        }
        if let Some(at) = self.resets_at {
            let secs = ((at - self.now).max(0) + 999) / 1000;
            if let Ok(value) = secs.to_string().parse() {
                status.metadata_mut().insert(switchboard_kit::grpc::RETRY_AFTER_METADATA, value);
            }
        }
        status
    }
}

/// Every budget: the configuration file's and the database's, swapped whole on reload.
#[derive(Clone, Default)]
pub struct BudgetBook {
    config: Arc<Vec<Budget>>,
    all: Arc<RwLock<Arc<Vec<Budget>>>>,
}

impl BudgetBook {
    /// A book holding the configuration file's budgets.
    pub fn new(config: Vec<Budget>) -> Self {
        let config: Vec<Budget> = config.into_iter().map(|b| Budget { from_config: true, ..b }).collect();
        let all = Arc::new(RwLock::new(Arc::new(config.clone())));
        Self { config: Arc::new(config), all }
    }

    /// Every budget now.
    pub fn all(&self) -> Arc<Vec<Budget>> {
        self.all.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Replaces the database's budgets; a configuration file budget wins over a stored one
    /// with the same id.
    pub fn replace_stored(&self, stored: Vec<Budget>) {
        let mut all: Vec<Budget> = self.config.as_ref().clone();
        all.extend(stored.into_iter().filter(|b| !self.config.iter().any(|c| c.id() == b.id())));
        *self.all.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(all);
    }

    /// The configuration file's budget with this id, if any.
    pub fn configured(&self, id: &str) -> Option<&Budget> {
        self.config.iter().find(|b| b.id() == id)
    }

    /// The budgets a completion for `(system_id, user_id)` through `key_id` counts against.
    pub fn applicable(&self, system_id: &str, user_id: &str, key_id: &str) -> Vec<Budget> {
        let all = self.all();
        if all.is_empty() {
            return Vec::new();
        }
        all.iter().filter(|b| b.applies(system_id, user_id, key_id)).cloned().collect()
    }
}

/// Tokens reserved for the answer when a call sets no `max_tokens` and its model's window is
/// unknown.
pub const DEFAULT_ANSWER_RESERVE: u32 = 4096;

/// Budgets and their ledger: what the completion paths ask before calling upstream.
#[derive(Clone)]
pub struct Budgets {
    /// Every budget.
    pub book: BudgetBook,
    /// Spend in the current windows.
    pub ledger: ledger::Ledger,
}

impl Budgets {
    /// Reserves the worst case of a call for `who` through `key_id` that may be answered by
    /// any model of `chain` (fallbacks included): `prompt_tokens` in, `max_tokens` (or what
    /// the model's window leaves) out. `None` when no budget applies.
    pub async fn reserve(
        &self,
        who: &(String, String),
        key_id: &str,
        chain: &[crate::catalogue::ModelEntry],
        prompt_tokens: u32,
        max_tokens: Option<u32>,
    ) -> Result<Option<ledger::Reservation>, tonic::Status> {
        let applicable = self.book.applicable(&who.0, &who.1, key_id);
        if applicable.is_empty() {
            return Ok(None);
        }
        let mut worst = Spent::default();
        for entry in chain {
            let answer = max_tokens.unwrap_or(if entry.context_window > prompt_tokens {
                entry.context_window - prompt_tokens
            } else {
                DEFAULT_ANSWER_RESERVE
            });
            let cost = i64::try_from(entry.cost_micros(prompt_tokens, answer)).unwrap_or(i64::MAX);
            worst.cost_micros = worst.cost_micros.max(cost);
            worst.tokens = worst.tokens.max(i64::from(prompt_tokens) + i64::from(answer));
        }
        let reservation = self.ledger.reserve(applicable, worst).await.map_err(tonic::Status::from)?;
        if let Some(r) = &reservation {
            for id in &r.warnings {
                tracing::warn!(budget = %id, "a budget is past its warning level");
            }
        }
        Ok(reservation)
    }

    /// The status of `budget` now: spend in its window from the usage rollups.
    pub async fn status(&self, budget: &Budget, store: &dyn crate::store::UsageStore) -> Result<Status, sqlx::Error> {
        let now = self.ledger.now();
        let (start, ends) = budget.period.window(now);
        let spent = store.spent(budget, start).await?;
        Ok(Status { budget: budget.clone(), spent, start, ends })
    }
}

/// A budget and its current window.
#[derive(Debug, Clone)]
pub struct Status {
    /// The budget.
    pub budget: Budget,
    /// Spent in the window.
    pub spent: Spent,
    /// Window start, Unix ms.
    pub start: i64,
    /// Window end; `None` for a total budget.
    pub ends: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(date: &str) -> i64 {
        switchboard_kit::time::parse_date_ms(date).unwrap()
    }

    #[test]
    fn windows_are_utc_days_and_calendar_months() {
        let now = ms("2026-11-22T13:45:00Z");
        assert_eq!(Period::Day.window(now), (ms("2026-11-22"), Some(ms("2026-11-23"))));
        assert_eq!(Period::Month.window(now), (ms("2026-11-01"), Some(ms("2026-12-01"))));
        assert_eq!(Period::Month.window(ms("2026-12-31T23:59:59Z")), (ms("2026-12-01"), Some(ms("2027-01-01"))));
        assert_eq!(Period::Month.window(ms("2028-02-29T12:00:00Z")), (ms("2028-02-01"), Some(ms("2028-03-01"))));
        assert_eq!(Period::Total.window(now), (0, None));
    }

    #[test]
    fn a_budget_names_the_field_it_lacks() {
        let err = |r: Result<Budget, LlmError>| match r.unwrap_err() {
            LlmError::InvalidArgument { field, .. } => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(err(Budget::new(Scope::User, "t", "", Period::Day, Some(1), None, None)), "user_id");
        assert_eq!(err(Budget::new(Scope::Key, "t", "", Period::Day, Some(1), None, None)), "key_id");
        assert_eq!(err(Budget::new(Scope::Tenant, "", "", Period::Day, Some(1), None, None)), "system_id");
        assert_eq!(err(Budget::new(Scope::Tenant, "t", "", Period::Day, None, None, None)), "max_cost_micros");
        assert_eq!(err(Budget::new(Scope::Tenant, "t", "", Period::Day, None, Some(-1), None)), "max_tokens");
        assert_eq!(err(Budget::new(Scope::Tenant, "t", "", Period::Day, Some(1), None, Some(101))), "warn_percent");
        let ok = Budget::new(Scope::User, "drillquiz", "12345", Period::Month, Some(5_000_000), None, None).unwrap();
        assert_eq!(ok.id(), "user:drillquiz:12345:month");
        assert_eq!(ok.warn_percent, DEFAULT_WARN_PERCENT);
    }

    #[test]
    fn budgets_apply_to_their_tenant_user_or_key_only() {
        let tenant = Budget::new(Scope::Tenant, "a", "", Period::Day, Some(1), None, None).unwrap();
        let user = Budget::new(Scope::User, "a", "u", Period::Day, Some(1), None, None).unwrap();
        let key = Budget::new(Scope::Key, "a", "k1", Period::Day, Some(1), None, None).unwrap();
        assert!(tenant.applies("a", "x", "") && !tenant.applies("b", "x", ""));
        assert!(user.applies("a", "u", "k9") && !user.applies("a", "v", "") && !user.applies("b", "u", ""));
        assert!(key.applies("a", "x", "k1") && !key.applies("a", "x", "") && !key.applies("b", "x", "k1"));
    }

    #[test]
    fn warnings_and_exhaustion_follow_the_limits() {
        let b = Budget::new(Scope::Tenant, "a", "", Period::Day, Some(1000), Some(100), Some(80)).unwrap();
        assert!(!b.warns(Spent { cost_micros: 799, tokens: 79 }));
        assert!(b.warns(Spent { cost_micros: 800, tokens: 0 }));
        assert!(b.warns(Spent { cost_micros: 0, tokens: 80 }));
        assert!(!b.exhausted(Spent { cost_micros: 999, tokens: 99 }));
        assert!(b.exhausted(Spent { cost_micros: 1000, tokens: 0 }));
    }

    #[test]
    fn a_refusal_says_which_budget_and_when_it_resets() {
        let budget = Budget::new(Scope::Tenant, "drillquiz", "", Period::Month, Some(5_000_000), None, None).unwrap();
        let now = ms("2026-11-30T23:00:00Z");
        let refusal = Refusal {
            spent: Spent { cost_micros: 5_000_000, tokens: 10 },
            wanted: Spent { cost_micros: 10, tokens: 10 },
            resets_at: Period::Month.window(now).1,
            budget,
            now,
        };
        let status = refusal.status();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("tenant:drillquiz:month"), "{}", status.message());
        assert!(status.message().contains("$5.00 of $5.00"), "{}", status.message());
        assert!(status.message().contains("2026-12-01T00:00:00Z"), "{}", status.message());
        assert_eq!(status.metadata().get("sb-budget").unwrap(), "tenant:drillquiz:month");
        assert_eq!(status.metadata().get("sb-retry-after").unwrap(), "3600");
    }
}
