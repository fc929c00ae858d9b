//! Retries: exponential backoff with full jitter, the server's own wait when it names one,
//! a deadline that is never slept past, and a retry budget shared by the whole client so that an
//! outage or a 429 storm can never multiply the load sent upstream.
//!
//! The budget works like Finagle's and Linkerd's: every logical request deposits `ratio`
//! (0.2 by default) into a shared balance, every retry withdraws 1, and a small floor
//! (`min_per_sec`) refills it with time so a quiet client can still retry. Over any stretch,
//! retries ≤ ratio × requests + initial balance + floor × seconds.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::Poll;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::config::RetryPolicy;
use crate::error::Error;

/// The shared retry budget.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_sec: f64,
    max: f64,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    balance: f64,
    last: Instant,
}

impl RetryBudget {
    /// Starts with ten seconds' worth of the floor in the bank.
    pub fn new(policy: &RetryPolicy) -> Self {
        let max = policy.budget_max.max(0.0);
        RetryBudget {
            ratio: policy.budget_ratio.max(0.0),
            min_per_sec: policy.budget_min_per_sec.max(0.0),
            max,
            state: Mutex::new(BudgetState {
                balance: (policy.budget_min_per_sec * 10.0).clamp(0.0, max),
                last: Instant::now(),
            }),
        }
    }

    fn refill(&self, s: &mut BudgetState) {
        let now = Instant::now();
        let dt = now.saturating_duration_since(s.last).as_secs_f64();
        s.balance = (s.balance + dt * self.min_per_sec).min(self.max);
        s.last = now;
    }

    /// A logical request started: it earns the client `ratio` retries.
    pub fn deposit(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut s);
        s.balance = (s.balance + self.ratio).min(self.max);
    }

    /// Take one retry from the budget, if there is one.
    pub fn try_withdraw(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut s);
        if s.balance >= 1.0 {
            s.balance -= 1.0;
            true
        } else {
            false
        }
    }

    /// Current balance (for tests and diagnostics).
    pub fn balance(&self) -> f64 {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut s);
        s.balance
    }
}

/// Why the next attempt waits as long as it does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Wait {
    /// The server named the wait (clamped, plus up to 10% jitter so clients do not return in
    /// lockstep).
    Server(Duration),
    /// Full-jitter exponential backoff.
    Backoff(Duration),
}

impl Wait {
    pub fn duration(self) -> Duration {
        match self {
            Wait::Server(d) | Wait::Backoff(d) => d,
        }
    }
}

/// The wait before attempt `attempts + 1`, after `attempts` attempts failed with `err`.
pub fn wait_after(policy: &RetryPolicy, err: &Error, attempts: u32) -> Wait {
    if err.retry_now() {
        return Wait::Backoff(Duration::ZERO);
    }
    let mut rng = rand::rng();
    if let Some(server) = err.retry_after() {
        let clamped = server.clamp(
            policy.server_wait_min,
            policy.server_wait_max.max(policy.server_wait_min),
        );
        let jitter = clamped.mul_f64(rng.random::<f64>() * 0.1);
        return Wait::Server(clamped + jitter);
    }
    let exp = attempts.saturating_sub(1).min(30);
    let ceiling = policy
        .backoff_base
        .saturating_mul(1u32 << exp)
        .min(policy.backoff_cap);
    Wait::Backoff(ceiling.mul_f64(rng.random::<f64>()))
}

/// One request's retry loop: what it may spend (attempts, the deadline, the shared budget).
pub(crate) struct Retries<'a> {
    pub(crate) policy: &'a RetryPolicy,
    pub(crate) budget: &'a RetryBudget,
    /// Retries made by this engine so far (for progress lines and summaries).
    pub(crate) counter: &'a std::sync::atomic::AtomicU64,
    pub(crate) endpoint: &'static str,
    pub(crate) deadline: Instant,
    pub(crate) max_attempts: u32,
    /// Set while an attempt waits under a timer of its own that ends by the deadline (see
    /// [`Covered`]).
    pub(crate) covered: &'a AtomicBool,
}

/// Marks an attempt's wait as timed by itself, by the deadline at the latest, for as long as
/// it lives: the retry loop then does not arm the deadline's timer for that wait (see
/// [`by_deadline`]).
pub(crate) struct Covered<'a>(&'a AtomicBool);

impl<'a> Covered<'a> {
    pub(crate) fn enter(flag: &'a AtomicBool) -> Self {
        flag.store(true, Ordering::Relaxed);
        Covered(flag)
    }
}

impl Drop for Covered<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// `fut` within `deadline` (`None` when the deadline passed first), with the deadline's timer
/// armed only when `fut` waits on something that has no timer of its own: while `covered` is
/// set — an upstream request waiting for its headers, under a first-byte timer that ends by the
/// deadline at the latest — a second timer would fire no sooner, and making and dropping one
/// costs a timer entry on every request. Any other wait (admission, a trickling body, a store)
/// arms it at once (boxed: only such slow waits pay for it), and once armed it stays until
/// `fut` ends. `fut` is pinned where it was made: an attempt is kilobytes, not copied here.
fn by_deadline<'a, F: Future>(
    deadline: Instant,
    covered: &'a AtomicBool,
    mut fut: std::pin::Pin<&'a mut F>,
) -> impl Future<Output = Option<F::Output>> + 'a {
    let mut timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        let timer = match &mut timer {
            Some(t) => t,
            None if covered.load(Ordering::Relaxed) => return Poll::Pending,
            None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
}

impl Retries<'_> {
    /// Attempt, classify, wait (the server's wait or full jitter), within the deadline and the
    /// retry budget. Returns the value and the attempts it took.
    pub(crate) async fn run<T, F, Fut>(&self, mut attempt: F) -> Result<(T, u32), Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let endpoint = self.endpoint;
        let mut n = 0u32;
        loop {
            n += 1;
            crate::observe::attempt(endpoint);
            let mut err =
                match by_deadline(self.deadline, self.covered, std::pin::pin!(attempt())).await {
                    Some(Ok(v)) => return Ok((v, n)),
                    Some(Err(e)) => e,
                    None => Error::new(
                        crate::error::ErrorKind::TimeoutTotal,
                        "the request's total deadline passed",
                    ),
                };
            err.set_attempts(n);
            if !err.is_retryable() || n >= self.max_attempts {
                return Err(err);
            }
            let wait = wait_after(self.policy, &err, n);
            let left = self.deadline.saturating_duration_since(Instant::now());
            if wait.duration() >= left {
                // Never sleep past the deadline: fail now, with the wait the server asked for.
                tracing::warn!(
                    attempt = n,
                    kind = err.kind().as_str(),
                    wait_ms = wait.duration().as_millis() as u64,
                    left_ms = left.as_millis() as u64,
                    "not retrying: the wait would pass the deadline"
                );
                return Err(err);
            }
            if !err.is_failover() && !self.budget.try_withdraw() {
                crate::observe::retry_budget_exhausted(endpoint);
                tracing::warn!(
                    attempt = n,
                    kind = err.kind().as_str(),
                    "not retrying: retry budget exhausted"
                );
                return Err(err);
            }
            crate::observe::retry(endpoint, err.kind().as_str());
            self.counter
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                attempt = n,
                kind = err.kind().as_str(),
                wait_ms = wait.duration().as_millis() as u64,
                server_wait = matches!(wait, Wait::Server(_)),
                "retrying"
            );
            tokio::time::sleep(wait.duration()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[tokio::test(start_paused = true)]
    async fn a_wait_without_a_timer_of_its_own_ends_at_the_deadline() {
        let flag = AtomicBool::new(false);
        let start = Instant::now();
        let deadline = start + Duration::from_secs(10);
        let never = std::future::pending::<()>();
        assert_eq!(
            by_deadline(deadline, &flag, std::pin::pin!(never)).await,
            None
        );
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        // What is ready is not timed at all.
        let ready = async { 7 };
        assert_eq!(
            by_deadline(start, &flag, std::pin::pin!(ready)).await,
            Some(7)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_covered_wait_is_left_to_its_own_timer_and_the_next_one_is_not() {
        let flag = AtomicBool::new(false);
        let start = Instant::now();
        let deadline = start + Duration::from_secs(10);
        // While covered, the deadline's timer is not armed: the wait's own ends it (here,
        // on purpose, later than the deadline, which a covered wait never does).
        let covered = async {
            let _c = Covered::enter(&flag);
            tokio::time::sleep(Duration::from_secs(20)).await;
            42
        };
        assert_eq!(
            by_deadline(deadline, &flag, std::pin::pin!(covered)).await,
            Some(42)
        );
        assert_eq!(start.elapsed(), Duration::from_secs(20));
        assert!(
            !flag.load(Ordering::Relaxed),
            "the mark goes with its guard"
        );
        // A wait after the covered one arms the timer: cut at the deadline.
        let start = Instant::now();
        let deadline = start + Duration::from_secs(10);
        let then_hang = async {
            {
                let _c = Covered::enter(&flag);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            std::future::pending::<u8>().await
        };
        assert_eq!(
            by_deadline(deadline, &flag, std::pin::pin!(then_hang)).await,
            None
        );
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn budget_caps_retries_to_a_fraction_of_traffic() {
        let policy = RetryPolicy {
            budget_ratio: 0.2,
            budget_min_per_sec: 0.0,
            budget_max: 1000.0,
            ..RetryPolicy::default()
        };
        let b = RetryBudget::new(&policy);
        let mut granted = 0;
        for _ in 0..100 {
            b.deposit();
            if b.try_withdraw() {
                granted += 1;
            }
            if b.try_withdraw() {
                granted += 1;
            }
        }
        assert_eq!(granted, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn floor_refills_with_time() {
        let policy = RetryPolicy {
            budget_ratio: 0.0,
            budget_min_per_sec: 2.0,
            budget_max: 5.0,
            ..RetryPolicy::default()
        };
        let b = RetryBudget::new(&policy);
        // Starts with min(10 s × 2/s, max 5) = 5.
        for _ in 0..5 {
            assert!(b.try_withdraw());
        }
        assert!(!b.try_withdraw());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!((b.balance() - 5.0).abs() < 1e-9, "capped at max");
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_range() {
        let policy = RetryPolicy {
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        let err = Error::new(ErrorKind::ServerError, "x");
        // Attempt 3: ceiling 400ms. Samples cover [0, 400ms] and never exceed it.
        let samples: Vec<f64> = (0..2000)
            .map(|_| wait_after(&policy, &err, 3).duration().as_secs_f64())
            .collect();
        let max = samples.iter().cloned().fold(0.0, f64::max);
        let min = samples.iter().cloned().fold(1.0, f64::min);
        assert!(max <= 0.4 && max > 0.38, "{max}");
        assert!(min < 0.02, "{min}");
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        assert!((mean - 0.2).abs() < 0.02, "uniform: mean {mean}");
        // Buckets are roughly even: no clustering at the ceiling as with "equal jitter".
        let low = samples.iter().filter(|s| **s < 0.2).count();
        assert!((900..1100).contains(&low), "{low}");
        // The cap holds for late attempts.
        for _ in 0..100 {
            assert!(wait_after(&policy, &err, 30).duration() <= Duration::from_secs(1));
        }
    }

    #[test]
    fn server_wait_is_honoured_and_clamped() {
        let policy = RetryPolicy {
            server_wait_min: Duration::from_millis(100),
            server_wait_max: Duration::from_secs(10),
            ..RetryPolicy::default()
        };
        let mk =
            |d: Duration| Error::new(ErrorKind::RateLimitedTokens, "x").with_retry_after(Some(d));
        for _ in 0..100 {
            let w = wait_after(&policy, &mk(Duration::from_secs(2)), 1);
            assert!(matches!(w, Wait::Server(_)));
            let d = w.duration();
            assert!(
                d >= Duration::from_secs(2) && d <= Duration::from_millis(2200),
                "{d:?}"
            );
            let d = wait_after(&policy, &mk(Duration::from_millis(1)), 1).duration();
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(110));
            let d = wait_after(&policy, &mk(Duration::from_secs(300)), 1).duration();
            assert!(d >= Duration::from_secs(10) && d <= Duration::from_secs(11));
        }
    }
}
