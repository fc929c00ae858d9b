//! What the simulator saw, for tests to prove that nothing was lost or sent twice.
//!
//! Each request builds a [`Record`] as it goes and writes it into the shared counters once, when
//! it ends (or is dropped because the client went away), so the hot path takes one lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::ratelimit::Limiter;

/// Counts of one `Idempotency-Key` value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdCount {
    /// Requests that carried it.
    pub seen: u64,
    /// Of those, how many were answered in full (200 with the whole body, or `[DONE]`).
    pub completed: u64,
}

/// Token totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenStats {
    pub prompt: u64,
    pub completion: u64,
    pub cached: u64,
    /// What the rate limiter finally charged (after refunds).
    pub charged: u64,
}

/// Stream outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStats {
    pub started: u64,
    /// Ended with `[DONE]` as planned.
    pub completed: u64,
    /// The client went away (or stopped reading and closed) before the end.
    pub client_disconnected: u64,
}

/// A snapshot of everything counted; `GET /_mock/stats` returns it as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub in_flight: u64,
    pub peak_in_flight: u64,
    pub by_key: BTreeMap<String, u64>,
    pub by_model: BTreeMap<String, u64>,
    pub by_status: BTreeMap<String, u64>,
    pub by_fault: BTreeMap<String, u64>,
    pub tokens: TokenStats,
    pub streams: StreamStats,
    pub idempotency_keys: BTreeMap<String, IdCount>,
    pub request_ids: BTreeMap<String, u64>,
    /// Azure-shaped requests: `"{deployment} {operation} api-version={v} auth={api-key|bearer}"`.
    pub azure: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct Inner {
    requests: u64,
    by_key: HashMap<String, u64>,
    by_model: HashMap<String, u64>,
    by_status: HashMap<u16, u64>,
    by_fault: HashMap<&'static str, u64>,
    tokens: TokenStats,
    streams: StreamStats,
    idempotency: HashMap<String, IdCount>,
    request_ids: HashMap<String, u64>,
    azure: HashMap<String, u64>,
}

/// Shared counters.
#[derive(Debug, Default)]
pub struct Stats {
    inner: Mutex<Inner>,
    in_flight: AtomicU64,
    peak: AtomicU64,
    max_ids: AtomicU64,
}

impl Stats {
    pub fn new(max_tracked_ids: usize) -> Self {
        let s = Stats::default();
        s.set_max_ids(max_tracked_ids);
        s
    }

    pub fn set_max_ids(&self, n: usize) {
        self.max_ids.store(n as u64, Ordering::Relaxed);
    }

    /// Count a request in flight until the returned guard drops.
    pub fn enter(self: &Arc<Self>) -> InFlight {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak.fetch_max(now, Ordering::AcqRel);
        InFlight(self.clone())
    }

    pub fn reset(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *g = Inner::default();
        self.peak
            .store(self.in_flight.load(Ordering::Acquire), Ordering::Release);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        StatsSnapshot {
            requests: g.requests,
            in_flight: self.in_flight.load(Ordering::Acquire),
            peak_in_flight: self.peak.load(Ordering::Acquire),
            by_key: g.by_key.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            by_model: g.by_model.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            by_status: g
                .by_status
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            by_fault: g
                .by_fault
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            tokens: g.tokens,
            streams: g.streams,
            idempotency_keys: g.idempotency.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            request_ids: g.request_ids.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            azure: g.azure.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }

    /// An Azure-shaped request, as it arrived (bounded: at most 1,000 distinct shapes).
    pub fn azure(&self, shape: String) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.azure.len() < 1000 || g.azure.contains_key(&shape) {
            *g.azure.entry(shape).or_default() += 1;
        }
    }

    fn flush(&self, r: &mut Record) {
        let max_ids = self.max_ids.load(Ordering::Relaxed) as usize;
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.requests += 1;
        if let Some(k) = r.key.take() {
            *g.by_key.entry(k).or_default() += 1;
        }
        if let Some(m) = r.model.take() {
            *g.by_model.entry(m).or_default() += 1;
        }
        if let Some(s) = r.status {
            *g.by_status.entry(s).or_default() += 1;
        }
        for f in r.faults.drain(..) {
            *g.by_fault.entry(f).or_default() += 1;
        }
        g.tokens.prompt += r.prompt_tokens;
        g.tokens.completion += r.completion_tokens;
        g.tokens.cached += r.cached_tokens;
        g.tokens.charged += r.charged;
        if r.stream {
            g.streams.started += 1;
            if r.completed {
                g.streams.completed += 1;
            } else if r.stream_body_started && !r.fault_ended_stream {
                g.streams.client_disconnected += 1;
            }
        }
        if let Some(id) = r.idempotency_key.take() {
            let tracked = g.idempotency.len();
            if tracked < max_ids || g.idempotency.contains_key(&id) {
                let c = g.idempotency.entry(id).or_default();
                c.seen += 1;
                if r.completed {
                    c.completed += 1;
                }
            }
        }
        if let Some(id) = r.request_id.take() {
            let tracked = g.request_ids.len();
            if tracked < max_ids || g.request_ids.contains_key(&id) {
                *g.request_ids.entry(id).or_default() += 1;
            }
        }
    }
}

/// Decrements the in-flight gauge when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Stats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A pending rate-limit settlement: charged up front, settled when the request ends.
#[derive(Debug)]
pub struct Settlement {
    pub limiter: Arc<Limiter>,
    pub scope: String,
    pub charged: u64,
    /// The scenario gives unused tokens back (`charge = "refund_unused"`); otherwise the
    /// charge stands as taken.
    pub refund: bool,
}

/// Everything one request contributes to the stats, flushed on drop.
#[derive(Debug)]
pub struct Record {
    stats: Arc<Stats>,
    _in_flight: InFlight,
    pub key: Option<String>,
    pub model: Option<String>,
    pub status: Option<u16>,
    pub faults: Vec<&'static str>,
    pub idempotency_key: Option<String>,
    pub request_id: Option<String>,
    pub completed: bool,
    pub stream: bool,
    pub stream_body_started: bool,
    pub fault_ended_stream: bool,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub charged: u64,
    pub settlement: Option<Settlement>,
}

impl Record {
    pub fn new(stats: &Arc<Stats>) -> Self {
        Record {
            _in_flight: stats.enter(),
            stats: stats.clone(),
            key: None,
            model: None,
            status: None,
            faults: Vec::new(),
            idempotency_key: None,
            request_id: None,
            completed: false,
            stream: false,
            stream_body_started: false,
            fault_ended_stream: false,
            prompt_tokens: 0,
            completion_tokens: 0,
            cached_tokens: 0,
            charged: 0,
            settlement: None,
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Some(s) = self.settlement.take() {
            if s.refund {
                // Tokens actually used: the prompt and whatever output was produced before the
                // end.
                let used = self.prompt_tokens + self.completion_tokens;
                s.limiter.settle(&s.scope, s.charged, used);
                self.charged = used;
            } else {
                self.charged = s.charged;
            }
        }
        let stats = self.stats.clone();
        stats.flush(self);
    }
}
