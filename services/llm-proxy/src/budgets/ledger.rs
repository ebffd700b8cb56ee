//! What has been spent against each budget in its current window, and what calls in flight
//! have reserved. With Redis, one Lua script checks every budget of a call and reserves its
//! worst case atomically, so replicas together never pass a ceiling by more than the
//! difference between a call's estimate and its real usage; reservations carry an expiry, so
//! those of a crashed replica free themselves. Without Redis (or while it is unreachable) the
//! same happens in process. A window's first use seeds its spend from the usage rollups.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use switchboard_kit::redis::Redis;

use super::{Budget, Clock, Refusal, Spent};
use crate::store::UsageStore;

/// Longest a reservation holds when its call never settles (its replica died).
pub const RESERVATION_LEASE: Duration = Duration::from_secs(900);
/// How often a window kept in process is brought up to what the rollups say (other replicas'
/// spend, when Redis is away or not configured).
const LOCAL_RESEED_MS: i64 = 10_000;
/// How long past its window's end a window's state is kept in Redis.
const STATE_GRACE_SECS: i64 = 86_400;

/// Checks every budget (KEYS: state hash, reservation set; per budget) and reserves the
/// call's worst case in all of them, or in none.
/// ARGV: now, expires_at, member, cost, tokens, then per budget: max_cost, max_tokens (-1 for
/// none), seed_cost (-1 when unknown), seed_tokens, ttl_secs (0 for none), warn_percent.
/// Returns {0, i...} reserved, budgets i (1-based) now at or past their warning level;
/// {1, i...} the state of budgets i is missing, seed them; {2, i, spent_cost, spent_tokens}
/// budget i refuses.
const RESERVE: &str = r"
-- HINCRBY refuses '-0', which is how Lua writes minus zero.
local function sub(key, field, v)
  if v ~= 0 then redis.call('HINCRBY', key, field, -v) end
end
local now, exp, member = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local cost, tokens = tonumber(ARGV[4]), tonumber(ARGV[5])
local n = #KEYS / 2
local missing = {}
for i = 1, n do
  local s = KEYS[2 * i - 1]
  local base = 5 + (i - 1) * 6
  if redis.call('EXISTS', s) == 0 then
    local seed_cost = tonumber(ARGV[base + 3])
    if seed_cost < 0 then
      missing[#missing + 1] = i
    else
      redis.call('HSET', s, 'cost', seed_cost, 'tokens', tonumber(ARGV[base + 4]), 'rcost', 0, 'rtokens', 0)
      local ttl = tonumber(ARGV[base + 5])
      if ttl > 0 then redis.call('EXPIRE', s, ttl) end
    end
  end
end
if #missing > 0 then
  local out = {1}
  for _, i in ipairs(missing) do out[#out + 1] = i end
  return out
end
local spent = {}
for i = 1, n do
  local s, z = KEYS[2 * i - 1], KEYS[2 * i]
  local stale = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  for _, m in ipairs(stale) do
    local c, t = string.match(m, '|(%d+)|(%d+)$')
    sub(s, 'rcost', tonumber(c))
    sub(s, 'rtokens', tonumber(t))
  end
  if #stale > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', now) end
  local v = redis.call('HMGET', s, 'cost', 'tokens', 'rcost', 'rtokens')
  local c = tonumber(v[1]) + tonumber(v[3])
  local t = tonumber(v[2]) + tonumber(v[4])
  local base = 5 + (i - 1) * 6
  local max_cost, max_tokens = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  if (max_cost >= 0 and c + cost > max_cost) or (max_tokens >= 0 and t + tokens > max_tokens) then
    return {2, i, c, t}
  end
  spent[i] = {c + cost, t + tokens}
end
local out = {0}
for i = 1, n do
  local s, z = KEYS[2 * i - 1], KEYS[2 * i]
  local base = 5 + (i - 1) * 6
  redis.call('ZADD', z, exp, member)
  redis.call('HINCRBY', s, 'rcost', cost)
  redis.call('HINCRBY', s, 'rtokens', tokens)
  local ttl = tonumber(ARGV[base + 5])
  if ttl > 0 then redis.call('EXPIRE', z, ttl) end
  local max_cost, max_tokens, warn = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 6])
  if (max_cost >= 0 and spent[i][1] * 100 >= max_cost * warn) or (max_tokens >= 0 and spent[i][2] * 100 >= max_tokens * warn) then
    out[#out + 1] = i
  end
end
return out
";

/// Releases a reservation (KEYS as for RESERVE) and adds what the call really used.
/// ARGV: member, reserved cost, reserved tokens, used cost, used tokens.
const SETTLE: &str = r"
local function sub(key, field, v)
  if v ~= 0 then redis.call('HINCRBY', key, field, -v) end
end
for i = 1, #KEYS / 2 do
  local s, z = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('ZREM', z, ARGV[1]) == 1 then
    sub(s, 'rcost', tonumber(ARGV[2]))
    sub(s, 'rtokens', tonumber(ARGV[3]))
  end
  if redis.call('EXISTS', s) == 1 then
    redis.call('HINCRBY', s, 'cost', tonumber(ARGV[4]))
    redis.call('HINCRBY', s, 'tokens', tonumber(ARGV[5]))
  end
end
return 1
";

/// One budget's window in process.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    spent: Spent,
    reserved: Spent,
    ends: Option<i64>,
    seeded_at: i64,
}

/// The ledger, cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    redis: Option<(Redis, Arc<redis::Script>, Arc<redis::Script>)>,
    local: Arc<Mutex<HashMap<String, Window>>>,
    store: Arc<dyn UsageStore>,
    clock: Clock,
}

/// A budget as one call meets it: its window's key and end.
#[derive(Debug, Clone)]
struct Entry {
    budget: Budget,
    key: String,
    start: i64,
    ends: Option<i64>,
}

/// A call's reservation. Settle it with what the call used; dropped unsettled (the call
/// failed or was abandoned), it is released without charge.
pub struct Reservation {
    ledger: Ledger,
    entries: Vec<Entry>,
    member: String,
    amount: Spent,
    on_redis: bool,
    settled: bool,
    /// Ids of the budgets this call brings to or past their warning level.
    pub warnings: Vec<String>,
}

impl Ledger {
    /// A ledger keeping state in `redis` when given, seeded from `store`.
    pub fn new(redis: Option<Redis>, store: Arc<dyn UsageStore>, clock: Clock) -> Self {
        Self {
            redis: redis.map(|r| (r, Arc::new(redis::Script::new(RESERVE)), Arc::new(redis::Script::new(SETTLE)))),
            local: Arc::default(),
            store,
            clock,
        }
    }

    /// Connects to Redis ahead of the first call (waits at most a couple of seconds), so the
    /// first calls after a start are checked against the shared state, not in process.
    pub async fn connect(&self) {
        if let Some((redis, ..)) = &self.redis
            && let Err(e) = redis.conn().await
        {
            tracing::warn!(error = %e, "Redis unreachable at start: budgets are checked in process until it answers");
        }
    }

    /// Now, by the ledger's clock.
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    fn entry(&self, budget: Budget, now: i64) -> Entry {
        let (start, ends) = budget.period.window(now);
        let name = format!("budget:{}:{start}", budget.id());
        let key = match &self.redis {
            Some((redis, ..)) => redis.key(&name),
            None => name,
        };
        Entry { budget, key, start, ends }
    }

    /// What the rollups say was spent against `budget` since `from`.
    async fn seed(&self, budget: &Budget, from: i64) -> Result<Spent, tonic::Status> {
        self.store.spent(budget, from).await.map_err(|e| {
            tracing::error!(error = %e, budget = %budget.id(), "cannot read spend for a budget");
            tonic::Status::unavailable("usage storage unavailable; budgets cannot be checked")
        })
    }

    /// Reserves `amount` against every budget in `budgets`, or refuses naming the first that
    /// cannot take it. `None` when no budget applies.
    pub async fn reserve(&self, budgets: Vec<Budget>, amount: Spent) -> Result<Option<Reservation>, ReserveError> {
        if budgets.is_empty() {
            return Ok(None);
        }
        let now = self.now();
        let entries: Vec<Entry> = budgets.into_iter().map(|b| self.entry(b, now)).collect();
        let member = format!("{}|{}|{}", uuid::Uuid::now_v7().simple(), amount.cost_micros, amount.tokens);
        if let Some((redis, reserve, _)) = &self.redis {
            match self.reserve_redis(redis, reserve, &entries, &member, amount, now).await {
                Ok(Ok(warnings)) => {
                    return Ok(Some(self.reservation(entries, member, amount, true, warnings)));
                }
                Ok(Err(refusal)) => return Err(ReserveError::Refused(Box::new(refusal))),
                Err(RedisFailure::Status(status)) => return Err(ReserveError::Unavailable(status)),
                Err(RedisFailure::Redis(e)) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                    tracing::warn!(error = %e, "Redis unreachable: budgets are checked in this process only");
                }
                Err(RedisFailure::Redis(e)) => {
                    tracing::error!(error = %e, "budget script failed in Redis: budgets are checked in this process only");
                }
            }
        }
        let warnings = self.reserve_local(&entries, amount, now).await?;
        Ok(Some(self.reservation(entries, member, amount, false, warnings)))
    }

    fn reservation(
        &self,
        entries: Vec<Entry>,
        member: String,
        amount: Spent,
        on_redis: bool,
        warnings: Vec<String>,
    ) -> Reservation {
        Reservation { ledger: self.clone(), entries, member, amount, on_redis, settled: false, warnings }
    }

    async fn reserve_redis(
        &self,
        redis: &Redis,
        script: &redis::Script,
        entries: &[Entry],
        member: &str,
        amount: Spent,
        now: i64,
    ) -> Result<Result<Vec<String>, Refusal>, RedisFailure> {
        let mut seeds: Vec<Option<Spent>> = vec![None; entries.len()];
        for _attempt in 0..3 {
            let mut invocation = script.prepare_invoke();
            invocation
                .arg(now)
                .arg(now + RESERVATION_LEASE.as_millis() as i64)
                .arg(member)
                .arg(amount.cost_micros)
                .arg(amount.tokens);
            for (entry, seed) in entries.iter().zip(&seeds) {
                invocation.key(&entry.key).key(format!("{}:res", entry.key));
                let ttl = entry.ends.map_or(0, |end| ((end - now) / 1000).max(1) + STATE_GRACE_SECS);
                let seed = seed.unwrap_or(Spent { cost_micros: -1, tokens: -1 });
                invocation
                    .arg(entry.budget.max_cost_micros.unwrap_or(-1))
                    .arg(entry.budget.max_tokens.unwrap_or(-1))
                    .arg(seed.cost_micros)
                    .arg(seed.tokens)
                    .arg(ttl)
                    .arg(entry.budget.warn_percent);
            }
            let mut conn = redis.conn().await.map_err(RedisFailure::Redis)?;
            let answer: Vec<i64> = invocation.invoke_async(&mut conn).await.map_err(RedisFailure::Redis)?;
            match answer.as_slice() {
                [0, warned @ ..] => {
                    let ids = warned
                        .iter()
                        .filter_map(|&i| usize::try_from(i - 1).ok().and_then(|i| entries.get(i)))
                        .map(|e| e.budget.id())
                        .collect();
                    return Ok(Ok(ids));
                }
                [1, missing @ ..] => {
                    for &i in missing {
                        let Some(entry) = usize::try_from(i - 1).ok().and_then(|i| entries.get(i)) else { continue };
                        let spent = self.seed(&entry.budget, entry.start).await.map_err(RedisFailure::Status)?;
                        seeds[(i - 1) as usize] = Some(spent);
                    }
                }
                [2, i, cost, tokens] => {
                    let entry = usize::try_from(i - 1).ok().and_then(|i| entries.get(i)).unwrap_or(&entries[0]);
                    return Ok(Err(Refusal {
                        budget: entry.budget.clone(),
                        spent: Spent { cost_micros: *cost, tokens: *tokens },
                        wanted: amount,
                        resets_at: entry.ends,
                        now,
                    }));
                }
                other => {
                    return Err(RedisFailure::Redis(redis::RedisError::from((
                        redis::ErrorKind::UnexpectedReturnType,
                        "unexpected answer from the budget script",
                        format!("{other:?}"),
                    ))));
                }
            }
        }
        Err(RedisFailure::Status(tonic::Status::unavailable("budget state could not be seeded")))
    }

    async fn reserve_local(&self, entries: &[Entry], amount: Spent, now: i64) -> Result<Vec<String>, ReserveError> {
        let missing: Vec<&Entry> = {
            let local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
            entries.iter().filter(|e| local.get(&e.key).is_none_or(|w| now - w.seeded_at >= LOCAL_RESEED_MS)).collect()
        };
        let mut seeded = Vec::with_capacity(missing.len());
        for entry in missing {
            seeded.push((entry.key.clone(), entry.ends, self.seed(&entry.budget, entry.start).await?));
        }
        let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, ends, spent) in seeded {
            let w = local.entry(key).or_insert(Window { ends, ..Window::default() });
            // The rollups lag this process's own spend by up to a second: keep the larger.
            w.spent.cost_micros = w.spent.cost_micros.max(spent.cost_micros);
            w.spent.tokens = w.spent.tokens.max(spent.tokens);
            w.seeded_at = now;
        }
        // Windows that have ended are forgotten.
        local.retain(|_, w| w.ends.is_none_or(|end| end > now));
        let mut totals = Vec::with_capacity(entries.len());
        for entry in entries {
            let w = local.get(&entry.key).copied().unwrap_or_default();
            let used = Spent {
                cost_micros: w.spent.cost_micros + w.reserved.cost_micros,
                tokens: w.spent.tokens + w.reserved.tokens,
            };
            let over_cost = entry.budget.max_cost_micros.is_some_and(|m| used.cost_micros + amount.cost_micros > m);
            let over_tokens = entry.budget.max_tokens.is_some_and(|m| used.tokens + amount.tokens > m);
            if over_cost || over_tokens {
                return Err(ReserveError::Refused(Box::new(Refusal {
                    budget: entry.budget.clone(),
                    spent: used,
                    wanted: amount,
                    resets_at: entry.ends,
                    now,
                })));
            }
            totals.push(used);
        }
        for entry in entries {
            let w = local.entry(entry.key.clone()).or_insert(Window {
                ends: entry.ends,
                seeded_at: now,
                ..Window::default()
            });
            w.reserved.cost_micros += amount.cost_micros;
            w.reserved.tokens += amount.tokens;
        }
        Ok(warnings(entries, &totals, amount))
    }

    async fn settle(&self, r: &Reservation, used: Spent) {
        if r.on_redis
            && let Some((redis, _, settle)) = &self.redis
        {
            let mut invocation = settle.prepare_invoke();
            for entry in &r.entries {
                invocation.key(&entry.key).key(format!("{}:res", entry.key));
            }
            invocation
                .arg(&r.member)
                .arg(r.amount.cost_micros)
                .arg(r.amount.tokens)
                .arg(used.cost_micros)
                .arg(used.tokens);
            let result = match redis.conn().await {
                Ok(mut conn) => invocation.invoke_async::<i64>(&mut conn).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                // The reservation expires by itself; the spend is in the rollups, from which
                // the next window (or a restarted Redis) is seeded.
                tracing::warn!(error = %e, "cannot settle a budget reservation in Redis");
            }
            return;
        }
        let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in &r.entries {
            if let Some(w) = local.get_mut(&entry.key) {
                w.reserved.cost_micros -= r.amount.cost_micros;
                w.reserved.tokens -= r.amount.tokens;
                w.spent.cost_micros += used.cost_micros;
                w.spent.tokens += used.tokens;
            }
        }
    }
}

/// Ids of the budgets at or past their warning level once `amount` is added.
fn warnings(entries: &[Entry], totals: &[Spent], amount: Spent) -> Vec<String> {
    entries
        .iter()
        .zip(totals)
        .filter(|(e, t)| {
            e.budget.warns(Spent { cost_micros: t.cost_micros + amount.cost_micros, tokens: t.tokens + amount.tokens })
        })
        .map(|(e, _)| e.budget.id())
        .collect()
}

enum RedisFailure {
    Redis(redis::RedisError),
    Status(tonic::Status),
}

/// Why a reservation was not made.
#[derive(Debug)]
pub enum ReserveError {
    /// A budget cannot take the call.
    Refused(Box<Refusal>),
    /// Spend could not be read to seed a window.
    Unavailable(tonic::Status),
}

impl From<tonic::Status> for ReserveError {
    fn from(status: tonic::Status) -> Self {
        Self::Unavailable(status)
    }
}

impl From<ReserveError> for tonic::Status {
    fn from(e: ReserveError) -> Self {
        match e {
            ReserveError::Refused(refusal) => refusal.status(),
            ReserveError::Unavailable(status) => status,
        }
    }
}

impl Reservation {
    /// Releases the reservation and charges what the call used.
    pub async fn settle(mut self, used: Spent) {
        self.settled = true;
        let ledger = self.ledger.clone();
        ledger.settle(&self, used).await;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.settled = true;
        let r = Reservation {
            ledger: self.ledger.clone(),
            entries: std::mem::take(&mut self.entries),
            member: std::mem::take(&mut self.member),
            amount: self.amount,
            on_redis: self.on_redis,
            settled: true,
            warnings: Vec::new(),
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { r.ledger.clone().settle(&r, Spent::default()).await });
        }
    }
}
