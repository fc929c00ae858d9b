//! `sluice serve`: an OpenAI-compatible HTTP gateway. Any app that points its SDK's `base_url`
//! here gets the engine's admission, retries, timeouts, key pool and metrics, without changing
//! anything else. Callers authenticate with virtual keys; they never see the upstream keys.
//!
//! Every `/v1/*` request goes through the same engine stack: the typed routes (chat,
//! completions, embeddings, responses, moderations) with a token estimate for admission, every
//! other path forwarded as it is. Streams are passed through event by event; a caller that
//! disconnects drops the upstream request at once.

#![forbid(unsafe_code)]
// Handlers bail out with a finished `Response` on their (cold) error paths; boxing it would only
// add noise.
#![allow(clippy::result_large_err)]

pub mod config;
mod route;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{json, Value};
use sluice::admission::{estimate, Admission, AdmissionConfig, Limits};
use sluice::credentials::KeySource;
use sluice::keypool::PoolSource;
use sluice::model_policy::{ModelPolicy, PolicyConfig};
use sluice::models::Registry;
use sluice::pricing::{dollars_exact, Nanos};
use sluice::spend::{Budget, BudgetScope, Ledger, RedisBudgets, SpendConfig, SpendTags};
use sluice::stack::{Call, Engine, Meta, RequestOptions};
use sluice::{Client, Error, ErrorKind};

pub use config::{ConfigError, GatewayConfig, KeySpec, LedgerSetting, VirtualKey};

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
        if let Some(url) = &cfg.spend.redis_url {
            let prefix = &cfg.spend.redis_prefix;
            return Ok(SpendBackends {
                ledger: Some(Ledger::redis(url, prefix).await?),
                redis: Some(RedisBudgets::connect(url, prefix).await?),
            });
        }
        let ledger = match cfg.spend.ledger.resolve() {
            Some(p) => Some(Ledger::sqlite(p)?),
            None => None,
        };
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
    sluice::observe::know_models(cfg.named_models());
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
    let sources: Vec<PoolSource> = if cfg.keys.is_empty() {
        vec![PoolSource::One(KeySource::env("OPENAI_API_KEY"))]
    } else {
        cfg.keys
            .iter()
            .map(|k| match k {
                KeySpec::Env(v) => PoolSource::One(KeySource::env(v.clone())),
                KeySpec::File(p) => PoolSource::One(KeySource::file(p.clone())),
                KeySpec::KeysFile(p) => PoolSource::lines(p.clone()),
                KeySpec::Value(v) => PoolSource::One(KeySource::fixed(v.as_str())),
            })
            .collect()
    };
    let client = b
        .key_pool(sources)
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
                // Callers wait at most this long in admission before a 429 with Retry-After.
                max_wait: std::time::Duration::from_secs(30),
                ..AdmissionConfig::default()
            };
            // Many callers share one gateway: start wide; 429s and slowdowns still narrow it.
            a.concurrency.max = cfg.max_concurrency;
            a.concurrency.initial = (cfg.max_concurrency / 2).max(1);
            a.max_queue = cfg.max_concurrency * 4;
            a
        })
        .pool_max_idle_per_host(cfg.max_concurrency)
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
fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".to_string()),
                    &SECONDS_BUCKETS,
                )
                .ok()?
                .install_recorder()
                .ok()
        })
        .as_ref()
}

/// The configuration in force and the engine built from it. Replaced whole on reload; a request
/// keeps the one it started with, so in-flight requests finish on what they began with.
#[derive(Debug)]
struct Live {
    engine: Engine,
    cfg: GatewayConfig,
    /// Per-caller budgets (virtual keys with rpm/tpm): one admission stage, scoped by key name.
    callers: Arc<Admission>,
}

/// The admission stage for callers' own limits: budgets only (the upstream stage does the
/// concurrency), each key's limits set as the limits of its scope, a full minute of burst as
/// OpenAI gives its own callers, and no waiting: over its limit, a caller gets a 429 at once.
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
        ..AdmissionConfig::default()
    };
    a.concurrency.adaptive = false;
    a.concurrency.initial = 1 << 20;
    a.concurrency.max = 1 << 20;
    Admission::new(a)
}

#[derive(Debug)]
struct AppState {
    live: std::sync::RwLock<Arc<Live>>,
    backends: SpendBackends,
}

impl AppState {
    fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The gateway's routes.
fn router(state: Arc<AppState>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", get(metrics_text))
        .fallback(api)
        .with_state(state)
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
        *self.state.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Live {
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

/// A running gateway (for tests and embedding).
#[derive(Debug)]
pub struct Gateway {
    addr: SocketAddr,
    state: Arc<AppState>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    _models_watch: Option<AbortOnDrop>,
}

/// Stops a background task with the gateway.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Gateway {
    /// Bind `cfg.listen` and serve until [`Gateway::shutdown`].
    pub async fn start(cfg: GatewayConfig) -> Result<Gateway, Error> {
        let _ = prometheus();
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
        let callers = callers_admission(&cfg);
        let state = Arc::new(AppState {
            live: std::sync::RwLock::new(Arc::new(Live {
                engine,
                cfg,
                callers,
            })),
            backends,
        });
        let app = router(state.clone());
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            // Small answers and SSE events go out at once, not after Nagle's delay.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = rx.changed().await;
            })
            .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "gateway stopped");
            }
        });
        // The upstream's model list against the models in use and in config, the config in
        // force at each check (a reload changes both).
        let models_watch = every.map(|every| {
            let st = state.clone();
            AbortOnDrop(sluice::catalog::watch(
                move || {
                    let live = st.live();
                    (live.engine.clone(), live.cfg.named_models())
                },
                every,
            ))
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

/// An error in OpenAI's shape, with the status an SDK maps to the right exception, the
/// gateway's own `x-request-id` (an upstream's replaces it where there is one) and
/// `x-should-retry: false` (the few retryable answers say `true` themselves).
pub(crate) fn openai_error(
    status: StatusCode,
    message: &str,
    ty: &str,
    code: Option<&str>,
    param: Option<&str>,
) -> Response {
    let body = json!({"error": {"message": message, "type": ty, "param": param, "code": code}});
    let mut r = (status, axum::Json(body)).into_response();
    let h = r.headers_mut();
    set(h, "x-request-id", &format!("req_sluice_{:024x}", rand_id()));
    set(h, "x-should-retry", "false");
    r
}

/// 96 random bits for the gateway's own request ids.
fn rand_id() -> u128 {
    rand::random::<u128>() >> 32
}

fn set(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(HeaderName::from_static(name), v);
    }
}

/// An engine error as the caller's SDK should see it.
fn error_response(e: &Error) -> Response {
    let mut resp = match (e.status(), e.api_error()) {
        // The upstream refused the gateway's own key: the gateway's failure, not the caller's
        // (whose SDK would blame its valid virtual key), and nothing of the key is shown.
        (Some(401), _) => openai_error(
            StatusCode::BAD_GATEWAY,
            "The upstream rejected the gateway's API key. This is the gateway's configuration, not your key; the operator has to fix it.",
            "upstream_auth_error",
            Some("upstream_key_rejected"),
            None,
        ),
        // The upstream answered: its status and error body, as they were.
        (Some(s), Some(api)) => {
            let status = StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, axum::Json(json!({"error": api}))).into_response()
        }
        (Some(s), None) => {
            let status = StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY);
            openai_error(status, e.message(), "upstream_error", None, None)
        }
        (None, _) => {
            let (status, ty) = match e.kind() {
                ErrorKind::Overloaded
                | ErrorKind::RateLimitedRequests
                | ErrorKind::RateLimitedTokens => {
                    (StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded")
                }
                ErrorKind::BudgetExceeded | ErrorKind::QuotaExhausted => {
                    (StatusCode::TOO_MANY_REQUESTS, "insufficient_quota")
                }
                ErrorKind::TimeoutConnect
                | ErrorKind::TimeoutFirstByte
                | ErrorKind::TimeoutIdle
                | ErrorKind::TimeoutTotal => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
                ErrorKind::Connection | ErrorKind::StreamInterrupted | ErrorKind::Decode => {
                    (StatusCode::BAD_GATEWAY, "upstream_error")
                }
                ErrorKind::Authentication => (StatusCode::BAD_GATEWAY, "upstream_auth_error"),
                // A retired model (model registry): a 404 like the upstream's, so the SDK
                // raises NotFoundError, with the replacement named in the message.
                ErrorKind::ModelRetired => (StatusCode::NOT_FOUND, "invalid_request_error"),
                ErrorKind::BadRequest => (StatusCode::BAD_REQUEST, "invalid_request_error"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
            };
            let param = (e.kind() == ErrorKind::ModelRetired).then_some("model");
            openai_error(status, e.message(), ty, Some(e.kind().as_str()), param)
        }
    };
    let h = resp.headers_mut();
    if let Some(w) = e.retry_after() {
        set(
            h,
            "retry-after",
            &w.as_secs_f64().ceil().max(1.0).to_string(),
        );
        set(h, "retry-after-ms", &w.as_millis().to_string());
    }
    let never = matches!(
        e.kind(),
        ErrorKind::BudgetExceeded | ErrorKind::QuotaExhausted
    );
    set(
        h,
        "x-should-retry",
        if e.is_retryable() && !never {
            "true"
        } else {
            "false"
        },
    );
    if let Some(id) = e.request_id() {
        set(h, "x-request-id", id);
    }
    resp
}

/// Who is calling: a virtual key's name, or `loopback` when none are configured.
fn authenticate(
    cfg: &GatewayConfig,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Option<VirtualKey>, Response> {
    if cfg.virtual_keys.is_empty() {
        if peer.ip().is_loopback() {
            return Ok(None);
        }
        return Err(openai_error(
            StatusCode::UNAUTHORIZED,
            "This gateway has no virtual keys configured and accepts callers on loopback only.",
            "invalid_request_error",
            Some("invalid_api_key"),
            None,
        ));
    }
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .unwrap_or("");
    let d = config::digest(presented);
    // Compare against every key, without stopping early: the time taken says nothing about
    // which key (or how much of one) matched.
    let mut found: Option<&VirtualKey> = None;
    for vk in &cfg.virtual_keys {
        let diff = vk
            .digest
            .iter()
            .zip(d.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 && !presented.is_empty() {
            found = Some(vk);
        }
    }
    match found {
        Some(vk) => Ok(Some(vk.clone())),
        None => Err(openai_error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided.",
            "invalid_request_error",
            Some("invalid_api_key"),
            None,
        )),
    }
}

/// Operations whose body is a model request: estimated for admission, model required and
/// checked, sent through the model policy.
fn typed(op: &sluice::routes::Op) -> Option<&'static str> {
    if op.method != Method::POST {
        return None;
    }
    match (op.endpoint(), op.billing) {
        ("other" | "models", sluice::routes::Billing::Tokens) => Some("other"),
        ("other" | "models", _) => None,
        (e, _) => Some(e),
    }
}

/// Every `/v1/*` request.
async fn api(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let st = app.live();
    let Some(path) = uri
        .path()
        .strip_prefix("/v1")
        .filter(|p| p.starts_with('/'))
    else {
        return openai_error(
            StatusCode::NOT_FOUND,
            &format!("Invalid URL ({method} {})", uri.path()),
            "invalid_request_error",
            None,
            None,
        );
    };
    let caller = match authenticate(&st.cfg, &headers, peer) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let op = match route::route(&st.cfg.routes, &method, path, uri.path()) {
        Ok(op) => op,
        Err(r) => return r,
    };
    let multipart = route::is_multipart(
        headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let caller_name = caller
        .as_ref()
        .map_or("loopback", |c| c.name.as_str())
        .to_string();
    let bytes = match axum::body::to_bytes(body, st.cfg.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return openai_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "Request body too large: the limit is {} bytes.",
                    st.cfg.max_body_bytes
                ),
                "invalid_request_error",
                None,
                None,
            )
        }
    };
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut call = Call {
        method: method.clone(),
        path: path_and_query,
        body: (!bytes.is_empty()).then(|| bytes.clone()),
        endpoint: "other",
        model: None,
        estimate: None,
        options: RequestOptions {
            idempotency_key: headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            headers: passed_request_headers(&headers),
            ..RequestOptions::default()
        },
    };
    let mut strip_usage = false;
    let json_body = !multipart
        && !bytes.is_empty()
        && matches!(
            op.body,
            sluice::routes::Body::Json | sluice::routes::Body::JsonOrMultipart
        );
    let mut value: Option<Value> = None;
    if json_body || typed(op).is_some() {
        value = Some(match serde_json::from_slice(&bytes) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return openai_error(
                    StatusCode::BAD_REQUEST,
                    "Invalid body: expected a JSON object.",
                    "invalid_request_error",
                    None,
                    None,
                )
            }
            Err(e) => {
                return openai_error(
                    StatusCode::BAD_REQUEST,
                    &format!("We could not parse the JSON body of your request: {e}"),
                    "invalid_request_error",
                    None,
                    None,
                )
            }
        });
    }
    let named = route::named(op, value.as_ref(), path);
    let policy = st.engine.models().clone();
    if let Err(r) = route::authorize(&st.cfg, caller.as_ref(), op, &named, multipart, &|m| {
        policy.resolve_alias(m).to_string()
    }) {
        return r;
    }
    let stream = named.stream && typed(op).is_some();
    let list_models = op.method == Method::GET && op.path == "/models";
    if let (Some(endpoint), Some(mut value)) = (typed(op), value.take()) {
        let model = match value.get("model") {
            Some(Value::String(m)) => Some(m.clone()),
            None if endpoint == "moderations" => None,
            None => {
                return openai_error(
                    StatusCode::BAD_REQUEST,
                    "Missing required parameter: 'model'.",
                    "invalid_request_error",
                    Some("missing_required_parameter"),
                    Some("model"),
                )
            }
            Some(_) => {
                return openai_error(
                    StatusCode::BAD_REQUEST,
                    "Invalid type for 'model': expected a string.",
                    "invalid_request_error",
                    Some("invalid_type"),
                    Some("model"),
                )
            }
        };
        if stream && matches!(endpoint, "chat" | "completions") {
            // Ask for usage so the gateway can account tokens; hide it again if the caller
            // did not ask.
            let asked = value
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                == Some(true);
            if !asked {
                strip_usage = true;
                if let Some(obj) = value.as_object_mut() {
                    obj.insert("stream_options".into(), json!({"include_usage": true}));
                }
                call.body = serde_json::to_vec(&value).ok().map(Bytes::from);
            }
        }
        call.endpoint = endpoint;
        call.estimate = Some(estimate::estimate(path, &value));
        call.model = model;
    }
    let model = call.model.clone().unwrap_or_default();
    call.options.spend = SpendTags {
        key: caller.as_ref().map(|c| c.name.clone()),
        job: None,
    };
    let mut log = RequestLog {
        caller: caller_name,
        model,
        started: Some(started),
        ..RequestLog::default()
    };
    // The caller's own limits, before anything goes upstream.
    let mut caller_ticket = None;
    if let Some(vk) = caller
        .as_ref()
        .filter(|v| v.rpm.is_some() || v.tpm.is_some())
    {
        let est = call.estimate.unwrap_or_default();
        let deadline = tokio::time::Instant::now() + st.cfg.timeouts.total;
        match st.callers.admit(&vk.name, &vk.name, est, deadline).await {
            Ok(t) => caller_ticket = Some(t),
            Err(e) => {
                log.status = 429;
                log.failed(&e);
                return caller_limited(vk, &e);
            }
        }
    }
    if stream {
        return match st.engine.send_stream(call).await {
            Ok(reply) => {
                log.answered(&reply.meta);
                stream_response(reply, strip_usage, log, caller_ticket)
            }
            Err(e) => log.failed(&e),
        };
    }
    match st.engine.send(call).await {
        Ok(reply) => {
            log.answered(&reply.meta);
            if let Some(u) = reply.facts.usage.as_ref() {
                if let Some(mut t) = caller_ticket.take() {
                    t.settle(u.prompt_tokens + u.completion_tokens, u.completion_tokens);
                }
                log.usage(u);
            }
            log.cost = reply.meta.cost_nanos;
            log.emit(None);
            let body = match &caller {
                Some(vk) if list_models && !vk.models.is_empty() => {
                    visible_models(&reply.body, vk, &st.cfg, &policy)
                }
                _ => reply.body,
            };
            let mut resp = Response::new(Body::from(body));
            *resp.status_mut() = StatusCode::from_u16(reply.meta.status).unwrap_or(StatusCode::OK);
            let h = resp.headers_mut();
            pass_response_headers(&reply.headers, h);
            sluice_headers(h, &reply.meta);
            if let Some(c) = reply.meta.cost_nanos {
                set(h, "x-sluice-cost-usd", &dollars_exact(c));
            }
            resp
        }
        Err(e) => log.failed(&e),
    }
}

/// The upstream's model list as a key with a model list sees it: its models (by name or by
/// the model an alias stands for) and the configured aliases that stand for them.
fn visible_models(
    body: &Bytes,
    vk: &VirtualKey,
    cfg: &GatewayConfig,
    policy: &ModelPolicy,
) -> Bytes {
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return Bytes::from_static(br#"{"object":"list","data":[]}"#);
    };
    let allowed = |m: &str| {
        let r = policy.resolve_alias(m);
        vk.models
            .iter()
            .any(|a| a == m || a == r || policy.resolve_alias(a) == r)
    };
    let mut seen = std::collections::HashSet::new();
    if let Some(data) = v.get_mut("data").and_then(Value::as_array_mut) {
        data.retain(|m| {
            m.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| allowed(id) && seen.insert(id.to_string()))
        });
        let mut aliases: Vec<&String> = cfg.models.aliases.keys().collect();
        aliases.sort();
        for a in aliases {
            if allowed(a) && seen.insert(a.clone()) {
                data.push(
                    json!({"id": a, "object": "model", "created": 0, "owned_by": "sluice-alias"}),
                );
            }
        }
    } else {
        return Bytes::from_static(br#"{"object":"list","data":[]}"#);
    }
    serde_json::to_vec(&v).map(Bytes::from).unwrap_or_default()
}

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), and the framing ones the
/// server side writes itself.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Whether a header is hop-by-hop: listed above, or named by the message's `Connection`.
fn hop_by_hop(name: &HeaderName, all: &HeaderMap) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
        || all
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(name.as_str()))
}

/// The caller's headers that go upstream: all but hop-by-hop ones, its credentials
/// (`Authorization`, `api-key`: the gateway sends its own), `Host`, `Idempotency-Key` (the
/// engine sends the caller's, the same on every attempt), `Accept-Encoding` (the gateway reads
/// usage from the answer, so the upstream hop stays uncompressed) and sluice's own
/// `x-sluice-*`. `OpenAI-Organization` and `OpenAI-Project` pass unless the upstream config
/// sets its own.
fn passed_request_headers(h: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in h {
        let n = name.as_str();
        if hop_by_hop(name, h)
            || matches!(
                n,
                "authorization" | "api-key" | "host" | "idempotency-key" | "accept-encoding"
            )
            || n.starts_with("x-sluice-")
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The upstream's answer headers that go back to the caller: all but hop-by-hop ones.
fn pass_response_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if hop_by_hop(name, from) || name.as_str().starts_with("x-sluice-") {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

/// What the model policy did, for the caller to see: `x-sluice-model-deprecated` (model;
/// shutdown; replacement), `x-sluice-model-substituted` and `x-sluice-model-fallback`
/// (requested -> sent).
fn sluice_headers(h: &mut HeaderMap, meta: &Meta) {
    if let Some(n) = &meta.deprecation {
        set(h, "x-sluice-model-deprecated", &n.header_value());
    }
    let sent = meta.model.as_deref().unwrap_or("");
    if meta.substituted {
        let from = meta.requested_model.as_deref().unwrap_or("");
        set(
            h,
            "x-sluice-model-substituted",
            &format!("{from} -> {sent}"),
        );
    }
    if let Some(from) = &meta.fallback_from {
        set(h, "x-sluice-model-fallback", &format!("{from} -> {sent}"));
    }
}

/// One structured log line per request, never a secret: emitted when a unary answer is sent,
/// when a stream ends (or its caller leaves), or when the request fails.
#[derive(Debug, Default)]
struct RequestLog {
    caller: String,
    model: String,
    model_sent: Option<String>,
    status: u16,
    attempts: u32,
    request_id: Option<String>,
    upstream_key: Option<String>,
    ttft: Option<std::time::Duration>,
    prompt_tokens: Option<u64>,
    cached_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    cost: Option<Nanos>,
    started: Option<Instant>,
}

impl RequestLog {
    fn answered(&mut self, meta: &Meta) {
        self.status = meta.status;
        self.attempts = meta.attempts;
        self.request_id = meta.request_id.clone();
        self.upstream_key = meta.upstream_key.clone();
        self.ttft = meta.ttft;
        self.model_sent = meta.model.clone().filter(|m| *m != self.model);
    }

    fn usage(&mut self, u: &sluice::Usage) {
        self.prompt_tokens = Some(u.prompt_tokens);
        self.cached_tokens = Some(u.cached_tokens());
        self.completion_tokens = Some(u.completion_tokens);
    }

    /// Log the failure and answer it in OpenAI's shape.
    fn failed(&mut self, e: &Error) -> Response {
        if self.status == 0 {
            self.status = e.status().unwrap_or(0);
        }
        self.attempts = e.attempts();
        self.request_id = e.request_id().map(str::to_string);
        self.emit(Some(e));
        error_response(e)
    }

    fn emit(&self, err: Option<&Error>) {
        tracing::info!(
            target: "sluice::gateway",
            request_id = self.request_id.as_deref(),
            virtual_key = %self.caller,
            model = %self.model,
            model_sent = self.model_sent.as_deref(),
            status = self.status,
            error_kind = err.map(|e| e.kind().as_str()),
            attempts = self.attempts,
            latency_ms = self.started.map_or(0, |s| s.elapsed().as_millis() as u64),
            ttft_ms = self.ttft.map(|d| d.as_millis() as u64),
            prompt_tokens = self.prompt_tokens,
            cached_tokens = self.cached_tokens,
            completion_tokens = self.completion_tokens,
            cost_usd = self.cost.map(dollars_exact).as_deref(),
            upstream_key = self.upstream_key.as_deref(),
            "request"
        );
    }
}

/// A 429 for a caller over its own limits, with the headers an SDK waits on.
fn caller_limited(vk: &VirtualKey, e: &Error) -> Response {
    let wait = e.retry_after().unwrap_or(std::time::Duration::from_secs(1));
    let mut r = openai_error(
        StatusCode::TOO_MANY_REQUESTS,
        &format!(
            "Rate limit reached for the key '{}'. Please try again in {:.3}s.",
            vk.name,
            wait.as_secs_f64()
        ),
        "requests",
        Some("rate_limit_exceeded"),
        None,
    );
    let h = r.headers_mut();
    set(
        h,
        "retry-after",
        &wait.as_secs_f64().ceil().max(1.0).to_string(),
    );
    set(h, "retry-after-ms", &wait.as_millis().max(1).to_string());
    set(h, "x-should-retry", "true");
    if let Some(n) = vk.rpm {
        set(h, "x-ratelimit-limit-requests", &n.to_string());
    }
    if let Some(n) = vk.tpm {
        set(h, "x-ratelimit-limit-tokens", &n.to_string());
    }
    set(
        h,
        "x-ratelimit-reset-requests",
        &format!("{}ms", wait.as_millis().max(1)),
    );
    r
}

/// A usage-only chunk (`choices: []` with a usage object), which the gateway asked for on the
/// caller's behalf.
fn is_usage_chunk(data: &str) -> bool {
    if !sluice::wire::has_usage_object(data) {
        return false;
    }
    serde_json::from_str::<Value>(data).is_ok_and(|v| {
        v.get("choices")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
            && v.get("usage").is_some_and(Value::is_object)
    })
}

/// A stream being passed through, with what is logged when it ends — or when the caller
/// leaves and the stream is dropped (which drops the upstream request too).
struct Passing {
    events: sluice::sse::EventStream,
    log: RequestLog,
    caller_ticket: Option<sluice::admission::Ticket>,
    logged: bool,
}

impl Passing {
    fn finish(&mut self, err: Option<&Error>) {
        if self.logged {
            return;
        }
        self.logged = true;
        if let Some(u) = self.events.usage().cloned() {
            if let Some(mut t) = self.caller_ticket.take() {
                t.settle(u.prompt_tokens + u.completion_tokens, u.completion_tokens);
            }
            self.log.usage(&u);
        }
        self.log.cost = self.events.cost_nanos();
        self.log.emit(err);
    }
}

impl Drop for Passing {
    fn drop(&mut self) {
        if !self.logged {
            // The caller went away mid-stream; dropping `events` cancels the upstream request
            // and settles its cost from what was seen.
            self.events.abandon();
            self.log.status = 499;
            self.logged = true;
            self.log.cost = self.events.cost_nanos();
            tracing::info!(target: "sluice::gateway", virtual_key = %self.log.caller, model = %self.log.model, "caller disconnected mid-stream");
            self.log.emit(None);
        }
    }
}

/// One event as the upstream sent it: its name, id and retry, then its data line by line.
fn sse_event(meta: &sluice::sse::EventMeta, data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 16 + meta.event.len());
    if !meta.event.is_empty() {
        out.push_str("event: ");
        out.push_str(&meta.event);
        out.push('\n');
    }
    if !meta.id.is_empty() {
        out.push_str("id: ");
        out.push_str(&meta.id);
        out.push('\n');
    }
    if let Some(r) = meta.retry {
        out.push_str(&format!("retry: {}\n", r.as_millis()));
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// Pass a stream through, event by event, with `[DONE]` at the end. An upstream failure
/// mid-stream becomes an SSE error event, which the SDKs raise as an API error.
fn stream_response(
    reply: sluice::stack::StreamReply,
    strip_usage: bool,
    log: RequestLog,
    caller_ticket: Option<sluice::admission::Ticket>,
) -> Response {
    let upstream_headers = reply.headers;
    let meta = reply.meta;
    let state = Passing {
        events: reply.events,
        log,
        caller_ticket,
        logged: false,
    };
    let framing = state.events.framing();
    let s = futures_util::stream::unfold((state, false), move |(mut p, done)| async move {
        if done {
            return None;
        }
        loop {
            match p.events.next().await {
                Some(Ok(data)) => {
                    if strip_usage && is_usage_chunk(&data) {
                        continue;
                    }
                    let chunk = Bytes::from(sse_event(p.events.last_meta(), &data));
                    return Some((Ok::<_, std::convert::Infallible>(chunk), (p, false)));
                }
                Some(Err(e)) => {
                    p.finish(Some(&e));
                    let event = if framing == sluice::routes::Stream::Responses {
                        // As the Responses API writes its own error events.
                        let body = json!({"type": "error", "code": e.kind().as_str(),
                            "message": e.message(), "param": null});
                        format!("event: error\ndata: {body}\n\n")
                    } else {
                        let body = json!({"error": {"message": e.message(), "type": "server_error",
                            "param": null, "code": e.kind().as_str()}});
                        format!("data: {body}\n\n")
                    };
                    return Some((Ok(Bytes::from(event)), (p, true)));
                }
                None => {
                    p.finish(None);
                    if framing == sluice::routes::Stream::Chat {
                        return Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), (p, true)));
                    }
                    // Responses and named-event streams end as the upstream ended them.
                    return None;
                }
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(s));
    let h = resp.headers_mut();
    // The upstream's headers arrive before the first event, as they came.
    pass_response_headers(&upstream_headers, h);
    if !h.contains_key(http::header::CONTENT_TYPE) {
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
    }
    if !h.contains_key(http::header::CACHE_CONTROL) {
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
    }
    sluice_headers(h, &meta);
    resp
}
