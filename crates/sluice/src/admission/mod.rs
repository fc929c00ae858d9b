//! Admission: a request is sent only when the upstream will accept it. Each attempt reserves its
//! estimated cost (one request, prompt + output tokens) against the requests-per-minute and
//! tokens-per-minute budgets of its scope (upstream key × model) before it is sent, waits its turn
//! in FIFO order if the budgets are spent, and takes a slot of the upstream's adaptive
//! concurrency limit. When the answer comes back, a use above the reservation is charged, the
//! server's `x-ratelimit-*` headers correct the local view both ways (and teach it the limits
//! when none were configured), and a 429 pauses the scope until the reset the server named.
//!
//! Waiting is bounded: more than `max_queue` requests waiting, or a wait longer than `max_wait`
//! (or past the request's deadline), is refused at once with [`ErrorKind::Overloaded`] and the
//! wait it would have taken. Nothing is dropped silently.
//!
//! Budget state lives in-process by default, or in Redis so that several processes share one
//! quota exactly (see `redis_state.rs`).

pub mod concurrency;
pub mod estimate;
pub mod gcra;
mod local;
mod pieces;
mod redis_state;
mod scope;
mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::counter;
use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::{Error, ErrorKind};
use crate::headers::RateLimits;
use concurrency::{Concurrency, ConcurrencyConfig, Outcome, Permit};
use estimate::Estimate;
pub use estimate::PromptCount;
use gcra::{Spec, Specs, Unit};
use local::LocalState;
use redis_state::SharedRateState;
pub(crate) use scope::ScopeNames;
use state::RateState;

pub use concurrency::Outcome as AttemptOutcome;

/// Why a reservation is settled, which decides whether requests asleep for their slots may
/// come forward by what it gives back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// An answer's usage: what it gives back (from an upstream that refunds) is budget the
    /// upstream really has again, so the requests asleep behind it come forward.
    Answered,
    /// The attempt was not charged (no answer, a 429): its tokens go back to the budget, but
    /// the requests asleep keep their slots — an attempt refused for want of room is no sign
    /// of room, and bringing them forward would send them into the same limit.
    NotCharged,
}

/// The outcome of asking a backend for a slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reservation {
    /// Taken: start after `wait` (which refunds given while the request sleeps may shorten:
    /// [`state::RateState::credit`]). `mark`, for a request that starts at once: the tokens of
    /// the scope's requests started so far, this one's included (0 from a backend that does not
    /// count them, or for one that must sleep first: its mark comes when it starts). The
    /// server's report of what is left is read against what was reserved and had not started
    /// by then.
    Granted { wait: Duration, mark: u64 },
    /// Not taken: it would have had to wait `wait`, longer than allowed.
    Refused { wait: Duration },
}

/// Requests and tokens allowed per minute (and optionally per day). `None`: not limited here,
/// or (with learning on) learned from the server's headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub rpd: Option<u64>,
    pub tpd: Option<u64>,
}

impl Limits {
    fn is_empty(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none() && self.rpd.is_none() && self.tpd.is_none()
    }
}

/// What to do when the shared state cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStateError {
    /// Refuse requests (`Overloaded`) until it is back: never exceed the shared quota.
    #[default]
    FailClosed,
    /// Carry on with this process's own budgets (each process may then use the whole quota).
    FallbackLocal,
}

/// Where budget state lives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StateBackend {
    #[default]
    Local,
    Redis {
        url: String,
        /// Key prefix; processes that share a quota must use the same one.
        prefix: String,
        on_error: OnStateError,
    },
}

/// Admission settings. The defaults learn the limits from the server and keep state in-process.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    pub enabled: bool,
    /// Limits for every scope (unset ones are learned).
    pub limits: Limits,
    /// Limits for particular models, overriding `limits`.
    pub model_limits: HashMap<String, Limits>,
    /// Keep separate budgets per model (OpenAI's limits are per model). Default true.
    pub per_model: bool,
    /// Learn limits from `x-ratelimit-limit-*` and correct the budgets from `-remaining-*`.
    pub learn_from_headers: bool,
    /// Burst allowed above the steady rate, as a span of refill time. Default 1 s. A face that
    /// reads it from a user checks it with [`check_burst`].
    pub burst: Duration,
    /// Most requests waiting for admission at once. Default 10,000.
    pub max_queue: usize,
    /// Longest admission wait. Default 60 s.
    pub max_wait: Duration,
    pub concurrency: ConcurrencyConfig,
    pub state: StateBackend,
    /// The upstream gives back the unused part of a request's token reservation when its answer
    /// ends (some self-hosted servers do): settle to usage at once. Default false: OpenAI and
    /// Azure OpenAI keep it, so reservations are kept whole here too — and eased only as far
    /// as the server's `x-ratelimit-remaining-tokens` shows room ([`Admission::observe`]),
    /// which also finds a refunding upstream out, one answer late.
    pub upstream_refunds: bool,
    /// How the upstream's limiter counts a prompt; default [`PromptCount::Larger`] (unknown:
    /// the larger of the tokenizer's count and characters ÷ 4). Told the rule, admission
    /// reserves exactly what the upstream takes.
    pub prompt_count: PromptCount,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            enabled: true,
            limits: Limits::default(),
            model_limits: HashMap::new(),
            per_model: true,
            learn_from_headers: true,
            burst: Duration::from_secs(1),
            max_queue: 10_000,
            max_wait: Duration::from_secs(60),
            concurrency: ConcurrencyConfig::default(),
            state: StateBackend::Local,
            upstream_refunds: false,
            prompt_count: PromptCount::Larger,
        }
    }
}

/// What admission knows about one scope.
#[derive(Debug)]
struct Scope {
    limits: Limits,
    /// The limits configured for it (the server's are taken only where they are lower).
    configured: Limits,
    /// Until the limits are known, one request at a time finds them out.
    probe: Arc<Semaphore>,
    learned: bool,
    /// After a 429: nothing from this process goes before this instant (shared state also
    /// carries the pause when the limits are known).
    paused_until: Option<Instant>,
}

/// The admission stage for one upstream.
#[derive(Debug)]
pub struct Admission {
    cfg: AdmissionConfig,
    state: Arc<dyn RateState>,
    scopes: Mutex<foldhash::HashMap<String, Scope>>,
    concurrency: Arc<Concurrency>,
    waiting: AtomicUsize,
    /// Woken when tokens are given back, so that sleeping requests can come forward.
    refunded: tokio::sync::Notify,
    /// `sluice_concurrency_limit` and `sluice_admission_wait_seconds`, set at every admission.
    limit_gauge: crate::metric_handles::Kept<metrics::Gauge>,
    wait_histogram: crate::metric_handles::Kept<metrics::Histogram>,
}

/// An admitted attempt: its reservation, its concurrency slot, and (while limits are being
/// learned) the probe slot. Lives as long as the response body.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    /// Shared with the upstream's kept names ([`ScopeNames`]): no copy per attempt.
    scope: Arc<str>,
    /// Boxed: the ticket travels with the answer up through several futures, and a pointer
    /// moves for less than the list's 170 bytes.
    specs: Box<Specs>,
    reserved_tokens: u64,
    settled: bool,
    output_tokens: Option<u64>,
    permit: Option<Permit>,
    _probe: Option<OwnedSemaphorePermit>,
    started: Instant,
    /// See [`Reservation::Granted`].
    mark: u64,
}

impl Ticket {
    /// Settle the token reservation to what was really used (`output` of it generated).
    /// A use above the reservation is charged; the unused part is given back only when the
    /// configuration says the upstream gives it back too ([`AdmissionConfig::upstream_refunds`]):
    /// OpenAI's and Azure's limiters keep whole reservations, by what they document and their
    /// users report, and a client that refunds itself against them believes in budget they do
    /// not have.
    pub fn settle(&mut self, used_tokens: u64, output: u64) {
        if self.settled {
            return;
        }
        self.settled = true;
        self.output_tokens = Some(output);
        let delta = i64::try_from(used_tokens)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(self.reserved_tokens).unwrap_or(i64::MAX));
        if delta == 0 || self.specs.is_empty() {
            return;
        }
        if delta > 0 || self.admission.cfg.upstream_refunds {
            self.admission
                .adjust(&self.scope, &self.specs, delta, Settled::Answered);
        }
    }

    /// Learn from the response to this attempt ([`Admission::observe`]).
    pub async fn observe(
        &self,
        rl: &RateLimits,
        rate_limited: Option<(ErrorKind, Option<Duration>)>,
    ) {
        self.admission.observe(self, rl, rate_limited).await;
    }

    /// Tokens this ticket reserved.
    pub fn reserved_tokens(&self) -> u64 {
        self.reserved_tokens
    }

    /// The attempt failed before the upstream took anything (no answer, a 429): give its whole
    /// reservation back.
    pub fn give_back(&mut self) {
        if self.settled {
            return;
        }
        self.settled = true;
        self.output_tokens = Some(0);
        let delta = i64::try_from(self.reserved_tokens).unwrap_or(i64::MAX);
        if delta != 0 && !self.specs.is_empty() {
            self.admission
                .adjust(&self.scope, &self.specs, -delta, Settled::NotCharged);
        }
    }

    /// Settle the reservation to a usage report's counts.
    pub fn settle_usage(&mut self, u: &crate::wire::Usage) {
        self.settle(u.tokens_used(), u.completion_tokens);
    }

    /// The attempt ended; tell the concurrency limiter how. A success's latency is divided by
    /// the tokens it generated (plus one), so a long answer is not mistaken for a slow upstream.
    pub fn finish(mut self, outcome: Outcome) {
        let outcome = match (outcome, self.output_tokens) {
            (Outcome::Success(lat), Some(out)) => {
                Outcome::Answered(lat / (1 + out.min(1_000_000) as u32), out)
            }
            (o, _) => o,
        };
        if let Some(p) = self.permit.take() {
            p.finish(outcome);
        }
    }

    /// Time since admission.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// [`Ticket::elapsed`] at `now`, a time the caller has read already.
    pub(crate) fn elapsed_at(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }
}

/// A burst as a user gives it (`--burst`, `[upstream] burst`): more than nothing and at most a
/// minute, the window the limits are stated for; the error says why, for the face to name its
/// field.
pub fn check_burst(b: Duration) -> Result<Duration, &'static str> {
    if b.is_zero() || b > Duration::from_secs(60) {
        Err("must be more than 0s and at most 60s (a minute's worth of the limit)")
    } else {
        Ok(b)
    }
}

/// How an attempt's failure reads to the concurrency limiter: rate limits and timeouts are
/// overload, a 503 may be (when it is not an isolated one); anything else says nothing about
/// capacity.
pub(crate) fn outcome_of(e: &crate::error::Error) -> Outcome {
    use crate::error::ErrorKind;
    match e.kind() {
        ErrorKind::RateLimitedRequests
        | ErrorKind::RateLimitedTokens
        | ErrorKind::TimeoutConnect
        | ErrorKind::TimeoutFirstByte
        | ErrorKind::TimeoutIdle => Outcome::Overload,
        ErrorKind::ServerError if e.status() == Some(503) => Outcome::Busy,
        _ => Outcome::Neutral,
    }
}

struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(cfg: AdmissionConfig) -> Arc<Self> {
        let state: Arc<dyn RateState> = match &cfg.state {
            StateBackend::Local => Arc::new(LocalState::default()),
            StateBackend::Redis {
                url,
                prefix,
                on_error,
            } => Arc::new(SharedRateState::new(url, prefix, *on_error)),
        };
        Arc::new(Admission {
            concurrency: Concurrency::new(cfg.concurrency),
            state,
            scopes: Mutex::new(foldhash::HashMap::default()),
            waiting: AtomicUsize::new(0),
            refunded: tokio::sync::Notify::new(),
            limit_gauge: Default::default(),
            wait_histogram: Default::default(),
            cfg,
        })
    }

    pub fn config(&self) -> &AdmissionConfig {
        &self.cfg
    }

    /// The concurrency limit now, and requests in flight.
    pub fn concurrency(&self) -> (usize, usize) {
        self.concurrency.snapshot()
    }

    /// Requests waiting for admission now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// The limits in force for a scope (configured or learned).
    pub fn limits(&self, scope: &str) -> Option<Limits> {
        let scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        scopes.get(scope).map(|s| s.limits)
    }

    fn new_scope(&self, model: &str, own: Option<Limits>) -> Scope {
        let configured = own.unwrap_or_else(|| self.configured(model));
        let probe = Arc::new(Semaphore::new(1));
        let learned = !configured.is_empty() || !self.cfg.learn_from_headers;
        if learned {
            probe.close();
        }
        Scope {
            limits: configured,
            configured,
            probe,
            learned,
            paused_until: None,
        }
    }

    fn configured(&self, model: &str) -> Limits {
        self.cfg
            .model_limits
            .get(model)
            .copied()
            .unwrap_or(self.cfg.limits)
    }

    fn specs(&self, l: &Limits) -> Specs {
        let tau = self.cfg.burst.as_secs_f64().max(0.001);
        let mut v = Specs::default();
        let mut add = |name, unit, per: Option<u64>, secs: f64, tau: f64| {
            if let Some(n) = per.filter(|n| *n > 0) {
                v.push(Spec {
                    name,
                    unit,
                    rate: n as f64 / secs,
                    tau,
                });
            }
        };
        add("rpm", Unit::Requests, l.rpm, 60.0, tau);
        add("tpm", Unit::Tokens, l.tpm, 60.0, tau);
        // Daily budgets may be spent in any pattern over the day.
        add("rpd", Unit::Requests, l.rpd, 86_400.0, 86_400.0);
        add("tpd", Unit::Tokens, l.tpd, 86_400.0, 86_400.0);
        v
    }

    /// Admit one attempt, waiting for its turn; `Err(Overloaded)` if that would take too long.
    pub async fn admit(
        self: &Arc<Self>,
        scope: &str,
        model: &str,
        est: Estimate,
        deadline: Instant,
    ) -> Result<Ticket, Error> {
        match self
            .admit_in(&Arc::from(scope), model, None, est, deadline, true)
            .await?
        {
            Some(t) => Ok(t),
            None => Err(Error::new(ErrorKind::Overloaded, "no room in admission")),
        }
    }

    /// Admit one attempt against a scope whose limits, when it is new, are `own` (an
    /// upstream's own `rpm`/`tpm`) rather than the configured ones. Not `patient`: `Ok(None)`
    /// when it would have to wait for its rate budget (a pause after a 429, a spent budget) —
    /// nothing is reserved, so the caller can try another upstream first. (The moment a new
    /// scope's first request takes to learn its limits is waited for: it is not a lack of room.)
    pub(crate) async fn admit_in(
        self: &Arc<Self>,
        name: &Arc<str>,
        model: &str,
        own: Option<Limits>,
        est: Estimate,
        deadline: Instant,
        patient: bool,
    ) -> Result<Option<Ticket>, Error> {
        let scope: &str = name;
        let started = Instant::now();
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.cfg.max_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            counter!("sluice_admission_rejected_total", "reason" => "queue_full").increment(1);
            return Err(Error::new(
                ErrorKind::Overloaded,
                format!("admission queue full ({} waiting)", self.cfg.max_queue),
            )
            .with_retry_after(Some(Duration::from_secs(1))));
        }
        let _waiting = WaitingGuard(&self.waiting);

        let (limits, probe) = {
            let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
            match scopes.get(scope) {
                Some(s) => (s.limits, s.probe.clone()),
                None => {
                    let s = self.new_scope(model, own);
                    let seen = (s.limits, s.probe.clone());
                    scopes.insert(scope.to_string(), s);
                    seen
                }
            }
        };
        // Limits unknown: one request at a time until a response teaches them. (Once they
        // are known the probe is closed, and is passed by without a timer.)
        let probe_permit = if probe.is_closed() {
            None
        } else {
            match tokio::time::timeout_at(deadline, probe.acquire_owned()).await {
                Ok(Ok(p)) => Some(p),
                Ok(Err(_closed)) => None,
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Overloaded,
                        "waiting to learn the upstream's limits took past the deadline",
                    ))
                }
            }
        };
        // Read again after the probe: its answer may have taught the limits.
        let (limits, paused_until) = {
            let scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
            scopes
                .get(scope)
                .map_or((limits, None), |s| (s.limits, s.paused_until))
        };
        if let Some(until) = paused_until.filter(|u| *u > Instant::now()) {
            if !patient {
                return Ok(None);
            }
            let wait = until - Instant::now();
            let left = deadline.saturating_duration_since(Instant::now());
            if wait > self.cfg.max_wait.min(left) {
                counter!("sluice_admission_rejected_total", "reason" => "paused").increment(1);
                return Err(Error::new(
                    ErrorKind::Overloaded,
                    format!(
                        "the upstream asked for a pause of {:.3}s",
                        wait.as_secs_f64()
                    ),
                )
                .with_retry_after(Some(wait)));
            }
            tokio::time::sleep_until(until).await;
        }
        let specs = self.specs(&limits);
        let tokens = est.charged_as(self.cfg.prompt_count);
        if let Some(tpm) = limits.tpm {
            if tokens > tpm {
                counter!("sluice_admission_rejected_total", "reason" => "too_large").increment(1);
                return Err(Error::new(
                    ErrorKind::RateLimitedTokens,
                    format!("the request needs about {tokens} tokens, more than the whole per-minute budget of {tpm}: it can never be accepted"),
                )
                .with_retryable(false));
            }
        }
        // The concurrency slot comes first: a request that had to wait for one would otherwise
        // be sent later than its rate slot, in a clump with the requests scheduled after it.
        let permit = self.concurrency.acquire(deadline).await?;
        let mut mark = 0;
        if !specs.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let max_wait = if patient {
                self.cfg.max_wait.min(left)
            } else {
                Duration::ZERO
            };
            match self.reserve(scope, &specs, tokens, max_wait).await? {
                Reservation::Refused { .. } if !patient => return Ok(None),
                Reservation::Granted { wait, mark: m } => {
                    mark = m;
                    if wait.is_zero() {
                        // Counted as started by the reservation itself.
                    } else if self.state.gives_credit() {
                        // Refunds (told) or the server's own numbers (learned) may bring it
                        // forward while it sleeps.
                        self.sleep_until_slot(scope, &specs, wait).await;
                        mark = self.state.record_start(scope, &specs, tokens);
                    } else {
                        tokio::time::sleep(wait).await;
                    }
                }
                Reservation::Refused { wait } => {
                    counter!("sluice_admission_rejected_total", "reason" => "wait_too_long")
                        .increment(1);
                    let past_deadline = wait >= left;
                    return Err(Error::new(
                        ErrorKind::Overloaded,
                        format!(
                            "admission would wait {:.3}s, longer than {}",
                            wait.as_secs_f64(),
                            if past_deadline {
                                "the request's deadline allows"
                            } else {
                                "max_wait"
                            }
                        ),
                    )
                    .with_retry_after(Some(wait)));
                }
            }
        }
        let (limit, _) = self.concurrency.snapshot();
        self.limit_gauge.with(
            || crate::metric_handles::gauge("sluice_concurrency_limit", []),
            |g| g.set(limit as f64),
        );
        // One clock read for the wait and for the ticket's start.
        let now = Instant::now();
        let waited = now.saturating_duration_since(started).as_secs_f64();
        self.wait_histogram.with(
            || crate::metric_handles::histogram("sluice_admission_wait_seconds", []),
            |h| h.record(waited),
        );
        Ok(Some(Ticket {
            admission: self.clone(),
            scope: name.clone(),
            specs: Box::new(specs),
            reserved_tokens: tokens,
            settled: false,
            output_tokens: None,
            permit: Some(permit),
            _probe: probe_permit,
            started: now,
            mark,
        }))
    }

    /// Sleep until a granted slot, `wait` from now, coming forward by the credit refunds give
    /// the scope's token budgets meanwhile — but not into a pause, and not before the request
    /// budgets allow given the requests that really started. Without this, a request that
    /// reserved while many were queued would keep its far slot although the answers before it
    /// gave most of their reservations back: against an upstream that refunds, the budget would
    /// go unused while requests sleep.
    async fn sleep_until_slot(&self, scope: &str, specs: &[Spec], wait: Duration) {
        let now = Instant::now();
        let slot = now + wait;
        let credit_at_start = self.state.credit(scope);
        loop {
            let refunded = self.refunded.notified();
            let gained =
                (self.state.credit(scope) - credit_at_start).clamp(0.0, wait.as_secs_f64());
            let paused = {
                let scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
                scopes.get(scope).and_then(|s| s.paused_until)
            };
            // Credit brings it forward, never into a pause; nothing takes it past its slot
            // (which was fitted to every budget when it was given).
            let mut at = slot
                .checked_sub(Duration::from_secs_f64(gained))
                .unwrap_or(now)
                .max(paused.unwrap_or(now))
                .min(slot);
            if at < slot && Instant::now() >= at {
                // Early on credit: the request budgets, as the starts so far fill them.
                let more = self.state.request_wait(scope, specs);
                if more > 0.0 {
                    at = (Instant::now() + Duration::from_secs_f64(more)).min(slot);
                }
            }
            if Instant::now() >= at {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = refunded => {}
            }
        }
    }

    async fn reserve(
        &self,
        scope: &str,
        specs: &[Spec],
        tokens: u64,
        max_wait: Duration,
    ) -> Result<Reservation, Error> {
        self.state.reserve(scope, specs, tokens, max_wait).await
    }

    fn adjust(&self, scope: &str, specs: &[Spec], delta: i64, how: Settled) {
        self.state.adjust(scope, specs, delta, how);
        if delta < 0 && how == Settled::Answered {
            self.refunded.notify_waiters();
        }
    }

    async fn raise(&self, scope: &str, spec: &Spec, ahead: f64) {
        self.state.raise(scope, spec, ahead).await;
    }

    /// Learn from the response to `ticket`'s attempt: limits, remaining budget, and a 429's
    /// pause.
    ///
    /// What is left of the token budget, as the server reports it, is read against what this
    /// scope reserved after the attempt (which the server had not yet seen) and believed both
    /// ways: less than the local view tightens it, as always; more — an upstream that gives
    /// unused tokens back, or counts prompts more cheaply than the estimate — eases it, so
    /// that requests asleep for their slots come forward. Easing never cancels what was
    /// reserved after the attempt and never grants more than the burst allowed here, so an
    /// upstream whose window is longer than that burst is still sent to smoothly.
    pub async fn observe(
        &self,
        ticket: &Ticket,
        rl: &RateLimits,
        rate_limited: Option<(ErrorKind, Option<Duration>)>,
    ) {
        let scope = &*ticket.scope;
        let limits = {
            let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
            let Some(s) = scopes.get_mut(scope) else {
                return;
            };
            if self.cfg.learn_from_headers {
                let configured = s.configured;
                let mut l = s.limits;
                // Configured limits are kept unless the server's are lower.
                let pick = |cfg: Option<u64>, server: Option<u64>| match (cfg, server) {
                    (Some(c), Some(sv)) => Some(c.min(sv)),
                    (c, sv) => c.or(sv),
                };
                l.rpm = pick(configured.rpm, rl.requests.limit);
                l.tpm = pick(configured.tpm, rl.tokens.limit);
                if l != s.limits {
                    tracing::info!(
                        scope,
                        rpm = l.rpm,
                        tpm = l.tpm,
                        "admission: limits learned from the server"
                    );
                    s.limits = l;
                }
                if !s.learned {
                    s.learned = true;
                    s.probe.close();
                }
            }
            s.limits
        };
        let specs = self.specs(&limits);
        if self.cfg.learn_from_headers {
            for spec in specs.iter() {
                match spec.name {
                    "rpm" => {
                        if let Some(r) = rl.requests.remaining {
                            self.state.tighten(scope, spec, r).await;
                        }
                    }
                    "tpm" => {
                        if let Some(r) = rl.tokens.remaining {
                            // A refused attempt was not taken: the server's count stops before it.
                            let mark = if rate_limited.is_some() {
                                ticket.mark.saturating_sub(ticket.reserved_tokens)
                            } else {
                                ticket.mark
                            };
                            let since = ticket.elapsed();
                            if self.state.correct(scope, &specs, r, mark, since).await {
                                self.refunded.notify_waiters();
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some((kind, wait)) = rate_limited {
            let wait = wait
                .or(match kind {
                    ErrorKind::RateLimitedTokens => rl.tokens.reset,
                    _ => rl.requests.reset,
                })
                .unwrap_or(Duration::from_secs(1));
            let jittered = wait.mul_f64(1.0 + rand::rng().random::<f64>() * 0.1);
            counter!("sluice_admission_paused_total").increment(1);
            {
                let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(s) = scopes.get_mut(scope) {
                    let until = Instant::now() + jittered;
                    s.paused_until = Some(s.paused_until.map_or(until, |u| u.max(until)));
                }
            }
            tracing::warn!(
                scope,
                wait_ms = jittered.as_millis() as u64,
                kind = kind.as_str(),
                "admission: 429 from upstream, pausing the scope"
            );
            if let Some(spec) = specs.iter().find(|s| s.name == "rpm") {
                let ahead = jittered.as_secs_f64() + spec.tau - 1.0 / spec.rate;
                self.raise(scope, spec, ahead).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(tokens: u64) -> Estimate {
        Estimate {
            prompt: tokens,
            output: 0,
            characters: 0,
        }
    }

    fn cfg(rpm: u64, tpm: u64) -> AdmissionConfig {
        AdmissionConfig {
            limits: Limits {
                rpm: Some(rpm),
                tpm: Some(tpm),
                ..Limits::default()
            },
            concurrency: ConcurrencyConfig {
                initial: 10_000,
                max: 10_000,
                adaptive: false,
                ..Default::default()
            },
            ..AdmissionConfig::default()
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test(start_paused = true)]
    async fn requests_admitted_per_window_match_the_limit() {
        // 600 rpm = 10/s. Over 60 s of continuous demand, admissions stay within 1% of 600
        // (plus the one-second burst).
        let a = Admission::new(cfg(600, 100_000_000));
        let t0 = Instant::now();
        let mut admitted = 0;
        while t0.elapsed() < Duration::from_secs(60) {
            let t = a.admit("s", "m", est(1), far()).await.unwrap();
            t.finish(Outcome::Neutral);
            admitted += 1;
        }
        let expected = 600 + 10; // a minute's rate plus the burst
        assert!(
            (admitted as i64 - expected as i64).abs() <= 6,
            "{admitted} admitted in 60 s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn token_rate_holds_and_refunds_free_capacity() {
        // 6000 tpm = 100 tokens/s; each request reserves 100 → 1/s.
        let a = Admission::new(cfg(1_000_000, 6000));
        let t0 = Instant::now();
        for _ in 0..11 {
            let t = a.admit("s", "m", est(100), far()).await.unwrap();
            t.finish(Outcome::Neutral);
        }
        // 1 s of burst (100 tokens) goes at once, then one per second.
        assert_eq!(t0.elapsed(), Duration::from_secs(10));
        // A request that used only 10 of its 100 gives nothing back while the upstream has not
        // been seen to refund: the next 100-token request still waits its whole second.
        let mut t = a.admit("s", "m", est(100), far()).await.unwrap();
        let t1 = Instant::now();
        t.settle(10, 5);
        t.finish(Outcome::Neutral);
        a.admit("s", "m", est(100), far()).await.unwrap();
        assert_eq!(t1.elapsed(), Duration::from_secs(1));
        // Using more than was reserved is always charged.
        let mut t = a.admit("s", "m", est(100), far()).await.unwrap();
        let t2 = Instant::now();
        t.settle(200, 150);
        t.finish(Outcome::Neutral);
        a.admit("s", "m", est(100), far()).await.unwrap();
        assert_eq!(t2.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn unused_tokens_come_back_only_from_an_upstream_that_refunds() {
        for refunds in [false, true] {
            let mut c = cfg(1_000_000, 6000); // 100 tokens/s, 1 s of burst
            c.upstream_refunds = refunds;
            let a = Admission::new(c);
            let mut t = a.admit("s", "m", est(100), far()).await.unwrap();
            t.settle(10, 5);
            t.finish(Outcome::Neutral);
            let t0 = Instant::now();
            a.admit("s", "m", est(100), far()).await.unwrap();
            let expect = if refunds {
                Duration::from_millis(100)
            } else {
                Duration::from_secs(1)
            };
            assert_eq!(t0.elapsed(), expect, "upstream_refunds = {refunds}");
        }
        // A failed attempt (nothing generated, nothing charged) always gives its tokens back.
        let a = Admission::new(cfg(1_000_000, 6000));
        let mut t = a.admit("s", "m", est(100), far()).await.unwrap();
        t.give_back();
        t.finish(Outcome::Neutral);
        let t0 = Instant::now();
        a.admit("s", "m", est(100), far()).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::ZERO);
    }

    /// `n` requests of 100 tokens asking at once; each holds its slot for `hold`, then `end`s
    /// its ticket. Their start times, sorted.
    async fn all_at_once(
        a: &Arc<Admission>,
        n: usize,
        hold: Duration,
        end: fn(&mut Ticket),
    ) -> Vec<Duration> {
        let t0 = Instant::now();
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let a = a.clone();
                tokio::spawn(async move {
                    let mut t = a.admit("s", "m", est(100), far()).await.unwrap();
                    let started = t0.elapsed();
                    tokio::time::sleep(hold).await;
                    end(&mut t);
                    t.finish(Outcome::Neutral);
                    started
                })
            })
            .collect();
        let mut starts = Vec::new();
        for h in handles {
            starts.push(h.await.unwrap());
        }
        starts.sort();
        starts
    }

    fn refunding(rpm: u64, tpm: u64) -> Arc<Admission> {
        let mut c = cfg(rpm, tpm);
        c.upstream_refunds = true;
        c.max_wait = Duration::from_secs(60);
        Admission::new(c)
    }

    #[tokio::test(start_paused = true)]
    async fn requests_asleep_for_their_slot_come_forward_when_tokens_are_given_back() {
        let hold = Duration::from_millis(50);
        // 100 tokens/s, 1 s of burst; ten requests of 100 tokens ask at once, so they are
        // given slots 0 s, 1 s, … 9 s. Each uses 10 of its 100 and the upstream gives the rest
        // back: the ones still asleep come forward, and all ten are done in about 1 s of
        // budget (10 × 10 tokens), not 9 s — each still after the refunds of those before it.
        let starts = all_at_once(&refunding(1_000_000, 6000), 10, hold, |t| t.settle(10, 5)).await;
        let last = starts.last().copied().unwrap_or_default();
        assert!(
            last <= Duration::from_millis(1500),
            "last start {last:?}: {starts:?}"
        );

        // Coming forward never breaks the request budget: 2 requests/s with 1 s of burst
        // (two at once, then one each 0.5 s), as the requests that really started count.
        let starts = all_at_once(&refunding(120, 6000), 10, Duration::ZERO, |t| {
            t.settle(1, 1)
        })
        .await;
        for (k, s) in starts.iter().enumerate().skip(1) {
            let s = s.as_secs_f64();
            assert!(
                s + 1e-3 >= (k as f64 - 1.0) * 0.5,
                "start {k} at {s}: {starts:?}"
            );
        }
        assert!(
            starts[9] < Duration::from_secs(6),
            "refunds still bring them forward: {starts:?}"
        );

        // An attempt that was not charged (a 429, no answer) gives its tokens back but brings
        // nobody forward: it is no sign of room.
        let starts = all_at_once(&refunding(1_000_000, 6000), 3, hold, Ticket::give_back).await;
        let secs = |v: &[u64]| {
            v.iter()
                .map(|&s| Duration::from_secs(s))
                .collect::<Vec<_>>()
        };
        assert_eq!(starts, secs(&[0, 1, 2]));

        // An upstream that keeps whole reservations: nothing comes forward.
        let a = Admission::new(cfg(1_000_000, 6000));
        let starts = all_at_once(&a, 5, Duration::ZERO, |t| t.settle(10, 5)).await;
        assert_eq!(starts, secs(&[0, 1, 2, 3, 4]));
    }

    /// Three requests of 100 tokens ask at once (slots 0 s, 1 s, 2 s at 100 tokens/s with 1 s
    /// of burst); the first one's answer says the server had `remaining` tokens left after
    /// taking it. The start times.
    async fn three_with_a_report(remaining: u64) -> Vec<Duration> {
        let a = Admission::new(cfg(1_000_000, 6000));
        let t0 = Instant::now();
        let first = a.admit("s", "m", est(100), far()).await.unwrap();
        let sleepers: Vec<_> = (0..2)
            .map(|_| {
                let a = a.clone();
                tokio::spawn(async move {
                    a.admit("s", "m", est(100), far()).await.unwrap();
                    t0.elapsed()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut rl = RateLimits::default();
        rl.requests.limit = Some(1_000_000);
        rl.tokens.limit = Some(6000);
        rl.tokens.remaining = Some(remaining);
        a.observe(&first, &rl, None).await;
        let mut starts = vec![Duration::ZERO];
        for s in sleepers {
            starts.push(s.await.unwrap());
        }
        starts.sort();
        starts
    }

    #[tokio::test(start_paused = true)]
    async fn the_servers_numbers_ease_the_budget_and_bring_sleepers_forward() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&s| Duration::from_millis(s))
                .collect::<Vec<_>>()
        };
        // The server kept the first request's 100 tokens (0 left): its numbers match the
        // local view, and the slots stand.
        assert_eq!(three_with_a_report(0).await, ms(&[0, 1000, 2000]));
        // It had 90 left after the first — it counted the prompt for less, or gave back what
        // an earlier answer did not use: the budget eases by 0.9 s, less the 50 ms of refill
        // since (not counted past the most the server was seen to hold, 90), and the sleepers
        // come forward by as much.
        assert_eq!(three_with_a_report(90).await, ms(&[0, 150, 1150]));
        // An upstream whose window is much longer than the burst allowed here (10,000 left):
        // the budget eases at most to what the two sleepers themselves reserved, so they go
        // one burst's worth apart, never at once.
        assert_eq!(three_with_a_report(10_000).await, ms(&[0, 50, 1050]));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_started_together_may_reach_the_server_in_either_order() {
        // 100 tokens/s, 1 s of burst: two requests of 50 go 10 ms apart, a third sleeps until
        // 0.5 s. The server saw the second one first (50 left after it): read as if the order
        // had held, that would look like 50 tokens of room and bring the third forward into a
        // 429. The first, started together with it, may not have reached the server yet.
        let a = Admission::new(cfg(1_000_000, 6000));
        let t0 = Instant::now();
        let _first = a.admit("s", "m", est(50), far()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = a.admit("s", "m", est(50), far()).await.unwrap();
        let a2 = a.clone();
        let third = tokio::spawn(async move {
            a2.admit("s", "m", est(50), far()).await.unwrap();
            t0.elapsed()
        });
        tokio::task::yield_now().await;
        let mut rl = RateLimits::default();
        rl.requests.limit = Some(1_000_000);
        rl.tokens.limit = Some(6000);
        rl.tokens.remaining = Some(50);
        a.observe(&second, &rl, None).await;
        assert_eq!(third.await.unwrap(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn fifo_and_bounded_wait() {
        let mut c = cfg(60, 100_000_000); // 1/s, burst 1
        c.max_wait = Duration::from_secs(5);
        let a = Admission::new(c);
        // Six requests fit within 5 s of waiting; the seventh is refused with its wait.
        let mut order = Vec::new();
        let mut handles = Vec::new();
        for i in 0..6 {
            let a = a.clone();
            handles.push(tokio::spawn(async move {
                let t = a.admit("s", "m", est(1), far()).await.unwrap();
                (i, t.started)
            }));
            tokio::task::yield_now().await;
        }
        let e = a.admit("s", "m", est(1), far()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Overloaded);
        assert!(e.retry_after().unwrap() > Duration::from_secs(5));
        for h in handles {
            order.push(h.await.unwrap());
        }
        // Admitted in the order they asked, one per second.
        for w in order.windows(2) {
            assert!(w[1].1 > w[0].1);
            assert_eq!(w[1].1 - w[0].1, Duration::from_secs(1));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn queue_length_is_bounded() {
        let mut c = cfg(60, 100_000_000);
        c.max_queue = 2;
        let a = Admission::new(c);
        let _first = a.admit("s", "m", est(1), far()).await.unwrap();
        let a1 = a.clone();
        let w1 = tokio::spawn(async move { a1.admit("s", "m", est(1), far()).await.map(|_| ()) });
        let a2 = a.clone();
        let w2 = tokio::spawn(async move { a2.admit("s", "m", est(1), far()).await.map(|_| ()) });
        tokio::task::yield_now().await;
        let e = a.admit("s", "m", est(1), far()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Overloaded);
        assert!(e.message().contains("queue full"));
        w1.await.unwrap().unwrap();
        w2.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn server_headers_correct_and_teach() {
        // Nothing configured: the first request probes alone, the headers teach the limits.
        let a = Admission::new(AdmissionConfig::default());
        let t = a.admit("s", "m", est(10), far()).await.unwrap();
        assert_eq!(a.limits("s"), Some(Limits::default()));
        // A second request waits for the probe's answer.
        let a2 = a.clone();
        let waiter =
            tokio::spawn(async move { a2.admit("s", "m", est(10), far()).await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let mut rl = RateLimits::default();
        rl.requests.limit = Some(600);
        rl.requests.remaining = Some(0);
        rl.tokens.limit = Some(60_000);
        rl.tokens.remaining = Some(59_990);
        a.observe(&t, &rl, None).await;
        drop(t);
        waiter.await.unwrap().unwrap();
        let l = a.limits("s").unwrap();
        assert_eq!((l.rpm, l.tpm), (Some(600), Some(60_000)));
        // The server said no request is left: no burst is available, so ten more requests go
        // at the learned steady rate of 10/s.
        let t0 = Instant::now();
        for _ in 0..10 {
            a.admit("s", "m", est(10), far()).await.unwrap();
        }
        assert!(
            t0.elapsed() >= Duration::from_millis(900),
            "{:?}",
            t0.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_the_scope_until_the_reset() {
        let a = Admission::new(cfg(6000, 100_000_000));
        let t = a.admit("s", "m", est(1), far()).await.unwrap();
        let rl = RateLimits::default();
        a.observe(
            &t,
            &rl,
            Some((ErrorKind::RateLimitedRequests, Some(Duration::from_secs(2)))),
        )
        .await;
        let t0 = Instant::now();
        a.admit("s", "m", est(1), far()).await.unwrap();
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(2) && waited <= Duration::from_millis(2210),
            "{waited:?}"
        );
        // Another scope is not paused.
        let t0 = Instant::now();
        a.admit("other", "m", est(1), far()).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn daily_budget_applies_on_top_of_the_minute() {
        let a = Admission::new(AdmissionConfig {
            limits: Limits {
                rpm: Some(6000),
                rpd: Some(5),
                ..Limits::default()
            },
            max_wait: Duration::from_secs(60),
            concurrency: ConcurrencyConfig {
                initial: 100,
                adaptive: false,
                ..Default::default()
            },
            ..AdmissionConfig::default()
        });
        for _ in 0..5 {
            a.admit("s", "m", est(1), far()).await.unwrap();
        }
        // The day's five are spent: the next would wait hours, far past max_wait.
        let e = a.admit("s", "m", est(1), far()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Overloaded);
        assert!(e.retry_after().unwrap() > Duration::from_secs(3600));
    }

    #[tokio::test(start_paused = true)]
    async fn impossible_requests_fail_fast() {
        let a = Admission::new(cfg(600, 1000));
        let e = a.admit("s", "m", est(5000), far()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::RateLimitedTokens);
        assert!(!e.is_retryable());
    }
}
