//! Adaptive concurrency: how many requests may be in flight to one upstream at once. Until the
//! first congestion signal the limit grows by one per success (slow start, doubling each round
//! trip); after it, by AIMD: each success adds `1/limit` (about one per round trip), a sign of
//! overload cuts the limit by a quarter, at most once per `decrease_every`.
//!
//! What counts as overload: a 429, a timeout, latency running at three times its long-run
//! average *for answers of the same length*, or 503s that are more than an isolated one. The
//! latency compared is per generated token, kept apart for answers of 0, 1–3, 4–15, 16–63,
//! 64–255 and 256+ tokens: a short answer's time is mostly time to first token, so its time per
//! token is many times a long answer's without anything having slowed down; only a change in
//! time per unit of work among comparable answers says the upstream slowed. Each length's
//! average is trusted after a warm-up of 50 samples. A 503 cuts only when 503s make up more than
//! 5% of recent outcomes (a decaying average over about the last 50): a service answering 0.4%
//! of requests with a 5xx is not congested, and cutting by a quarter for each would keep the
//! limit far below what its rate limits allow. An upstream that slows down therefore gets fewer
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
    /// Answered, in this time per generated token, its length unknown.
    Success(Duration),
    /// Answered, in this time per generated token, having generated this many tokens.
    Answered(Duration, u64),
    Overload,
    /// A 503: overload only when it is not an isolated one.
    Busy,
    /// Neither (a 400, a cancelled stream): no change.
    Neutral,
}

/// Answers are compared with answers of about the same length: 0, 1–3, 4–15, 16–63, 64–255,
/// 256+ tokens.
const LENGTHS: usize = 6;

fn length_class(tokens: u64) -> usize {
    match tokens {
        0 => 0,
        1..=3 => 1,
        4..=15 => 2,
        16..=63 => 3,
        64..=255 => 4,
        _ => 5,
    }
}

/// The share of recent outcomes that were 503s above which they are congestion.
const BUSY_SHARE: f64 = 0.05;
/// Weight of one outcome in the 503 share's decaying average (about the last 50).
const BUSY_WEIGHT: f64 = 0.02;

/// Fast and slow averages of time per token, for one answer length.
#[derive(Debug, Clone, Copy, Default)]
struct Latency {
    fast: f64,
    slow: f64,
    samples: u64,
}

impl Latency {
    /// Take a sample; whether it says the upstream slowed down.
    fn slowed(&mut self, l: f64) -> bool {
        self.samples += 1;
        if self.samples <= WARMUP {
            // Running mean until the averages are worth comparing.
            let n = self.samples as f64;
            self.slow += (l - self.slow) / n;
            self.fast = self.slow;
            return false;
        }
        self.fast = 0.9 * self.fast + 0.1 * l;
        self.slow = 0.99 * self.slow + 0.01 * l;
        self.fast > 3.0 * self.slow
    }
}

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
    last_decrease: Option<Instant>,
    latency: [Latency; LENGTHS],
    /// The decaying share of recent outcomes that were 503s.
    busy: f64,
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
                latency: [Latency::default(); LENGTHS],
                busy: 0.0,
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
            let busy = outcome == Outcome::Busy;
            s.busy = (1.0 - BUSY_WEIGHT) * s.busy + if busy { BUSY_WEIGHT } else { 0.0 };
            let mut overloaded = outcome == Outcome::Overload || (busy && s.busy > BUSY_SHARE);
            let answered = match outcome {
                Outcome::Success(lat) => Some((lat, 0)),
                Outcome::Answered(lat, tokens) => Some((lat, tokens)),
                _ => None,
            };
            if let Some((lat, tokens)) = answered {
                if s.latency[length_class(tokens)].slowed(lat.as_secs_f64()) {
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

    /// A limiter past slow start at `limit`, with a window kept full so successes grow it.
    async fn steady(limit: usize) -> Arc<Concurrency> {
        let c = Concurrency::new(ConcurrencyConfig {
            initial: limit,
            ..Default::default()
        });
        let far = Instant::now() + Duration::from_secs(60);
        c.acquire(far).await.unwrap().finish(Outcome::Overload);
        tokio::time::advance(Duration::from_secs(1)).await;
        c
    }

    #[tokio::test(start_paused = true)]
    async fn an_isolated_503_does_not_cut_but_a_run_of_them_does() {
        let c = steady(40).await;
        let far = Instant::now() + Duration::from_secs(60);
        let before = c.snapshot().0;
        // One 503 in 250 answers (the realistic tier's 0.4% of 5xx): never a cut.
        for i in 0..1_000 {
            let outcome = if i % 250 == 0 {
                Outcome::Busy
            } else {
                Outcome::Answered(Duration::from_millis(10), 100)
            };
            c.acquire(far).await.unwrap().finish(outcome);
            tokio::time::advance(Duration::from_millis(5)).await;
        }
        assert!(c.snapshot().0 >= before, "{before} -> {}", c.snapshot().0);
        // 503 after 503: a congested upstream, cut within a few.
        let before = c.snapshot().0;
        for _ in 0..4 {
            c.acquire(far).await.unwrap().finish(Outcome::Busy);
        }
        assert!(c.snapshot().0 < before, "{before} -> {}", c.snapshot().0);
    }

    #[tokio::test(start_paused = true)]
    async fn short_answers_are_not_slow_long_ones_and_a_slowdown_is_seen_at_each_length() {
        let c = steady(40).await;
        let far = Instant::now() + Duration::from_secs(60);
        // Long answers: 200 tokens in 2.4 s (400 ms to the first token, 10 ms a token).
        for _ in 0..60 {
            c.acquire(far)
                .await
                .unwrap()
                .finish(Outcome::Answered(Duration::from_millis(12), 200));
        }
        let before = c.snapshot().0;
        tokio::time::advance(Duration::from_secs(1)).await;
        // Then short ones: 2 tokens in 0.41 s — 137 ms a token, eleven times the long answers'
        // rate, and nothing slowed down.
        for _ in 0..60 {
            c.acquire(far)
                .await
                .unwrap()
                .finish(Outcome::Answered(Duration::from_millis(137), 2));
        }
        assert!(c.snapshot().0 >= before, "{before} -> {}", c.snapshot().0);
        // The long answers really slow down: ten times the time per token.
        let before = c.snapshot().0;
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..20 {
            c.acquire(far)
                .await
                .unwrap()
                .finish(Outcome::Answered(Duration::from_millis(120), 200));
        }
        assert!(c.snapshot().0 < before, "{before} -> {}", c.snapshot().0);
    }
}
