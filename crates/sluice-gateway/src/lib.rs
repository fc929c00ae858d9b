//! `sluice serve`: an OpenAI-compatible HTTP gateway. Any app that points its SDK's `base_url`
//! here gets the engine's admission, retries, timeouts, key pool and metrics, without changing
//! anything else. Callers authenticate with virtual keys; they never see the upstream keys.
//!
//! Only what the route table ([`sluice::routes`]) knows is forwarded; a virtual key's limits
//! apply on every route that costs money or names a model; headers, bodies and stream framings
//! pass through as they came. A request's path is a sequence of named phases (see `request`):
//! parse → route (`route`) → authorize (`auth`, `route`) → admit → forward, unary or stream
//! (`forward`) → log (`log`), with the errors written in one place (`errors`) and the header
//! rules in another (`headers`). This file holds the server, the engine built from the
//! configuration, the reloader and the router.

#![forbid(unsafe_code)]
// Handlers bail out with a finished `Response` on their (cold) error paths; boxing it would only
// add noise.
#![allow(clippy::result_large_err)]

mod auth;
pub mod config;
mod conn_watch;
mod errors;
mod forward;
mod headers;
mod log;
mod request;
mod route;
mod served;
mod server;
mod watch;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{json, Value};
use sluice::admission::{estimate, Admission, AdmissionConfig, Limits, StateBackend};
use sluice::model_policy::{ModelPolicy, PolicyConfig};
use sluice::models::Registry;
use sluice::pricing::{dollars_exact, Nanos};
use sluice::spend::{Budget, BudgetScope, Ledger, RedisBudgets, SpendConfig, SpendTags};
use sluice::wire::JsonView;
use sluice::{Call, Engine, Meta, RequestOptions};
use sluice::{Client, Error, ErrorKind};

pub use config::{ConfigError, GatewayConfig, KeySpec, LedgerSetting, UpstreamEntry, VirtualKey};
pub use server::ServerLimits;

use auth::*;
use errors::*;
use forward::*;
use headers::*;
use log::*;
use request::*;

/// Where spend is kept: opened once per process (a reload keeps them; moving the ledger or
/// the Redis server needs a restart).
#[derive(Debug, Clone, Default)]
pub struct SpendBackends {
    pub ledger: Option<Ledger>,
    pub redis: Option<RedisBudgets>,
}

impl SpendBackends {
    /// Open what `cfg.spend` names: Redis (budgets and ledger) when a URL is set, else the
    /// SQLite ledger file.
    pub async fn open(cfg: &GatewayConfig) -> Result<Self, Error> {
        if let Some(url) = cfg
            .spend
            .redis_url
            .as_ref()
            .map(sluice::SecretString::expose)
        {
            let prefix = &cfg.spend.redis_prefix;
            return Ok(SpendBackends {
                ledger: Some(Ledger::redis(url, prefix).await?),
                redis: Some(RedisBudgets::connect(url, prefix).await?),
            });
        }
        let ledger = cfg.spend.ledger.open()?;
        Ok(SpendBackends {
            ledger,
            redis: None,
        })
    }
}

/// Build the engine a gateway forwards through. `prev` is the engine it replaces on a reload:
/// its budget counters carry over, so requests in flight keep their reservations.
pub fn engine(
    cfg: &GatewayConfig,
    backends: &SpendBackends,
    prev: Option<&Engine>,
) -> Result<Engine, Error> {
    let registry = Arc::new(Registry::load(cfg.models.registry.as_deref())?);
    sluice::know_models(cfg.named_models());
    let policy = ModelPolicy::new(
        registry,
        PolicyConfig {
            on_retired: cfg.models.on_retired,
            aliases: cfg.models.aliases.clone(),
            fallbacks: cfg.models.fallbacks.clone(),
            today: None,
        },
    );
    let mut budgets: Vec<Budget> = cfg
        .spend
        .budgets
        .iter()
        .map(|&(period, limit)| Budget {
            scope: BudgetScope::Global,
            period,
            limit,
        })
        .collect();
    for vk in &cfg.virtual_keys {
        budgets.extend(vk.budgets.iter().map(|&(period, limit)| Budget {
            scope: BudgetScope::Key(vk.name.clone()),
            period,
            limit,
        }));
    }
    let spend = SpendConfig {
        budgets,
        ledger: backends.ledger.clone(),
        redis: backends.redis.clone(),
        allow_unpriced: cfg.spend.allow_unpriced,
        today: None,
        counters: prev.map(|e| e.spend().counters()),
    };
    let mut b = Client::builder()
        .model_policy(policy)
        .spend(spend)
        .alerts(cfg.alerts.clone());
    if let Some(url) = &cfg.base_url {
        b = b.base_url(url.clone());
    }
    for u in &cfg.upstreams {
        b = b.upstream(u.spec());
    }
    if let Some(prev) = prev {
        b = b.replaces(prev.clone());
    }
    let client = b
        .key_pool(KeySpec::sources(&cfg.keys))
        .timeouts(cfg.timeouts)
        .max_attempts(cfg.max_attempts)
        // The caller's own request decides the output limit; the gateway does not add one.
        .default_max_tokens(None)
        .admission({
            let mut a = AdmissionConfig {
                limits: Limits {
                    rpm: cfg.rpm,
                    tpm: cfg.tpm,
                    ..Limits::default()
                },
                per_model: cfg.per_model,
                upstream_refunds: cfg.refunds_unused,
                prompt_count: cfg.prompt_count,
                burst: cfg.burst,
                // Callers wait at most this long in admission before a 429 with Retry-After.
                max_wait: std::time::Duration::from_secs(30),
                ..AdmissionConfig::default()
            };
            // Many callers share one gateway: start wide; 429s and slowdowns still narrow it.
            a.concurrency = a.concurrency.window(cfg.max_concurrency);
            if let Some(st) = shared_state(cfg, "upstream") {
                a.state = st;
            }
            a.max_queue = cfg.max_concurrency * 4;
            a
        })
        .pool_max_idle_per_host(cfg.max_concurrency)
        .breaker(cfg.breaker)
        .build()?;
    Ok(client.engine().clone())
}

/// Bucket bounds (seconds) of every `*_seconds` histogram on `/metrics`: from a fast
/// admission wait to a long generation, so `histogram_quantile` works across replicas.
pub const SECONDS_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// The Prometheus recorder, installed once per process. Durations are histograms (not
/// summaries, which cannot be added up across replicas).
///
/// The recorder queues every histogram sample until its upkeep folds them into the buckets;
/// `install_recorder` runs no upkeep of its own, so without the thread below a gateway that
/// nobody scrapes keeps every sample it ever took (about 40 bytes a request, for good).
fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".to_string()),
                    &SECONDS_BUCKETS,
                )
                .ok()?
                .install_recorder()
                .ok()?;
            sluice::keep_for_global_recorder();
            let h = handle.clone();
            std::thread::Builder::new()
                .name("sluice-metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(METRICS_UPKEEP_EVERY);
                    h.run_upkeep();
                })
                .ok()?;
            Some(handle)
        })
        .as_ref()
}

/// How often queued histogram samples are folded into their buckets.
const METRICS_UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The configuration in force and the engine built from it. Replaced whole on reload; a request
/// keeps the one it started with, so in-flight requests finish on what they began with.
#[derive(Debug)]
struct Generation {
    engine: Engine,
    cfg: GatewayConfig,
    /// Per-caller budgets (virtual keys with rpm/tpm): one admission stage, scoped by key name.
    callers: Arc<Admission>,
}

/// The admission stage for callers' own limits: budgets only (the upstream stage does the
/// concurrency), each key's limits set as the limits of its scope, a full minute of burst as
/// OpenAI gives its own callers, and no waiting: over its limit, a caller gets a 429 at once.
/// The `[state]` Redis backend for one kind of admission (`upstream`, `callers`), each under its
/// own key prefix; `None` without `[state]`.
fn shared_state(cfg: &GatewayConfig, what: &str) -> Option<StateBackend> {
    cfg.state.as_ref().map(|st| StateBackend::Redis {
        url: st.redis_url.expose().to_string(),
        prefix: format!("{}:{what}", st.prefix),
        on_error: st.on_error,
    })
}

fn callers_admission(cfg: &GatewayConfig) -> Arc<Admission> {
    let mut model_limits = std::collections::HashMap::new();
    for vk in &cfg.virtual_keys {
        model_limits.insert(
            vk.name.clone(),
            Limits {
                rpm: vk.rpm,
                tpm: vk.tpm,
                ..Limits::default()
            },
        );
    }
    let mut a = AdmissionConfig {
        model_limits,
        per_model: false,
        learn_from_headers: false,
        burst: std::time::Duration::from_secs(60),
        max_wait: std::time::Duration::ZERO,
        max_queue: usize::MAX / 2,
        // These budgets are the gateway's own: a caller's tokens are what it used.
        upstream_refunds: true,
        ..AdmissionConfig::default()
    };
    // A caller's limits hold across replicas too.
    if let Some(st) = shared_state(cfg, "callers") {
        a.state = st;
    }
    a.concurrency.adaptive = false;
    a.concurrency.initial = 1 << 20;
    a.concurrency.max = 1 << 20;
    Admission::new(a)
}

#[derive(Debug)]
struct AppState {
    live: std::sync::RwLock<Arc<Generation>>,
    backends: SpendBackends,
}

impl AppState {
    fn live(&self) -> Arc<Generation> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Every request the gateway serves: its own health, readiness and metrics endpoints, else the
/// API. Dispatched here by hand rather than by a router: there are three fixed paths beside the
/// route table's, and a router's matching, extractors and boxed body cost more on every API
/// request than these comparisons.
async fn handle(
    state: Arc<AppState>,
    peer: SocketAddr,
    req: http::Request<hyper::body::Incoming>,
) -> Response {
    let own = match req.uri().path() {
        "/healthz" | "/readyz" => Some(false),
        "/metrics" => Some(true),
        _ => None,
    };
    if let Some(metrics) = own {
        return match *req.method() {
            Method::GET | Method::HEAD if metrics => metrics_text().await,
            Method::GET | Method::HEAD => "ok".into_response(),
            _ => (
                StatusCode::METHOD_NOT_ALLOWED,
                [(http::header::ALLOW, HeaderValue::from_static("GET,HEAD"))],
            )
                .into_response(),
        };
    }
    let (parts, body) = req.into_parts();
    api(state, peer, parts.method, parts.uri, parts.headers, body).await
}

async fn metrics_text() -> Response {
    match prometheus() {
        Some(h) => h.render().into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable",
        )
            .into_response(),
    }
}

/// Reloads a running gateway's configuration.
#[derive(Debug, Clone)]
pub struct Reloader {
    state: Arc<AppState>,
}

impl Reloader {
    /// Apply a new configuration to new requests (keys, limits, virtual keys, timeouts);
    /// requests in flight finish on the old one. The listen address cannot change here. On
    /// error the old configuration stays.
    pub fn reload(&self, mut cfg: GatewayConfig) -> Result<(), Error> {
        let old = self.state.live();
        if let Some(why) = widens(&old.cfg, &cfg) {
            return Err(Error::new(ErrorKind::Config, why));
        }
        check_keys(&cfg)?;
        if cfg.listen != old.cfg.listen && cfg.listen.port() != 0 {
            tracing::warn!(old = %old.cfg.listen, new = %cfg.listen, "the listen address does not change on reload; restart to move it");
        }
        cfg.listen = old.cfg.listen;
        if cfg.spend.redis_url != old.cfg.spend.redis_url
            || cfg.spend.ledger.resolve() != old.cfg.spend.ledger.resolve()
        {
            tracing::warn!("the ledger and the Redis server for budgets do not change on reload; restart to move them");
        }
        let engine = engine(&cfg, &self.state.backends, Some(&old.engine))?;
        // Callers keep their spent budget across a reload when their limits did not change.
        let same = cfg
            .virtual_keys
            .iter()
            .map(|v| (&v.name, v.rpm, v.tpm))
            .eq(old.cfg.virtual_keys.iter().map(|v| (&v.name, v.rpm, v.tpm)));
        let callers = if same {
            old.callers.clone()
        } else {
            callers_admission(&cfg)
        };
        *self.state.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Generation {
            engine,
            cfg,
            callers,
        });
        tracing::info!(
            registry_as_of = %self.state.live().engine.models().registry().as_of().map_or_else(|| "undated".to_string(), |d| d.to_string()),
            "configuration reloaded"
        );
        Ok(())
    }
}

/// Why `new` would open the gateway or drop its upstream where `old` did not, unless `new`
/// says the change is meant (`[reload]`): the usual cause is a file caught half-written or
/// emptied by mistake, and applying it would let loopback callers in without a key, or send
/// requests to the public API.
fn widens(old: &GatewayConfig, new: &GatewayConfig) -> Option<String> {
    if old.upstream_table && !new.upstream_table && !new.reload.allow_removing_upstream {
        return Some("the new file has no [upstream] table but the running configuration has one (set [reload] allow_removing_upstream = true if that is meant)".into());
    }
    if !old.virtual_keys.is_empty()
        && new.virtual_keys.is_empty()
        && !new.reload.allow_removing_all_virtual_keys
    {
        return Some(format!("the new file removes all {} virtual keys (set [reload] allow_removing_all_virtual_keys = true if that is meant)", old.virtual_keys.len()));
    }
    None
}

/// Every upstream key source is read once now, so a missing file or an unset variable stops
/// the start (or the reload) naming the setting, instead of turning every request into a 502.
fn check_keys(cfg: &GatewayConfig) -> Result<(), Error> {
    let check = |keys: &[KeySpec], field: &str| {
        sluice::keypool::KeySpec::check_all(keys, field)
            .map(|_| ())
            .map_err(|e| Error::new(ErrorKind::Config, e))
    };
    if cfg.upstreams.is_empty() {
        return check(&cfg.keys, "upstream.keys");
    }
    for (i, u) in cfg.upstreams.iter().enumerate() {
        check(&u.keys, &format!("upstreams[{i}].keys"))?;
    }
    Ok(())
}

/// A running gateway (for tests and embedding).
#[derive(Debug)]
pub struct Gateway {
    addr: SocketAddr,
    state: Arc<AppState>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    _models_watch: Option<sluice::catalog::Watch>,
}

impl Gateway {
    /// Bind `cfg.listen` and serve until [`Gateway::shutdown`].
    pub async fn start(cfg: GatewayConfig) -> Result<Gateway, Error> {
        let _ = prometheus();
        check_keys(&cfg)?;
        let backends = SpendBackends::open(&cfg).await?;
        let engine = engine(&cfg, &backends, None)?;
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("cannot listen on {}: {e}", cfg.listen),
                )
            })?;
        let addr = listener.local_addr().map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("cannot read the bound address: {e}"),
            )
        })?;
        let registry = engine.models().registry();
        let fresh = registry.staleness(engine.models().today());
        let as_of = fresh
            .as_of
            .map_or_else(|| "undated".to_string(), |d| d.to_string());
        if fresh.stale {
            tracing::warn!(registry_as_of = %as_of, "{}", fresh.line());
        } else {
            tracing::info!(registry_as_of = %as_of, "{}", fresh.line());
        }
        let every = cfg.models.check_upstream_every;
        // Connection limits are the listener's: like the address, fixed until a restart.
        let limits = cfg.server;
        let callers = callers_admission(&cfg);
        let state = Arc::new(AppState {
            live: std::sync::RwLock::new(Arc::new(Generation {
                engine,
                cfg,
                callers,
            })),
            backends,
        });
        let (tx, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(server::serve(listener, state.clone(), limits, rx));
        // The upstream's model list against the models in use and in config, the config in
        // force at each check (a reload changes both).
        let models_watch = every.map(|every| {
            let st = state.clone();
            sluice::catalog::watch(
                move || {
                    let live = st.live();
                    (live.engine.clone(), live.cfg.named_models())
                },
                every,
            )
        });
        Ok(Gateway {
            addr,
            state,
            shutdown: tx,
            task,
            _models_watch: models_watch,
        })
    }

    /// Apply a new configuration to new requests (see [`Reloader::reload`]).
    pub fn reload(&self, cfg: GatewayConfig) -> Result<(), Error> {
        self.reloader().reload(cfg)
    }

    /// A handle that reloads this gateway's configuration (for a signal or file watcher).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            state: self.state.clone(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/v1`, what an SDK takes as its base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Stop accepting, let requests in flight finish, write what the ledger holds, then return.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        if let Some(l) = &self.state.backends.ledger {
            l.flush().await;
        }
    }
}
