//! Counting what a job did, for the progress line, the final table and `--summary-json`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use sluice::pricing::{dollars, Nanos};

/// Live counters, shared by the request tasks.
#[derive(Debug, Default)]
pub struct Tally {
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub cached_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    pub spent_nanos: AtomicU64,
    failed_by_kind: Mutex<BTreeMap<String, u64>>,
    finish_reasons: Mutex<BTreeMap<String, u64>>,
    latencies_ms: Mutex<Vec<u32>>,
}

impl Tally {
    pub fn fail(&self, kind: &str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self
            .failed_by_kind
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind.to_string())
            .or_default() += 1;
    }

    pub fn finish_reason(&self, reason: &str) {
        *self
            .finish_reasons
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason.to_string())
            .or_default() += 1;
    }

    pub fn latency(&self, d: Duration) {
        self.latencies_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(d.as_millis().min(u128::from(u32::MAX)) as u32);
    }

    pub fn tokens(&self, prompt: u64, cached: u64, completion: u64) {
        self.prompt_tokens.fetch_add(prompt, Ordering::Relaxed);
        self.cached_tokens.fetch_add(cached, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(completion, Ordering::Relaxed);
    }

    pub fn summary(&self, outcome: &str, totals: Totals, wall: Duration) -> Summary {
        let mut lat = self
            .latencies_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        lat.sort_unstable();
        let pct = |p: f64| -> Option<u32> {
            if lat.is_empty() {
                return None;
            }
            let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
            lat.get(i).copied()
        };
        Summary {
            outcome: outcome.to_string(),
            lines: totals.lines,
            already_done: totals.already_done,
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            not_done: totals.not_done,
            failed_by_kind: self
                .failed_by_kind
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            finish_reasons: self
                .finish_reasons
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            tokens: TokenSummary {
                prompt: self.prompt_tokens.load(Ordering::Relaxed),
                cached: self.cached_tokens.load(Ordering::Relaxed),
                completion: self.completion_tokens.load(Ordering::Relaxed),
            },
            cost_usd: self.spent_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            cost_nanos: self.spent_nanos.load(Ordering::Relaxed),
            job_cost_nanos: totals.prior_spent + self.spent_nanos.load(Ordering::Relaxed),
            latency_ms: LatencySummary {
                p50: pct(0.50),
                p95: pct(0.95),
                p99: pct(0.99),
            },
            rate_limited: 0,
            retries: 0,
            wall_seconds: wall.as_secs_f64(),
            output: totals.output,
            errors: totals.errors,
        }
    }
}

/// Facts from outside the tally.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub lines: u64,
    pub already_done: u64,
    pub not_done: u64,
    pub prior_spent: Nanos,
    pub output: String,
    pub errors: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenSummary {
    pub prompt: u64,
    pub cached: u64,
    pub completion: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    pub p50: Option<u32>,
    pub p95: Option<u32>,
    pub p99: Option<u32>,
}

/// The end-of-job report (also written as JSON with `--summary-json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `completed`, `budget_reached`, `interrupted`, `stopped`.
    pub outcome: String,
    pub lines: u64,
    /// Lines already in the output or errors file when this run started.
    pub already_done: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Lines neither in the output nor in the errors file at the end (resume to finish them).
    pub not_done: u64,
    pub failed_by_kind: BTreeMap<String, u64>,
    pub finish_reasons: BTreeMap<String, u64>,
    pub tokens: TokenSummary,
    /// Cost of this run's requests.
    pub cost_usd: f64,
    pub cost_nanos: u64,
    /// Cost of the whole job so far, earlier runs included.
    pub job_cost_nanos: u64,
    pub latency_ms: LatencySummary,
    /// 429 responses met (admission keeps these rare).
    pub rate_limited: u64,
    pub retries: u64,
    pub wall_seconds: f64,
    pub output: String,
    pub errors: String,
}

impl Summary {
    /// The table a person reads at the end.
    pub fn table(&self) -> String {
        let ms = |v: Option<u32>| v.map_or("-".to_string(), |v| format!("{v} ms"));
        let mut out = String::new();
        let row = |out: &mut String, k: &str, v: String| {
            out.push_str(&format!("  {k:<22} {v}\n"));
        };
        out.push_str(&format!(
            "sluice batch: {}\n",
            self.outcome.replace('_', " ")
        ));
        row(&mut out, "lines", self.lines.to_string());
        if self.already_done > 0 {
            row(&mut out, "already done", self.already_done.to_string());
        }
        row(&mut out, "succeeded", self.succeeded.to_string());
        let kinds: Vec<String> = self
            .failed_by_kind
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        row(
            &mut out,
            "failed",
            if kinds.is_empty() {
                self.failed.to_string()
            } else {
                format!("{} ({})", self.failed, kinds.join(", "))
            },
        );
        if self.not_done > 0 {
            row(&mut out, "not done (resume)", self.not_done.to_string());
        }
        let reasons: Vec<String> = self
            .finish_reasons
            .iter()
            .map(|(k, v)| {
                if k == "length" || k == "content_filter" {
                    format!("{k} {v} (!)")
                } else {
                    format!("{k} {v}")
                }
            })
            .collect();
        if !reasons.is_empty() {
            row(&mut out, "finish reasons", reasons.join(", "));
        }
        row(
            &mut out,
            "tokens",
            format!(
                "{} in ({} cached), {} out",
                self.tokens.prompt, self.tokens.cached, self.tokens.completion
            ),
        );
        row(
            &mut out,
            "cost",
            format!(
                "{} this run, {} job total",
                dollars(self.cost_nanos),
                dollars(self.job_cost_nanos)
            ),
        );
        row(
            &mut out,
            "latency",
            format!(
                "p50 {}, p95 {}, p99 {}",
                ms(self.latency_ms.p50),
                ms(self.latency_ms.p95),
                ms(self.latency_ms.p99)
            ),
        );
        row(&mut out, "429s", self.rate_limited.to_string());
        row(&mut out, "retries", self.retries.to_string());
        row(&mut out, "wall time", format!("{:.1} s", self.wall_seconds));
        row(&mut out, "output", self.output.clone());
        row(&mut out, "errors", self.errors.clone());
        out
    }
}
