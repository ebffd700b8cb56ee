//! Rate limits: GCRA (the generic cell rate algorithm) per credential and per principal, per
//! route group, shared by every replica through Redis when `REDIS_URL` is set. When Redis
//! cannot be reached the limiter falls back to in-process state, and counts that in
//! `switchboard_rate_limit_fallbacks_total`. Answers carry `RateLimit-Policy` and `RateLimit`
//! headers (IETF httpapi draft); a refusal is a 429 with `Retry-After`.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue};
use switchboard_kit::redis::Redis;
use switchboard_kit::{ConfigError, Env};

use crate::error::ApiError;

/// A quota: `limit` requests per `period`, bursts up to `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests per period.
    pub limit: u32,
    /// The period.
    pub period: Duration,
}

impl Quota {
    /// Parses `N/s`, `N/m` or `N/h` (`off` for none).
    pub fn parse(raw: &str) -> Result<Option<Self>, String> {
        if raw.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let (n, unit) = raw.split_once('/').ok_or("expected N/s, N/m, N/h or off")?;
        let limit: u32 = n.trim().parse().map_err(|_| format!("{n:?} is not a whole number"))?;
        let period = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => return Err(format!("unknown period {other:?}: use s, m or h")),
        };
        if limit == 0 {
            return Err("the limit must be at least 1 (or `off`)".into());
        }
        Ok(Some(Self { limit, period }))
    }

    fn interval_us(&self) -> i64 {
        (self.period.as_micros() as i64 / i64::from(self.limit)).max(1)
    }

    fn tolerance_us(&self) -> i64 {
        self.interval_us() * i64::from(self.limit)
    }
}

/// Route groups, each with its own quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// Chat turns (upstream calls).
    Chat,
    /// Everything else that needs a credential.
    Api,
    /// Sign-up and login, per client address (against password guessing).
    Login,
}

impl Group {
    /// Name in headers and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Api => "api",
            Self::Login => "login",
        }
    }
}

/// Quotas of every group.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// `SWITCHBOARD_RATE_LIMIT_CHAT` (per credential), default `600/m`.
    pub chat: Option<Quota>,
    /// `SWITCHBOARD_RATE_LIMIT_CHAT_PRINCIPAL`, default `60/m`.
    pub chat_principal: Option<Quota>,
    /// `SWITCHBOARD_RATE_LIMIT_API` (per credential), default `1200/m`.
    pub api: Option<Quota>,
    /// `SWITCHBOARD_RATE_LIMIT_API_PRINCIPAL`, default `600/m`.
    pub api_principal: Option<Quota>,
    /// `SWITCHBOARD_RATE_LIMIT_LOGIN` (per client address), default `20/m`: sign-ups, logins
    /// and failed credential checks.
    pub login: Option<Quota>,
    /// `SWITCHBOARD_TRUSTED_PROXIES`: peers whose `X-Forwarded-For`/`Forwarded` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl RateLimitSettings {
    /// Reads the quotas, naming the variable at fault on error.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let quota = |var: &str, default: &str| {
            Quota::parse(env.get_or(var, default)).map_err(|reason| ConfigError::invalid(var, reason))
        };
        Ok(Self {
            chat: quota("SWITCHBOARD_RATE_LIMIT_CHAT", "600/m")?,
            chat_principal: quota("SWITCHBOARD_RATE_LIMIT_CHAT_PRINCIPAL", "60/m")?,
            api: quota("SWITCHBOARD_RATE_LIMIT_API", "1200/m")?,
            api_principal: quota("SWITCHBOARD_RATE_LIMIT_API_PRINCIPAL", "600/m")?,
            login: quota("SWITCHBOARD_RATE_LIMIT_LOGIN", "20/m")?,
            trusted_proxies: crate::client_addr::parse_trusted(&env.list("SWITCHBOARD_TRUSTED_PROXIES"))
                .map_err(|reason| ConfigError::invalid("SWITCHBOARD_TRUSTED_PROXIES", reason))?,
        })
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// Requests left in the current burst.
    pub remaining: u32,
    /// Seconds until the quota is whole again.
    pub reset_secs: u64,
    /// Seconds to wait before retrying (refusals).
    pub retry_after_secs: u64,
}

const GCRA: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local diff = new_tat - now
if diff > tolerance then
  return {0, tat - now, diff - tolerance}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil(diff / 1000) + 1)
return {1, diff, 0}
";

/// The limiter of one gateway.
pub struct Limiter {
    settings: RateLimitSettings,
    redis: Option<Redis>,
    script: redis::Script,
    local: Mutex<HashMap<String, i64>>,
    epoch: Instant,
    /// Called when Redis could not be used and the in-process state decided.
    on_fallback: Box<dyn Fn() + Send + Sync>,
    /// Addresses that used up their failed-attempt quota, until when (this replica only):
    /// refused without asking the auth service.
    blocked: Mutex<HashMap<String, (Instant, Decision)>>,
}

impl Limiter {
    /// A limiter with `settings`, shared through `redis` when given.
    pub fn new(settings: RateLimitSettings, redis: Option<Redis>, on_fallback: Box<dyn Fn() + Send + Sync>) -> Self {
        Self {
            settings,
            redis,
            script: redis::Script::new(GCRA),
            local: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            on_fallback,
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// The 429 for an address still blocked after too many failed credential checks.
    fn refused_address(&self, address: &str) -> Option<ApiError> {
        let quota = self.settings.login?;
        let mut blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        match blocked.get(address) {
            Some((until, decision)) if *until > Instant::now() => Some(too_many(Group::Login, quota, *decision)),
            Some(_) => {
                blocked.remove(address);
                None
            }
            None => None,
        }
    }

    /// Counts a failed credential check of `address` against the login quota; the 429 once
    /// it is used up (and the address is then refused without checks until it refills).
    async fn failed_attempt(&self, address: &str) -> Option<ApiError> {
        let quota = self.settings.login?;
        let decision = self.check(&format!("{}:k:ip:{address}", Group::Login.name()), quota).await;
        if decision.allowed {
            return None;
        }
        let until = Instant::now() + std::time::Duration::from_secs(decision.retry_after_secs.max(1));
        let mut blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        if blocked.len() >= 100_000 {
            let now = Instant::now();
            blocked.retain(|_, (t, _)| *t > now);
        }
        blocked.insert(address.to_owned(), (until, decision));
        Some(too_many(Group::Login, quota, decision))
    }

    /// Whether the shared Redis answers a PING; `None` when the limiter runs in process.
    pub async fn redis_ok(&self) -> Option<bool> {
        let redis = self.redis.as_ref()?;
        let ping = async {
            let mut conn = redis.conn().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        Some(matches!(tokio::time::timeout(std::time::Duration::from_secs(1), ping).await, Ok(Ok(_))))
    }

    /// The per-credential (or per-address) quota of a group.
    pub fn quota(&self, group: Group) -> Option<Quota> {
        match group {
            Group::Chat => self.settings.chat,
            Group::Api => self.settings.api,
            Group::Login => self.settings.login,
        }
    }

    fn principal_quota(&self, group: Group) -> Option<Quota> {
        match group {
            Group::Chat => self.settings.chat_principal,
            Group::Api => self.settings.api_principal,
            Group::Login => None,
        }
    }

    /// Checks and counts one request against `quota` under `key`.
    pub async fn check(&self, key: &str, quota: Quota) -> Decision {
        let (interval, tolerance) = (quota.interval_us(), quota.tolerance_us());
        let outcome = match &self.redis {
            Some(redis) => {
                let result = async {
                    let mut conn = redis.conn().await?;
                    self.script
                        .key(redis.key(&format!("rl:{key}")))
                        .arg(interval)
                        .arg(tolerance)
                        .invoke_async::<(i64, i64, i64)>(&mut conn)
                        .await
                };
                match result.await {
                    Ok(outcome) => Some(outcome),
                    Err(e) => {
                        tracing::debug!(error = %e, "rate limiter falls back to in-process state");
                        (self.on_fallback)();
                        None
                    }
                }
            }
            None => None,
        };
        let (allowed, diff, wait) = outcome.unwrap_or_else(|| self.check_local(key, interval, tolerance));
        let remaining = if allowed == 1 { ((tolerance - diff) / interval).max(0) } else { 0 };
        Decision {
            allowed: allowed == 1,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset_secs: secs_ceil(diff),
            retry_after_secs: secs_ceil(wait).max(u64::from(allowed != 1)),
        }
    }

    fn check_local(&self, key: &str, interval: i64, tolerance: i64) -> (i64, i64, i64) {
        let now = i64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(i64::MAX);
        let mut state = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        if state.len() > 100_000 {
            state.retain(|_, tat| *tat > now);
        }
        let tat = state.get(key).copied().unwrap_or(now).max(now);
        let new_tat = tat + interval;
        let diff = new_tat - now;
        if diff > tolerance {
            return (0, tat - now, diff - tolerance);
        }
        state.insert(key.to_owned(), new_tat);
        (1, diff, 0)
    }

    /// Checks the per-principal quota of `group`; a 429 when it is spent.
    pub async fn principal(&self, group: Group, system_id: &str, user_id: &str) -> Result<(), ApiError> {
        let Some(quota) = self.principal_quota(group) else { return Ok(()) };
        let decision = self.check(&format!("{}:p:{system_id}:{user_id}", group.name()), quota).await;
        if decision.allowed { Ok(()) } else { Err(too_many(group, quota, decision)) }
    }
}

fn secs_ceil(us: i64) -> u64 {
    u64::try_from(us.max(0)).unwrap_or(0).div_ceil(1_000_000)
}

/// `RateLimit-Policy` and `RateLimit` headers for a decision.
pub fn headers(group: Group, quota: Quota, decision: Decision) -> [(HeaderName, HeaderValue); 2] {
    let name = group.name();
    let policy = format!("\"{name}\";q={};w={}", quota.limit, quota.period.as_secs());
    let state = format!("\"{name}\";r={};t={}", decision.remaining, decision.reset_secs);
    [
        (
            HeaderName::from_static("ratelimit-policy"),
            HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("")),
        ),
        (HeaderName::from_static("ratelimit"), HeaderValue::from_str(&state).unwrap_or(HeaderValue::from_static(""))),
    ]
}

/// The 429 for a refused request.
pub fn too_many(group: Group, quota: Quota, decision: Decision) -> ApiError {
    let mut err = ApiError::from(tonic::Status::resource_exhausted(format!(
        "rate limit exceeded ({} requests per {} s); retry in {} s",
        quota.limit,
        quota.period.as_secs(),
        decision.retry_after_secs
    )));
    err.headers.extend(headers(group, quota, decision));
    if let Ok(value) = HeaderValue::from_str(&decision.retry_after_secs.to_string()) {
        err.headers.push((axum::http::header::RETRY_AFTER, value));
    }
    err
}

/// The client address of a request (behind trusted proxies, the forwarded one).
fn address(request: &axum::extract::Request, trusted: &[ipnet::IpNet]) -> String {
    let peer = request.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0);
    crate::client_addr::client_ip(peer, request.headers(), trusted)
        .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
}

/// Middleware: the quota of `group`, per verified credential (its key id, token id or
/// principal), or per client address for sign-up, login and requests without a credential.
/// A credential that fails verification counts against its address's login quota, so a
/// stream of made-up keys is refused without asking the auth service each time. A family
/// attaches it to each of its routes with the group they count against
/// (`routes::RouteExt::limit`).
pub async fn enforce(
    axum::extract::State((state, group)): axum::extract::State<(crate::state::AppState, Group)>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(quota) = state.limiter.quota(group) else { return next.run(request).await };
    let address = address(&request, &state.limiter.settings.trusted_proxies);
    let credential = match group {
        Group::Login => None,
        _ => crate::auth::credential_of(request.headers(), request.uri().query()).ok(),
    };
    let subject = match credential {
        None => format!("ip:{address}"),
        Some(credential) => {
            if let Some(refusal) = state.limiter.refused_address(&address) {
                return refusal.into_response();
            }
            match state.verifier.verify(&credential).await {
                Ok(caller) => {
                    let subject = caller.limit_key();
                    request.extensions_mut().insert(caller);
                    subject
                }
                Err(status)
                    if matches!(status.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) =>
                {
                    if let Some(refusal) = state.limiter.failed_attempt(&address).await {
                        state.metrics.rate_limited(Group::Login.name());
                        return refusal.into_response();
                    }
                    return crate::error::ApiError::from(status).into_response();
                }
                // The auth service is unreachable or too slow: answered once, here.
                Err(status) => return crate::error::ApiError::from(status).into_response(),
            }
        }
    };
    let key = format!("{}:k:{subject}", group.name());
    let decision = state.limiter.check(&key, quota).await;
    if !decision.allowed {
        state.metrics.rate_limited(group.name());
        return too_many(group, quota, decision).into_response();
    }
    state.metrics.rate_limit_allowed(group.name());
    let mut response = next.run(request).await;
    for (name, value) in headers(group, quota, decision) {
        response.headers_mut().insert(name, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_parse_and_reject_nonsense() {
        assert_eq!(Quota::parse("60/m").unwrap(), Some(Quota { limit: 60, period: Duration::from_secs(60) }));
        assert_eq!(Quota::parse("off").unwrap(), None);
        for bad in ["60", "0/m", "x/m", "5/week"] {
            assert!(Quota::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn in_process_gcra_admits_the_burst_then_refuses_with_retry_after() {
        let settings = RateLimitSettings::from_env(&Env::default()).unwrap();
        let limiter = Limiter::new(settings, None, Box::new(|| {}));
        let quota = Quota { limit: 3, period: Duration::from_secs(60) };
        let decisions: Vec<Decision> = futures::future::join_all((0..4).map(|_| limiter.check("k", quota))).await;
        assert_eq!(decisions.iter().filter(|d| d.allowed).count(), 3);
        assert_eq!(decisions[0].remaining, 2);
        assert_eq!(decisions[2].remaining, 0);
        assert!(!decisions[3].allowed);
        assert!((19..=20).contains(&decisions[3].retry_after_secs), "{:?}", decisions[3]);
        // Another key has its own budget.
        assert!(limiter.check("other", quota).await.allowed);
    }
}
