//! Storage of the LLM proxy: each principal's chosen model, the provider keys users bring,
//! usage rolled up per hour (and reports over it) and the budgets set through the API.

mod cached_choices;

use async_trait::async_trait;
use sqlx::AssertSqlSafe;
use switchboard_kit::db::Db;
use switchboard_kit::{db_run, db_write};

pub use cached_choices::{CHOICE_TTL, CachedChoices};

/// A principal's current model.
#[async_trait]
pub trait ModelChoiceStore: Send + Sync + 'static {
    /// The chosen model, if any.
    async fn get(&self, system_id: &str, user_id: &str) -> Result<Option<String>, sqlx::Error>;
    /// Sets the chosen model.
    async fn set(&self, system_id: &str, user_id: &str, model: &str) -> Result<(), sqlx::Error>;
}

/// [`ModelChoiceStore`] and [`ProviderKeyStore`] on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct SqlStore {
    db: Db,
}

impl SqlStore {
    /// A store over `db` (already migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

#[async_trait]
impl ModelChoiceStore for SqlStore {
    async fn get(&self, system_id: &str, user_id: &str) -> Result<Option<String>, sqlx::Error> {
        db_run!(&self.db, |pool| {
            sqlx::query_scalar("SELECT model FROM model_choices WHERE system_id = $1 AND user_id = $2")
                .bind(system_id)
                .bind(user_id)
                .fetch_optional(pool)
                .await
        })
    }

    async fn set(&self, system_id: &str, user_id: &str, model: &str) -> Result<(), sqlx::Error> {
        let now = switchboard_kit::time::now_ms();
        db_write!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO model_choices (system_id, user_id, model, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (system_id, user_id) DO UPDATE SET model = excluded.model, updated_at = excluded.updated_at",
            )
            .bind(system_id)
            .bind(user_id)
            .bind(model)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }
}

/// A provider key a user brought (sealed), with its usage.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredProviderKey {
    /// Id.
    pub id: String,
    /// Owner's tenant.
    pub system_id: String,
    /// Owner.
    pub user_id: String,
    /// `openai`.
    pub provider: String,
    /// The owner's name for it.
    pub label: String,
    /// AES-256-GCM sealed key.
    pub sealed: String,
    /// Last four characters.
    pub last_four: String,
    /// Unix ms.
    pub created_at: i64,
    /// Completions made with it.
    pub requests: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Cost, micro-dollars.
    pub cost_micros: i64,
    /// Unix ms.
    pub last_used_at: Option<i64>,
}

/// Usage to add to a provider key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyUsage {
    /// Completions.
    pub requests: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Cost, micro-dollars.
    pub cost_micros: i64,
    /// Unix ms of the last use.
    pub last_used_at: i64,
}

/// Provider keys users bring.
#[async_trait]
pub trait ProviderKeyStore: Send + Sync + 'static {
    /// Stores a key.
    async fn insert(&self, key: &StoredProviderKey) -> Result<(), sqlx::Error>;
    /// The owner's keys, newest first.
    async fn list(&self, system_id: &str, user_id: &str) -> Result<Vec<StoredProviderKey>, sqlx::Error>;
    /// One of the owner's keys.
    async fn get(&self, system_id: &str, user_id: &str, id: &str) -> Result<Option<StoredProviderKey>, sqlx::Error>;
    /// The owner's newest key for a provider: the one their completions use.
    async fn newest(
        &self,
        system_id: &str,
        user_id: &str,
        provider: &str,
    ) -> Result<Option<StoredProviderKey>, sqlx::Error>;
    /// Deletes one of the owner's keys; false when there was none.
    async fn delete(&self, system_id: &str, user_id: &str, id: &str) -> Result<bool, sqlx::Error>;
    /// Adds usage, in one transaction.
    async fn add_usage(&self, usage: &[(String, KeyUsage)]) -> Result<(), sqlx::Error>;
}

const KEY_COLUMNS: &str = "id, system_id, user_id, provider, label, sealed, last_four, created_at, requests, \
                           prompt_tokens, completion_tokens, cost_micros, last_used_at";

#[async_trait]
impl ProviderKeyStore for SqlStore {
    async fn insert(&self, k: &StoredProviderKey) -> Result<(), sqlx::Error> {
        db_write!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO provider_keys (id, system_id, user_id, provider, label, sealed, last_four, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&k.id)
            .bind(&k.system_id)
            .bind(&k.user_id)
            .bind(&k.provider)
            .bind(&k.label)
            .bind(&k.sealed)
            .bind(&k.last_four)
            .bind(k.created_at)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    async fn list(&self, system_id: &str, user_id: &str) -> Result<Vec<StoredProviderKey>, sqlx::Error> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM provider_keys WHERE system_id = $1 AND user_id = $2 ORDER BY created_at DESC, id DESC"
        );
        db_run!(&self.db, |pool| sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .bind(system_id)
            .bind(user_id)
            .fetch_all(pool)
            .await)
    }

    async fn get(&self, system_id: &str, user_id: &str, id: &str) -> Result<Option<StoredProviderKey>, sqlx::Error> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM provider_keys WHERE system_id = $1 AND user_id = $2 AND id = $3");
        db_run!(&self.db, |pool| sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .bind(system_id)
            .bind(user_id)
            .bind(id)
            .fetch_optional(pool)
            .await)
    }

    async fn newest(
        &self,
        system_id: &str,
        user_id: &str,
        provider: &str,
    ) -> Result<Option<StoredProviderKey>, sqlx::Error> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM provider_keys WHERE system_id = $1 AND user_id = $2 AND provider = $3 \
             ORDER BY created_at DESC, id DESC LIMIT 1"
        );
        db_run!(&self.db, |pool| {
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(system_id)
                .bind(user_id)
                .bind(provider)
                .fetch_optional(pool)
                .await
        })
    }

    async fn delete(&self, system_id: &str, user_id: &str, id: &str) -> Result<bool, sqlx::Error> {
        db_write!(&self.db, |pool| {
            sqlx::query("DELETE FROM provider_keys WHERE system_id = $1 AND user_id = $2 AND id = $3")
                .bind(system_id)
                .bind(user_id)
                .bind(id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected() > 0)
        })
    }

    async fn add_usage(&self, usage: &[(String, KeyUsage)]) -> Result<(), sqlx::Error> {
        if usage.is_empty() {
            return Ok(());
        }
        db_write!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            for (id, u) in usage {
                sqlx::query(
                    "UPDATE provider_keys SET requests = requests + $1, prompt_tokens = prompt_tokens + $2, \
                     completion_tokens = completion_tokens + $3, cost_micros = cost_micros + $4, \
                     last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < $5 THEN $5 ELSE last_used_at END \
                     WHERE id = $6",
                )
                .bind(u.requests)
                .bind(u.prompt_tokens)
                .bind(u.completion_tokens)
                .bind(u.cost_micros)
                .bind(u.last_used_at)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })
    }
}

/// What one usage rollup row counts: a principal's completions with one key and one model
/// in one hour.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RollupKey {
    /// Tenant.
    pub system_id: String,
    /// User.
    pub user_id: String,
    /// Public id of the API key used; empty for other credentials.
    pub key_id: String,
    /// Catalogue model.
    pub model: String,
    /// Start of the hour, Unix ms.
    pub hour: i64,
}

/// Totals of a rollup row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Rollup {
    /// Completions.
    pub requests: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Cost in micro-dollars (of the priced completions).
    pub cost_micros: i64,
    /// Completions of models without a price.
    pub unpriced_requests: i64,
}

impl Rollup {
    /// Adds `other` to these totals.
    pub fn add(&mut self, other: &Self) {
        self.requests += other.requests;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cost_micros = self.cost_micros.saturating_add(other.cost_micros);
        self.unpriced_requests += other.unpriced_requests;
    }
}

/// What a usage report's rows are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// Tenant.
    Tenant,
    /// User (with the tenant).
    User,
    /// API key.
    Key,
    /// Model.
    Model,
    /// UTC day.
    Day,
    /// UTC hour.
    Hour,
}

/// Which usage a report counts.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    /// Only these tenants; `None` for every tenant.
    pub system_ids: Option<Vec<String>>,
    /// Only this user.
    pub user_id: Option<String>,
    /// Only this API key.
    pub key_id: Option<String>,
    /// Only this model.
    pub model: Option<String>,
}

/// One row of a usage report: the grouped-by columns (the others empty, `period_start` -1
/// unless grouped by day or hour) and the totals.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReportRow {
    /// Tenant.
    pub system_id: String,
    /// User.
    pub user_id: String,
    /// API key.
    pub key_id: String,
    /// Model.
    pub model: String,
    /// Start of the day or hour, Unix ms; -1 when not grouped by time.
    pub period_start: i64,
    /// Totals.
    #[sqlx(flatten)]
    pub totals: Rollup,
}

/// Usage rolled up per principal, key, model and hour.
#[async_trait]
pub trait UsageStore: Send + Sync + 'static {
    /// Adds the totals to their rows (creating them), in one transaction.
    async fn add_rollups(&self, rollups: &[(RollupKey, Rollup)]) -> Result<(), sqlx::Error>;
    /// Usage in `[from, to)` (Unix ms, whole hours) matching `filter`, one row per group of
    /// `group_by` (one row in all when empty), ordered by the grouped columns.
    async fn report(
        &self,
        from: i64,
        to: i64,
        filter: &UsageFilter,
        group_by: &[Dimension],
    ) -> Result<Vec<ReportRow>, sqlx::Error>;
    /// What was spent against `budget` since `from` (Unix ms).
    async fn spent(&self, budget: &crate::budgets::Budget, from: i64) -> Result<crate::budgets::Spent, sqlx::Error> {
        use crate::budgets::Scope;
        let filter = UsageFilter {
            system_ids: Some(vec![budget.system_id.clone()]),
            user_id: (budget.scope == Scope::User).then(|| budget.subject.clone()),
            key_id: (budget.scope == Scope::Key).then(|| budget.subject.clone()),
            model: None,
        };
        let rows = self.report(from, i64::MAX, &filter, &[]).await?;
        let mut spent = crate::budgets::Spent::default();
        for row in rows {
            spent.cost_micros += row.totals.cost_micros;
            spent.tokens += row.totals.prompt_tokens + row.totals.completion_tokens;
        }
        Ok(spent)
    }
}

/// The SQL of a report: grouped columns (constants for the others), placeholders from `$4`
/// for the tenants, then user, key and model when filtered.
fn report_sql(filter: &UsageFilter, group_by: &[Dimension]) -> String {
    let has = |d| group_by.contains(&d);
    let column = |on: bool, name: &str| if on { name.to_owned() } else { format!("'' AS {name}") };
    let period = if has(Dimension::Hour) {
        "hour"
    } else if has(Dimension::Day) {
        "hour - (hour % 86400000)"
    } else {
        "CAST(-1 AS BIGINT)"
    };
    let mut select = vec![
        column(has(Dimension::Tenant) || has(Dimension::User), "system_id"),
        column(has(Dimension::User), "user_id"),
        column(has(Dimension::Key), "key_id"),
        column(has(Dimension::Model), "model"),
        format!("{period} AS period_start"),
    ];
    select.extend(
        ["requests", "prompt_tokens", "completion_tokens", "cost_micros", "unpriced_requests"]
            .map(|c| format!("CAST(COALESCE(SUM({c}), 0) AS BIGINT) AS {c}")),
    );
    let mut wheres = vec!["hour >= $1".to_owned(), "hour < $2".to_owned()];
    let mut n = 2;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    if let Some(systems) = &filter.system_ids {
        if systems.is_empty() {
            wheres.push("1 = 0".into());
        } else {
            let list: Vec<String> = systems.iter().map(|_| next()).collect();
            wheres.push(format!("system_id IN ({})", list.join(", ")));
        }
    }
    for (value, name) in [(&filter.user_id, "user_id"), (&filter.key_id, "key_id"), (&filter.model, "model")] {
        if value.is_some() {
            wheres.push(format!("{name} = {}", next()));
        }
    }
    let mut groups = Vec::new();
    if has(Dimension::Tenant) || has(Dimension::User) {
        groups.push("system_id");
    }
    for (d, name) in [(Dimension::User, "user_id"), (Dimension::Key, "key_id"), (Dimension::Model, "model")] {
        if has(d) {
            groups.push(name);
        }
    }
    if has(Dimension::Hour) || has(Dimension::Day) {
        groups.push("period_start");
    }
    let mut sql = format!("SELECT {} FROM usage_rollups WHERE {}", select.join(", "), wheres.join(" AND "));
    if !groups.is_empty() {
        // PostgreSQL groups by an output column's name, SQLite by either; both order by it.
        let by: Vec<String> =
            groups.iter().map(|g| if *g == "period_start" { period.to_owned() } else { (*g).to_owned() }).collect();
        sql.push_str(&format!(" GROUP BY {} ORDER BY {}", by.join(", "), groups.join(", ")));
    }
    sql
}

#[async_trait]
impl UsageStore for SqlStore {
    async fn add_rollups(&self, rollups: &[(RollupKey, Rollup)]) -> Result<(), sqlx::Error> {
        if rollups.is_empty() {
            return Ok(());
        }
        db_write!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            for (k, r) in rollups {
                sqlx::query(
                    "INSERT INTO usage_rollups (system_id, user_id, key_id, model, hour, requests, prompt_tokens, \
                     completion_tokens, cost_micros, unpriced_requests) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (system_id, user_id, key_id, model, hour) DO UPDATE SET \
                     requests = usage_rollups.requests + excluded.requests, \
                     prompt_tokens = usage_rollups.prompt_tokens + excluded.prompt_tokens, \
                     completion_tokens = usage_rollups.completion_tokens + excluded.completion_tokens, \
                     cost_micros = usage_rollups.cost_micros + excluded.cost_micros, \
                     unpriced_requests = usage_rollups.unpriced_requests + excluded.unpriced_requests",
                )
                .bind(&k.system_id)
                .bind(&k.user_id)
                .bind(&k.key_id)
                .bind(&k.model)
                .bind(k.hour)
                .bind(r.requests)
                .bind(r.prompt_tokens)
                .bind(r.completion_tokens)
                .bind(r.cost_micros)
                .bind(r.unpriced_requests)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })
    }

    async fn report(
        &self,
        from: i64,
        to: i64,
        filter: &UsageFilter,
        group_by: &[Dimension],
    ) -> Result<Vec<ReportRow>, sqlx::Error> {
        let sql = report_sql(filter, group_by);
        db_run!(&self.db, |pool| {
            let mut query = sqlx::query_as::<_, ReportRow>(AssertSqlSafe(sql.as_str())).bind(from).bind(to);
            for system_id in filter.system_ids.iter().flatten() {
                query = query.bind(system_id);
            }
            for value in [&filter.user_id, &filter.key_id, &filter.model].into_iter().flatten() {
                query = query.bind(value);
            }
            query.fetch_all(pool).await
        })
    }
}

/// The budgets set through the API (the configuration file's are not stored).
#[async_trait]
pub trait BudgetStore: Send + Sync + 'static {
    /// Every stored budget.
    async fn budgets(&self) -> Result<Vec<crate::budgets::Budget>, sqlx::Error>;
    /// Creates or replaces the budget with `budget`'s id.
    async fn put_budget(&self, budget: &crate::budgets::Budget) -> Result<(), sqlx::Error>;
    /// Deletes the budget with this id; whether there was one.
    async fn delete_budget(&self, id: &str) -> Result<bool, sqlx::Error>;
}

#[derive(sqlx::FromRow)]
struct BudgetRow {
    scope: String,
    system_id: String,
    subject: String,
    period: String,
    max_cost_micros: Option<i64>,
    max_tokens: Option<i64>,
    warn_percent: i32,
}

#[async_trait]
impl BudgetStore for SqlStore {
    async fn budgets(&self) -> Result<Vec<crate::budgets::Budget>, sqlx::Error> {
        use crate::budgets::{Budget, Period, Scope};
        let rows: Vec<BudgetRow> = db_run!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT scope, system_id, subject, period, max_cost_micros, max_tokens, warn_percent FROM budgets \
                 ORDER BY id",
            )
            .fetch_all(pool)
            .await
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some(Budget {
                    scope: Scope::parse(&r.scope)?,
                    system_id: r.system_id,
                    subject: r.subject,
                    period: Period::parse(&r.period)?,
                    max_cost_micros: r.max_cost_micros,
                    max_tokens: r.max_tokens,
                    warn_percent: u32::try_from(r.warn_percent).unwrap_or(crate::budgets::DEFAULT_WARN_PERCENT),
                    from_config: false,
                })
            })
            .collect())
    }

    async fn put_budget(&self, b: &crate::budgets::Budget) -> Result<(), sqlx::Error> {
        let now = switchboard_kit::time::now_ms();
        let warn = i32::try_from(b.warn_percent).unwrap_or(100);
        db_write!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO budgets (id, scope, system_id, subject, period, max_cost_micros, max_tokens, \
                 warn_percent, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (id) DO UPDATE SET max_cost_micros = excluded.max_cost_micros, \
                 max_tokens = excluded.max_tokens, warn_percent = excluded.warn_percent, \
                 updated_at = excluded.updated_at",
            )
            .bind(b.id())
            .bind(b.scope.name())
            .bind(&b.system_id)
            .bind(&b.subject)
            .bind(b.period.name())
            .bind(b.max_cost_micros)
            .bind(b.max_tokens)
            .bind(warn)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    async fn delete_budget(&self, id: &str) -> Result<bool, sqlx::Error> {
        db_write!(&self.db, |pool| {
            sqlx::query("DELETE FROM budgets WHERE id = $1").bind(id).execute(pool).await.map(|r| r.rows_affected() > 0)
        })
    }
}
