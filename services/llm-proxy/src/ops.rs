//! Operator commands on the LLM proxy's database, for the `switchboard budgets` CLI: an
//! operator acts from a pod shell without the admin HTTP API. Running replicas pick the
//! changes up within [`crate::budgets::RELOAD_INTERVAL`].

use std::fmt::Write as _;

use switchboard_kit::db::Db;

use crate::budgets::{Budget, Period, Scope, usd};
use crate::store::{BudgetStore, SqlStore, UsageStore};
use crate::{POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS, Settings};

/// A budget as the command line gives it.
#[derive(Debug, Clone)]
pub struct BudgetArgs {
    /// `tenant`, `user` or `key`.
    pub scope: String,
    /// Tenant.
    pub system_id: String,
    /// User, for a user budget.
    pub user_id: Option<String>,
    /// API key id, for a key budget.
    pub key_id: Option<String>,
    /// `day`, `month` or `total`.
    pub period: String,
    /// Spend limit in US dollars.
    pub max_usd: Option<f64>,
    /// Token limit.
    pub max_tokens: Option<i64>,
    /// Warning threshold in percent.
    pub warn_percent: Option<u32>,
}

impl BudgetArgs {
    fn budget(&self) -> anyhow::Result<Budget> {
        let scope = Scope::parse(&self.scope).ok_or_else(|| anyhow::anyhow!("--scope: use tenant, user or key"))?;
        let period = Period::parse(&self.period).ok_or_else(|| anyhow::anyhow!("--period: use day, month or total"))?;
        let max_cost_micros = match self.max_usd {
            Some(v) if !v.is_finite() || v < 0.0 => anyhow::bail!("--max-usd: must be a non-negative number"),
            Some(v) => Some((v * 1e6).round() as i64),
            None => None,
        };
        let subject = match scope {
            Scope::Tenant => String::new(),
            Scope::User => self.user_id.clone().unwrap_or_default(),
            Scope::Key => self.key_id.clone().unwrap_or_default(),
        };
        Budget::new(scope, &self.system_id, &subject, period, max_cost_micros, self.max_tokens, self.warn_percent)
            .map_err(|e| anyhow::anyhow!("--{}", e.to_string().replace('_', "-")))
    }
}

async fn store(settings: &Settings) -> anyhow::Result<(Db, SqlStore)> {
    let db = Db::connect(&settings.database_url, settings.database_var).await?;
    db.migrate(&SQLITE_MIGRATIONS, &POSTGRES_MIGRATIONS).await?;
    Ok((db.clone(), SqlStore::new(db)))
}

/// Creates or replaces a budget; returns its id.
pub async fn set_budget(settings: &Settings, args: &BudgetArgs) -> anyhow::Result<String> {
    let budget = args.budget()?;
    if settings.budgets.iter().any(|b| b.id() == budget.id()) {
        anyhow::bail!("budget {} is defined in SWITCHBOARD_CONFIG; change it there", budget.id());
    }
    let (db, store) = store(settings).await?;
    store.put_budget(&budget).await?;
    db.close().await;
    Ok(budget.id())
}

/// Deletes a budget; an error when there is none with this id.
pub async fn delete_budget(settings: &Settings, id: &str) -> anyhow::Result<()> {
    if settings.budgets.iter().any(|b| b.id() == id) {
        anyhow::bail!("budget {id} is defined in SWITCHBOARD_CONFIG; remove it there");
    }
    let (db, store) = store(settings).await?;
    let deleted = store.delete_budget(id).await?;
    db.close().await;
    if !deleted {
        anyhow::bail!("no budget {id:?}");
    }
    Ok(())
}

/// Every budget (the file's and the database's, of one tenant when given) with its spend in
/// the current period, as a table.
pub async fn list_budgets(settings: &Settings, system_id: Option<&str>) -> anyhow::Result<String> {
    let (db, store) = store(settings).await?;
    let book = crate::budgets::BudgetBook::new(settings.budgets.clone());
    book.replace_stored(store.budgets().await?);
    let now = switchboard_kit::time::now_ms();
    let mut out = String::new();
    writeln!(
        out,
        "{:<44} {:<6} {:>14} {:>14} {:>12} {:>12}  resets",
        "id", "source", "max", "spent", "max tokens", "tokens"
    )?;
    for budget in book.all().iter().filter(|b| system_id.is_none_or(|s| b.system_id == s)) {
        let (start, ends) = budget.period.window(now);
        let spent = store.spent(budget, start).await?;
        let flag = if budget.exhausted(spent) {
            "  EXHAUSTED"
        } else if budget.warns(spent) {
            "  warning"
        } else {
            ""
        };
        writeln!(
            out,
            "{:<44} {:<6} {:>14} {:>14} {:>12} {:>12}  {}{flag}",
            budget.id(),
            if budget.from_config { "config" } else { "api" },
            budget.max_cost_micros.map_or("-".into(), usd),
            usd(spent.cost_micros),
            budget.max_tokens.map_or("-".into(), |t| t.to_string()),
            spent.tokens,
            ends.map_or("never".into(), switchboard_kit::time::rfc3339),
        )?;
    }
    db.close().await;
    Ok(out)
}
