//! Requests-per-minute and tokens-per-minute budgets, as the real service enforces them.
//!
//! Each budget is a bucket that refills continuously at `limit / 60s` and holds at most
//! `limit × burst / 60s` (the whole minute by default). A request is charged up front: one request
//! and `prompt + max_tokens × n` tokens; once generated, the unused part of the token charge is
//! given back ([`Limiter::settle`]). Time is `tokio::time::Instant`, so tests can pause it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Limits;

/// One continuously refilling budget.
#[derive(Debug, Clone)]
struct Bucket {
    limit: u64,
    capacity: f64,
    per_sec: f64,
    level: f64,
    last: Instant,
}

impl Bucket {
    fn new(limit: u64, burst: Duration, now: Instant) -> Self {
        let per_sec = limit as f64 / 60.0;
        // At least one whole unit, or a request could never pass.
        let capacity = (per_sec * burst.as_secs_f64()).max(1.0);
        Bucket {
            limit,
            capacity,
            per_sec,
            level: capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.level = (self.level + dt * self.per_sec).min(self.capacity);
        self.last = now;
    }

    fn wait_for(&self, amount: f64) -> Duration {
        if self.level >= amount {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((amount - self.level) / self.per_sec)
    }

    fn reset_in(&self) -> Duration {
        Duration::from_secs_f64(((self.capacity - self.level) / self.per_sec).max(0.0))
    }

    fn snapshot(&self) -> BucketSnapshot {
        BucketSnapshot {
            limit: self.limit,
            remaining: self.level.max(0.0).floor() as u64,
            reset: self.reset_in(),
        }
    }
}

/// What the `x-ratelimit-*` headers report for one budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketSnapshot {
    pub limit: u64,
    pub remaining: u64,
    pub reset: Duration,
}

/// Both budgets of a scope, as reported in headers. `None` for an unlimited budget.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Snapshot {
    pub requests: Option<BucketSnapshot>,
    pub tokens: Option<BucketSnapshot>,
}

/// Which budget refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Requests,
    Tokens,
}

/// The outcome of asking for admission.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Sent through; `charged` tokens were taken and must be settled later.
    Admitted { snapshot: Snapshot, charged: u64 },
    /// Over the limit now; `wait` is when the request would fit.
    Limited {
        kind: LimitKind,
        limit: u64,
        used: u64,
        requested: u64,
        wait: Duration,
        snapshot: Snapshot,
    },
    /// More tokens than the bucket can ever hold: waiting will not help.
    TooLarge {
        limit: u64,
        requested: u64,
        snapshot: Snapshot,
    },
}

#[derive(Debug)]
struct Scope {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

/// All budgets, keyed by scope (API key, or API key × model).
#[derive(Debug, Default)]
pub struct Limiter {
    scopes: Mutex<HashMap<String, Scope>>,
}

impl Limiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Charge one request and `tokens` tokens to `scope`, or say why not.
    pub fn admit(&self, scope: &str, limits: &Limits, tokens: u64) -> Decision {
        let now = Instant::now();
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        let s = scopes.entry(scope.to_string()).or_insert_with(|| Scope {
            requests: limits.rpm.map(|l| Bucket::new(l, limits.burst, now)),
            tokens: limits.tpm.map(|l| Bucket::new(l, limits.burst, now)),
        });
        if let Some(b) = s.requests.as_mut() {
            b.refill(now);
        }
        if let Some(b) = s.tokens.as_mut() {
            b.refill(now);
        }
        let snapshot = |s: &Scope| Snapshot {
            requests: s.requests.as_ref().map(Bucket::snapshot),
            tokens: s.tokens.as_ref().map(Bucket::snapshot),
        };
        if let Some(b) = s.requests.as_ref() {
            if b.level < 1.0 {
                return Decision::Limited {
                    kind: LimitKind::Requests,
                    limit: b.limit,
                    used: (b.capacity - b.level).ceil() as u64,
                    requested: 1,
                    wait: b.wait_for(1.0),
                    snapshot: snapshot(s),
                };
            }
        }
        if let Some(b) = s.tokens.as_ref() {
            let want = tokens as f64;
            if want > b.capacity {
                return Decision::TooLarge {
                    limit: b.limit,
                    requested: tokens,
                    snapshot: snapshot(s),
                };
            }
            if b.level < want {
                return Decision::Limited {
                    kind: LimitKind::Tokens,
                    limit: b.limit,
                    used: (b.capacity - b.level).ceil() as u64,
                    requested: tokens,
                    wait: b.wait_for(want),
                    snapshot: snapshot(s),
                };
            }
        }
        if let Some(b) = s.requests.as_mut() {
            b.level -= 1.0;
        }
        if let Some(b) = s.tokens.as_mut() {
            b.level -= tokens as f64;
        }
        Decision::Admitted {
            snapshot: snapshot(s),
            charged: tokens,
        }
    }

    /// Settle a charge: give back what was charged but not used, or take the extra.
    pub fn settle(&self, scope: &str, charged: u64, used: u64) {
        let now = Instant::now();
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = scopes.get_mut(scope).and_then(|s| s.tokens.as_mut()) {
            b.refill(now);
            b.level = (b.level + charged as f64 - used as f64).min(b.capacity);
        }
    }

    /// The current state of a scope without charging it.
    pub fn peek(&self, scope: &str) -> Option<Snapshot> {
        let now = Instant::now();
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        let s = scopes.get_mut(scope)?;
        if let Some(b) = s.requests.as_mut() {
            b.refill(now);
        }
        if let Some(b) = s.tokens.as_mut() {
            b.refill(now);
        }
        Some(Snapshot {
            requests: s.requests.as_ref().map(Bucket::snapshot),
            tokens: s.tokens.as_ref().map(Bucket::snapshot),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rpm: u64, tpm: u64, burst_s: u64) -> Limits {
        Limits {
            rpm: Some(rpm),
            tpm: Some(tpm),
            burst: Duration::from_secs(burst_s),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn requests_refill_continuously() {
        let l = Limiter::new();
        let lim = limits(60, 1_000_000, 60);
        for _ in 0..60 {
            assert!(matches!(l.admit("k", &lim, 1), Decision::Admitted { .. }));
        }
        match l.admit("k", &lim, 1) {
            Decision::Limited { kind, wait, .. } => {
                assert_eq!(kind, LimitKind::Requests);
                assert_eq!(wait, Duration::from_secs(1));
            }
            other => panic!("expected limited, got {other:?}"),
        }
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(matches!(l.admit("k", &lim, 1), Decision::Limited { .. }));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(matches!(l.admit("k", &lim, 1), Decision::Admitted { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_charge_and_settle() {
        let l = Limiter::new();
        let lim = limits(1000, 600, 60);
        assert!(matches!(l.admit("k", &lim, 500), Decision::Admitted { .. }));
        match l.admit("k", &lim, 200) {
            Decision::Limited {
                kind,
                used,
                requested,
                wait,
                ..
            } => {
                assert_eq!(kind, LimitKind::Tokens);
                assert_eq!(used, 500);
                assert_eq!(requested, 200);
                // 100 tokens short at 10 tokens/s.
                assert_eq!(wait, Duration::from_secs(10));
            }
            other => panic!("expected limited, got {other:?}"),
        }
        // Only 50 of the 500 were used: 450 come back.
        l.settle("k", 500, 50);
        let snap = l.peek("k").unwrap();
        assert_eq!(snap.tokens.unwrap().remaining, 550);
        assert!(matches!(l.admit("k", &lim, 200), Decision::Admitted { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn too_large_is_distinct() {
        let l = Limiter::new();
        let lim = limits(1000, 600, 60);
        assert!(matches!(l.admit("k", &lim, 601), Decision::TooLarge { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn burst_limits_capacity_and_reset_reports_full_refill() {
        let l = Limiter::new();
        // 600 rpm = 10/s, burst 1s: at most 10 at once.
        let lim = limits(600, 1_000_000, 1);
        for _ in 0..10 {
            assert!(matches!(l.admit("k", &lim, 1), Decision::Admitted { .. }));
        }
        match l.admit("k", &lim, 1) {
            Decision::Limited { snapshot, .. } => {
                let r = snapshot.requests.unwrap();
                assert_eq!(r.limit, 600);
                assert_eq!(r.remaining, 0);
                assert_eq!(r.reset, Duration::from_secs(1));
            }
            other => panic!("expected limited, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn scopes_are_independent() {
        let l = Limiter::new();
        let lim = limits(1, 1000, 60);
        assert!(matches!(l.admit("a", &lim, 1), Decision::Admitted { .. }));
        assert!(matches!(l.admit("b", &lim, 1), Decision::Admitted { .. }));
        assert!(matches!(l.admit("a", &lim, 1), Decision::Limited { .. }));
    }
}
