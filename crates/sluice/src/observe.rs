//! Metrics and logs for every request. Names are documented in the README; labels are low
//! cardinality (endpoint, model, error kind, finish reason), never a key or a request id.
//! sluice records through the `metrics` facade: install any recorder (Prometheus exporter, …)
//! to collect them.
//!
//! The `model` label takes only models sluice knows — the registry's ids, snapshots and
//! aliases, the models configuration names, and those the upstream lists — and `other` for
//! anything else: a caller inventing model names must not be able to grow `/metrics` without
//! bound.

use std::cell::{OnceCell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use rustc_hash::{FxHashMap, FxHashSet};

use metrics::{counter, describe_counter, describe_histogram, Unit};

use crate::metric_handles as handles;

use crate::wire::Usage;

pub const REQUESTS: &str = "sluice_requests_total";
pub const ATTEMPTS: &str = "sluice_attempts_total";
pub const RETRIES: &str = "sluice_retries_total";
pub const RETRY_BUDGET_EXHAUSTED: &str = "sluice_retry_budget_exhausted_total";
pub const REQUEST_DURATION: &str = "sluice_request_duration_seconds";
pub const TIME_TO_FIRST_TOKEN: &str = "sluice_time_to_first_token_seconds";
pub const TOKENS: &str = "sluice_tokens_total";
pub const FINISH_REASONS: &str = "sluice_finish_reasons_total";
pub const DEFAULT_MAX_TOKENS: &str = "sluice_default_max_tokens_applied_total";
pub const MODEL_LIFECYCLE: &str = "sluice_model_lifecycle_requests_total";
pub const MODEL_SUBSTITUTIONS: &str = "sluice_model_substitutions_total";
pub const MODEL_FALLBACKS: &str = "sluice_model_fallbacks_total";
pub const COST: &str = "sluice_cost_nanodollars_total";
pub const BUDGET_REFUSALS: &str = "sluice_budget_refusals_total";
pub const UPSTREAM_ATTEMPTS: &str = "sluice_upstream_attempts_total";

/// The model names the `model` label may take, interned: a label value is then a `&'static
/// str`, which the metrics keys hold without allocating (every request records several).
fn known() -> &'static RwLock<FxHashSet<&'static str>> {
    // Filled from configuration and the registry only; callers' texts are looked up, never
    // added, so a fast hash is safe.
    static KNOWN: OnceLock<RwLock<FxHashSet<&'static str>>> = OnceLock::new();
    KNOWN.get_or_init(|| RwLock::new(FxHashSet::default()))
}

/// The most names the label set grows to (the registry has ~200; an upstream list a few
/// hundred more). Past it, new names are `other`.
const MAX_KNOWN: usize = 4096;

/// Let these model names be `model` label values.
pub fn know_models<I, S>(names: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut k = known().write().unwrap_or_else(|p| p.into_inner());
    for n in names {
        if k.len() >= MAX_KNOWN {
            break;
        }
        let n = n.as_ref();
        if !n.is_empty() && !k.contains(n) {
            // Bounded by MAX_KNOWN: at most that many names are ever leaked.
            k.insert(Box::leak(n.to_string().into_boxed_str()));
        }
    }
}

/// The `model` label for `model`: itself when known, else `other` (empty stays empty).
pub fn model_label(model: &str) -> &'static str {
    if model.is_empty() {
        return "";
    }
    let k = known().read().unwrap_or_else(|p| p.into_inner());
    k.get(model).copied().unwrap_or("other")
}

/// The `upstream` label for an upstream's configured name, interned once when the engine is
/// built (names come from configuration, so the set is small; past 256 distinct names, across
/// reloads, new ones are `other`).
pub(crate) fn upstream_label(name: &str) -> &'static str {
    static NAMES: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let names = NAMES.get_or_init(|| RwLock::new(HashSet::new()));
    if let Some(n) = names.read().unwrap_or_else(|p| p.into_inner()).get(name) {
        return n;
    }
    let mut w = names.write().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = w.get(name) {
        return n;
    }
    if w.len() >= 256 {
        return "other";
    }
    // Bounded above: at most 256 names are ever leaked.
    let n: &'static str = Box::leak(name.to_string().into_boxed_str());
    w.insert(n);
    n
}

/// What an attempt sent to (or refused before) an upstream came to: the `result` label of
/// `sluice_upstream_attempts_total`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AttemptResult {
    /// 2xx.
    Answered,
    /// 429.
    RateLimited,
    /// Connection, timeout, 5xx: what its breaker counts.
    Failed,
    /// Another 4xx.
    Refused,
    /// Stopped before it left: admission, a key, the upload.
    NotSent,
}

impl AttemptResult {
    fn label(self) -> &'static str {
        match self {
            AttemptResult::Answered => "answered",
            AttemptResult::RateLimited => "rate_limited",
            AttemptResult::Failed => "failed",
            AttemptResult::Refused => "refused",
            AttemptResult::NotSent => "not_sent",
        }
    }
}

/// An upstream's attempts by result, kept with the upstream.
#[derive(Debug, Default)]
pub(crate) struct UpstreamAttempts([handles::Kept<metrics::Counter>; 5]);

impl UpstreamAttempts {
    /// One attempt of `upstream` (its label) that came to `result`.
    pub(crate) fn count(&self, upstream: &'static str, result: AttemptResult) {
        let Some(kept) = self.0.get(result as usize) else {
            return;
        };
        let labels = [("upstream", upstream), ("result", result.label())];
        kept.with(
            || handles::counter(UPSTREAM_ATTEMPTS, labels),
            |c| c.increment(1),
        );
    }
}

/// Register descriptions with whatever recorder is installed (harmless to call repeatedly).
pub fn describe() {
    describe_counter!(
        UPSTREAM_ATTEMPTS,
        "Attempts per upstream by result: answered, rate_limited, failed, refused, not_sent."
    );
    describe_counter!(
        "sluice_upstream_skipped_total",
        "Times an upstream was passed over for another, by reason (no_capacity: its admission would have waited)."
    );
    describe_counter!(
        "sluice_shared_health_errors_total",
        "Times shared upstream health could not be written or read (Redis away, queue full); each process then keeps its own view."
    );
    describe_counter!(
        "sluice_admission_paused_total",
        "Times an admission scope paused after a 429 until the reset the upstream named."
    );
    describe_counter!(
        "sluice_admission_rejected_total",
        "Requests admission refused (queue full, wait past the deadline, larger than the limit), by reason."
    );
    describe_counter!(
        "sluice_admission_state_errors_total",
        "Errors reaching the shared admission state (Redis), by what happened to the request."
    );
    describe_histogram!(
        "sluice_admission_wait_seconds",
        Unit::Seconds,
        "Time a request waited in admission before it was sent."
    );
    metrics::describe_gauge!(
        "sluice_concurrency_limit",
        "The adaptive concurrency limit: requests allowed in flight upstream."
    );
    describe_counter!(
        "sluice_key_cooldowns_total",
        "Times an upstream key cooled down after a 429, until the reset the upstream named."
    );
    describe_counter!(
        "sluice_key_quarantined_total",
        "Times an upstream key was quarantined (401, 403 or insufficient_quota) until its source changes."
    );
    describe_counter!(
        crate::alerts::ALERTS,
        "Alerts sent, by rule (each also a log event and, when configured, a webhook POST)."
    );
    describe_counter!(
        crate::alerts::ALERTS_SUPPRESSED,
        "Alerts held back by de-duplication or the per-minute cap, by rule and reason."
    );
    describe_counter!(
        REQUESTS,
        "Logical requests, by endpoint, model and outcome (ok or error kind)."
    );
    describe_counter!(ATTEMPTS, "HTTP attempts sent upstream, retries included.");
    describe_counter!(RETRIES, "Retries, by the error kind that caused them.");
    describe_counter!(
        RETRY_BUDGET_EXHAUSTED,
        "Retries refused because the retry budget was empty."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Logical request latency, retries and waits included."
    );
    describe_histogram!(
        TIME_TO_FIRST_TOKEN,
        Unit::Seconds,
        "Time from the request to the first streamed event."
    );
    describe_counter!(TOKENS, "Tokens by kind: prompt, cached (part of prompt), completion, reasoning (part of completion).");
    describe_counter!(FINISH_REASONS, "Choices by finish reason.");
    describe_counter!(
        DEFAULT_MAX_TOKENS,
        "Chat requests that had no output limit and got the default."
    );
    describe_counter!(
        MODEL_LIFECYCLE,
        "Requests that named a deprecated or retired model, by model and status."
    );
    describe_counter!(
        MODEL_SUBSTITUTIONS,
        "Requests for a retired model sent to its replacement (policy substitute)."
    );
    describe_counter!(
        MODEL_FALLBACKS,
        "Requests moved to the next model of a fallback chain after model_not_found."
    );
    describe_counter!(
        COST,
        "Spend in nano-dollars (1e-9 USD; exact as an integer up to $9M) by model, from each answer's usage and the registry's prices."
    );
    describe_counter!(
        BUDGET_REFUSALS,
        "Requests refused because a spending budget would be crossed, by scope kind and period."
    );
}

pub fn model_lifecycle(model: &str, status: &'static str) {
    counter!(MODEL_LIFECYCLE, "model" => model_label(model), "status" => status).increment(1);
}

pub fn model_substituted(from: &str, to: &str) {
    counter!(MODEL_SUBSTITUTIONS, "from" => model_label(from), "to" => model_label(to))
        .increment(1);
}

pub fn model_fallback(from: &str, to: &str) {
    counter!(MODEL_FALLBACKS, "from" => model_label(from), "to" => model_label(to)).increment(1);
}

/// Spend in nano-dollars, the ledger's unit, so the metric and `sluice spend` agree exactly.
pub fn cost(model: &str, nanos: u64) {
    handles::counter(COST, [("model", model_label(model))]).increment(nanos);
}

pub fn budget_refused(scope_kind: &'static str, period: &'static str) {
    counter!(BUDGET_REFUSALS, "scope" => scope_kind, "period" => period).increment(1);
}

pub fn attempt(endpoint: &'static str) {
    handles::counter(ATTEMPTS, [("endpoint", endpoint)]).increment(1);
}

pub fn retry(endpoint: &'static str, reason: &'static str) {
    handles::counter(RETRIES, [("endpoint", endpoint), ("reason", reason)]).increment(1);
}

pub fn retry_budget_exhausted(endpoint: &'static str) {
    counter!(RETRY_BUDGET_EXHAUSTED, "endpoint" => endpoint).increment(1);
}

pub fn ttft(model: &str, d: Duration) {
    handles::histogram(TIME_TO_FIRST_TOKEN, [("model", model_label(model))])
        .record(d.as_secs_f64());
}

pub fn default_max_tokens(model: &str) {
    counter!(DEFAULT_MAX_TOKENS, "model" => model_label(model)).increment(1);
}

/// The metrics a request's end records (`sluice_requests_total` and its duration, tokens,
/// finish reasons), for one endpoint and model label, kept together: the end looks them up
/// once, where a lookup per metric hashed and probed five times or more. Each handle is made
/// on first use, so a series appears when it is first counted, as before.
pub(crate) struct EndMetrics {
    endpoint: &'static str,
    model: &'static str,
    ok: OnceCell<(metrics::Counter, metrics::Histogram)>,
    tokens: [OnceCell<metrics::Counter>; 4],
    /// By [`crate::wire::FinishReason::ordinal`].
    finish: [OnceCell<metrics::Counter>; crate::wire::FinishReason::LABELS],
}

/// `kind` label values of [`TOKENS`], in [`EndMetrics::tokens`]'s order.
const TOKEN_KINDS: [&str; 4] = ["prompt", "completion", "cached", "reasoning"];

/// Kept [`EndMetrics`], by where the endpoint's and the model label's texts live
/// ([`handles::where_lives`]).
type KeptEnds = FxHashMap<[(usize, usize); 2], Rc<EndMetrics>>;

thread_local! {
    static ENDS: RefCell<KeptEnds> = RefCell::new(KeptEnds::default());
}

/// The request-end metrics of `endpoint` and the model label `model` ([`model_label`]): kept
/// per thread while the global recorder is in use, made afresh otherwise (a test's local
/// recorder must see its own metrics).
pub(crate) fn request_end(endpoint: &'static str, model: &'static str) -> Rc<EndMetrics> {
    let make = || Rc::new(EndMetrics::new(endpoint, model));
    if !handles::global_in_use() {
        return make();
    }
    let key = [handles::where_lives(endpoint), handles::where_lives(model)];
    ENDS.with(|m| {
        if let Some(e) = m.borrow().get(&key) {
            return e.clone();
        }
        let e = make();
        let mut m = m.borrow_mut();
        // Endpoints are a fixed set and models are interned: this only guards.
        if m.len() >= handles::MAX_PER_THREAD {
            m.clear();
        }
        m.insert(key, e.clone());
        e
    })
}

impl EndMetrics {
    fn new(endpoint: &'static str, model: &'static str) -> Self {
        EndMetrics {
            endpoint,
            model,
            ok: OnceCell::new(),
            tokens: Default::default(),
            finish: Default::default(),
        }
    }

    /// The end of a logical request: counted by outcome (`ok` or an error kind), timed.
    pub(crate) fn request_done(&self, outcome: &'static str, latency: Duration) {
        let labels = [
            ("endpoint", self.endpoint),
            ("model", self.model),
            ("outcome", outcome),
        ];
        let secs = latency.as_secs_f64();
        if outcome == "ok" {
            let (c, h) = self.ok.get_or_init(|| {
                (
                    handles::counter(REQUESTS, labels),
                    handles::histogram(REQUEST_DURATION, labels),
                )
            });
            c.increment(1);
            h.record(secs);
        } else {
            handles::counter(REQUESTS, labels).increment(1);
            handles::histogram(REQUEST_DURATION, labels).record(secs);
        }
    }

    fn tokens(&self, kind: usize, n: u64) {
        self.tokens[kind]
            .get_or_init(|| {
                handles::counter(TOKENS, [("model", self.model), ("kind", TOKEN_KINDS[kind])])
            })
            .increment(n);
    }

    /// Token counts of a finished request.
    pub(crate) fn usage(&self, u: &Usage) {
        self.tokens(0, u.prompt_tokens);
        self.tokens(1, u.completion_tokens);
        let cached = u.cached_tokens();
        if cached > 0 {
            self.tokens(2, cached);
        }
        let reasoning = u.reasoning_tokens();
        if reasoning > 0 {
            self.tokens(3, reasoning);
        }
    }

    /// Finish reasons of a finished request, from the strings an answer carried (without
    /// building a string for each: this runs on every answer); unknown ones count as `other`.
    /// `length` and `content_filter` are logged at warn, because the caller got less than it
    /// asked for. `model` is the model's text, for the log.
    pub(crate) fn finish_reasons<S: AsRef<str>>(
        &self,
        model: &str,
        request_id: Option<&str>,
        reasons: &[S],
    ) {
        use crate::wire::FinishReason as F;
        for r in reasons {
            let reason = F::known(r.as_ref()).unwrap_or(F::Other(String::new()));
            let label = reason.label();
            let Some(cell) = self.finish.get(reason.ordinal()) else {
                continue;
            };
            cell.get_or_init(|| {
                handles::counter(FINISH_REASONS, [("model", self.model), ("reason", label)])
            })
            .increment(1);
            if reason.is_truncated() {
                tracing::warn!(model, request_id, finish_reason = label, "answer cut short");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_models_are_labelled_other() {
        know_models(["gpt-4o-mini", "fast"]);
        assert_eq!(model_label("gpt-4o-mini"), "gpt-4o-mini");
        assert_eq!(model_label("fast"), "fast");
        assert_eq!(model_label("made-up-7"), "other");
        assert_eq!(model_label(""), "");
    }
}
