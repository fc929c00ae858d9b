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
mod local;
mod redis;
mod store;

use std::sync::Arc;
use std::time::Duration;

use jiff::civil::Date;

use crate::error::{Error, ErrorKind};
use crate::models::{today_utc, Registry};
use crate::pricing::{dollars, Nanos, Price};
use crate::wire::Usage;
pub use ledger::{By, Filter, Ledger, LedgerSetting, Row};
pub use local::BudgetCounters;
pub use redis::RedisBudgets;
pub use store::Counter;
use store::{BudgetStore, Hold};

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
    pub fn scope(&self) -> std::borrow::Cow<'static, str> {
        match (&self.job, &self.key) {
            (Some(j), _) => format!("job:{j}").into(),
            (None, Some(k)) => format!("key:{k}").into(),
            // A request with neither (the gateway's loopback callers, the client library)
            // makes no text.
            (None, None) => "-".into(),
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
    /// Ever: a batch job's whole spend, across its runs (`--budget-usd`).
    Total,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
            Period::Total => "total",
        }
    }

    fn start(self, today: Date) -> Date {
        match self {
            Period::Day => today,
            Period::Month => today.first_of_month(),
            Period::Total => jiff::civil::date(1970, 1, 1),
        }
    }

    fn id(self, today: Date) -> String {
        match self {
            Period::Day => today.to_string(),
            Period::Month => format!("{:04}-{:02}", today.year(), today.month()),
            Period::Total => "all".to_string(),
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
    /// Let requests for models without a price through while a budget applies (default false:
    /// they are refused, since an unpriced model would spend past the limit unseen).
    pub allow_unpriced: bool,
    /// Pinned day for tests; `None`: today (UTC).
    pub today: Option<Date>,
    /// In-process counters to continue from (a gateway reload passes the old engine's, so
    /// reservations in flight and today's spend carry over).
    pub counters: Option<BudgetCounters>,
}

/// The money stage, shared by every request of an engine.
#[derive(Debug)]
pub struct Accountant {
    registry: Arc<Registry>,
    cfg: SpendConfig,
    /// In-process counters (kept for the next engine even when the store is shared).
    local: BudgetCounters,
    store: Arc<dyn BudgetStore>,
    alerts: Option<Arc<crate::alerts::Alerter>>,
}

/// A request's reservation and, once settled, its cost. Dropped unsettled (the request
/// failed before an answer), it releases the reservation and costs nothing.
#[derive(Debug)]
pub struct Charge {
    accountant: Arc<Accountant>,
    model: String,
    scope: std::borrow::Cow<'static, str>,
    price: Option<Price>,
    holds: Vec<Hold>,
    reserved: Nanos,
    reservation_id: String,
    day: Date,
    settled: bool,
}

impl Accountant {
    pub fn new(registry: Arc<Registry>, cfg: SpendConfig) -> Self {
        let local = cfg.counters.clone().unwrap_or_default();
        let store: Arc<dyn BudgetStore> = match &cfg.redis {
            Some(r) => Arc::new(r.clone()),
            None => {
                let l = Arc::new(local::LocalBudgets::new(local.clone(), cfg.ledger.clone()));
                // Read this period's totals from the ledger now, before the first request
                // needs them.
                if !cfg.budgets.is_empty() {
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        let today = cfg.today.unwrap_or_else(today_utc);
                        let holds = holds_for(&cfg.budgets, today, |_| true);
                        let seeding = l.clone();
                        rt.spawn(async move {
                            if let Err(e) = seeding.seed(&holds, today).await {
                                tracing::warn!(error = %e, "budgets: the ledger's totals could not be read ahead; the first request will try again");
                            }
                        });
                    }
                }
                l
            }
        };
        Accountant {
            registry,
            local,
            store,
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
        let price = self.registry.price(model);
        self.reserve_at(model, price, tags, prompt, output, hold_for)
            .await
    }

    /// [`Accountant::reserve`] at `price` rather than the registry's (the most any upstream
    /// that may answer charges for the model; `None`: unpriced).
    pub async fn reserve_at(
        self: &Arc<Self>,
        model: &str,
        price: Option<Price>,
        tags: &SpendTags,
        prompt: u64,
        output: u64,
        hold_for: Duration,
    ) -> Result<Charge, Error> {
        let today = self.today();
        let holds = holds_for(&self.cfg.budgets, today, |b| b.scope.applies(tags));
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
                    ErrorKind::Unpriced,
                    format!(
                        "no price is known for model {model:?}, so the budget {} cannot be enforced; add it to your model registry file (the gateway's `[models] registry`, `--registry` for `sluice batch run`) as [[model]] id = {model:?} with input_per_mtok and output_per_mtok, give it in the upstream's `prices`, or refresh the registry with `sluice models update` (or allow unpriced models)",
                        holds[0].budget.scope.label()
                    ),
                ))
            }
        };
        charge.reservation_id = format!("{:016x}", rand::random::<u64>());
        let refused = self
            .store
            .reserve(&holds, worst, &charge.reservation_id, hold_for, today)
            .await?;
        if let Some(store::Refusal {
            hold,
            spent,
            reserved,
        }) = refused
        {
            let b = &holds[hold].budget;
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

    /// Start `scope`'s `period` counter from `spent`: spend the face has counted itself (a
    /// batch job's earlier runs, from its output files) rather than the ledger. Call before the
    /// first request; in-process counters only (shared ones are already the truth).
    pub fn carry_over(&self, scope: &BudgetScope, period: Period, spent: Nanos) {
        for h in holds_for(&self.cfg.budgets, self.today(), |b| {
            &b.scope == scope && b.period == period
        }) {
            self.store.carry_over(&h.id, spent);
        }
    }

    /// Spent and reserved of every budget today (for `sluice spend` and `/metrics`).
    pub fn snapshot(&self) -> Vec<(Budget, Nanos, Nanos)> {
        holds_for(&self.cfg.budgets, self.today(), |_| true)
            .into_iter()
            .map(|h| {
                let c = self.store.counter(&h.id);
                (h.budget, c.spent, c.reserved)
            })
            .collect()
    }
}

/// The counters of the budgets `applies` picks, for the period that contains `today`.
fn holds_for(budgets: &[Budget], today: Date, applies: impl Fn(&Budget) -> bool) -> Vec<Hold> {
    budgets
        .iter()
        .filter(|b| applies(b))
        .map(|b| Hold {
            id: format!(
                "{}|{}|{}",
                b.scope.label(),
                b.period.as_str(),
                b.period.id(today)
            ),
            budget: b.clone(),
        })
        .collect()
}

impl Charge {
    /// The price used, when the registry (or the answering upstream) knows the model.
    pub fn price(&self) -> Option<Price> {
        self.price
    }

    /// The upstream that answers charges `price` (its own, or the registry's): settle at it.
    /// The reservation stays as made, at the most any candidate upstream charges.
    pub fn answered_at(&mut self, price: Option<Price>) {
        self.price = price;
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
            ledger::with_day_text(self.day, |day| {
                l.add(&ledger::Entry {
                    day,
                    scope: &self.scope,
                    model: &self.model,
                    requests: 1,
                    prompt_tokens: usage.prompt_tokens,
                    cached_tokens: usage.cached_tokens(),
                    completion_tokens: usage.completion_tokens,
                    reasoning_tokens: usage.reasoning_tokens(),
                    cost_nanos: cost,
                })
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
        a.store.settle(
            &self.holds,
            self.reserved,
            cost,
            &self.reservation_id,
            a.alerts.clone(),
        );
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.finish(0);
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
    async fn an_absurd_max_tokens_cannot_wrap_past_a_tiny_budget() {
        // max_tokens = u64::MAX once wrapped the worst case to a few nanos.
        let a = accountant(vec![Budget {
            scope: BudgetScope::Key("alice".into()),
            period: Period::Day,
            limit: 1_000, // $0.000001
        }]);
        let e = a
            .reserve(
                "gpt-4o-mini",
                &alice(),
                10,
                u64::MAX,
                Duration::from_secs(60),
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BudgetExceeded);
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
        assert_eq!(
            e.kind(),
            ErrorKind::Unpriced,
            "a setting to fix, not a budget run out"
        );
        assert!(!e.is_retryable());
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
