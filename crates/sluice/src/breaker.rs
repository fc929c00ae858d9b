//! A circuit breaker for the upstream: when it is down, requests fail at once with the time to
//! come back (`upstream_unavailable`, `Retry-After`) instead of each one spending its retries
//! and its deadline on it, and instead of a thousand callers hammering a service that is
//! trying to recover.
//!
//! It opens when the upstream has failed `failures` attempts in a row (connection refused or
//! reset, connect or first-byte timeouts, 5xx) *and* has not answered well for `failing_for`:
//! a flaky but living upstream, which fails a third of its requests in a burst and answers the
//! rest within milliseconds, never meets both, while a dead one meets them on the first few
//! requests. 429s and 4xx are answers: the upstream is up. Open, it refuses for a cooldown
//! (±20% jitter, so replicas do not probe in step), then lets one probe request through
//! (half-open): an answer closes it, a failure opens it again for twice as long, up to
//! `max_cooldown`. Every transition is logged, counted (`sluice_breaker_transitions_total`)
//! and alerted (`circuit_breaker`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::alerts::Alerter;

/// When the breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Off: every request is sent whatever the upstream's state.
    pub enabled: bool,
    /// Failed attempts in a row before it opens (default 5)...
    pub failures: u32,
    /// ...and for at least this long without a good answer (default 1 s).
    pub failing_for: Duration,
    /// How long it stays open the first time (default 30 s), doubled after each failed probe.
    pub cooldown: Duration,
    /// The longest it stays open (default 5 min).
    pub max_cooldown: Duration,
    /// Also open when at least this fraction of the attempts of a `window` failed, once the
    /// window holds `min_requests` (default off: an upstream that fails a share of its requests
    /// but answers the rest is better used than shut out; turn it on for one that degrades).
    pub error_fraction: Option<f64>,
    pub window: Duration,
    pub min_requests: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            failures: 5,
            failing_for: Duration::from_secs(1),
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(300),
            error_fraction: None,
            window: Duration::from_secs(10),
            min_requests: 20,
        }
    }
}

impl BreakerConfig {
    /// No breaker.
    pub fn off() -> Self {
        BreakerConfig {
            enabled: false,
            ..BreakerConfig::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    /// The cooldown is over; `probing` while the one probe request is out.
    HalfOpen {
        probing: bool,
    },
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// Failed attempts in a row, and when the first of them was.
    failed: u32,
    failing_since: Option<Instant>,
    /// Times it opened since it was last closed (each doubles the cooldown).
    reopened: u32,
    /// The current window for `error_fraction`: when it began, attempts, failures.
    window_start: Instant,
    window_total: u32,
    window_failed: u32,
    /// Opened because another replica found it failing (shared health), not by its own
    /// attempts: when that fact goes away, it half-opens at once.
    adopted: bool,
    /// When it last closed: a shared "open" read just after is the fact this close is about
    /// to remove, not news.
    closed_at: Option<Instant>,
}

/// One upstream's breaker, shared by the engine's requests.
#[derive(Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    /// `upstream` label of its metric and log lines.
    name: String,
    state: Mutex<State>,
    alerts: Arc<Alerter>,
    /// Where openings and closings go for the other replicas (shared health), if anywhere.
    pub(crate) share: crate::shared_health::Share,
}

/// Leave to send one attempt. Report what came of it with [`Pass::record`]; a pass dropped
/// without a report (the request was cancelled) frees the probe slot for another request.
#[derive(Debug)]
pub struct Pass {
    breaker: Option<Arc<Breaker>>,
    probe: bool,
}

/// What one attempt says about the upstream's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// It answered (2xx, 4xx, 429): it is up.
    Answered,
    /// It could not be reached or failed (connection, connect or first-byte timeout, 5xx).
    Failed,
    /// Says nothing about the upstream (the request was refused before it was sent).
    Unknown,
}

impl Health {
    /// The health an attempt's error shows.
    pub fn of(e: &crate::Error) -> Self {
        use crate::ErrorKind as K;
        match e.kind() {
            K::Connection | K::TimeoutConnect | K::TimeoutFirstByte | K::ServerError => {
                // A 408 is the upstream timing out the request body: it is up.
                if e.status() == Some(408) {
                    Health::Answered
                } else {
                    Health::Failed
                }
            }
            _ if e.status().is_some() => Health::Answered,
            _ => Health::Unknown,
        }
    }
}

impl Breaker {
    pub fn new(cfg: BreakerConfig, name: impl Into<String>, alerts: Arc<Alerter>) -> Arc<Self> {
        Arc::new(Breaker {
            cfg,
            name: name.into(),
            state: Mutex::new(State {
                phase: Phase::Closed,
                failed: 0,
                failing_since: None,
                reopened: 0,
                window_start: Instant::now(),
                window_total: 0,
                window_failed: 0,
                adopted: false,
                closed_at: None,
            }),
            alerts,
            share: crate::shared_health::Share::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May an attempt go now? `Err(wait)`: the breaker is open (or its probe is out) for about
    /// this long more.
    pub fn admit(self: &Arc<Self>) -> Result<Pass, Duration> {
        if !self.cfg.enabled {
            return Ok(Pass {
                breaker: None,
                probe: false,
            });
        }
        let now = Instant::now();
        let mut st = self.lock();
        match st.phase {
            Phase::Closed => Ok(Pass {
                breaker: Some(self.clone()),
                probe: false,
            }),
            Phase::Open { until } if now < until => Err(until - now),
            Phase::Open { .. } | Phase::HalfOpen { probing: false } => {
                if matches!(st.phase, Phase::Open { .. }) {
                    drop(st);
                    self.transition("half_open", "the cooldown is over: one probe request goes");
                    st = self.lock();
                }
                st.phase = Phase::HalfOpen { probing: true };
                Ok(Pass {
                    breaker: Some(self.clone()),
                    probe: true,
                })
            }
            // The probe is out: the others wait for its answer, a moment at a time.
            Phase::HalfOpen { probing: true } => Err(Duration::from_secs(1).min(self.cfg.cooldown)),
        }
    }

    fn record(&self, probe: bool, health: Health) {
        let now = Instant::now();
        let mut st = self.lock();
        if health != Health::Unknown && !probe {
            if now.duration_since(st.window_start) >= self.cfg.window {
                st.window_start = now;
                st.window_total = 0;
                st.window_failed = 0;
            }
            st.window_total = st.window_total.saturating_add(1);
            if health == Health::Failed {
                st.window_failed = st.window_failed.saturating_add(1);
            }
        }
        match health {
            Health::Unknown => {
                if probe {
                    st.phase = Phase::HalfOpen { probing: false };
                }
            }
            Health::Answered => {
                st.failed = 0;
                st.failing_since = None;
                // Any answer (the probe's, or a request's sent before it opened) shows it is up.
                if st.phase != Phase::Closed {
                    st.phase = Phase::Closed;
                    st.reopened = 0;
                    st.adopted = false;
                    st.closed_at = Some(now);
                    drop(st);
                    self.share.tell(crate::shared_health::Fact::BreakerClosed {
                        upstream: self.name.clone(),
                    });
                    self.transition("closed", "the probe request was answered");
                }
            }
            Health::Failed => {
                st.failed = st.failed.saturating_add(1);
                let since = *st.failing_since.get_or_insert(now);
                let in_a_row = st.failed >= self.cfg.failures
                    && now.duration_since(since) >= self.cfg.failing_for;
                let fraction = self.cfg.error_fraction.is_some_and(|f| {
                    st.window_total >= self.cfg.min_requests.max(1)
                        && f64::from(st.window_failed) >= f * f64::from(st.window_total)
                });
                let open_now = probe || (st.phase == Phase::Closed && (in_a_row || fraction));
                if open_now {
                    let base = self
                        .cfg
                        .cooldown
                        .saturating_mul(1u32 << st.reopened.min(16))
                        .min(self.cfg.max_cooldown);
                    let jitter = 0.8 + rand::random::<f64>() * 0.4;
                    let cooldown = base.mul_f64(jitter);
                    st.phase = Phase::Open {
                        until: now + cooldown,
                    };
                    st.reopened = st.reopened.saturating_add(1);
                    st.adopted = false;
                    let window = (st.window_failed, st.window_total);
                    st.window_total = 0;
                    st.window_failed = 0;
                    st.window_start = now;
                    let why = if probe {
                        format!(
                            "the probe request failed; open for {:.1}s",
                            cooldown.as_secs_f64()
                        )
                    } else if !in_a_row {
                        format!(
                            "{} of the last {} attempts failed; open for {:.1}s",
                            window.0,
                            window.1,
                            cooldown.as_secs_f64()
                        )
                    } else {
                        format!(
                            "{} attempts in a row failed over {:.1}s; open for {:.1}s",
                            st.failed,
                            now.duration_since(since).as_secs_f64(),
                            cooldown.as_secs_f64()
                        )
                    };
                    drop(st);
                    self.share.tell(crate::shared_health::Fact::BreakerOpen {
                        upstream: self.name.clone(),
                        for_: cooldown,
                    });
                    self.transition("open", &why);
                }
            }
        }
    }

    fn transition(&self, to: &'static str, why: &str) {
        metrics::counter!("sluice_breaker_transitions_total", "upstream" => self.name.clone(), "to" => to)
            .increment(1);
        if to == "closed" {
            tracing::info!(target: "sluice::breaker", upstream = %self.name, to, "{why}");
        } else {
            tracing::warn!(target: "sluice::breaker", upstream = %self.name, to, "{why}");
        }
        self.alerts.circuit_breaker(&self.name, to, why);
    }

    /// Another replica opened it, `left` to go: open it here too, unless it is already open or
    /// its probe is out. The end gets 0–20% jitter so replicas do not all probe at once.
    pub(crate) fn adopt_open(&self, left: Duration) {
        if !self.cfg.enabled || left.is_zero() {
            return;
        }
        let mut st = self.lock();
        let just_closed = st
            .closed_at
            .is_some_and(|t| t.elapsed() < crate::shared_health::SYNC_EVERY * 4);
        if just_closed || !matches!(st.phase, Phase::Closed | Phase::HalfOpen { probing: false }) {
            return;
        }
        let left = left.mul_f64(1.0 + rand::random::<f64>() * 0.2);
        st.phase = Phase::Open {
            until: Instant::now() + left,
        };
        st.adopted = true;
        st.failed = 0;
        st.failing_since = None;
        drop(st);
        self.transition(
            "open",
            &format!(
                "another replica found it failing; open for {:.1}s",
                left.as_secs_f64()
            ),
        );
    }

    /// The shared fact that opened it is gone (answered elsewhere, or over): one probe may go.
    pub(crate) fn adopt_gone(&self) {
        let mut st = self.lock();
        if st.adopted && matches!(st.phase, Phase::Open { .. }) {
            st.phase = Phase::HalfOpen { probing: false };
            st.adopted = false;
            drop(st);
            self.transition(
                "half_open",
                "another replica closed it or its cooldown is over: one probe request goes",
            );
        }
    }

    /// What it was built with.
    pub fn config(&self) -> BreakerConfig {
        self.cfg
    }

    /// Whether it refuses requests now (open and not yet due for a probe).
    pub fn is_open(&self) -> bool {
        matches!(self.lock().phase, Phase::Open { until } if Instant::now() < until)
    }
}

impl Pass {
    /// What the attempt showed.
    pub fn record(mut self, health: Health) {
        if let Some(b) = self.breaker.take() {
            b.record(self.probe, health);
        }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if let Some(b) = self.breaker.take() {
            if self.probe {
                b.record(true, Health::Unknown);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Arc<Breaker> {
        Breaker::new(
            BreakerConfig {
                cooldown: Duration::from_secs(10),
                ..BreakerConfig::default()
            },
            "test",
            Arc::new(Alerter::new(crate::alerts::AlertRules::default())),
        )
    }

    fn fail(b: &Arc<Breaker>) {
        b.admit().unwrap().record(Health::Failed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_opening_from_another_replica_is_adopted_and_half_opens_when_gone() {
        let b = breaker();
        b.adopt_gone(); // nothing adopted: stays closed
        assert!(b.admit().is_ok());
        b.adopt_open(Duration::from_secs(10));
        let wait = b.admit().unwrap_err();
        assert!(wait >= Duration::from_secs(10) && wait <= Duration::from_secs(12));
        b.adopt_gone();
        let probe = b
            .admit()
            .expect("one probe once the shared opening is gone");
        assert!(b.admit().is_err(), "only one probe");
        probe.record(Health::Answered);
        assert!(b.admit().is_ok());
        // Read just after this close, the shared opening it is removing is not news.
        b.adopt_open(Duration::from_secs(10));
        assert!(b.admit().is_ok());
        tokio::time::advance(Duration::from_secs(2)).await;
        b.adopt_open(Duration::from_secs(10));
        assert!(b.admit().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_failures_from_a_living_upstream_does_not_open_it() {
        let b = breaker();
        // Ten failures in a row within milliseconds, then an answer: flaky, not down.
        for _ in 0..10 {
            fail(&b);
            tokio::time::advance(Duration::from_millis(5)).await;
        }
        b.admit().unwrap().record(Health::Answered);
        tokio::time::advance(Duration::from_secs(2)).await;
        for _ in 0..4 {
            fail(&b);
        }
        assert!(b.admit().is_ok(), "four failures are not five");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_upstream_opens_it_then_one_probe_decides() {
        let b = breaker();
        for _ in 0..5 {
            fail(&b);
            tokio::time::advance(Duration::from_millis(300)).await;
        }
        let wait = b.admit().unwrap_err();
        assert!(
            wait >= Duration::from_secs(7) && wait <= Duration::from_secs(12),
            "{wait:?}"
        );
        tokio::time::advance(Duration::from_secs(13)).await;
        // Half-open: one probe, the others wait for it.
        let probe = b.admit().unwrap();
        assert!(b.admit().is_err());
        probe.record(Health::Failed);
        // Open again, for about twice as long.
        let wait = b.admit().unwrap_err();
        assert!(wait >= Duration::from_secs(15), "{wait:?}");
        tokio::time::advance(Duration::from_secs(25)).await;
        let probe = b.admit().unwrap();
        probe.record(Health::Answered);
        assert!(b.admit().is_ok() && b.admit().is_ok(), "closed again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_dropped_without_an_answer_frees_the_slot() {
        let b = breaker();
        for _ in 0..5 {
            fail(&b);
            tokio::time::advance(Duration::from_millis(300)).await;
        }
        tokio::time::advance(Duration::from_secs(13)).await;
        drop(b.admit().unwrap());
        assert!(b.admit().is_ok(), "the next request may probe");
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_fraction_opens_it_when_asked_to() {
        let make = |fraction| {
            Breaker::new(
                BreakerConfig {
                    error_fraction: fraction,
                    min_requests: 10,
                    ..BreakerConfig::default()
                },
                "test",
                Arc::new(Alerter::new(crate::alerts::AlertRules::default())),
            )
        };
        // Two failures for every answer, never five in a row: 67% failing.
        let run = |b: &Arc<Breaker>| {
            for h in [Health::Failed, Health::Failed, Health::Answered].repeat(6) {
                if let Ok(pass) = b.admit() {
                    pass.record(h);
                }
            }
        };
        let off = make(None);
        run(&off);
        assert!(off.admit().is_ok(), "off by default");
        let on = make(Some(0.5));
        run(&on);
        assert!(
            on.admit().is_err(),
            "two thirds failing over 18 attempts opens it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn off_sends_everything() {
        let b = Breaker::new(
            BreakerConfig::off(),
            "test",
            Arc::new(Alerter::new(crate::alerts::AlertRules::default())),
        );
        for _ in 0..20 {
            fail(&b);
            tokio::time::advance(Duration::from_millis(300)).await;
        }
        assert!(b.admit().is_ok());
    }
}
