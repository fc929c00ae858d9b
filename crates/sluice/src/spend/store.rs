//! Where budget counters live: behind [`BudgetStore`], in-process (`local.rs`) or in Redis
//! (`redis.rs`). The accountant decides what to reserve; a store only checks and holds it
//! atomically.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use jiff::civil::Date;

use super::Budget;
use crate::error::Error;
use crate::pricing::Nanos;

/// One budget as a request sees it: the counter it reserves against.
#[derive(Debug, Clone)]
pub(crate) struct Hold {
    /// `SCOPE|PERIOD|PERIOD-ID`: one counter per budget and period.
    pub(crate) id: String,
    pub(crate) budget: Budget,
}

/// A reservation refused: which hold, and what it had spent and held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) hold: usize,
    pub(crate) spent: Nanos,
    pub(crate) reserved: Nanos,
}

/// Spent and held by requests in flight, of one counter.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counter {
    pub(crate) spent: Nanos,
    pub(crate) reserved: Nanos,
}

/// Budget counters that check and reserve atomically.
pub(crate) trait BudgetStore: Send + Sync + std::fmt::Debug {
    /// Reserve `amount` on every hold, or on none: `Some` names the first hold that would
    /// be crossed. `today` is the period the holds belong to; `hold_for` how long a
    /// reservation may live if its request never settles (a crashed process).
    fn reserve<'a>(
        &'a self,
        holds: &'a [Hold],
        amount: Nanos,
        reservation_id: &'a str,
        hold_for: Duration,
        today: Date,
    ) -> BoxFuture<'a, Result<Option<Refusal>, Error>>;

    /// Release a reservation and add the real cost; off the request's path. Each budget whose
    /// spend moved is reported to `alerts` (before, after, limit).
    fn settle(
        &self,
        holds: &[Hold],
        reserved: Nanos,
        cost: Nanos,
        reservation_id: &str,
        alerts: Option<Arc<crate::alerts::Alerter>>,
    );

    /// Set a counter's spend to what a face counted itself (see `Accountant::carry_over`).
    fn carry_over(&self, id: &str, spent: Nanos);

    /// One counter as this process sees it (for `/metrics` and `sluice spend`).
    fn counter(&self, id: &str) -> Counter;
}
