//! Budget counters in Redis, shared by every process that points at the same server: the check
//! and the reservation are one Lua script (`reserve.lua`), settling another (`settle.lua`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use jiff::civil::Date;
use redis::aio::ConnectionManager;
use redis::Script;

use super::store::{BudgetStore, Counter, Hold, Refusal};
use super::Period;
use crate::error::{Error, ErrorKind};
use crate::pricing::Nanos;

/// Budget counters in Redis: one hash (`spent`, `reserved`) per budget and period, and a sorted
/// set of reservations by expiry so a crashed process's holds are released.
#[derive(Clone)]
pub struct RedisBudgets {
    conn: ConnectionManager,
    prefix: String,
    reserve: Arc<Script>,
    settle: Arc<Script>,
}

const RESERVE: &str = include_str!("reserve.lua");
const SETTLE: &str = include_str!("settle.lua");

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

    async fn reserve_holds(
        &self,
        holds: &[Hold],
        amount: Nanos,
        rid: &str,
        hold_for: Duration,
    ) -> Result<Option<Refusal>, Error> {
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
                Period::Total => 400,
            };
            inv.arg(ttl_days * 86_400_000u64);
        }
        let mut conn = self.conn.clone();
        let (i, spent, reserved): (i64, i64, i64) = inv
            .invoke_async(&mut conn)
            .await
            .map_err(budget_redis_err)?;
        Ok((i > 0).then(|| Refusal {
            hold: (i - 1) as usize,
            spent: spent.max(0) as Nanos,
            reserved: reserved.max(0) as Nanos,
        }))
    }
}

impl BudgetStore for RedisBudgets {
    fn reserve<'a>(
        &'a self,
        holds: &'a [Hold],
        amount: Nanos,
        reservation_id: &'a str,
        hold_for: Duration,
        _today: Date,
    ) -> BoxFuture<'a, Result<Option<Refusal>, Error>> {
        self.reserve_holds(holds, amount, reservation_id, hold_for)
            .boxed()
    }

    /// Shared counters already hold every run's spend.
    fn carry_over(&self, _id: &str, _spent: Nanos) {}

    /// Shared counters are read with `sluice spend` from Redis; this process keeps none.
    fn counter(&self, _id: &str) -> Counter {
        Counter::default()
    }

    fn settle(
        &self,
        holds: &[Hold],
        reserved: Nanos,
        cost: Nanos,
        reservation_id: &str,
        alerts: Option<Arc<crate::alerts::Alerter>>,
    ) {
        let mut conn = self.conn.clone();
        let limits: Vec<(String, Nanos)> = holds
            .iter()
            .map(|h| (h.id.clone(), h.budget.limit))
            .collect();
        let script = self.settle.clone();
        let keys: Vec<String> = holds.iter().map(|h| self.key(&h.id)).collect();
        let rid = reservation_id.to_string();
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
