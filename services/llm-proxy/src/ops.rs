//! Operator commands on the LLM proxy's database, for the `switchboard budgets` CLI: an
//! operator acts from a pod shell without the admin HTTP API. Running replicas pick the
//! changes up within [`crate::budgets::RELOAD_INTERVAL`].

use std::fmt::Write as _;

use switchboard_kit::db::Db;

use crate::budgets::{BudgetBook, BudgetText, usd};
use crate::store::{BudgetStore, SqlStore, UsageStore};
use crate::{MIGRATIONS, Settings};

async fn store(settings: &Settings) -> anyhow::Result<(Db, SqlStore)> {
    let db = Db::connect(&settings.database_url, settings.database_var).await?;
    db.migrate(&MIGRATIONS).await?;
    Ok((db.clone(), SqlStore::new(db)))
}

/// Creates or replaces a budget; returns its id.
pub async fn set_budget(settings: &Settings, args: &BudgetText) -> anyhow::Result<String> {
    let budget = args.budget().map_err(|e| anyhow::anyhow!("--{}", e.replace('_', "-")))?;
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
    let book = BudgetBook::new(settings.budgets.clone());
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
