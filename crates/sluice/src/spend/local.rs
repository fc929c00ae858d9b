//! In-process budget counters: one map under one lock, seeded from the ledger.
//!
//! A counter seen for the first time in a period (at start, or at a UTC day or month rollover)
//! starts from what the ledger already holds for that period, so a restart does not reset a
//! budget. The ledger is asked asynchronously, before the counter is needed by the check; the
//! check and the reservation then happen under the one lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use jiff::civil::Date;

use super::store::{BudgetStore, Counter, Hold, Refusal};
use super::{Filter, Ledger};
use crate::error::Error;
use crate::pricing::Nanos;

/// In-process budget counters, shareable between successive engines (a gateway reload passes
/// the old engine's, so reservations in flight and today's spend carry over).
#[derive(Debug, Clone, Default)]
pub struct BudgetCounters(Arc<Mutex<HashMap<String, Counter>>>);

impl BudgetCounters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Counter>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug)]
pub(crate) struct LocalBudgets {
    counters: BudgetCounters,
    ledger: Option<Ledger>,
}

impl LocalBudgets {
    pub(crate) fn new(counters: BudgetCounters, ledger: Option<Ledger>) -> Self {
        LocalBudgets { counters, ledger }
    }

    /// Make sure each hold's counter exists, from the ledger's total for its period.
    pub(crate) async fn seed(&self, holds: &[Hold], today: Date) -> Result<(), Error> {
        let missing: Vec<&Hold> = {
            let m = self.counters.lock();
            holds.iter().filter(|h| !m.contains_key(&h.id)).collect()
        };
        for h in missing {
            let spent = match &self.ledger {
                Some(l) => l
                    .seed_sum(Filter {
                        scope: h.budget.scope.ledger_scope(),
                        since: Some(h.budget.period.start(today)),
                    })
                    .await?
                    .unwrap_or(0),
                None => 0,
            };
            // Another request may have seeded it meanwhile: the first one stays.
            self.counters
                .lock()
                .entry(h.id.clone())
                .or_insert(Counter { spent, reserved: 0 });
        }
        Ok(())
    }
}

impl BudgetStore for LocalBudgets {
    fn reserve<'a>(
        &'a self,
        holds: &'a [Hold],
        amount: Nanos,
        _reservation_id: &'a str,
        _hold_for: Duration,
        today: Date,
    ) -> BoxFuture<'a, Result<Option<Refusal>, Error>> {
        async move {
            self.seed(holds, today).await?;
            let mut m = self.counters.lock();
            for (i, h) in holds.iter().enumerate() {
                let c = m.get(&h.id).copied().unwrap_or_default();
                let after = c.spent.saturating_add(c.reserved).saturating_add(amount);
                if after > h.budget.limit {
                    return Ok(Some(Refusal {
                        hold: i,
                        spent: c.spent,
                        reserved: c.reserved,
                    }));
                }
            }
            for h in holds {
                let c = m.entry(h.id.clone()).or_default();
                c.reserved = c.reserved.saturating_add(amount);
            }
            Ok(None)
        }
        .boxed()
    }

    fn settle(
        &self,
        holds: &[Hold],
        reserved: Nanos,
        cost: Nanos,
        _reservation_id: &str,
        alerts: Option<Arc<crate::alerts::Alerter>>,
    ) {
        let mut crossed = Vec::new();
        {
            let mut m = self.counters.lock();
            for h in holds {
                let c = m.entry(h.id.clone()).or_default();
                c.reserved = c.reserved.saturating_sub(reserved);
                let before = c.spent;
                c.spent = c.spent.saturating_add(cost);
                crossed.push((h, before, c.spent));
            }
        }
        if let Some(al) = alerts {
            for (h, before, after) in crossed {
                al.budget(&h.id, before, after, h.budget.limit);
            }
        }
    }

    fn carry_over(&self, id: &str, spent: Nanos) {
        self.counters
            .lock()
            .entry(id.to_string())
            .or_default()
            .spent = spent;
    }

    fn counter(&self, id: &str) -> Counter {
        self.counters.lock().get(id).copied().unwrap_or_default()
    }
}
