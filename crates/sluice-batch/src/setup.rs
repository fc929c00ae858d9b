//! The engine a batch job sends through, assembled from its settings (as the gateway builds
//! its own from its configuration): the upstream and its keys, admission tuned for a batch
//! (long waits rather than failures, a queue the window fits in), the model policy, the
//! ledger, and the job's budgets — per UTC day or month, and for the whole job across runs
//! (`--budget-usd`), each enforced by the engine's spend stage.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sluice::admission::{AdmissionConfig, Limits, OnStateError, StateBackend};
use sluice::keypool::KeySpec;
use sluice::model_policy::{ModelPolicy, OnRetired, PolicyConfig};
use sluice::models::Registry;
use sluice::pricing::Nanos;
use sluice::spend::{Budget, BudgetScope, Ledger, LedgerSetting, Period, SpendConfig};
use sluice::{Engine, RetryPolicy};

use crate::{BatchConfig, BatchError};

/// Where and how a job's requests go.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Default: `OPENAI_BASE_URL`, else the public API.
    pub base_url: Option<String>,
    /// Default (empty): `OPENAI_API_KEY`.
    pub keys: Vec<KeySpec>,
    /// Several upstreams (`[[upstreams]]` of a config file): when any, requests go to them
    /// (by model, priority and weight, with failover) and `base_url` / `keys` are unused.
    pub upstreams: Vec<sluice::upstreams::UpstreamSetting>,
    /// Requests and tokens per minute allowed (default: learned from the upstream's headers).
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// Share rate limits with other processes through this Redis server.
    pub state_url: Option<String>,
    /// Your model registry file, extending the shipped one.
    pub registry: Option<PathBuf>,
    pub on_retired: OnRetired,
    pub ledger: LedgerSetting,
    /// The job's spending limits per UTC day and month (nano-dollars), counted in the ledger.
    pub budget_per_day: Option<Nanos>,
    pub budget_per_month: Option<Nanos>,
    pub retry: RetryPolicy,
    /// The upstream gives unused `max_tokens` back when an answer ends (OpenAI does not).
    pub upstream_refunds: bool,
    /// How the upstream's limiter counts a prompt (default: not known, the larger count).
    pub prompt_count: sluice::admission::PromptCount,
    /// The burst the upstream allows above its steady rate, as refill time (default 1 s).
    pub burst: Option<Duration>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            base_url: None,
            keys: Vec::new(),
            upstreams: Vec::new(),
            rpm: None,
            tpm: None,
            state_url: None,
            registry: None,
            on_retired: OnRetired::Reject,
            ledger: LedgerSetting::Default,
            budget_per_day: None,
            budget_per_month: None,
            retry: RetryPolicy::default(),
            upstream_refunds: false,
            prompt_count: sluice::admission::PromptCount::Larger,
            burst: None,
        }
    }
}

/// An engine ready for a job, with the ledger it uses.
pub(crate) struct Prepared {
    pub(crate) engine: Engine,
    pub(crate) ledger: Option<Ledger>,
}

pub(crate) fn prepare(s: &EngineSettings, job: &BatchConfig) -> Result<Prepared, BatchError> {
    let registry =
        Registry::load(s.registry.as_deref()).map_err(|e| BatchError::Config(e.to_string()))?;
    let ledger = s
        .ledger
        .open()
        .map_err(|e| BatchError::Config(e.to_string()))?;
    let scope = BudgetScope::Job(job.job.clone());
    let mut budgets = Vec::new();
    for (flag, limit, period) in [
        ("--budget-per-day", s.budget_per_day, Period::Day),
        ("--budget-per-month", s.budget_per_month, Period::Month),
        ("--budget-usd", job.budget, Period::Total),
    ] {
        let Some(limit) = limit else { continue };
        if ledger.is_none() && period != Period::Total {
            return Err(BatchError::Config(format!(
                "{flag} counts spend in the ledger: do not combine it with --ledger off"
            )));
        }
        budgets.push(Budget {
            scope: scope.clone(),
            period,
            limit,
        });
    }
    let window = job.window.max(1);
    let mut admission = AdmissionConfig {
        limits: Limits {
            rpm: s.rpm,
            tpm: s.tpm,
            ..Limits::default()
        },
        // A batch would rather wait than fail: long admission waits, a queue the window fits in.
        max_wait: Duration::from_secs(3600),
        max_queue: window * 2 + 16,
        upstream_refunds: s.upstream_refunds,
        prompt_count: s.prompt_count,
        ..AdmissionConfig::default()
    };
    if let Some(b) = s.burst {
        admission.burst = sluice::admission::check_burst(b)
            .map_err(|why| BatchError::Config(format!("--burst {}s: {why}", b.as_secs_f64())))?;
    }
    admission.concurrency = admission.concurrency.window(window);
    if let Some(url) = &s.state_url {
        admission.state = StateBackend::Redis {
            url: url.clone(),
            prefix: "sluice:batch".into(),
            on_error: OnStateError::FailClosed,
        };
    }
    let policy = ModelPolicy::new(
        Arc::new(registry),
        PolicyConfig {
            on_retired: s.on_retired,
            ..Default::default()
        },
    );
    let mut b = sluice::Client::builder();
    if let Some(url) = &s.base_url {
        b = b.base_url(url.clone());
    }
    for u in &s.upstreams {
        b = b.upstream(u.spec());
    }
    let client = b
        .key_pool(KeySpec::sources(&s.keys))
        .model_policy(policy)
        .spend(SpendConfig {
            ledger: ledger.clone(),
            budgets,
            // A job budget refuses unpriced models with a message that names the line.
            allow_unpriced: false,
            ..Default::default()
        })
        .admission(admission)
        .retry_policy(s.retry)
        .max_attempts(job.max_attempts.max(1))
        .total_timeout(Duration::from_secs(1800))
        .pool_max_idle_per_host(window)
        .build()
        .map_err(|e| BatchError::Config(e.to_string()))?;
    Ok(Prepared {
        engine: client.engine().clone(),
        ledger,
    })
}
