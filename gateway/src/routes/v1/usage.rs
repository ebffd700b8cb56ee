//! `GET /v1/usage`: what tenants, users and API keys spent on completions, grouped as asked,
//! as JSON or CSV, with the budgets that apply. The usage service decides what a caller sees:
//! the admin token (`X-Admin-Token`) every tenant, a service key its tenants, other credentials
//! their own usage.

use axum::extract::{FromRequestParts, MatchedPath, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use switchboard_kit::time::{parse_date_ms, timestamp_rfc3339, to_timestamp};
use switchboard_proto::llm::v1 as pb;
use tonic::metadata::AsciiMetadataValue;
use utoipa::{IntoParams, ToSchema};

use super::READ_DEADLINE;
use super::budgets::{BudgetStatusBody, status_body};
use crate::admin::AdminToken;
use crate::auth::Caller;
use crate::error::{ApiError, FastApiError};
use crate::extract::ValidQuery;
use crate::state::AppState;

/// Who reads usage or manages budgets: the operator, by `X-Admin-Token` alone, or a caller
/// whose credential was verified as on every other route. Only the header counts as the admin
/// token here: an `Authorization: Bearer` is a caller's credential, and the rate limiter has
/// already checked it as one.
#[derive(Debug, Clone)]
pub enum Requester {
    /// The admin token, forwarded as `x-admin-token` (the usage service checks it).
    Admin {
        /// The token.
        token: AdminToken,
        /// `<METHOD> <route>`, for the service's per-endpoint counts.
        endpoint: Option<AsciiMetadataValue>,
    },
    /// A verified credential, forwarded as it came.
    Caller(Caller),
}

impl FromRequestParts<AppState> for Requester {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let admin = parts.headers.get("x-admin-token").is_some_and(|v| !v.as_bytes().trim_ascii().is_empty());
        if !admin {
            return Caller::from_request_parts(parts, state).await.map(Self::Caller);
        }
        let token = AdminToken::from_request_parts(parts, state).await.unwrap_or_else(|never| match never {});
        let endpoint = parts
            .extensions
            .get::<MatchedPath>()
            .and_then(|route| format!("{} {}", parts.method, route.as_str()).parse().ok());
        Ok(Self::Admin { token, endpoint })
    }
}

impl Requester {
    /// Wraps a message for the usage service, with the requester's credential.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        match self {
            Self::Caller(caller) => caller.request(message),
            Self::Admin { token, endpoint } => {
                let mut request = token.request(message);
                if let Some(endpoint) = endpoint {
                    request.metadata_mut().insert("sb-endpoint", endpoint.clone());
                }
                request
            }
        }
    }
}

/// Query of a usage report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Start, inclusive: a day (`YYYY-MM-DD`, UTC) or an RFC 3339 instant, rounded down to the
    /// hour. The start of the current UTC month when absent.
    from: Option<String>,
    /// End, exclusive (so `to=2026-12-01` ends with November 30): a day or an instant, rounded up
    /// to the hour. Now when absent.
    to: Option<String>,
    /// Comma-separated dimensions of the rows among `tenant`, `user`, `key`, `model`, `day` and
    /// `hour` (e.g. `tenant,model,day`); none gives the totals only.
    group_by: Option<String>,
    /// Only this tenant.
    system_id: Option<String>,
    /// Only this user.
    user_id: Option<String>,
    /// Only this API key (its public id).
    key_id: Option<String>,
    /// Only this model.
    model: Option<String>,
    /// `json` (default) or `csv` (so does `Accept: text/csv`).
    format: Option<String>,
}

/// A usage report.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    /// Start of the range covered, inclusive (RFC 3339, after rounding).
    from: Option<String>,
    /// End of the range covered, exclusive (RFC 3339, after rounding).
    to: Option<String>,
    /// One row per group, ordered by the dimensions.
    rows: Vec<UsageRowBody>,
    /// Sums over every row.
    totals: UsageRowBody,
    /// The budgets of the tenants in the report (a client's own), with their current spend.
    budgets: Vec<BudgetStatusBody>,
}

/// Usage of one group; a dimension the report is not grouped by is absent.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageRowBody {
    /// Tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    system_id: Option<String>,
    /// User within the tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    /// Public id of the API key used; empty for other credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    /// The model that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    /// Start of the day or hour (RFC 3339), when grouped by one.
    #[serde(skip_serializing_if = "Option::is_none")]
    period_start: Option<String>,
    /// Completions.
    requests: i64,
    /// Tokens sent to the models.
    prompt_tokens: i64,
    /// Tokens of the answers.
    completion_tokens: i64,
    /// Their sum.
    total_tokens: i64,
    /// Cost of the priced completions in US dollars; `null` when every completion of the group
    /// was of a model without a price (its cost is unknown, not zero).
    cost_usd: Option<f64>,
    /// The same cost in micro-dollars (1 USD = 1,000,000), exact.
    cost_micros: i64,
    /// Completions of models without a price, not counted in the cost.
    unpriced_requests: i64,
}

/// Micro-dollars as US dollars.
pub(super) fn usd(micros: i64) -> f64 {
    micros as f64 / 1_000_000.0
}

/// A dimension's value: shown when grouped by it, or when the service filled it anyway (a
/// user's tenant).
fn dimension(value: String, grouped: bool) -> Option<String> {
    (grouped || !value.is_empty()).then_some(value)
}

fn row_body(row: pb::UsageRow, group_by: &[pb::UsageDimension]) -> UsageRowBody {
    let grouped = |d: pb::UsageDimension| group_by.contains(&d);
    let priced = row.requests == 0 || row.unpriced_requests < row.requests;
    UsageRowBody {
        system_id: dimension(row.system_id, grouped(pb::UsageDimension::Tenant) || grouped(pb::UsageDimension::User)),
        user_id: dimension(row.user_id, grouped(pb::UsageDimension::User)),
        key_id: dimension(row.key_id, grouped(pb::UsageDimension::Key)),
        model: dimension(row.model, grouped(pb::UsageDimension::Model)),
        period_start: timestamp_rfc3339(row.period_start.as_ref()),
        requests: row.requests,
        prompt_tokens: row.prompt_tokens,
        completion_tokens: row.completion_tokens,
        total_tokens: row.total_tokens,
        cost_usd: priced.then(|| usd(row.cost_micros)),
        cost_micros: row.cost_micros,
        unpriced_requests: row.unpriced_requests,
    }
}

/// `group_by` as dimensions, each once, in the order given.
fn dimensions(raw: Option<&str>) -> Result<Vec<pb::UsageDimension>, ApiError> {
    let mut dimensions = Vec::new();
    for name in raw.unwrap_or_default().split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let dimension = match name.to_ascii_lowercase().as_str() {
            "tenant" => pb::UsageDimension::Tenant,
            "user" => pb::UsageDimension::User,
            "key" => pb::UsageDimension::Key,
            "model" => pb::UsageDimension::Model,
            "day" => pb::UsageDimension::Day,
            "hour" => pb::UsageDimension::Hour,
            _ => {
                return Err(ApiError::invalid(
                    &["query", "group_by"],
                    "enum",
                    format!("unknown dimension {name:?}: use tenant, user, key, model, day or hour"),
                ));
            }
        };
        if !dimensions.contains(&dimension) {
            dimensions.push(dimension);
        }
    }
    Ok(dimensions)
}

/// A bound of the range, in Unix milliseconds.
fn instant(raw: Option<&str>, field: &'static str) -> Result<Option<i64>, ApiError> {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else { return Ok(None) };
    // An unencoded `+` of an offset (`+09:00`) arrives as a space.
    let ms = parse_date_ms(raw).or_else(|| parse_date_ms(&raw.replace(' ', "+"))).ok_or_else(|| {
        ApiError::invalid(&["query", field], "date_parsing", "expected YYYY-MM-DD or an RFC 3339 date-time")
    })?;
    Ok(Some(ms))
}

/// Whether the answer is CSV: `format=csv`, or `Accept: text/csv` without a `format`.
fn wants_csv(format: Option<&str>, headers: &HeaderMap) -> Result<bool, ApiError> {
    match format.map(str::trim).filter(|f| !f.is_empty()) {
        Some(f) if f.eq_ignore_ascii_case("csv") => Ok(true),
        Some(f) if f.eq_ignore_ascii_case("json") => Ok(false),
        Some(_) => Err(ApiError::invalid(&["query", "format"], "enum", "must be \"json\" or \"csv\"")),
        None => Ok(headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.to_ascii_lowercase().contains("text/csv"))),
    }
}

/// Reports spend and tokens for a time range.
///
/// Grouped by any of `tenant`, `user`, `key`, `model`, `day`, `hour`, with totals and the
/// budgets that apply. The admin token (`X-Admin-Token`) sees every tenant, a service key its
/// tenants, a client key or a signed-in user only its own usage. `format=csv` (or
/// `Accept: text/csv`) answers a spreadsheet: one line per row, then a `total` line.
#[utoipa::path(get, path = "/v1/usage", operation_id = "getUsage", params(UsageQuery),
    security(("ApiKeyAuth" = []), ("BearerAuth" = []), ("OAuth2PasswordBearer" = []), ("AdminToken" = [])),
    responses(
        (status = 200, description = "The report; CSV with `format=csv` or `Accept: text/csv`.",
            content((UsageReport = "application/json"), (String = "text/csv"))),
        (status = 401, description = "No credential, or a bad one.", body = FastApiError),
        (status = 403, description = "The credential may not see this tenant's or user's usage.",
            body = FastApiError),
        (status = 422, description = "A query parameter is invalid (`loc` names it).", body = FastApiError),
    ))]
pub async fn report(
    State(state): State<AppState>,
    requester: Requester,
    headers: HeaderMap,
    ValidQuery(query): ValidQuery<UsageQuery>,
) -> Result<Response, ApiError> {
    let csv = wants_csv(query.format.as_deref(), &headers)?;
    let group_by = dimensions(query.group_by.as_deref())?;
    let from = instant(query.from.as_deref(), "from")?;
    let to = instant(query.to.as_deref(), "to")?;
    if matches!((from, to), (Some(from), Some(to)) if to <= from) {
        return Err(ApiError::invalid(&["query", "to"], "value_error", "must be after `from`"));
    }
    let given = |v: Option<String>| v.map(|v| v.trim().to_owned()).unwrap_or_default();
    let mut request = requester.request(pb::GetUsageReportRequest {
        from: from.map(to_timestamp),
        to: to.map(to_timestamp),
        group_by: group_by.iter().map(|d| *d as i32).collect(),
        system_id: given(query.system_id),
        user_id: given(query.user_id),
        key_id: given(query.key_id),
        model: given(query.model),
    });
    request.set_timeout(READ_DEADLINE);
    let answer = state
        .usage
        .clone()
        .get_usage_report(request)
        .await
        .map_err(|s| {
            ApiError::from(s)
                .renamed("from", &["query", "from"])
                .renamed("to", &["query", "to"])
                .renamed("group_by", &["query", "group_by"])
                .renamed("system_id", &["query", "system_id"])
                .renamed("user_id", &["query", "user_id"])
                .renamed("key_id", &["query", "key_id"])
                .renamed("model", &["query", "model"])
        })?
        .into_inner();
    let report = UsageReport {
        from: timestamp_rfc3339(answer.from.as_ref()),
        to: timestamp_rfc3339(answer.to.as_ref()),
        rows: answer.rows.into_iter().map(|r| row_body(r, &group_by)).collect(),
        totals: row_body(answer.totals.unwrap_or_default(), &[]),
        budgets: answer.budgets.into_iter().map(status_body).collect(),
    };
    if csv {
        let disposition = "attachment; filename=\"usage.csv\"";
        let headers = [(header::CONTENT_TYPE, "text/csv; charset=utf-8"), (header::CONTENT_DISPOSITION, disposition)];
        return Ok((headers, to_csv(&report)).into_response());
    }
    Ok(axum::Json(report).into_response())
}

const CSV_HEADER: &str = "period_start,system_id,user_id,key_id,model,requests,prompt_tokens,completion_tokens,\
    total_tokens,cost_usd,unpriced_requests";

/// The report as CSV (RFC 4180, CRLF line ends): a header, one line per row, then `total`.
fn to_csv(report: &UsageReport) -> String {
    let mut out = String::with_capacity(128 * (report.rows.len() + 2));
    out.push_str(CSV_HEADER);
    out.push_str("\r\n");
    for row in &report.rows {
        csv_line(&mut out, row.period_start.as_deref().unwrap_or_default(), row);
    }
    csv_line(&mut out, "total", &report.totals);
    out
}

fn csv_line(out: &mut String, first: &str, row: &UsageRowBody) {
    let text = |v: &Option<String>| csv_field(v.as_deref().unwrap_or_default());
    let cost = if row.cost_usd.is_some() { decimal_usd(row.cost_micros) } else { String::new() };
    let fields = [
        csv_field(first),
        text(&row.system_id),
        text(&row.user_id),
        text(&row.key_id),
        text(&row.model),
        row.requests.to_string(),
        row.prompt_tokens.to_string(),
        row.completion_tokens.to_string(),
        row.total_tokens.to_string(),
        cost,
        row.unpriced_requests.to_string(),
    ];
    out.push_str(&fields.join(","));
    out.push_str("\r\n");
}

/// Micro-dollars as an exact decimal (`12.345678`), for spreadsheets.
fn decimal_usd(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    format!("{sign}{}.{:06}", abs / 1_000_000, abs % 1_000_000)
}

/// One text field: quoted when it holds a comma, a quote or a line break (quotes doubled), and
/// prefixed with `'` when a spreadsheet would read it as a formula (OWASP's CSV injection).
fn csv_field(raw: &str) -> String {
    let guarded = if raw.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{raw}") } else { raw.to_owned() };
    if guarded.contains([',', '"', '\r', '\n']) { format!("\"{}\"", guarded.replace('"', "\"\"")) } else { guarded }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_are_defused() {
        assert_eq!(csv_field("drillquiz"), "drillquiz");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("+1"), "'+1");
        assert_eq!(csv_field("-1"), "'-1");
        assert_eq!(csv_field("@sum"), "'@sum");
        assert_eq!(csv_field(""), "");
    }

    #[test]
    fn unknown_dimensions_are_refused_naming_group_by() {
        assert_eq!(
            dimensions(Some("tenant, model,day,model")).unwrap(),
            [pb::UsageDimension::Tenant, pb::UsageDimension::Model, pb::UsageDimension::Day]
        );
        assert!(dimensions(None).unwrap().is_empty());
        let error = dimensions(Some("tenant,week")).unwrap_err();
        assert_eq!(error.loc, Some(vec!["query".to_owned(), "group_by".to_owned()]));
        assert_eq!(instant(Some("2026-11-01"), "from").unwrap(), Some(1_793_491_200_000));
        assert_eq!(instant(Some("november"), "to").unwrap_err().field(), Some("to"));
    }

    #[test]
    fn a_report_renders_as_csv_with_a_total_line_and_unpriced_groups_without_cost() {
        let group_by = [pb::UsageDimension::Tenant, pb::UsageDimension::Model];
        let priced = pb::UsageRow {
            system_id: "drillquiz".into(),
            model: "gpt-4o".into(),
            requests: 2,
            prompt_tokens: 10,
            completion_tokens: 5,
            total_tokens: 15,
            cost_micros: 1_250,
            ..Default::default()
        };
        let unpriced = pb::UsageRow {
            system_id: "drillquiz".into(),
            model: "=local".into(),
            requests: 1,
            total_tokens: 3,
            unpriced_requests: 1,
            ..Default::default()
        };
        let totals = pb::UsageRow {
            requests: 3,
            total_tokens: 18,
            cost_micros: 1_250,
            unpriced_requests: 1,
            ..Default::default()
        };
        let report = UsageReport {
            from: None,
            to: None,
            rows: vec![row_body(priced, &group_by), row_body(unpriced, &group_by)],
            totals: row_body(totals, &[]),
            budgets: Vec::new(),
        };
        assert_eq!(report.rows[0].cost_usd, Some(0.00125));
        assert_eq!(report.rows[1].cost_usd, None);
        assert_eq!(report.rows[0].user_id, None);
        let json = serde_json::to_value(&report.rows[1]).unwrap();
        assert!(json["cost_usd"].is_null());
        assert!(json.get("user_id").is_none());
        assert_eq!(
            to_csv(&report),
            "period_start,system_id,user_id,key_id,model,requests,prompt_tokens,completion_tokens,total_tokens,\
             cost_usd,unpriced_requests\r\n\
             ,drillquiz,,,gpt-4o,2,10,5,15,0.001250,0\r\n\
             ,drillquiz,,,'=local,1,0,0,3,,1\r\n\
             total,,,,,3,0,0,18,0.001250,1\r\n"
        );
    }
}
