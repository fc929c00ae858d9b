//! Rate budgets as GCRA (the generic cell rate algorithm), with reservations ahead of time.
//!
//! A budget refills at `rate` units per second and tolerates a burst of `tau` seconds' worth.
//! Its whole state is one number, the theoretical arrival time `tat`: the moment at which
//! everything admitted so far is paid off. A request of cost `c` (its time cost `w = c / rate`)
//! may start at the earliest `a ≥ now` with `tat + w − tau ≤ a`; taking it moves `tat` to
//! `max(tat, a) + w`. Because the slot is taken at the moment of asking, requests are admitted
//! in the order they asked (FIFO) with no queue structure at all: each one just sleeps until its
//! slot. A request larger than the burst waits until the budget is fully paid off, then goes.
//!
//! The same arithmetic runs in the Redis backend's Lua script (`redis_state.rs`), on the Redis
//! server's clock, so processes sharing a quota share one `tat`.

/// What a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Requests,
    Tokens,
}

/// One budget's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spec {
    /// Name within the scope (`rpm`, `tpm`, `rpd`, `tpd`).
    pub name: &'static str,
    pub unit: Unit,
    /// Units per second.
    pub rate: f64,
    /// Burst tolerance, seconds.
    pub tau: f64,
}

/// A scope's budgets: at most four (`rpm`, `tpm`, `rpd`, `tpd`), kept inline, since every
/// admitted attempt makes the list and its ticket holds it until the answer ends.
#[derive(Debug, Clone, Copy)]
pub struct Specs {
    items: [Spec; 4],
    len: usize,
}

impl Default for Specs {
    fn default() -> Self {
        let none = Spec {
            name: "",
            unit: Unit::Requests,
            rate: 0.0,
            tau: 0.0,
        };
        Specs {
            items: [none; 4],
            len: 0,
        }
    }
}

impl Specs {
    /// Add a budget; a fifth one has no place (there are four kinds) and is not kept.
    pub fn push(&mut self, s: Spec) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = s;
            self.len += 1;
        }
    }
}

impl std::ops::Deref for Specs {
    type Target = [Spec];
    fn deref(&self) -> &[Spec] {
        self.items.get(..self.len).unwrap_or_default()
    }
}

impl Spec {
    /// The cost of a request in this budget's unit.
    pub fn cost(&self, tokens: u64) -> f64 {
        match self.unit {
            Unit::Requests => 1.0,
            Unit::Tokens => tokens as f64,
        }
    }
}

/// Earliest start for a request of `cost` against a budget at `tat`.
pub fn earliest(spec: &Spec, tat: f64, cost: f64, now: f64) -> f64 {
    let w = cost / spec.rate;
    if w > spec.tau {
        tat.max(now)
    } else {
        (tat + w - spec.tau).max(now)
    }
}

/// The budget's `tat` after a request of `cost` starts at `at`.
pub fn commit(spec: &Spec, tat: f64, cost: f64, at: f64) -> f64 {
    tat.max(at) + cost / spec.rate
}

/// Give back (negative `delta`) or take more (positive) after the real cost is known.
pub fn adjust(spec: &Spec, tat: f64, delta: f64, now: f64) -> f64 {
    let moved = tat + delta / spec.rate;
    if delta < 0.0 {
        // A refund cannot create credit beyond a full bucket.
        moved.max(tat.min(now))
    } else {
        moved
    }
}

/// The `tat` of a budget with `remaining` units left at `now` (negative: owed).
pub fn tat_with(spec: &Spec, remaining: f64, now: f64) -> f64 {
    now + spec.tau - remaining / spec.rate
}

/// The server says only `remaining` units are left: never believe we have more than that.
pub fn tighten(spec: &Spec, tat: f64, remaining: f64, now: f64) -> f64 {
    tat.max(tat_with(spec, remaining, now))
}

/// Admit nothing before `until`, then resume at the budget's rate (no burst).
pub fn pause(spec: &Spec, tat: f64, until: f64) -> f64 {
    tat.max(until + spec.tau - 1.0 / spec.rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RPS10: Spec = Spec {
        name: "rpm",
        unit: Unit::Requests,
        rate: 10.0,
        tau: 1.0,
    };

    #[test]
    fn burst_then_steady_rate() {
        let mut tat = 0.0;
        let now = 100.0;
        // A full burst of 10 goes at once...
        for _ in 0..10 {
            let a = earliest(&RPS10, tat, 1.0, now);
            assert_eq!(a, now);
            tat = commit(&RPS10, tat, 1.0, a);
        }
        // ...then one every 100ms, in order.
        for k in 1..=5 {
            let a = earliest(&RPS10, tat, 1.0, now);
            assert!((a - (now + 0.1 * k as f64)).abs() < 1e-9, "{a}");
            tat = commit(&RPS10, tat, 1.0, a);
        }
    }

    #[test]
    fn large_requests_wait_for_a_full_bucket() {
        let tpm = Spec {
            name: "tpm",
            unit: Unit::Tokens,
            rate: 100.0,
            tau: 1.0,
        };
        let tat = commit(&tpm, 0.0, 50.0, 10.0); // tat = 10.5
                                                 // 500 tokens = 5 s of budget, more than the 1 s burst: waits until paid off.
        assert_eq!(earliest(&tpm, tat, 500.0, 10.0), 10.5);
    }

    #[test]
    fn refunds_tighten_and_pause() {
        let tat = commit(&RPS10, 0.0, 1.0, 100.0);
        assert!((adjust(&RPS10, tat, -1.0, 100.0) - 100.0).abs() < 1e-9);
        // No credit beyond full.
        assert_eq!(adjust(&RPS10, 50.0, -100.0, 100.0), 50.0);
        // Server: 2 left of a 1 s burst at 10/s → debt of 0.8 s.
        assert!((tighten(&RPS10, 0.0, 2.0, 100.0) - 100.8).abs() < 1e-9);
        // Pause until 105: the next request starts at 105.
        let p = pause(&RPS10, 0.0, 105.0);
        assert!((earliest(&RPS10, p, 1.0, 100.0) - 105.0).abs() < 1e-9);
    }
}
