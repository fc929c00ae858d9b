//! Alerts: the conditions an on-call engineer wants to hear about before the incident —
//! upstream headroom running out, a budget crossing a threshold, a deprecated model in use, a
//! key quarantined, an error kind or `finish_reason` becoming frequent, p99 latency past a
//! bound, a single request using more tokens than expected.
//!
//! Every alert is a structured log event (target `sluice::alert`) and a metric
//! (`sluice_alerts_total{rule}`), and optionally a webhook POST of JSON. The same alert (rule
//! and subject) fires at most once per de-duplication period, and all alerts together at most
//! `max_per_minute`, so a storm of 429s sends one alert, not thousands. Rates are judged per
//! window (default one minute) when the window closes, from counts kept here — no background
//! task, nothing when idle.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use metrics::counter;
use tokio::time::Instant;

pub const ALERTS: &str = "sluice_alerts_total";
pub const ALERTS_SUPPRESSED: &str = "sluice_alerts_suppressed_total";

/// Thresholds; each `None` turns its rule off.
#[derive(Debug, Clone)]
pub struct AlertRules {
    /// Remaining upstream requests or tokens below this fraction of the limit (default 0.2).
    pub remaining_below: Option<f64>,
    /// Budget fractions that alert when crossed (default 0.8).
    pub budget_thresholds: Vec<f64>,
    /// A deprecated or retired model was requested (default on).
    pub deprecated_model: bool,
    /// An upstream key was quarantined (default on).
    pub key_quarantined: bool,
    /// Errors (any kind) above this fraction of a window's requests.
    pub error_rate_above: Option<f64>,
    /// Per error kind (`timeout_first_byte` = 0.05).
    pub error_kind_above: HashMap<String, f64>,
    /// p99 latency of a window above this.
    pub p99_above: Option<Duration>,
    /// One request's completion tokens above this (default 1,000).
    pub completion_tokens_above: Option<u64>,
    /// Per finish reason (`length`, `content_filter`): fraction of a window's choices.
    pub finish_reason_above: HashMap<String, f64>,
    /// How long rates are counted before they are judged.
    pub window: Duration,
    /// Rates are not judged on fewer requests than this in a window.
    pub min_requests: u64,
    /// The same alert (rule and subject) at most once per this period.
    pub dedup: Duration,
    /// All alerts together, at most this many per minute.
    pub max_per_minute: u32,
    /// POST each alert as JSON here.
    pub webhook: Option<String>,
}

impl Default for AlertRules {
    fn default() -> Self {
        let mut finish = HashMap::new();
        finish.insert("length".to_string(), 0.1);
        finish.insert("content_filter".to_string(), 0.01);
        AlertRules {
            remaining_below: Some(0.2),
            budget_thresholds: vec![0.8],
            deprecated_model: true,
            key_quarantined: true,
            error_rate_above: Some(0.1),
            error_kind_above: HashMap::new(),
            p99_above: None,
            completion_tokens_above: Some(1000),
            finish_reason_above: finish,
            window: Duration::from_secs(60),
            min_requests: 20,
            dedup: Duration::from_secs(600),
            max_per_minute: 10,
            webhook: None,
        }
    }
}

/// One alert.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Alert {
    /// `upstream_remaining_low`, `budget_threshold`, `deprecated_model`, `key_quarantined`,
    /// `error_rate`, `p99_latency`, `large_request`, `finish_reason_rate`,
    /// `config_reload_refused`, `circuit_breaker`.
    pub rule: &'static str,
    /// What it is about (a key label, a model, a budget): with `rule`, the de-duplication key.
    pub subject: String,
    pub message: String,
    pub value: f64,
    pub threshold: f64,
}

#[derive(Debug, Default)]
struct WindowCounts {
    requests: u64,
    /// By error kind (static names: a fast hash is safe).
    errors: rustc_hash::FxHashMap<&'static str, u64>,
    choices: u64,
    /// By finish reason, as the upstream wrote it.
    finish: foldhash::HashMap<String, u64>,
    /// Latencies in milliseconds (a window's worth; capped to bound memory).
    latencies: Vec<u32>,
}

#[derive(Debug)]
struct State {
    started: Instant,
    counts: WindowCounts,
    last_fired: foldhash::HashMap<(&'static str, String), Instant>,
    minute_start: Instant,
    minute_sent: u32,
    /// The most an upstream has said is left, per key and kind: the capacity it really grants
    /// at once (see [`Alerter::remaining`]).
    /// The largest remaining seen per key label: requests, tokens.
    /// By key label (from configuration, never a caller's text: a fast hash is safe).
    peaks: rustc_hash::FxHashMap<String, [u64; 2]>,
}

/// The alerting stage, shared by an engine's requests.
#[derive(Debug)]
pub struct Alerter {
    rules: AlertRules,
    state: Mutex<State>,
    http: Option<reqwest::Client>,
}

const MAX_LATENCY_SAMPLES: usize = 100_000;

impl Alerter {
    pub fn new(rules: AlertRules) -> Self {
        let http = rules.webhook.as_ref().and_then(|_| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .ok()
        });
        let now = Instant::now();
        Alerter {
            rules,
            state: Mutex::new(State {
                started: now,
                counts: WindowCounts::default(),
                last_fired: foldhash::HashMap::default(),
                minute_start: now,
                minute_sent: 0,
                peaks: rustc_hash::FxHashMap::default(),
            }),
            http,
        }
    }

    pub fn rules(&self) -> &AlertRules {
        &self.rules
    }

    /// Send an alert unless the same one fired within the de-duplication period or the rate
    /// limit is spent. Returns whether it went out.
    pub fn fire(&self, alert: Alert) -> bool {
        let now = Instant::now();
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let key = (alert.rule, alert.subject.clone());
            if let Some(t) = st.last_fired.get(&key) {
                if now.duration_since(*t) < self.rules.dedup {
                    counter!(ALERTS_SUPPRESSED, "rule" => alert.rule, "reason" => "dedup")
                        .increment(1);
                    return false;
                }
            }
            if now.duration_since(st.minute_start) >= Duration::from_secs(60) {
                st.minute_start = now;
                st.minute_sent = 0;
            }
            if st.minute_sent >= self.rules.max_per_minute {
                counter!(ALERTS_SUPPRESSED, "rule" => alert.rule, "reason" => "rate_limit")
                    .increment(1);
                return false;
            }
            st.minute_sent += 1;
            st.last_fired.insert(key, now);
            if st.last_fired.len() > 10_000 {
                let dedup = self.rules.dedup;
                st.last_fired.retain(|_, t| now.duration_since(*t) < dedup);
            }
        }
        counter!(ALERTS, "rule" => alert.rule).increment(1);
        tracing::warn!(
            target: "sluice::alert",
            rule = alert.rule,
            subject = %alert.subject,
            value = alert.value,
            threshold = alert.threshold,
            "{}", alert.message
        );
        if let (Some(url), Some(http)) = (&self.rules.webhook, &self.http) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let req = http.post(url).json(&serde_json::json!({
                    "source": "sluice", "rule": alert.rule, "subject": alert.subject,
                    "message": alert.message, "value": alert.value, "threshold": alert.threshold,
                }));
                rt.spawn(async move {
                    match req.send().await {
                        Ok(r) if r.status().is_success() => {}
                        Ok(r) => tracing::error!(
                            status = r.status().as_u16(),
                            "alert webhook refused the alert"
                        ),
                        Err(e) => tracing::error!(error = %e, "alert webhook unreachable"),
                    }
                });
            }
        }
        true
    }

    /// The upstream's remaining requests or tokens, after an answer.
    pub fn remaining(&self, key_label: &str, rl: &crate::headers::RateLimits) {
        let Some(below) = self.rules.remaining_below else {
            return;
        };
        // Each kind's remaining and limit (a limit of 0 says nothing).
        let read = [&rl.requests, &rl.tokens].map(|b| match (b.remaining, b.limit) {
            (Some(rem), Some(lim)) if lim > 0 => Some((rem, lim)),
            _ => None,
        });
        if read == [None, None] {
            return;
        }
        // Headroom against what the upstream grants at once, not its per-minute figure: an
        // upstream that enforces a short window (Azure's 1–10 s, the simulator's realistic
        // tier) never reports more than that window's share left, so against the limit it
        // would look nearly drained on every request. The largest remaining seen so far is
        // that capacity (the limit for OpenAI, which counts the whole minute); the first
        // reading is the capacity itself. Both kinds under one lock and one lookup.
        let capacity = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            // Looked up by reference: a label is only copied the first time it is seen.
            let peaks = match st.peaks.get_mut(key_label) {
                Some(p) => p,
                None => st.peaks.entry(key_label.to_string()).or_insert([0; 2]),
            };
            let mut capacity = [1; 2];
            for ((p, c), r) in peaks.iter_mut().zip(&mut capacity).zip(&read) {
                if let Some((rem, lim)) = *r {
                    *p = (*p).max(rem).min(lim);
                    *c = (*p).max(1);
                }
            }
            capacity
        };
        for ((what, r), capacity) in ["requests", "tokens"].into_iter().zip(read).zip(capacity) {
            let Some((rem, lim)) = r else {
                continue;
            };
            let f = rem as f64 / capacity as f64;
            if f < below {
                let of = if capacity < lim {
                    format!("{capacity} it grants at once ({lim} a minute)")
                } else {
                    lim.to_string()
                };
                self.fire(Alert {
                    rule: "upstream_remaining_low",
                    subject: format!("{key_label}:{what}"),
                    message: format!(
                        "upstream {what} for {key_label}: {rem} of {of} left ({:.0}%), under {:.0}%",
                        f * 100.0,
                        below * 100.0
                    ),
                    value: f,
                    threshold: below,
                });
            }
        }
    }

    /// A budget's spend moved from `before` to `after` of `limit`.
    pub fn budget(&self, budget: &str, before: u64, after: u64, limit: u64) {
        if limit == 0 {
            return;
        }
        for t in &self.rules.budget_thresholds {
            let mark = (*t * limit as f64) as u64;
            if before < mark && after >= mark {
                self.fire(Alert {
                    rule: "budget_threshold",
                    subject: format!("{budget}:{:.0}%", t * 100.0),
                    message: format!(
                        "budget {budget}: {} of {} spent, past {:.0}%",
                        crate::pricing::dollars(after),
                        crate::pricing::dollars(limit),
                        t * 100.0
                    ),
                    value: after as f64 / limit as f64,
                    threshold: *t,
                });
            }
        }
    }

    pub fn deprecated_model(&self, model: &str, detail: &str) {
        if self.rules.deprecated_model {
            self.fire(Alert {
                rule: "deprecated_model",
                subject: model.to_string(),
                message: format!("deprecated model in use: {detail}"),
                value: 1.0,
                threshold: 0.0,
            });
        }
    }

    pub fn key_quarantined(&self, key_label: &str, why: &str) {
        if self.rules.key_quarantined {
            self.fire(Alert {
                rule: "key_quarantined",
                subject: key_label.to_string(),
                message: format!("upstream key {key_label} quarantined: {why}"),
                value: 1.0,
                threshold: 0.0,
            });
        }
    }

    /// An upstream's circuit breaker moved (`open`, `half_open`, `closed`).
    pub fn circuit_breaker(&self, upstream: &str, to: &str, why: &str) {
        self.fire(Alert {
            rule: "circuit_breaker",
            subject: format!("{upstream}:{to}"),
            message: format!("upstream {upstream}: circuit breaker {to}: {why}"),
            value: f64::from(u8::from(to == "open")),
            threshold: 0.0,
        });
    }

    /// A configuration reload was refused (the running configuration stays).
    pub fn reload_refused(&self, why: &str) {
        self.fire(Alert {
            rule: "config_reload_refused",
            subject: String::new(),
            message: format!("configuration reload refused, the running one stays: {why}"),
            value: 1.0,
            threshold: 0.0,
        });
    }

    /// One request's completion tokens.
    pub fn completion_tokens(&self, model: &str, tokens: u64) {
        if let Some(max) = self.rules.completion_tokens_above {
            if tokens > max {
                self.fire(Alert {
                    rule: "large_request",
                    subject: model.to_string(),
                    message: format!(
                        "a {model} request used {tokens} completion tokens (bound {max})"
                    ),
                    value: tokens as f64,
                    threshold: max as f64,
                });
            }
        }
    }

    /// The end of a logical request: its outcome (error kind or ok), latency and finish
    /// reasons. Judges the window when it has closed.
    pub fn request<S: AsRef<str>>(
        &self,
        error: Option<&'static str>,
        latency: Duration,
        finish: &[S],
    ) {
        let now = Instant::now();
        let closed = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let c = &mut st.counts;
            c.requests += 1;
            if let Some(k) = error {
                *c.errors.entry(k).or_default() += 1;
            }
            for f in finish {
                let f = f.as_ref();
                c.choices += 1;
                // A reason seen before (nearly every one) is counted without a new string.
                match c.finish.get_mut(f) {
                    Some(n) => *n += 1,
                    None => {
                        c.finish.insert(f.to_string(), 1);
                    }
                }
            }
            if c.latencies.len() < MAX_LATENCY_SAMPLES {
                c.latencies
                    .push(latency.as_millis().min(u128::from(u32::MAX)) as u32);
            }
            if now.duration_since(st.started) >= self.rules.window {
                st.started = now;
                Some(std::mem::take(&mut st.counts))
            } else {
                None
            }
        };
        if let Some(c) = closed {
            self.judge(c);
        }
    }

    fn judge(&self, mut c: WindowCounts) {
        if c.requests < self.rules.min_requests {
            return;
        }
        let n = c.requests as f64;
        let errors: u64 = c.errors.values().sum();
        if let Some(t) = self.rules.error_rate_above {
            let r = errors as f64 / n;
            if r > t {
                self.fire(Alert {
                    rule: "error_rate",
                    subject: "all".into(),
                    message: format!(
                        "{errors} of {} requests failed in the last window ({:.1}%)",
                        c.requests,
                        r * 100.0
                    ),
                    value: r,
                    threshold: t,
                });
            }
        }
        for (kind, t) in &self.rules.error_kind_above {
            let k = c.errors.get(kind.as_str()).copied().unwrap_or(0);
            let r = k as f64 / n;
            if r > *t {
                self.fire(Alert {
                    rule: "error_rate",
                    subject: kind.clone(),
                    message: format!(
                        "{k} of {} requests failed with {kind} in the last window ({:.1}%)",
                        c.requests,
                        r * 100.0
                    ),
                    value: r,
                    threshold: *t,
                });
            }
        }
        if let Some(bound) = self.rules.p99_above {
            c.latencies.sort_unstable();
            let i = ((c.latencies.len() as f64) * 0.99).ceil() as usize;
            if let Some(p99) = c.latencies.get(i.saturating_sub(1)) {
                let p = Duration::from_millis(u64::from(*p99));
                if p > bound {
                    self.fire(Alert {
                        rule: "p99_latency",
                        subject: "all".into(),
                        message: format!("p99 latency {p:?} over the last window, bound {bound:?}"),
                        value: p.as_secs_f64(),
                        threshold: bound.as_secs_f64(),
                    });
                }
            }
        }
        if c.choices > 0 {
            for (reason, t) in &self.rules.finish_reason_above {
                let k = c.finish.get(reason).copied().unwrap_or(0);
                let r = k as f64 / c.choices as f64;
                if r > *t {
                    self.fire(Alert {
                        rule: "finish_reason_rate",
                        subject: reason.clone(),
                        message: format!("{k} of {} choices ended with finish_reason {reason} in the last window ({:.1}%)", c.choices, r * 100.0),
                        value: r,
                        threshold: *t,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> AlertRules {
        AlertRules {
            window: Duration::from_secs(10),
            min_requests: 5,
            max_per_minute: 3,
            ..AlertRules::default()
        }
    }

    fn alert(subject: &str) -> Alert {
        Alert {
            rule: "key_quarantined",
            subject: subject.into(),
            message: "m".into(),
            value: 1.0,
            threshold: 0.0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_headroom_is_read_against_the_most_ever_left() {
        let a = Alerter::new(AlertRules {
            remaining_below: Some(0.2),
            ..rules()
        });
        let rl = |req: (u64, u64), tok: (u64, u64)| {
            let mut r = crate::headers::RateLimits::default();
            (r.requests.remaining, r.requests.limit) = (Some(req.0), Some(req.1));
            (r.tokens.remaining, r.tokens.limit) = (Some(tok.0), Some(tok.1));
            r
        };
        let fired = |subject: &str| {
            let st = a.state.lock().unwrap();
            st.last_fired
                .contains_key(&("upstream_remaining_low", subject.to_string()))
        };
        // The first reading is the capacity: a tenth of the per-minute limit is not "low".
        a.remaining("key-1", &rl((90, 100), (100, 1000)));
        assert!(!fired("key-1:requests") && !fired("key-1:tokens"));
        // A tenth of the most ever left is; the requests (90 of 90) are not.
        a.remaining("key-1", &rl((90, 100), (10, 1000)));
        assert!(fired("key-1:tokens"));
        assert!(!fired("key-1:requests"));
        // A limit of 0 says nothing; another key has its own peaks.
        a.remaining("key-2", &rl((0, 0), (500, 1000)));
        a.remaining("key-2", &rl((0, 0), (150, 1000)));
        assert!(!fired("key-2:requests") && !fired("key-2:tokens"));
        a.remaining("key-2", &rl((0, 0), (90, 1000)));
        assert!(fired("key-2:tokens") && !fired("key-2:requests"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_alert_fires_once_per_dedup_period_and_storms_are_capped() {
        let a = Alerter::new(rules());
        assert!(a.fire(alert("key-1")));
        for _ in 0..100 {
            assert!(
                !a.fire(alert("key-1")),
                "a storm of the same alert sends one"
            );
        }
        assert!(a.fire(alert("key-2")));
        assert!(a.fire(alert("key-3")));
        assert!(!a.fire(alert("key-4")), "three a minute at most");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(a.fire(alert("key-4")));
        assert!(
            !a.fire(alert("key-1")),
            "still within the 10-minute dedup period"
        );
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(a.fire(alert("key-1")));
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_is_judged_against_what_the_upstream_grants_at_once() {
        let a = Alerter::new(rules());
        let reading = |rem: u64| crate::headers::RateLimits {
            requests: crate::headers::Budget {
                limit: Some(5000),
                remaining: Some(rem),
                reset: None,
            },
            ..Default::default()
        };
        let fired = |a: &Alerter| {
            a.state
                .lock()
                .unwrap()
                .last_fired
                .keys()
                .any(|(r, _)| *r == "upstream_remaining_low")
        };
        // A 10 s window of a 5,000-a-minute limit: 832 left is a full window, not 17% left.
        a.remaining("key-1", &reading(832));
        a.remaining("key-1", &reading(700));
        assert!(!fired(&a), "a full short window is not low headroom");
        // Under 20% of that window: low.
        a.remaining("key-1", &reading(120));
        assert!(fired(&a));
        // An upstream that counts the whole minute (OpenAI): the limit is the capacity.
        let b = Alerter::new(rules());
        b.remaining("key-1", &reading(5000));
        b.remaining("key-1", &reading(900));
        assert!(fired(&b), "900 of 5,000 is under 20%");
    }

    #[tokio::test(start_paused = true)]
    async fn rates_are_judged_when_the_window_closes() {
        let a = Alerter::new(AlertRules {
            p99_above: Some(Duration::from_secs(2)),
            ..rules()
        });
        let before = a.state.lock().unwrap().last_fired.len();
        for i in 0..10 {
            let err = (i % 3 == 0).then_some("timeout_first_byte");
            let finish: &[&str] = if i % 2 == 0 { &["length"] } else { &["stop"] };
            a.request(
                err,
                Duration::from_millis(if i == 9 { 5000 } else { 100 }),
                finish,
            );
        }
        assert_eq!(
            a.state.lock().unwrap().last_fired.len(),
            before,
            "window still open"
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        a.request(None, Duration::from_millis(100), &["stop"]);
        let fired: Vec<&'static str> = a
            .state
            .lock()
            .unwrap()
            .last_fired
            .keys()
            .map(|k| k.0)
            .collect();
        assert!(fired.contains(&"error_rate"), "{fired:?}");
        assert!(fired.contains(&"p99_latency"), "{fired:?}");
        assert!(fired.contains(&"finish_reason_rate"), "{fired:?}");
    }

    #[test]
    fn thresholds_fire_on_crossing_only() {
        let a = Alerter::new(rules());
        a.budget("key:a|day", 70, 79, 100);
        a.budget("key:a|day", 79, 85, 100);
        a.budget("key:a|day", 85, 90, 100);
        let st = a.state.lock().unwrap();
        assert_eq!(st.last_fired.len(), 1);
        assert!(st
            .last_fired
            .contains_key(&("budget_threshold", "key:a|day:80%".to_string())));
    }
}
