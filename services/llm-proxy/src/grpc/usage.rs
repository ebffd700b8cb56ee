//! The `switchboard.llm.v1.UsageService` implementation: usage reports over the rollups and
//! the budgets set through the API. The admin token sees every tenant, a service key the
//! tenants it serves, a client credential its own usage only (and may not change budgets).

use std::sync::Arc;

use switchboard_kit::auth::Caller;
use switchboard_kit::time::{from_timestamp, to_timestamp};
use switchboard_proto::llm::v1 as pb;
use switchboard_proto::llm::v1::usage_service_server::UsageService;
use tonic::{Request, Response, Status};

use crate::budgets::{Budget, Budgets, Period, Scope};
use crate::error::LlmError;
use crate::store::{BudgetStore, Dimension, ReportRow, UsageFilter, UsageStore};

const HOUR_MS: i64 = 3_600_000;
/// Longest range of an hourly report.
const MAX_HOURLY_RANGE_MS: i64 = 31 * 24 * HOUR_MS;

/// The gRPC face of usage and budgets.
pub(crate) struct UsageGrpc {
    usage: Arc<dyn UsageStore>,
    stored: Arc<dyn BudgetStore>,
    budgets: Budgets,
}

impl UsageGrpc {
    pub(crate) fn new(usage: Arc<dyn UsageStore>, stored: Arc<dyn BudgetStore>, budgets: Budgets) -> Self {
        Self { usage, stored, budgets }
    }

    /// Re-reads the stored budgets into the book.
    pub(crate) async fn reload(&self) -> Result<(), sqlx::Error> {
        reload(&*self.stored, &self.budgets.book).await
    }

    async fn statuses(&self, budgets: Vec<Budget>) -> Result<Vec<pb::BudgetStatus>, Status> {
        let mut out = Vec::with_capacity(budgets.len());
        for budget in budgets {
            let status = self.budgets.status(&budget, &*self.usage).await.map_err(LlmError::from)?;
            out.push(status_pb(&status));
        }
        Ok(out)
    }
}

/// Re-reads the stored budgets into `book`.
pub(crate) async fn reload(stored: &dyn BudgetStore, book: &crate::budgets::BudgetBook) -> Result<(), sqlx::Error> {
    book.replace_stored(stored.budgets().await?);
    Ok(())
}

/// The tenants `caller` may see, narrowed to `asked` when given: `None` for every tenant.
fn visible_tenants(caller: &Caller, asked: &str) -> Result<Option<Vec<String>>, Status> {
    let asked = asked.trim();
    if !caller.service {
        if !asked.is_empty() && asked != caller.system_id {
            return Err(Status::permission_denied("this credential can only see its own usage"));
        }
        return Ok(Some(vec![caller.system_id.clone()]));
    }
    if !asked.is_empty() {
        if !caller.serves(asked) {
            return Err(Status::permission_denied(format!("this credential does not serve system_id {asked:?}")));
        }
        return Ok(Some(vec![asked.to_owned()]));
    }
    Ok((!caller.allowed_system_ids.is_empty()).then(|| caller.allowed_system_ids.clone()))
}

/// Budgets `caller` may see among `all`, within `tenants`.
fn visible_budgets(caller: &Caller, all: &[Budget], tenants: &Option<Vec<String>>) -> Vec<Budget> {
    all.iter()
        .filter(|b| tenants.as_ref().is_none_or(|t| t.contains(&b.system_id)))
        .filter(|b| caller.service || b.applies(&caller.system_id, &caller.user_id, &caller.key_id))
        .cloned()
        .collect()
}

fn dimension(raw: i32) -> Result<Dimension, Status> {
    Ok(match pb::UsageDimension::try_from(raw) {
        Ok(pb::UsageDimension::Tenant) => Dimension::Tenant,
        Ok(pb::UsageDimension::User) => Dimension::User,
        Ok(pb::UsageDimension::Key) => Dimension::Key,
        Ok(pb::UsageDimension::Model) => Dimension::Model,
        Ok(pb::UsageDimension::Day) => Dimension::Day,
        Ok(pb::UsageDimension::Hour) => Dimension::Hour,
        _ => {
            return Err(
                LlmError::InvalidArgument { field: "group_by", reason: format!("unknown dimension {raw}") }.into()
            );
        }
    })
}

fn given(value: &str) -> Option<String> {
    Some(value.trim()).filter(|v| !v.is_empty()).map(str::to_owned)
}

fn row_pb(row: &ReportRow) -> pb::UsageRow {
    let t = &row.totals;
    pb::UsageRow {
        system_id: row.system_id.clone(),
        user_id: row.user_id.clone(),
        key_id: row.key_id.clone(),
        model: row.model.clone(),
        period_start: (row.period_start >= 0).then(|| to_timestamp(row.period_start)),
        requests: t.requests,
        prompt_tokens: t.prompt_tokens,
        completion_tokens: t.completion_tokens,
        total_tokens: t.prompt_tokens + t.completion_tokens,
        cost_micros: t.cost_micros,
        unpriced_requests: t.unpriced_requests,
    }
}

fn budget_pb(b: &Budget) -> pb::Budget {
    pb::Budget {
        id: b.id(),
        scope: match b.scope {
            Scope::Tenant => pb::BudgetScope::Tenant,
            Scope::User => pb::BudgetScope::User,
            Scope::Key => pb::BudgetScope::Key,
        } as i32,
        system_id: b.system_id.clone(),
        user_id: if b.scope == Scope::User { b.subject.clone() } else { String::new() },
        key_id: if b.scope == Scope::Key { b.subject.clone() } else { String::new() },
        period: match b.period {
            Period::Day => pb::BudgetPeriod::Day,
            Period::Month => pb::BudgetPeriod::Month,
            Period::Total => pb::BudgetPeriod::Total,
        } as i32,
        max_cost_micros: b.max_cost_micros,
        max_tokens: b.max_tokens,
        warn_percent: b.warn_percent,
        source: if b.from_config { "config" } else { "api" }.to_owned(),
    }
}

fn status_pb(s: &crate::budgets::Status) -> pb::BudgetStatus {
    pb::BudgetStatus {
        budget: Some(budget_pb(&s.budget)),
        spent_cost_micros: s.spent.cost_micros,
        spent_tokens: s.spent.tokens,
        period_start: Some(to_timestamp(s.start)),
        resets_at: s.ends.map(to_timestamp),
        warning: s.budget.warns(s.spent),
        exhausted: s.budget.exhausted(s.spent),
    }
}

fn budget_from_pb(b: pb::Budget) -> Result<Budget, LlmError> {
    let invalid = |field, reason: &str| LlmError::InvalidArgument { field, reason: reason.to_owned() };
    let scope = match pb::BudgetScope::try_from(b.scope) {
        Ok(pb::BudgetScope::Tenant) => Scope::Tenant,
        Ok(pb::BudgetScope::User) => Scope::User,
        Ok(pb::BudgetScope::Key) => Scope::Key,
        _ => return Err(invalid("scope", "use BUDGET_SCOPE_TENANT, BUDGET_SCOPE_USER or BUDGET_SCOPE_KEY")),
    };
    let period = match pb::BudgetPeriod::try_from(b.period) {
        Ok(pb::BudgetPeriod::Day) => Period::Day,
        Ok(pb::BudgetPeriod::Month) => Period::Month,
        Ok(pb::BudgetPeriod::Total) => Period::Total,
        _ => return Err(invalid("period", "use BUDGET_PERIOD_DAY, BUDGET_PERIOD_MONTH or BUDGET_PERIOD_TOTAL")),
    };
    let subject = match scope {
        Scope::Tenant if !b.user_id.trim().is_empty() || !b.key_id.trim().is_empty() => {
            return Err(invalid("user_id", "a tenant budget names no user or key"));
        }
        Scope::Tenant => String::new(),
        Scope::User if !b.key_id.trim().is_empty() => return Err(invalid("key_id", "a user budget names no key")),
        Scope::User => b.user_id,
        Scope::Key if !b.user_id.trim().is_empty() => return Err(invalid("user_id", "a key budget names no user")),
        Scope::Key => b.key_id,
    };
    let warn = (b.warn_percent != 0).then_some(b.warn_percent);
    Budget::new(scope, &b.system_id, &subject, period, b.max_cost_micros, b.max_tokens, warn)
}

/// Only the admin token and service keys change budgets, and only in tenants they serve.
fn may_manage(caller: &Caller, system_id: &str) -> Result<(), Status> {
    if !caller.service {
        return Err(Status::permission_denied("only the admin token or a service key may change budgets"));
    }
    if !caller.serves(system_id) {
        return Err(Status::permission_denied(format!("this credential does not serve system_id {system_id:?}")));
    }
    Ok(())
}

#[tonic::async_trait]
impl UsageService for UsageGrpc {
    async fn get_usage_report(
        &self,
        request: Request<pb::GetUsageReportRequest>,
    ) -> Result<Response<pb::GetUsageReportResponse>, Status> {
        let caller = switchboard_kit::auth::caller(&request)?.clone();
        let req = request.into_inner();
        let now = self.budgets.ledger.now();
        let from = req.from.as_ref().map_or_else(|| Period::Month.window(now).0, from_timestamp);
        let to = req.to.as_ref().map_or(now, from_timestamp);
        let (from, to) = (from - from.rem_euclid(HOUR_MS), to + (HOUR_MS - to.rem_euclid(HOUR_MS)) % HOUR_MS);
        if to <= from {
            return Err(LlmError::InvalidArgument { field: "to", reason: "must be after from".into() }.into());
        }
        let group_by = req.group_by.iter().map(|d| dimension(*d)).collect::<Result<Vec<_>, _>>()?;
        if group_by.contains(&Dimension::Hour) && to - from > MAX_HOURLY_RANGE_MS {
            return Err(LlmError::InvalidArgument {
                field: "group_by",
                reason: "an hourly report covers at most 31 days; group by day for longer ranges".into(),
            }
            .into());
        }
        let tenants = visible_tenants(&caller, &req.system_id)?;
        self.reload().await.map_err(LlmError::from)?;
        let user_id = if caller.service {
            given(&req.user_id)
        } else {
            if given(&req.user_id).is_some_and(|u| u != caller.user_id) {
                return Err(Status::permission_denied("this credential can only see its own usage"));
            }
            Some(caller.user_id.clone())
        };
        let filter =
            UsageFilter { system_ids: tenants.clone(), user_id, key_id: given(&req.key_id), model: given(&req.model) };
        let rows = self.usage.report(from, to, &filter, &group_by).await.map_err(LlmError::from)?;
        let mut totals = crate::store::Rollup::default();
        for row in &rows {
            totals.add(&row.totals);
        }
        let total_row = ReportRow {
            system_id: String::new(),
            user_id: String::new(),
            key_id: String::new(),
            model: String::new(),
            period_start: -1,
            totals,
        };
        // Without grouping the single row is the total.
        let rows = if group_by.is_empty() { Vec::new() } else { rows.iter().map(row_pb).collect() };
        let budgets = visible_budgets(&caller, &self.budgets.book.all(), &tenants);
        Ok(Response::new(pb::GetUsageReportResponse {
            rows,
            totals: Some(row_pb(&total_row)),
            from: Some(to_timestamp(from)),
            to: Some(to_timestamp(to)),
            budgets: self.statuses(budgets).await?,
        }))
    }

    async fn set_budget(
        &self,
        request: Request<pb::SetBudgetRequest>,
    ) -> Result<Response<pb::SetBudgetResponse>, Status> {
        let caller = switchboard_kit::auth::caller(&request)?.clone();
        let Some(budget) = request.into_inner().budget else {
            return Err(LlmError::InvalidArgument { field: "budget", reason: "is required".into() }.into());
        };
        let budget = budget_from_pb(budget)?;
        may_manage(&caller, &budget.system_id)?;
        if self.budgets.book.configured(&budget.id()).is_some() {
            return Err(Status::failed_precondition(format!(
                "budget {} is defined in the configuration file; change it there",
                budget.id()
            )));
        }
        self.stored.put_budget(&budget).await.map_err(LlmError::from)?;
        self.reload().await.map_err(LlmError::from)?;
        tracing::info!(budget = %budget.id(), "budget set");
        Ok(Response::new(pb::SetBudgetResponse { budget: Some(budget_pb(&budget)) }))
    }

    async fn list_budgets(
        &self,
        request: Request<pb::ListBudgetsRequest>,
    ) -> Result<Response<pb::ListBudgetsResponse>, Status> {
        let caller = switchboard_kit::auth::caller(&request)?.clone();
        let tenants = visible_tenants(&caller, &request.get_ref().system_id)?;
        self.reload().await.map_err(LlmError::from)?;
        let budgets = visible_budgets(&caller, &self.budgets.book.all(), &tenants);
        Ok(Response::new(pb::ListBudgetsResponse { budgets: self.statuses(budgets).await? }))
    }

    async fn delete_budget(
        &self,
        request: Request<pb::DeleteBudgetRequest>,
    ) -> Result<Response<pb::DeleteBudgetResponse>, Status> {
        let caller = switchboard_kit::auth::caller(&request)?.clone();
        let id = request.into_inner().id.trim().to_owned();
        self.reload().await.map_err(LlmError::from)?;
        if self.budgets.book.configured(&id).is_some() {
            return Err(Status::failed_precondition(format!(
                "budget {id} is defined in the configuration file; remove it there"
            )));
        }
        let Some(budget) = self.budgets.book.all().iter().find(|b| b.id() == id).cloned() else {
            return Err(Status::not_found(format!("no budget {id:?}")));
        };
        may_manage(&caller, &budget.system_id)?;
        if !self.stored.delete_budget(&id).await.map_err(LlmError::from)? {
            return Err(Status::not_found(format!("no budget {id:?}")));
        }
        self.reload().await.map_err(LlmError::from)?;
        tracing::info!(budget = %id, "budget deleted");
        Ok(Response::new(pb::DeleteBudgetResponse {}))
    }
}
