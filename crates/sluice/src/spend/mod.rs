//! Money: the cost of every request, the ledger it is written to, and hard budgets.
//!
//! Before a request is sent, its worst-case cost (every prompt token uncached, every output
//! token used, at the registry's price) is reserved atomically against every budget that
//! applies — global, the caller's key, the job — so concurrent requests cannot together cross
//! a budget: the check and the reservation are one step under one lock (in-process) or one Lua
//! script (Redis). When the answer's usage arrives the reservation is settled to the real cost
//! and the ledger gets a row. A request whose budget would be crossed is refused with
//! [`ErrorKind::BudgetExceeded`] before anything is sent.
//!
//! Budgets are per UTC day or month. In-process, the spend already in the ledger for the
//! current period is read once when a budget is first used, so a restart does not reset it;
//! with Redis the counters themselves are shared and outlive any process.

pub mod ledger;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::civil::Date;
use redis::aio::ConnectionManager;
use redis::Script;

use crate::error::{Error, ErrorKind};
use crate::models::{today_utc, Registry};
use crate::pricing::{dollars, Nanos, Price};
use crate::wire::Usage;
pub use ledger::{By, Filter, Ledger, Row};

/// Who a request's spend belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpendTags {
    /// The caller (a gateway virtual key's name).
    pub key: Option<String>,
    /// A batch job's name.
    pub job: Option<String>,
}

impl SpendTags {
    /// The ledger's scope column: `job:NAME`, else `key:NAME`, else `-`.
    pub fn scope(&self) -> String {
        match (&self.job, &self.key) {
            (Some(j), _) => format!("job:{j}"),
            (None, Some(k)) => format!("key:{k}"),
            (None, None) => "-".to_string(),
        }
    }
}

/// What a budget covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BudgetScope {
    Global,
    Key(String),
    Job(String),
}

impl BudgetScope {
    fn applies(&self, t: &SpendTags) -> bool {
        match self {
            BudgetScope::Global => true,
            BudgetScope::Key(k) => t.key.as_deref() == Some(k.as_str()),
            BudgetScope::Job(j) => t.job.as_deref() == Some(j.as_str()),
        }
    }

    /// `global`, `key:NAME`, `job:NAME`.
    pub fn label(&self) -> String {
        match self {
            BudgetScope::Global => "global".into(),
            BudgetScope::Key(k) => format!("key:{k}"),
            BudgetScope::Job(j) => format!("job:{j}"),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            BudgetScope::Global => "global",
            BudgetScope::Key(_) => "key",
            BudgetScope::Job(_) => "job",
        }
    }

    /// The ledger rows this budget sums.
    fn ledger_scope(&self) -> Option<String> {
        match self {
            BudgetScope::Global => None,
            other => Some(other.label()),
        }
    }
}

/// A budget's period, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    fn start(self, today: Date) -> Date {
        match self {
            Period::Day => today,
            Period::Month => today.first_of_month(),
        }
    }

    fn id(self, today: Date) -> String {
        match self {
            Period::Day => today.to_string(),
            Period::Month => format!("{:04}-{:02}", today.year(), today.month()),
        }
    }
}

/// A hard spending limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub scope: BudgetScope,
    pub period: Period,
    pub limit: Nanos,
}

/// What the money stage needs.
#[derive(Debug, Clone, Default)]
pub struct SpendConfig {
    pub budgets: Vec<Budget>,
    /// Where rows go; `None`: costs are computed, counted in metrics and returned, not stored.
    pub ledger: Option<Ledger>,
    /// Shared budget counters (several processes, one budget); `None`: in-process.
    pub redis: Option<RedisBudgets>,
    /// Refuse requests for models without a price when a budget applies (default true: an
    /// unpriced model would otherwise spend past the limit unseen).
    pub allow_unpriced: bool,
    /// Pinned day for tests; `None`: today (UTC).
    pub today: Option<Date>,
    /// In-process counters to continue from (a gateway reload passes the old engine's, so
    /// reservations in flight and today's spend carry over).
    pub counters: Option<BudgetCounters>,
}

/// In-process budget counters, shareable between successive engines.
#[derive(Debug, Clone, Default)]
pub struct BudgetCounters(Arc<Mutex<HashMap<String, Counter>>>);

/// The money stage, shared by every request of an engine.
#[derive(Debug)]
pub struct Accountant {
    registry: Arc<Registry>,
    cfg: SpendConfig,
    local: BudgetCounters,
    alerts: Option<Arc<crate::alerts::Alerter>>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Counter {
    spent: Nanos,
    reserved: Nanos,
}

/// One budget as a request sees it: the counter it reserves against.
#[derive(Debug, Clone)]
struct Hold {
    id: String,
    budget: Budget,
}

/// A request's reservation and, once settled, its cost. Dropped unsettled (the request
/// failed before an answer), it releases the reservation and costs nothing.
#[derive(Debug)]
pub struct Charge {
    accountant: Arc<Accountant>,
    model: String,
    scope: String,
    price: Option<Price>,
    holds: Vec<Hold>,
    reserved: Nanos,
    reservation_id: String,
    day: Date,
    settled: bool,
}

impl Accountant {
    pub fn new(registry: Arc<Registry>, cfg: SpendConfig) -> Self {
        Accountant {
            registry,
            local: cfg.counters.clone().unwrap_or_default(),
            cfg,
            alerts: None,
        }
    }

    /// Budget thresholds and large requests are reported here.
    pub fn with_alerts(mut self, alerts: Arc<crate::alerts::Alerter>) -> Self {
        self.alerts = Some(alerts);
        self
    }

    /// The in-process counters, to hand to the engine that replaces this one.
    pub fn counters(&self) -> BudgetCounters {
        self.local.clone()
    }

    pub fn config(&self) -> &SpendConfig {
        &self.cfg
    }

    pub fn ledger(&self) -> Option<&Ledger> {
        self.cfg.ledger.as_ref()
    }

    fn today(&self) -> Date {
        self.cfg.today.unwrap_or_else(today_utc)
    }

    /// Reserve the worst-case cost of a request for `model` with `prompt` tokens and up to
    /// `output` tokens, against every budget that applies to `tags`.
    pub async fn reserve(
        self: &Arc<Self>,
        model: &str,
        tags: &SpendTags,
        prompt: u64,
        output: u64,
        hold_for: Duration,
    ) -> Result<Charge, Error> {
        let today = self.today();
        let price = self.registry.price(model);
        let holds: Vec<Hold> = self
            .cfg
            .budgets
            .iter()
            .filter(|b| b.scope.applies(tags))
            .map(|b| Hold {
                id: format!(
                    "{}|{}|{}",
                    b.scope.label(),
                    b.period.as_str(),
                    b.period.id(today)
                ),
                budget: b.clone(),
            })
            .collect();
        let mut charge = Charge {
            accountant: self.clone(),
            model: model.to_string(),
            scope: tags.scope(),
            price,
            holds: Vec::new(),
            reserved: 0,
            reservation_id: String::new(),
            day: today,
            settled: false,
        };
        if holds.is_empty() {
            return Ok(charge);
        }
        let worst = match price {
            Some(p) => p.worst_case(prompt, output),
            None if self.cfg.allow_unpriced => 0,
            None => {
                return Err(Error::new(
                    ErrorKind::BudgetExceeded,
                    format!(
                        "no price is known for model {model:?}, so the budget {} cannot be enforced; add it to your model registry file (the gateway's `[models] registry`, `--registry` for `sluice batch run`) as [[model]] id = {model:?} with input_per_mtok and output_per_mtok, or refresh the registry with `sluice models update` (or allow unpriced models)",
                        holds[0].budget.scope.label()
                    ),
                ))
            }
        };
        charge.reservation_id = format!("{:016x}", rand::random::<u64>());
        let refused = match &self.cfg.redis {
            Some(r) => {
                r.reserve(&holds, worst, &charge.reservation_id, hold_for)
                    .await?
            }
            None => self.reserve_local(&holds, worst, today)?,
        };
        if let Some((i, spent, reserved)) = refused {
            let b = &holds[i].budget;
            crate::observe::budget_refused(b.scope.kind(), b.period.as_str());
            tracing::warn!(
                budget = %b.scope.label(), period = b.period.as_str(), limit = %dollars(b.limit),
                spent = %dollars(spent), reserved = %dollars(reserved), request_up_to = %dollars(worst),
                "budget would be crossed: request refused"
            );
            return Err(Error::new(
                ErrorKind::BudgetExceeded,
                format!(
                    "the {} budget of {} for {} ({}) would be crossed: {} spent, {} held by requests in flight, this request could cost up to {}",
                    b.period.as_str(),
                    dollars(b.limit),
                    b.scope.label(),
                    b.period.id(today),
                    dollars(spent),
                    dollars(reserved),
                    dollars(worst)
                ),
            ));
        }
        charge.holds = holds;
        charge.reserved = worst;
        Ok(charge)
    }

    /// In-process reservation: read the ledger for counters seen for the first time, then
    /// check and reserve every hold under one lock. Returns the first hold that refused.
    fn reserve_local(
        &self,
        holds: &[Hold],
        worst: Nanos,
        today: Date,
    ) -> Result<Option<(usize, Nanos, Nanos)>, Error> {
        let missing: Vec<&Hold> = {
            let m = self.local.0.lock().unwrap_or_else(|p| p.into_inner());
            holds.iter().filter(|h| !m.contains_key(&h.id)).collect()
        };
        let mut seeded = Vec::new();
        for h in missing {
            let spent = match &self.cfg.ledger {
                Some(l) => l.sum_blocking(Filter {
                    scope: h.budget.scope.ledger_scope(),
                    since: Some(h.budget.period.start(today)),
                })?,
                None => 0,
            };
            seeded.push((h.id.clone(), spent));
        }
        let mut m = self.local.0.lock().unwrap_or_else(|p| p.into_inner());
        for (id, spent) in seeded {
            m.entry(id).or_insert(Counter { spent, reserved: 0 });
        }
        for (i, h) in holds.iter().enumerate() {
            let c = m.get(&h.id).copied().unwrap_or_default();
            if c.spent + c.reserved + worst > h.budget.limit {
                return Ok(Some((i, c.spent, c.reserved)));
            }
        }
        for h in holds {
            m.entry(h.id.clone()).or_default().reserved += worst;
        }
        Ok(None)
    }

    /// Spent and reserved of every budget today (for `sluice spend` and `/metrics`).
    pub fn snapshot(&self) -> Vec<(Budget, Nanos, Nanos)> {
        let today = self.today();
        let m = self.local.0.lock().unwrap_or_else(|p| p.into_inner());
        self.cfg
            .budgets
            .iter()
            .map(|b| {
                let id = format!(
                    "{}|{}|{}",
                    b.scope.label(),
                    b.period.as_str(),
                    b.period.id(today)
                );
                let c = m.get(&id).copied().unwrap_or_default();
                (b.clone(), c.spent, c.reserved)
            })
            .collect()
    }
}

impl Charge {
    /// The price used, when the registry knows the model.
    pub fn price(&self) -> Option<Price> {
        self.price
    }

    /// Settle to the cost of `usage`, write the ledger row and count it. Returns the cost.
    pub fn settle(mut self, usage: &Usage) -> Nanos {
        let cost = self.price.map_or(0, |p| p.cost(usage));
        self.finish(cost);
        let a = &self.accountant;
        crate::observe::cost(&self.model, cost);
        if let Some(al) = &a.alerts {
            al.completion_tokens(&self.model, usage.completion_tokens);
        }
        if let Some(l) = &a.cfg.ledger {
            l.record(Row {
                day: self.day.to_string(),
                scope: self.scope.clone(),
                model: self.model.clone(),
                requests: 1,
                prompt_tokens: usage.prompt_tokens,
                cached_tokens: usage.cached_tokens(),
                completion_tokens: usage.completion_tokens,
                reasoning_tokens: usage.reasoning_tokens(),
                cost_nanos: cost,
            });
        }
        cost
    }

    fn finish(&mut self, cost: Nanos) {
        if self.settled {
            return;
        }
        self.settled = true;
        if self.holds.is_empty() {
            return;
        }
        let a = &self.accountant;
        match &a.cfg.redis {
            Some(r) => r.settle(
                &self.holds,
                self.reserved,
                cost,
                &self.reservation_id,
                a.alerts.clone(),
            ),
            None => {
                let mut crossed = Vec::new();
                {
                    let mut m = a.local.0.lock().unwrap_or_else(|p| p.into_inner());
                    for h in &self.holds {
                        let c = m.entry(h.id.clone()).or_default();
                        c.reserved = c.reserved.saturating_sub(self.reserved);
                        crossed.push((h, c.spent, c.spent + cost));
                        c.spent += cost;
                    }
                }
                if let Some(al) = &a.alerts {
                    for (h, before, after) in crossed {
                        al.budget(&h.id, before, after, h.budget.limit);
                    }
                }
            }
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.finish(0);
    }
}

const RESERVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local amount = tonumber(ARGV[1])
local rid = ARGV[2]
local hold_ms = tonumber(ARGV[3])
local n = #KEYS
for i = 1, n do
  local h = KEYS[i]
  local z = h .. ':res'
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  for _, m in ipairs(expired) do
    local amt = tonumber(string.match(m, ':(%d+)$') or '0')
    redis.call('HINCRBY', h, 'reserved', -amt)
  end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', now) end
end
for i = 1, n do
  local h = KEYS[i]
  local limit = tonumber(ARGV[3 + i])
  local spent = tonumber(redis.call('HGET', h, 'spent') or '0')
  local reserved = tonumber(redis.call('HGET', h, 'reserved') or '0')
  if spent + reserved + amount > limit then
    return {i, spent, reserved}
  end
end
for i = 1, n do
  local h = KEYS[i]
  redis.call('HINCRBY', h, 'reserved', amount)
  redis.call('ZADD', h .. ':res', now + hold_ms, rid .. ':' .. amount)
  local ttl = tonumber(ARGV[3 + n + i])
  redis.call('PEXPIRE', h, ttl)
  redis.call('PEXPIRE', h .. ':res', ttl)
end
return {0, 0, 0}
"#;

const SETTLE: &str = r#"
local out = {}
local member = ARGV[1] .. ':' .. ARGV[2]
for i = 1, #KEYS do
  local h = KEYS[i]
  if redis.call('ZREM', h .. ':res', member) == 1 then
    redis.call('HINCRBY', h, 'reserved', -tonumber(ARGV[2]))
  end
  out[i] = redis.call('HINCRBY', h, 'spent', tonumber(ARGV[3]))
end
return out
"#;

/// Budget counters in Redis: one hash (`spent`, `reserved`) per budget and period, and a sorted
/// set of reservations by expiry so a crashed process's holds are released.
#[derive(Clone)]
pub struct RedisBudgets {
    conn: ConnectionManager,
    prefix: String,
    reserve: Arc<Script>,
    settle: Arc<Script>,
}

impl std::fmt::Debug for RedisBudgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBudgets")
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn budget_redis_err(e: redis::RedisError) -> Error {
    // Fail closed: a budget that cannot be checked does not let spend through.
    Error::new(
        ErrorKind::BudgetExceeded,
        format!("budget state (Redis) unavailable, request refused: {e}"),
    )
    .with_retryable(true)
}

impl RedisBudgets {
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, Error> {
        let conn = crate::redis_conn::connect(url, budget_redis_err).await?;
        Ok(RedisBudgets {
            conn,
            prefix: prefix.to_string(),
            reserve: Arc::new(Script::new(RESERVE)),
            settle: Arc::new(Script::new(SETTLE)),
        })
    }

    fn key(&self, id: &str) -> String {
        format!("{}:budget:{id}", self.prefix)
    }

    async fn reserve(
        &self,
        holds: &[Hold],
        amount: Nanos,
        rid: &str,
        hold_for: Duration,
    ) -> Result<Option<(usize, Nanos, Nanos)>, Error> {
        let mut inv = self.reserve.prepare_invoke();
        for h in holds {
            inv.key(self.key(&h.id));
        }
        inv.arg(amount).arg(rid).arg(hold_for.as_millis() as u64);
        for h in holds {
            inv.arg(h.budget.limit);
        }
        for h in holds {
            let ttl_days = match h.budget.period {
                Period::Day => 2,
                Period::Month => 32,
            };
            inv.arg(ttl_days * 86_400_000u64);
        }
        let mut conn = self.conn.clone();
        let (i, spent, reserved): (i64, i64, i64) = inv
            .invoke_async(&mut conn)
            .await
            .map_err(budget_redis_err)?;
        Ok((i > 0).then(|| {
            (
                (i - 1) as usize,
                spent.max(0) as Nanos,
                reserved.max(0) as Nanos,
            )
        }))
    }

    fn settle(
        &self,
        holds: &[Hold],
        reserved: Nanos,
        cost: Nanos,
        rid: &str,
        alerts: Option<Arc<crate::alerts::Alerter>>,
    ) {
        let mut conn = self.conn.clone();
        let limits: Vec<(String, Nanos)> = holds
            .iter()
            .map(|h| (h.id.clone(), h.budget.limit))
            .collect();
        let script = self.settle.clone();
        let keys: Vec<String> = holds.iter().map(|h| self.key(&h.id)).collect();
        let rid = rid.to_string();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::error!(
                "budget (Redis): settled outside a runtime; the hold expires on its own"
            );
            return;
        };
        rt.spawn(async move {
            let mut inv = script.prepare_invoke();
            for k in &keys {
                inv.key(k);
            }
            inv.arg(&rid).arg(reserved).arg(cost);
            match inv.invoke_async::<Vec<i64>>(&mut conn).await {
                Ok(spent) => {
                    if let Some(al) = alerts {
                        for ((id, limit), after) in limits.iter().zip(spent) {
                            let after = after.max(0) as Nanos;
                            al.budget(id, after.saturating_sub(cost), after, *limit);
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "budget (Redis): settling a request failed; its hold expires on its own");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: u64, cached: u64, completion: u64) -> Usage {
        serde_json::from_value(serde_json::json!({
            "prompt_tokens": prompt, "completion_tokens": completion,
            "prompt_tokens_details": {"cached_tokens": cached}
        }))
        .unwrap()
    }

    fn accountant(budgets: Vec<Budget>) -> Arc<Accountant> {
        Arc::new(Accountant::new(
            Arc::new(Registry::builtin()),
            SpendConfig {
                budgets,
                today: crate::models::parse_date("2026-11-28"),
                ..SpendConfig::default()
            },
        ))
    }

    fn alice() -> SpendTags {
        SpendTags {
            key: Some("alice".into()),
            job: None,
        }
    }

    #[tokio::test]
    async fn reservations_hold_until_settled_and_refuse_past_the_limit() {
        // gpt-4o-mini: 1,000 prompt + 1,000 output worst case = 150,000 + 600,000 nanos.
        let a = accountant(vec![Budget {
            scope: BudgetScope::Key("alice".into()),
            period: Period::Day,
            limit: 1_000_000,
        }]);
        let h = Duration::from_secs(60);
        let c1 = a
            .reserve("gpt-4o-mini", &alice(), 1000, 1000, h)
            .await
            .unwrap();
        // A second worst case would cross $0.001.
        let e = a
            .reserve("gpt-4o-mini", &alice(), 1000, 1000, h)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BudgetExceeded);
        assert!(e.to_string().contains("key:alice"), "{e}");
        // Someone else is not bound by alice's budget.
        a.reserve("gpt-4o-mini", &SpendTags::default(), 1000, 1000, h)
            .await
            .unwrap();
        // Settling to the real cost frees the difference.
        assert_eq!(c1.settle(&usage(1000, 0, 100)), 150_000 + 60_000);
        let c2 = a
            .reserve("gpt-4o-mini", &alice(), 1000, 1000, h)
            .await
            .unwrap();
        drop(c2); // failed request: reservation released, nothing spent
        let snap = a.snapshot();
        assert_eq!((snap[0].1, snap[0].2), (210_000, 0));
    }

    #[tokio::test]
    async fn unpriced_models_are_refused_under_a_budget() {
        let a = accountant(vec![Budget {
            scope: BudgetScope::Global,
            period: Period::Month,
            limit: 10,
        }]);
        let e = a
            .reserve("acme-llm", &alice(), 1, 1, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no price is known"), "{e}");
    }

    #[test]
    fn periods_and_scopes() {
        let d = crate::models::parse_date("2026-11-28").unwrap();
        assert_eq!(Period::Month.id(d), "2026-11");
        assert_eq!(Period::Month.start(d).to_string(), "2026-11-01");
        assert_eq!(alice().scope(), "key:alice");
        let job = SpendTags {
            key: Some("k".into()),
            job: Some("nightly".into()),
        };
        assert_eq!(job.scope(), "job:nightly");
        assert!(BudgetScope::Job("nightly".into()).applies(&job));
        assert!(!BudgetScope::Key("other".into()).applies(&job));
    }
}
