//! Client settings with documented defaults. Every field has a default that is safe for
//! production; builders change only what they name.

use std::time::Duration;

/// Timeouts by phase. Each one that fires is its own error kind, so a dashboard can tell a
/// network problem (connect) from a slow model (first byte) from a stalled stream (idle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP + TLS connect. Default 5 s.
    pub connect: Duration,
    /// Sending the request until the response headers arrive. Default 60 s. A non-streaming
    /// request's headers come only when the whole answer is ready: raise this for very long
    /// generations, or stream.
    pub first_byte: Duration,
    /// Longest silence between two chunks of a body. Default 30 s.
    pub idle: Duration,
    /// Whole logical request, across every retry and wait. Default 10 min.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(30),
            total: Duration::from_secs(600),
        }
    }
}

/// How failed attempts are retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per logical request, the first included. Default 5.
    pub max_attempts: u32,
    /// Backoff: attempt `n` waits a uniformly random time in `[0, min(cap, base × 2^(n-1))]`
    /// ("full jitter"). Defaults 500 ms and 30 s.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// A server-requested wait (`retry-after-ms`, `retry-after`, or the rate-limit reset) is
    /// clamped to this range. Defaults 0 and 60 s.
    pub server_wait_min: Duration,
    pub server_wait_max: Duration,
    /// Retries may add at most this fraction of the client's recent requests. Default 0.2.
    pub budget_ratio: f64,
    /// Retries always allowed per second regardless of traffic (the floor). Default 1.
    pub budget_min_per_sec: f64,
    /// Most retries the budget can bank. Default 100.
    pub budget_max: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
            server_wait_min: Duration::ZERO,
            server_wait_max: Duration::from_secs(60),
            budget_ratio: 0.2,
            budget_min_per_sec: 1.0,
            budget_max: 100.0,
        }
    }
}
