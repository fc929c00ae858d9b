//! Adaptive concurrency: how many requests may be in flight to one upstream at once, adjusted
//! by AIMD. Each success adds `1/limit` (about one per round trip); a sign of overload — a 429,
//! a 503, a timeout, or latency running at three times its long-run average — cuts the limit by
//! a quarter, at most once per `decrease_every`. The latency compared is per generated token
//! (see `Ticket::finish`): LLM latency varies tenfold with the answer's length, and only a
//! change in time per unit of work says the upstream slowed down. The long-run average is
//! trusted only after a warm-up of 50 samples. An upstream that slows down therefore gets fewer
//! connections instead of a pile of them, and recovers gradually.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::{Error, ErrorKind};

/// Concurrency settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConcurrencyConfig {
    /// Starting limit. Default 32.
    pub initial: usize,
    pub min: usize,
    /// Also the size the connection pool needs. Default 512.
    pub max: usize,
    /// Off: the limit stays at `initial`.
    pub adaptive: bool,
    /// Shortest time between two decreases. Default 250 ms.
    pub decrease_every: Duration,
}

impl Default for ConcurrencyConfig {
    fn default() -> Self {
        ConcurrencyConfig {
            initial: 32,
            min: 1,
            max: 512,
            adaptive: true,
            decrease_every: Duration::from_millis(250),
        }
    }
}

impl ConcurrencyConfig {
    /// At most `max` in flight, starting at half of it: a face that knows its window (the
    /// batch runner's `--concurrency`, the gateway's `max_concurrency`) starts wide, and 429s
    /// and slowdowns still narrow it.
    pub fn window(mut self, max: usize) -> Self {
        self.max = max.max(1);
        self.initial = (self.max / 2).max(1);
        self
    }
}

/// Latency samples before the long-run average is trusted.
const WARMUP: u64 = 50;

/// How an attempt ended, as far as congestion is concerned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Success(Duration),
    Overload,
    /// Neither (a 400, a cancelled stream): no change.
    Neutral,
}

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
    last_decrease: Option<Instant>,
    fast_latency: f64,
    slow_latency: f64,
    samples: u64,
    /// Until the first congestion signal the limit grows by one per success — doubling each
    /// round trip, as TCP's slow start does — instead of by one per round trip: an upstream
    /// whose answers take seconds would otherwise need minutes to reach what its rate limits
    /// allow in flight.
    slow_start: bool,
}

/// The limiter for one upstream.
#[derive(Debug)]
pub struct Concurrency {
    cfg: ConcurrencyConfig,
    state: Mutex<State>,
    notify: Notify,
}

/// One slot in flight; released (with its outcome) when dropped or finished.
#[derive(Debug)]
pub struct Permit {
    owner: Arc<Concurrency>,
    outcome: Option<Outcome>,
}

impl Permit {
    pub fn finish(mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.owner
            .release(self.outcome.take().unwrap_or(Outcome::Neutral));
    }
}

impl Concurrency {
    pub fn new(cfg: ConcurrencyConfig) -> Arc<Self> {
        let min = cfg.min.max(1);
        let max = cfg.max.max(min);
        let cfg = ConcurrencyConfig { min, max, ..cfg };
        Arc::new(Concurrency {
            state: Mutex::new(State {
                limit: cfg.initial.clamp(min, max) as f64,
                in_flight: 0,
                last_decrease: None,
                fast_latency: 0.0,
                slow_latency: 0.0,
                samples: 0,
                slow_start: true,
            }),
            cfg,
            notify: Notify::new(),
        })
    }

    /// Current limit and requests in flight.
    pub fn snapshot(&self) -> (usize, usize) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (s.limit.floor() as usize, s.in_flight)
    }

    /// Wait for a slot, until `deadline`.
    pub async fn acquire(self: &Arc<Self>, deadline: Instant) -> Result<Permit, Error> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a release between the check and the wait is not lost.
            notified.as_mut().enable();
            {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if s.in_flight < (s.limit.floor() as usize).max(1) {
                    s.in_flight += 1;
                    return Ok(Permit {
                        owner: self.clone(),
                        outcome: None,
                    });
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let (limit, in_flight) = self.snapshot();
                return Err(Error::new(
                    ErrorKind::Overloaded,
                    format!("no concurrency slot before the deadline ({in_flight} in flight, limit {limit})"),
                ));
            }
        }
    }

    fn release(&self, outcome: Outcome) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.in_flight = s.in_flight.saturating_sub(1);
        if self.cfg.adaptive {
            let now = Instant::now();
            let mut overloaded = outcome == Outcome::Overload;
            if let Outcome::Success(lat) = outcome {
                let l = lat.as_secs_f64();
                s.samples += 1;
                if s.samples <= WARMUP {
                    // Running mean until the averages are worth comparing.
                    let n = s.samples as f64;
                    s.slow_latency += (l - s.slow_latency) / n;
                    s.fast_latency = s.slow_latency;
                } else {
                    s.fast_latency = 0.9 * s.fast_latency + 0.1 * l;
                    s.slow_latency = 0.99 * s.slow_latency + 0.01 * l;
                }
                if s.samples > WARMUP && s.fast_latency > 3.0 * s.slow_latency {
                    overloaded = true;
                } else if (s.in_flight + 1) as f64 >= s.limit / 2.0 {
                    // Grown only while it is being used: a limit nobody presses against says
                    // nothing about the upstream.
                    let step = if s.slow_start { 1.0 } else { 1.0 / s.limit };
                    s.limit = (s.limit + step).min(self.cfg.max as f64);
                }
            }
            if overloaded {
                let due = s
                    .last_decrease
                    .is_none_or(|t| now.duration_since(t) >= self.cfg.decrease_every);
                s.slow_start = false;
                if due {
                    s.limit = (s.limit * 0.75).max(self.cfg.min as f64);
                    s.last_decrease = Some(now);
                    tracing::info!(limit = s.limit.floor() as u64, "concurrency limit lowered");
                }
            }
        }
        drop(s);
        self.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limits_and_queues_in_order() {
        let c = Concurrency::new(ConcurrencyConfig {
            initial: 2,
            adaptive: false,
            ..Default::default()
        });
        let far = Instant::now() + Duration::from_secs(60);
        let a = c.acquire(far).await.unwrap();
        let _b = c.acquire(far).await.unwrap();
        assert_eq!(c.snapshot(), (2, 2));
        let c2 = c.clone();
        let waiter = tokio::spawn(async move { c2.acquire(far).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a);
        let _c = waiter.await.unwrap().unwrap();
        // Past the deadline: Overloaded.
        let e = c
            .acquire(Instant::now() + Duration::from_millis(10))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Overloaded);
    }

    #[tokio::test(start_paused = true)]
    async fn aimd() {
        let c = Concurrency::new(ConcurrencyConfig {
            initial: 10,
            ..Default::default()
        });
        let far = Instant::now() + Duration::from_secs(60);
        // One at a time never presses against a limit of 10: it says nothing, nothing grows.
        for _ in 0..10 {
            c.acquire(far)
                .await
                .unwrap()
                .finish(Outcome::Success(Duration::from_millis(100)));
        }
        assert_eq!(c.snapshot().0, 10, "not grown while unused");
        // Slow start: a full window of successes adds one each (doubling per round trip).
        let full = |n: usize| {
            let c = c.clone();
            async move {
                let mut held = Vec::new();
                for _ in 0..n {
                    held.push(c.acquire(far).await.unwrap());
                }
                for p in held {
                    p.finish(Outcome::Success(Duration::from_millis(100)));
                }
            }
        };
        full(10).await;
        // +1 for each success that came back while at least half the window was in use.
        assert_eq!(c.snapshot().0, 14);
        c.acquire(far).await.unwrap().finish(Outcome::Overload);
        assert_eq!(
            c.snapshot().0,
            10,
            "the first congestion signal ends slow start"
        );
        // Then AIMD: about +1 per round trip at the limit.
        full(10).await;
        assert_eq!(c.snapshot().0, 10);
        full(10).await;
        assert_eq!(c.snapshot().0, 11);
        tokio::time::advance(Duration::from_millis(300)).await;
        c.acquire(far).await.unwrap().finish(Outcome::Overload);
        assert_eq!(c.snapshot().0, 8);
        // A second overload right away does not cut again.
        c.acquire(far).await.unwrap().finish(Outcome::Overload);
        assert_eq!(c.snapshot().0, 8);
        tokio::time::advance(Duration::from_millis(300)).await;
        c.acquire(far).await.unwrap().finish(Outcome::Overload);
        assert_eq!(c.snapshot().0, 6);
        // Latency (per token) far above its long-run average also counts as overload, once
        // the average has warmed up.
        for _ in 0..40 {
            c.acquire(far)
                .await
                .unwrap()
                .finish(Outcome::Success(Duration::from_millis(100)));
        }
        let before = c.snapshot().0;
        tokio::time::advance(Duration::from_millis(300)).await;
        for _ in 0..20 {
            c.acquire(far)
                .await
                .unwrap()
                .finish(Outcome::Success(Duration::from_secs(2)));
        }
        assert!(c.snapshot().0 < before, "{} -> {}", before, c.snapshot().0);
    }
}
