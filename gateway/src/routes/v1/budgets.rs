//! `GET|PUT /v1/budgets` and `DELETE /v1/budgets/{id}`: spend and token limits per tenant,
//! user or API key, per day, month or in total. The usage service enforces them on every
//! completion and decides who may see or change them: the admin token (`X-Admin-Token`) every
//! tenant's, a service key its tenants'; other credentials may read their own and change none.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use switchboard_kit::time::timestamp_rfc3339;
use switchboard_proto::llm::v1 as pb;
use utoipa::{IntoParams, ToSchema};

use super::READ_DEADLINE;
use super::usage::{Requester, usd};
use crate::error::{ApiError, FastApiError};
use crate::extract::{ValidJson, ValidQuery};
use crate::state::AppState;

/// The warning threshold when a budget sets none, in percent of a limit.
const DEFAULT_WARN_PERCENT: u32 = 80;
/// The largest spend limit accepted, in US dollars (far inside micro-dollars in an `i64`).
const MAX_USD: f64 = 1e12;

/// A budget.
#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetBody {
    /// `<scope>:<system_id>[:<user_id or key_id>]:<period>`, e.g. `user:drillquiz:12345:month`.
    id: String,
    /// What it caps: `tenant` (everything a tenant's users and keys spend), `user` (one user of a
    /// tenant) or `key` (everything spent through one API key).
    scope: &'static str,
    /// The tenant.
    system_id: String,
    /// The user, for a `user` budget.
    user_id: Option<String>,
    /// Public id of the API key, for a `key` budget.
    key_id: Option<String>,
    /// When it resets (UTC): `day`, `month`, or `total` for never.
    period: &'static str,
    /// Spend limit in US dollars; `null` for none.
    max_usd: Option<f64>,
    /// Token limit (prompt + completion); `null` for none.
    max_tokens: Option<i64>,
    /// Percent of a limit at which the budget reports a warning.
    warn_percent: u32,
    /// `api` (set through this API or gRPC) or `config` (the configuration file; read-only).
    source: String,
}

/// A budget and what has been spent against it in its current period.
#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetStatusBody {
    /// The budget.
    #[serde(flatten)]
    budget: BudgetBody,
    /// Spent in this period, in US dollars (completions of models without a price count as 0).
    spent_usd: f64,
    /// Tokens used in this period.
    spent_tokens: i64,
    /// Start of the current period (RFC 3339).
    period_start: Option<String>,
    /// When the period ends and the budget is whole again (RFC 3339); `null` for `total`.
    resets_at: Option<String>,
    /// A limit is at or past `warn_percent`.
    warning: bool,
    /// A limit is reached: completions are refused (429) until `resets_at`.
    exhausted: bool,
}

/// The budget list.
#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetList {
    /// The budgets the credential may see, with their current spend.
    data: Vec<BudgetStatusBody>,
}

/// Query of the budget list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this tenant's budgets; every tenant the credential may see when absent.
    system_id: Option<String>,
}

/// `PUT /v1/budgets` body: the budget to create, or to replace (one budget per scope, subject
/// and period).
#[derive(Debug, Deserialize, ToSchema)]
pub struct SetBudget {
    /// `tenant`, `user` or `key`.
    scope: String,
    /// The tenant.
    system_id: String,
    /// The user (required for `user`).
    user_id: Option<String>,
    /// Public id of the API key (required for `key`).
    key_id: Option<String>,
    /// `day`, `month` or `total` (never resets).
    period: String,
    /// Spend limit in US dollars (rounded to the micro-dollar).
    max_usd: Option<f64>,
    /// Token limit (prompt + completion).
    max_tokens: Option<i64>,
    /// Percent of a limit at which to warn, 1-100; 80 when absent.
    #[schema(minimum = 1, maximum = 100)]
    warn_percent: Option<u32>,
}

fn scope_name(scope: i32) -> &'static str {
    match pb::BudgetScope::try_from(scope).unwrap_or(pb::BudgetScope::Unspecified) {
        pb::BudgetScope::Tenant => "tenant",
        pb::BudgetScope::User => "user",
        pb::BudgetScope::Key => "key",
        pb::BudgetScope::Unspecified => "unspecified",
    }
}

fn period_name(period: i32) -> &'static str {
    match pb::BudgetPeriod::try_from(period).unwrap_or(pb::BudgetPeriod::Unspecified) {
        pb::BudgetPeriod::Day => "day",
        pb::BudgetPeriod::Month => "month",
        pb::BudgetPeriod::Total => "total",
        pb::BudgetPeriod::Unspecified => "unspecified",
    }
}

fn budget_body(b: pb::Budget) -> BudgetBody {
    BudgetBody {
        scope: scope_name(b.scope),
        period: period_name(b.period),
        user_id: (!b.user_id.is_empty()).then_some(b.user_id),
        key_id: (!b.key_id.is_empty()).then_some(b.key_id),
        max_usd: b.max_cost_micros.map(usd),
        max_tokens: b.max_tokens,
        warn_percent: b.warn_percent,
        id: b.id,
        system_id: b.system_id,
        source: b.source,
    }
}

/// A budget status as answered (here and in usage reports).
pub(super) fn status_body(s: pb::BudgetStatus) -> BudgetStatusBody {
    BudgetStatusBody {
        budget: budget_body(s.budget.unwrap_or_default()),
        spent_usd: usd(s.spent_cost_micros),
        spent_tokens: s.spent_tokens,
        period_start: timestamp_rfc3339(s.period_start.as_ref()),
        resets_at: timestamp_rfc3339(s.resets_at.as_ref()),
        warning: s.warning,
        exhausted: s.exhausted,
    }
}

/// Whether `value` names something (present and not blank), trimmed.
fn named(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// The budget a `PUT` asks for, validated; each refusal names its field.
fn budget_of(body: SetBudget) -> Result<pb::Budget, ApiError> {
    let invalid = |field: &str, kind: &'static str, message: &str| ApiError::invalid(&["body", field], kind, message);
    let scope = match body.scope.trim() {
        "tenant" => pb::BudgetScope::Tenant,
        "user" => pb::BudgetScope::User,
        "key" => pb::BudgetScope::Key,
        _ => return Err(invalid("scope", "enum", "must be \"tenant\", \"user\" or \"key\"")),
    };
    let period = match body.period.trim() {
        "day" => pb::BudgetPeriod::Day,
        "month" => pb::BudgetPeriod::Month,
        "total" => pb::BudgetPeriod::Total,
        _ => return Err(invalid("period", "enum", "must be \"day\", \"month\" or \"total\"")),
    };
    let Some(system_id) = named(Some(body.system_id)) else {
        return Err(invalid("system_id", "string_too_short", "must not be empty"));
    };
    let (user_id, key_id) = match scope {
        pb::BudgetScope::User => match named(body.user_id) {
            Some(user_id) => (user_id, String::new()),
            None => return Err(invalid("user_id", "missing", "Field required for a user budget")),
        },
        pb::BudgetScope::Key => match named(body.key_id) {
            Some(key_id) => (String::new(), key_id),
            None => return Err(invalid("key_id", "missing", "Field required for a key budget")),
        },
        pb::BudgetScope::Tenant | pb::BudgetScope::Unspecified => (String::new(), String::new()),
    };
    let max_cost_micros = match body.max_usd {
        None => None,
        Some(dollars) if dollars.is_finite() && (0.0..=MAX_USD).contains(&dollars) => {
            Some((dollars * 1_000_000.0).round() as i64)
        }
        Some(_) => return Err(invalid("max_usd", "value_error", "must be a number of US dollars, 0 or more")),
    };
    let max_tokens = match body.max_tokens {
        Some(tokens) if tokens < 0 => return Err(invalid("max_tokens", "value_error", "must be 0 or more")),
        tokens => tokens,
    };
    if max_cost_micros.is_none() && max_tokens.is_none() {
        return Err(invalid("max_usd", "missing", "set max_usd, max_tokens or both"));
    }
    let warn_percent = match body.warn_percent {
        None => DEFAULT_WARN_PERCENT,
        Some(percent) if (1..=100).contains(&percent) => percent,
        Some(_) => return Err(invalid("warn_percent", "value_error", "must be 1-100")),
    };
    Ok(pb::Budget {
        id: String::new(),
        scope: scope as i32,
        system_id,
        user_id,
        key_id,
        period: period as i32,
        max_cost_micros,
        max_tokens,
        warn_percent,
        source: String::new(),
    })
}

/// A refused change: a budget of the configuration file is read-only here, a 409 (the service
/// says FAILED_PRECONDITION, which elsewhere means a feature switched off, a 503); invalid
/// fields are named as this API calls them.
fn refused(status: tonic::Status) -> ApiError {
    let read_only = status.code() == tonic::Code::FailedPrecondition;
    let error = ApiError::from(status).renamed("max_cost_micros", &["body", "max_usd"]);
    if read_only { ApiError { status: StatusCode::CONFLICT, kind: "conflict", ..error } } else { error }
}

/// Lists budgets with their current spend.
///
/// The admin token (`X-Admin-Token`) sees every tenant's budgets, a service key its tenants',
/// a client key or a signed-in user the ones that apply to it.
#[utoipa::path(get, path = "/v1/budgets", operation_id = "listBudgets", params(ListQuery),
    security(("ApiKeyAuth" = []), ("BearerAuth" = []), ("OAuth2PasswordBearer" = []), ("AdminToken" = [])),
    responses(
        (status = 200, description = "The budgets.", body = BudgetList),
        (status = 401, description = "No credential, or a bad one.", body = FastApiError),
        (status = 403, description = "The credential may not see this tenant's budgets.", body = FastApiError),
        (status = 422, description = "A query parameter is invalid (`loc` names it).", body = FastApiError),
    ))]
pub async fn list(
    State(state): State<AppState>,
    requester: Requester,
    ValidQuery(query): ValidQuery<ListQuery>,
) -> Result<Json<BudgetList>, ApiError> {
    let mut request =
        requester.request(pb::ListBudgetsRequest { system_id: named(query.system_id).unwrap_or_default() });
    request.set_timeout(READ_DEADLINE);
    let answer = state
        .usage
        .clone()
        .list_budgets(request)
        .await
        .map_err(|s| ApiError::from(s).renamed("system_id", &["query", "system_id"]))?
        .into_inner();
    Ok(Json(BudgetList { data: answer.budgets.into_iter().map(status_body).collect() }))
}

/// Creates or replaces a budget.
///
/// One budget per scope, subject and period: setting it again replaces its limits. Needs the
/// admin token (`X-Admin-Token`) or a service key of the tenant; a budget from the
/// configuration file cannot be changed here.
#[utoipa::path(put, path = "/v1/budgets", operation_id = "setBudget", request_body = SetBudget,
    security(("ApiKeyAuth" = []), ("BearerAuth" = []), ("AdminToken" = [])),
    responses(
        (status = 200, description = "The stored budget.", body = BudgetBody),
        (status = 401, description = "No credential, or a bad one.", body = FastApiError),
        (status = 403, description = "The credential may not change this tenant's budgets.", body = FastApiError),
        (status = 409, description = "The budget comes from the configuration file.", body = FastApiError),
        (status = 422, description = "A field is invalid (`loc` names it).", body = FastApiError),
    ))]
pub async fn set(
    State(state): State<AppState>,
    requester: Requester,
    ValidJson(body): ValidJson<SetBudget>,
) -> Result<Json<BudgetBody>, ApiError> {
    let budget = budget_of(body)?;
    let mut request = requester.request(pb::SetBudgetRequest { budget: Some(budget) });
    request.set_timeout(READ_DEADLINE);
    let answer = state.usage.clone().set_budget(request).await.map_err(refused)?.into_inner();
    Ok(Json(budget_body(answer.budget.unwrap_or_default())))
}

/// Deletes a budget.
///
/// Needs the admin token (`X-Admin-Token`) or a service key of the budget's tenant; a budget
/// from the configuration file cannot be deleted here.
#[utoipa::path(delete, path = "/v1/budgets/{id}", operation_id = "deleteBudget",
    params(("id" = String, Path, description = "The budget's id, e.g. `tenant:drillquiz:month`.")),
    security(("ApiKeyAuth" = []), ("BearerAuth" = []), ("AdminToken" = [])),
    responses(
        (status = 200, description = "Deleted.", body = DeletedBody),
        (status = 401, description = "No credential, or a bad one.", body = FastApiError),
        (status = 403, description = "The credential may not change this budget.", body = FastApiError),
        (status = 404, description = "No budget has this id.", body = FastApiError),
        (status = 409, description = "The budget comes from the configuration file.", body = FastApiError),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    requester: Requester,
    Path(id): Path<String>,
) -> Result<Json<DeletedBody>, ApiError> {
    let mut request = requester.request(pb::DeleteBudgetRequest { id: id.clone() });
    request.set_timeout(READ_DEADLINE);
    state.usage.clone().delete_budget(request).await.map_err(refused)?;
    Ok(Json(DeletedBody { id, deleted: true }))
}

/// A deleted budget.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedBody {
    /// Its id.
    id: String,
    /// Always `true`.
    deleted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> Result<pb::Budget, ApiError> {
        budget_of(serde_json::from_value(json).unwrap())
    }

    #[test]
    fn a_budget_is_validated_field_by_field() {
        let budget = body(serde_json::json!({
            "scope": "user", "system_id": "drillquiz", "user_id": "12345", "period": "month", "max_usd": 12.3456789
        }))
        .unwrap();
        assert_eq!(budget.scope, pb::BudgetScope::User as i32);
        assert_eq!(budget.user_id, "12345");
        assert_eq!(budget.max_cost_micros, Some(12_345_679));
        assert_eq!(budget.max_tokens, None);
        assert_eq!(budget.warn_percent, 80);

        let field = |json| body(json).unwrap_err().field().map(str::to_owned);
        let base = |extra: serde_json::Value| {
            let mut json = serde_json::json!({"scope": "tenant", "system_id": "drillquiz", "period": "day"});
            json.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            json
        };
        assert_eq!(field(base(serde_json::json!({"scope": "team", "max_tokens": 1}))).as_deref(), Some("scope"));
        assert_eq!(field(base(serde_json::json!({"period": "week", "max_tokens": 1}))).as_deref(), Some("period"));
        assert_eq!(field(base(serde_json::json!({"max_usd": -1.0}))).as_deref(), Some("max_usd"));
        assert_eq!(field(base(serde_json::json!({"max_tokens": -5}))).as_deref(), Some("max_tokens"));
        assert_eq!(field(base(serde_json::json!({}))).as_deref(), Some("max_usd"));
        let no_warning = base(serde_json::json!({"max_tokens": 1, "warn_percent": 0}));
        assert_eq!(field(no_warning).as_deref(), Some("warn_percent"));
        assert_eq!(field(base(serde_json::json!({"scope": "key", "max_tokens": 1}))).as_deref(), Some("key_id"));
    }

    #[test]
    fn a_status_renders_dollars_and_no_reset_for_total_budgets() {
        let status = status_body(pb::BudgetStatus {
            budget: Some(pb::Budget {
                id: "tenant:drillquiz:total".into(),
                scope: pb::BudgetScope::Tenant as i32,
                system_id: "drillquiz".into(),
                period: pb::BudgetPeriod::Total as i32,
                max_cost_micros: Some(100_000_000),
                warn_percent: 80,
                source: "api".into(),
                ..Default::default()
            }),
            spent_cost_micros: 85_500_000,
            warning: true,
            ..Default::default()
        });
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["id"], "tenant:drillquiz:total");
        assert_eq!(json["scope"], "tenant");
        assert_eq!(json["period"], "total");
        assert_eq!(json["max_usd"], 100.0);
        assert!(json["max_tokens"].is_null());
        assert!(json["user_id"].is_null());
        assert_eq!(json["spent_usd"], 85.5);
        assert!(json["resets_at"].is_null());
        assert_eq!(json["warning"], true);
        assert_eq!(json["exhausted"], false);
    }
}
