//! The engine: the one place where the order of concerns is decided. Every request, whichever
//! face sent it (client library, gateway, batch runner), goes through [`Engine::send`] or
//! [`Engine::send_stream`], outer to inner:
//!
//! ```text
//! metrics(request) -> deadline(total) -> model policy(alias, lifecycle, fallback chain)
//!   -> retry(classify, backoff + jitter, retry budget)
//!   -> metrics(attempt) -> key pool(choose by capacity, quarantine, cooldown)
//!   -> admission(RPM + TPM reservation, FIFO wait, adaptive concurrency)
//!   -> transport(pool; connect/first-byte/idle)
//!   -> after the response: rate-limit headers back into admission, reservation settled to usage
//! ```
//!
//! The model policy sits outside the retry loop (unlike the handbook's sketch) because a
//! fallback is a new request for another model with its own retries, not one more attempt of
//! the same. Nothing else decides the order.
//!
//! Why plain composition and not tower layers: a streamed response's permits, deadline and
//! metrics must live until the last chunk or the drop, not until the headers. Holding them in
//! the stream value that owns the body ([`EventStream`]'s owner) is direct; threading them
//! through `Service` futures and body wrappers would hide the same thing behind more types.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use tokio::time::Instant;
use tracing::Instrument;

use crate::admission::estimate::Estimate;
use crate::admission::{Admission, AdmissionConfig, AttemptOutcome, Ticket};
use crate::alerts::{AlertRules, Alerter};
use crate::catalog::Catalog;
use crate::config::RetryPolicy;
use crate::error::{Error, ErrorKind};
use crate::headers::RateLimits;
use crate::keypool::{Chosen, KeyPool, Report};
use crate::model_policy::{rewrite_model, ModelPolicy, Notice};
use crate::observe;
use crate::pricing::Nanos;
use crate::retry::{self, RetryBudget, Wait};
use crate::spend::{Accountant, Charge, SpendConfig, SpendTags};
use crate::sse::EventStream;
use crate::transport::{read_body, Transport, TransportConfig, MAX_BODY};

/// Largest error body kept (they are short; a proxy's HTML page is cut).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Everything the engine needs to be built.
#[derive(Debug)]
pub struct EngineConfig {
    pub base_url: String,
    pub keys: KeyPool,
    pub transport: TransportConfig,
    pub retry: RetryPolicy,
    /// Sent on every request (organization, project, custom headers). Never the key.
    pub headers: HeaderMap,
    /// Client-side rate limits and concurrency; `None` sends without admission.
    pub admission: Option<AdmissionConfig>,
    /// Aliases, lifecycle and fallbacks (default: the shipped registry, retired models
    /// rejected).
    pub models: Arc<ModelPolicy>,
    /// Budgets and the ledger (default: costs computed and counted, no budget, no ledger).
    pub spend: SpendConfig,
    /// Alert rules (default: [`AlertRules::default`], log and metric only).
    pub alerts: AlertRules,
}

/// One logical request, as the engine sees it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    /// Path below the base URL, with its leading slash: `/chat/completions`.
    pub path: String,
    pub body: Option<Bytes>,
    /// Metric label: `chat`, `embeddings`, `completions`, `models`, `other`.
    pub endpoint: &'static str,
    pub model: Option<String>,
    /// Tokens the upstream will charge for this request (see `admission::estimate`).
    pub estimate: Option<Estimate>,
    pub options: RequestOptions,
}

/// Per-request settings that override the client's.
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    /// Sent as `Idempotency-Key` on every attempt. Default: a fresh random key per request.
    pub idempotency_key: Option<String>,
    /// Total deadline for this request, instead of the client's.
    pub timeout: Option<Duration>,
    /// Attempts for this request, instead of the client's.
    pub max_attempts: Option<u32>,
    /// Whose spend this is (budgets and the ledger's scope).
    pub spend: SpendTags,
    /// Sent with this request: a gateway caller's headers (content type, `OpenAI-Beta`, custom
    /// ones). Headers the engine sets from its configuration (organization, project, custom)
    /// win; `Authorization` and `Idempotency-Key` are always the engine's.
    pub headers: HeaderMap,
    /// A body sent as it arrives instead of `Call::body` (a large upload): it can be sent
    /// once, so the request is not retried after it has gone.
    pub upload: Option<SharedUpload>,
}

/// A one-shot request body shared by the clones of a [`Call`]: the first attempt takes it.
#[derive(Clone, Default)]
pub struct SharedUpload(Arc<std::sync::Mutex<Option<crate::transport::Upload>>>);

impl SharedUpload {
    pub fn new(body: crate::transport::Upload) -> Self {
        SharedUpload(Arc::new(std::sync::Mutex::new(Some(body))))
    }

    fn take(&self) -> Option<crate::transport::Upload> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl std::fmt::Debug for SharedUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedUpload")
    }
}

/// What is known about a request once it has an answer.
#[derive(Debug, Clone)]
pub struct Meta {
    pub status: u16,
    /// The upstream `x-request-id`.
    pub request_id: Option<String>,
    pub rate_limits: RateLimits,
    pub attempts: u32,
    /// From the start of the logical request to the full answer (for streams: to the first
    /// event; the stream reports its total at the end).
    pub latency: Duration,
    /// Time to first streamed event (streams only).
    pub ttft: Option<Duration>,
    pub idempotency_key: String,
    /// The model sent (after alias, substitution or fallback).
    pub model: Option<String>,
    /// The model the caller named, when a different one was sent.
    pub requested_model: Option<String>,
    /// A retired model's replacement was sent instead (policy `substitute`).
    pub substituted: bool,
    /// The model that answered `model_not_found` before a fallback answered.
    pub fallback_from: Option<String>,
    /// The named model is deprecated or retired.
    pub deprecation: Option<Notice>,
    /// What the answer cost (unary answers with usage and a known price; a stream reports
    /// its cost when it ends).
    pub cost_nanos: Option<Nanos>,
    /// The pool position of the upstream key that answered (`key-2`), never the key.
    pub upstream_key: Option<String>,
}

impl Meta {
    /// What an attempt's response headers say; attempts and latency are filled in later.
    fn answered(
        status: u16,
        request_id: Option<String>,
        rate_limits: RateLimits,
        ctx: &Ctx<'_>,
    ) -> Self {
        Meta {
            status,
            request_id,
            rate_limits,
            attempts: 0,
            latency: Duration::ZERO,
            ttft: None,
            idempotency_key: ctx.idempotency_key.clone(),
            model: ctx.call.model.clone(),
            requested_model: None,
            substituted: false,
            fallback_from: None,
            deprecation: None,
            cost_nanos: None,
            upstream_key: None,
        }
    }

    fn routed(&mut self, r: Routed) {
        self.attempts = r.attempts;
        if let Some(route) = r.route {
            if route.requested != route.model || r.fallback_from.is_some() {
                self.requested_model = Some(route.requested);
            }
            self.substituted = route.substituted;
            self.deprecation = route.notice;
        }
        self.fallback_from = r.fallback_from;
    }
}

/// How the model policy routed a request that got an answer.
struct Routed {
    attempts: u32,
    route: Option<crate::model_policy::Route>,
    fallback_from: Option<String>,
}

impl Call {
    /// The same request for another model.
    fn with_model(&self, model: &str) -> Result<Call, Error> {
        let mut c = self.clone();
        if let Some(b) = &self.body {
            c.body = Some(rewrite_model(b, model)?);
        }
        c.model = Some(model.to_string());
        Ok(c)
    }
}

/// A complete answer.
#[derive(Debug)]
pub struct Reply {
    pub body: Bytes,
    pub headers: HeaderMap,
    pub meta: Meta,
    /// Usage and finish reasons read from the body (once, for admission and for callers).
    pub facts: BodyFacts,
}

/// What the engine reads from a JSON answer: the rest is passed through untouched.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct BodyFacts {
    /// The counts only (`extra` maps left empty); the body has every field.
    #[serde(default, deserialize_with = "crate::wire::usage_counts")]
    pub usage: Option<crate::wire::Usage>,
    #[serde(default)]
    pub choices: Vec<ChoiceFacts>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ChoiceFacts {
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// A 2xx answer's headers, what let it through, and what they said about limits (read once).
struct Opened {
    resp: crate::transport::Response,
    admitted: Option<Admitted>,
    key_label: String,
    rate_limits: RateLimits,
}

/// A streaming answer whose first event has arrived.
#[derive(Debug)]
pub struct StreamReply {
    pub events: EventStream,
    pub headers: HeaderMap,
    pub meta: Meta,
    pub started: Instant,
    pub span: tracing::Span,
}

/// The shared engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    transport: Transport,
    keys: KeyPool,
    timeouts: crate::config::Timeouts,
    retry: RetryPolicy,
    budget: RetryBudget,
    headers: HeaderMap,
    admission: Option<Arc<Admission>>,
    models: Arc<ModelPolicy>,
    spend: Arc<Accountant>,
    alerts: Arc<Alerter>,
    counters: Counters,
    catalog: Catalog,
}

/// Running totals a face can show a person (progress lines, summaries).
#[derive(Debug, Default)]
pub struct Counters {
    /// 429 responses received from the upstream.
    pub rate_limited: std::sync::atomic::AtomicU64,
    /// Attempts after the first.
    pub retries: std::sync::atomic::AtomicU64,
}

struct Ctx<'a> {
    call: &'a Call,
    deadline: Instant,
    started: Instant,
    idempotency_key: String,
    max_attempts: u32,
    /// The budget reservation of this request, taken by the attempt that succeeds.
    charge: std::sync::Mutex<Option<Charge>>,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Result<Self, Error> {
        observe::describe();
        // The model label takes the names the registry and the configuration know.
        let policy = cfg.models.config();
        observe::know_models(
            cfg.models
                .registry()
                .names()
                .chain(
                    policy
                        .aliases
                        .iter()
                        .flat_map(|(a, t)| [a.as_str(), t.as_str()]),
                )
                .chain(policy.fallbacks.iter().flat_map(|(f, c)| {
                    std::iter::once(f.as_str()).chain(c.iter().map(String::as_str))
                })),
        );
        let transport = Transport::new(&cfg.base_url, &cfg.transport)?;
        let alerts = Arc::new(Alerter::new(cfg.alerts));
        Ok(Engine {
            inner: Arc::new(Inner {
                transport,
                keys: cfg.keys,
                timeouts: cfg.transport.timeouts,
                budget: RetryBudget::new(&cfg.retry),
                retry: cfg.retry,
                headers: cfg.headers,
                admission: cfg.admission.filter(|a| a.enabled).map(Admission::new),
                spend: Arc::new(
                    Accountant::new(cfg.models.registry().clone(), cfg.spend)
                        .with_alerts(alerts.clone()),
                ),
                alerts,
                models: cfg.models,
                counters: Counters::default(),
                catalog: Catalog::default(),
            }),
        })
    }

    pub fn base_url(&self) -> &str {
        self.inner.transport.base_url()
    }

    /// 429s seen and retries made so far.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// The admission stage, when enabled.
    pub fn admission(&self) -> Option<&Arc<Admission>> {
        self.inner.admission.as_ref()
    }

    /// The model policy (registry, aliases, fallbacks).
    pub fn models(&self) -> &Arc<ModelPolicy> {
        &self.inner.models
    }

    /// The alerting stage.
    pub fn alerts(&self) -> &Arc<Alerter> {
        &self.inner.alerts
    }

    /// What the upstream's model list says, and the models in use.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// Budgets, ledger and prices.
    pub fn spend(&self) -> &Arc<Accountant> {
        &self.inner.spend
    }

    /// The retry budget's balance (diagnostics).
    pub fn retry_budget_balance(&self) -> f64 {
        self.inner.budget.balance()
    }

    fn ctx<'a>(&self, call: &'a Call) -> Ctx<'a> {
        let started = Instant::now();
        let total = call.options.timeout.unwrap_or(self.inner.timeouts.total);
        Ctx {
            call,
            deadline: started + total,
            started,
            idempotency_key: call
                .options
                .idempotency_key
                .clone()
                .unwrap_or_else(|| format!("sluice-{:032x}", rand::random::<u128>())),
            max_attempts: call
                .options
                .max_attempts
                .unwrap_or(self.inner.retry.max_attempts)
                .max(1),
            charge: std::sync::Mutex::new(None),
        }
    }

    fn span(call: &Call, ctx: &Ctx<'_>) -> tracing::Span {
        tracing::info_span!(
            "sluice.request",
            endpoint = call.endpoint,
            model = call.model.as_deref().unwrap_or(""),
            idempotency_key = %ctx.idempotency_key,
            request_id = tracing::field::Empty,
            attempts = tracing::field::Empty,
            status = tracing::field::Empty,
            error_kind = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
            ttft_ms = tracing::field::Empty,
            prompt_tokens = tracing::field::Empty,
            completion_tokens = tracing::field::Empty,
        )
    }

    /// Send a request and read the whole answer.
    pub async fn send(&self, call: Call) -> Result<Reply, Error> {
        let ctx = self.ctx(&call);
        let span = Self::span(&call, &ctx);
        let result = async {
            self.inner.budget.deposit();
            self.routed(&ctx, Unary).await.map(|(mut reply, routed)| {
                reply.meta.routed(routed);
                reply.meta.latency = ctx.started.elapsed();
                reply
            })
        }
        .instrument(span.clone())
        .await;
        finish(&call, &span, ctx.started, result.as_ref().map(|r| &r.meta));
        if let Ok(r) = &result {
            let model = call.model.as_deref().unwrap_or("");
            if let Some(u) = &r.facts.usage {
                observe::usage(model, u);
            }
        }
        let reasons: Vec<&str> = result
            .as_ref()
            .map(|r| {
                r.facts
                    .choices
                    .iter()
                    .filter_map(|c| c.finish_reason.as_deref())
                    .collect()
            })
            .unwrap_or_default();
        if let Ok(r) = &result {
            observe::finish_reason_strs(
                call.model.as_deref().unwrap_or(""),
                r.meta.request_id.as_deref(),
                &reasons,
            );
        }
        let kind = result.as_ref().err().map(|e| e.kind().as_str());
        self.inner
            .alerts
            .request(kind, ctx.started.elapsed(), &reasons);
        result
    }

    /// Send a streaming request. Returns once the first event has arrived: failures before it
    /// are retried like any other; after it, the stream is the caller's and is never retried
    /// (that would repeat content the caller has already seen).
    pub async fn send_stream(&self, call: Call) -> Result<StreamReply, Error> {
        let ctx = self.ctx(&call);
        let span = Self::span(&call, &ctx);
        let result = async {
            self.inner.budget.deposit();
            self.routed(&ctx, Streamed)
                .await
                .map(|(mut reply, routed)| {
                    reply.meta.routed(routed);
                    reply
                })
        }
        .instrument(span.clone())
        .await;
        match result {
            Ok(mut r) => {
                span.record("attempts", r.meta.attempts);
                span.record("status", r.meta.status);
                if let Some(id) = &r.meta.request_id {
                    span.record("request_id", id.as_str());
                }
                let ttft = ctx.started.elapsed();
                r.meta.ttft = Some(ttft);
                r.meta.latency = ttft;
                span.record("ttft_ms", ttft.as_millis() as u64);
                observe::ttft(call.model.as_deref().unwrap_or(""), ttft);
                r.started = ctx.started;
                r.span = span;
                r.events.watch(
                    self.inner.alerts.clone(),
                    ctx.started,
                    call.endpoint,
                    call.model.as_deref().unwrap_or(""),
                );
                Ok(r)
            }
            Err(e) => {
                finish(&call, &span, ctx.started, Err(&e));
                self.inner
                    .alerts
                    .request(Some(e.kind().as_str()), ctx.started.elapsed(), &[]);
                Err(e)
            }
        }
    }

    /// The model policy around the retry loop: resolve the alias, apply the lifecycle policy,
    /// and on `model_not_found` move along the fallback chain (each model its own retries,
    /// all within the one deadline).
    async fn routed<A: AttemptKind>(
        &self,
        ctx: &Ctx<'_>,
        _kind: A,
    ) -> Result<(A::Out, Routed), Error> {
        let Some(requested) = ctx.call.model.as_deref() else {
            let (v, attempts) = self.with_retries(ctx, || A::run(self, ctx)).await?;
            let routed = Routed {
                attempts,
                route: None,
                fallback_from: None,
            };
            return Ok((v, routed));
        };
        let policy = &self.inner.models;
        let route = policy.route(requested)?;
        if let Some(n) = &route.notice {
            self.inner
                .alerts
                .deprecated_model(&n.model, &n.header_value());
        }
        let mut call = if route.model == requested {
            std::borrow::Cow::Borrowed(ctx.call)
        } else {
            std::borrow::Cow::Owned(ctx.call.with_model(&route.model)?)
        };
        let chain = policy.fallbacks(&route.model);
        let mut attempts = 0;
        let mut fallback_from = None;
        // 0: the routed model; n: the n-th model of its fallback chain.
        let mut pos = 0usize;
        loop {
            let here = Ctx {
                call: &call,
                deadline: ctx.deadline,
                started: ctx.started,
                // A fallback is another request body: it gets its own idempotency key.
                idempotency_key: match pos {
                    0 => ctx.idempotency_key.clone(),
                    n => format!("{}-fallback{n}", ctx.idempotency_key),
                },
                max_attempts: ctx.max_attempts,
                charge: std::sync::Mutex::new(Some(self.reserve(&call, ctx.deadline).await?)),
            };
            let outcome = self.with_retries(&here, || A::run(self, &here)).await;
            drop(here);
            match outcome {
                Ok((v, n)) => {
                    if let Some(m) = call.model.as_deref() {
                        self.inner.catalog.answered(m);
                    }
                    let routed = Routed {
                        attempts: attempts + n,
                        route: Some(route),
                        fallback_from,
                    };
                    return Ok((v, routed));
                }
                Err(mut e) => {
                    attempts += e.attempts();
                    e.set_attempts(attempts);
                    if e.kind() == ErrorKind::ModelNotFound {
                        if let Some(m) = call.model.as_deref() {
                            self.inner
                                .catalog
                                .not_found(m, policy.registry(), policy.today());
                        }
                    }
                    let next = match chain.get(pos) {
                        Some(next) if e.kind() == ErrorKind::ModelNotFound => next,
                        _ => return Err(e),
                    };
                    let from = call.model.clone().unwrap_or_default();
                    tracing::warn!(model = %from, fallback = %next, "model_not_found: trying the next model of the fallback chain");
                    observe::model_fallback(&from, next);
                    fallback_from.get_or_insert(from);
                    call = std::borrow::Cow::Owned(ctx.call.with_model(next)?);
                    pos += 1;
                }
            }
        }
    }

    /// The worst case of `call`, reserved against the budgets that apply to it.
    async fn reserve(&self, call: &Call, deadline: Instant) -> Result<Charge, Error> {
        let est = call.estimate.unwrap_or_default();
        let hold = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(60);
        self.inner
            .spend
            .reserve(
                call.model.as_deref().unwrap_or(""),
                &call.options.spend,
                est.prompt,
                est.output,
                hold,
            )
            .await
    }

    /// The retry loop: attempt, classify, wait (server's wait or full jitter), within the
    /// deadline and the retry budget.
    async fn with_retries<T, F, Fut>(
        &self,
        ctx: &Ctx<'_>,
        mut attempt: F,
    ) -> Result<(T, u32), Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let endpoint = ctx.call.endpoint;
        let mut n = 0u32;
        loop {
            n += 1;
            observe::attempt(endpoint);
            let outcome = tokio::time::timeout_at(ctx.deadline, attempt()).await;
            let mut err = match outcome {
                Ok(Ok(v)) => return Ok((v, n)),
                Ok(Err(e)) => e,
                Err(_) => Error::new(
                    ErrorKind::TimeoutTotal,
                    "the request's total deadline passed",
                ),
            };
            err.set_attempts(n);
            if !err.is_retryable() || n >= ctx.max_attempts {
                return Err(err);
            }
            let wait = retry::wait_after(&self.inner.retry, &err, n);
            let left = ctx.deadline.saturating_duration_since(Instant::now());
            if wait.duration() >= left {
                // Never sleep past the deadline: fail now, with the wait the server asked for.
                tracing::warn!(
                    attempt = n,
                    kind = err.kind().as_str(),
                    wait_ms = wait.duration().as_millis() as u64,
                    left_ms = left.as_millis() as u64,
                    "not retrying: the wait would pass the deadline"
                );
                return Err(err);
            }
            if !self.inner.budget.try_withdraw() {
                observe::retry_budget_exhausted(endpoint);
                tracing::warn!(
                    attempt = n,
                    kind = err.kind().as_str(),
                    "not retrying: retry budget exhausted"
                );
                return Err(err);
            }
            observe::retry(endpoint, err.kind().as_str());
            self.inner
                .counters
                .retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                attempt = n,
                kind = err.kind().as_str(),
                wait_ms = wait.duration().as_millis() as u64,
                server_wait = matches!(wait, Wait::Server(_)),
                "retrying"
            );
            tokio::time::sleep(wait.duration()).await;
        }
    }

    fn attempt_headers(
        &self,
        ctx: &Ctx<'_>,
        key: &crate::secret::SecretString,
        stream: bool,
    ) -> Result<HeaderMap, Error> {
        let mut h = self.inner.headers.clone();
        let mut last: Option<&HeaderName> = None;
        for (name, value) in &ctx.call.options.headers {
            if self.inner.headers.contains_key(name) {
                continue;
            }
            // The first value replaces, the others of the same name are appended.
            if last == Some(name) {
                h.append(name.clone(), value.clone());
            } else {
                h.insert(name.clone(), value.clone());
            }
            last = Some(name);
        }
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                Error::new(
                    ErrorKind::Config,
                    format!(
                        "the API key from {} has characters a header cannot carry",
                        self.inner.keys.describe()
                    ),
                )
            })?;
        auth.set_sensitive(true);
        h.insert(http::header::AUTHORIZATION, auth);
        if let Ok(v) = HeaderValue::from_str(&ctx.idempotency_key) {
            h.insert(HeaderName::from_static("idempotency-key"), v);
        }
        if ctx.call.body.is_some() && !h.contains_key(http::header::CONTENT_TYPE) {
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        if stream && !h.contains_key(http::header::ACCEPT) {
            h.insert(
                http::header::ACCEPT,
                HeaderValue::from_static("text/event-stream"),
            );
        }
        Ok(h)
    }

    /// A key from the pool; when every usable key is cooling down, wait for the first one back
    /// (within the deadline).
    async fn choose_key(&self, ctx: &Ctx<'_>) -> Result<Chosen, Error> {
        loop {
            match self.inner.keys.choose()? {
                Ok(c) => return Ok(c),
                Err(wait) => {
                    let left = ctx.deadline.saturating_duration_since(Instant::now());
                    if wait >= left {
                        return Err(Error::new(
                            ErrorKind::RateLimitedRequests,
                            format!(
                                "every API key is cooling down after 429s for {:.3}s more",
                                wait.as_secs_f64()
                            ),
                        )
                        .with_retry_after(Some(wait)));
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Tell the key pool how the upstream treated the key; with another key available, a
    /// rejected or rate-limited attempt is retried at once on it.
    fn report_key(&self, chosen: &Chosen, err: Error) -> Error {
        let kind = err.kind();
        let what = match kind {
            ErrorKind::Authentication | ErrorKind::PermissionDenied | ErrorKind::QuotaExhausted => {
                Report::Rejected
            }
            k if k.is_rate_limited() => Report::RateLimited(err.retry_after()),
            _ => return err,
        };
        self.inner.keys.report(chosen, what);
        if matches!(what, Report::Rejected) {
            self.inner
                .alerts
                .key_quarantined(&chosen.label, kind.as_str());
        }
        // Another key may be a second one in the pool, or this source's new value after a
        // rotation that happened while the attempt was on its way.
        if self.inner.keys.another_available(chosen.id) {
            tracing::info!(key = %chosen.label, kind = kind.as_str(), "moving the request to another key");
            err.with_retry_now()
        } else {
            err
        }
    }

    /// The admission scope of a key and model: a hash of the upstream and key (never the key
    /// itself), and the model when limits are per model.
    fn scope(&self, key: &crate::secret::SecretString, model: &str) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self
            .inner
            .transport
            .base_url()
            .bytes()
            .chain([0u8])
            .chain(key.expose().bytes())
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let per_model = self
            .inner
            .admission
            .as_ref()
            .is_some_and(|a| a.config().per_model);
        if per_model {
            format!("{h:016x}:{model}")
        } else {
            format!("{h:016x}")
        }
    }

    /// Admission, then the request until its headers; error statuses become errors here.
    /// Returns the response and the admission ticket that must live as long as its body.
    async fn open(&self, ctx: &Ctx<'_>, stream: bool) -> Result<Opened, Error> {
        let chosen = self.choose_key(ctx).await?;
        let key = chosen.key.clone();
        let headers = self.attempt_headers(ctx, &key, stream)?;
        let model = ctx.call.model.as_deref().unwrap_or("");
        let admitted = match &self.inner.admission {
            Some(a) => {
                let scope = self.scope(&key, model);
                let est = ctx.call.estimate.unwrap_or_default();
                let ticket = a.admit(&scope, model, est, ctx.deadline).await?;
                Some(Admitted {
                    admission: a.clone(),
                    scope,
                    ticket,
                })
            }
            None => None,
        };
        let payload = match &ctx.call.options.upload {
            None => crate::transport::Payload::Bytes(ctx.call.body.clone()),
            Some(u) => match u.take() {
                Some(b) => crate::transport::Payload::Stream(b),
                None => {
                    let e = Error::new(
                        ErrorKind::Connection,
                        "the upload went with an earlier attempt and cannot be sent again",
                    );
                    if let Some(a) = admitted {
                        a.fail(&e);
                    }
                    return Err(e);
                }
            },
        };
        let sent = self
            .inner
            .transport
            .send(
                ctx.call.method.clone(),
                &ctx.call.path,
                headers,
                payload,
                self.inner.timeouts.first_byte,
                ctx.deadline,
            )
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                if let Some(a) = admitted {
                    a.fail(&e);
                }
                return Err(e);
            }
        };
        let status = resp.status().as_u16();
        let rl = RateLimits::from_headers(resp.headers());
        if (200..300).contains(&status) {
            self.inner.keys.report(&chosen, Report::Answered(&rl));
            self.inner.alerts.remaining(&chosen.label, &rl);
            if let Some(a) = &admitted {
                a.admission.observe(&a.scope, model, &rl, None).await;
            }
            return Ok(Opened {
                resp,
                admitted,
                key_label: chosen.label,
                rate_limits: rl,
            });
        }
        let headers = resp.headers().clone();
        let body = read_body(resp, self.inner.timeouts.idle, ctx.deadline, MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        let mut err = Error::from_response(status, &headers, &body);
        if status == 429 {
            self.inner
                .counters
                .rate_limited
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        err = self.report_key(&chosen, err);
        if let Some(a) = admitted {
            let limited = err
                .kind()
                .is_rate_limited()
                .then(|| (err.kind(), err.retry_after()));
            a.admission.observe(&a.scope, model, &rl, limited).await;
            a.fail(&err);
        }
        Err(err)
    }

    async fn attempt_unary(&self, ctx: &Ctx<'_>) -> Result<Reply, Error> {
        let Opened {
            resp,
            admitted,
            key_label,
            rate_limits,
        } = self.open(ctx, false).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let request_id = request_id(&headers);
        let body = match read_body(resp, self.inner.timeouts.idle, ctx.deadline, MAX_BODY).await {
            Ok(b) => b,
            Err(e) => {
                if let Some(a) = admitted {
                    a.fail(&e);
                }
                return Err(e.with_request_id(request_id));
            }
        };
        let facts = serde_json::from_slice::<BodyFacts>(&body).unwrap_or_default();
        if let Some(mut a) = admitted {
            if let Some(u) = &facts.usage {
                let used = if u.total_tokens > 0 {
                    u.total_tokens
                } else {
                    u.prompt_tokens + u.completion_tokens
                };
                a.ticket.settle(used, u.completion_tokens);
            }
            let latency = a.ticket.elapsed();
            a.ticket.finish(AttemptOutcome::Success(latency));
        }
        let mut meta = Meta::answered(status, request_id, rate_limits, ctx);
        meta.upstream_key = Some(key_label);
        if let Some(charge) = ctx.take_charge() {
            let priced = charge.price().is_some();
            let cost = match &facts.usage {
                Some(u) => charge.settle(u),
                None => charge.settle(&crate::wire::Usage::default()),
            };
            meta.cost_nanos = priced.then_some(cost);
        }
        Ok(Reply {
            body,
            meta,
            headers,
            facts,
        })
    }

    async fn attempt_stream(&self, ctx: &Ctx<'_>) -> Result<StreamReply, Error> {
        let Opened {
            resp,
            admitted,
            key_label,
            rate_limits,
        } = self.open(ctx, true).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let request_id = request_id(&headers);
        let mut events = EventStream::new(resp, self.inner.timeouts.idle, ctx.deadline);
        // How the stream ends: Responses API streams at their terminal event, no `[DONE]`.
        events.set_framing(match ctx.call.endpoint {
            "responses" => crate::routes::Stream::Responses,
            "chat" | "completions" => crate::routes::Stream::Chat,
            _ => crate::routes::Stream::Events,
        });
        if let Some(a) = admitted {
            events.attach(a.ticket);
        }

        // Wait for the first event inside the attempt, so a failure before any content is
        // retried like a failed request.
        match events.next().await {
            Some(Ok(first)) => events.unread(first),
            Some(Err(e)) => return Err(e.with_request_id(request_id)),
            None => {}
        }
        // Only now is the stream the caller's: a failed first event leaves the reservation to
        // the next attempt.
        if let Some(charge) = ctx.take_charge() {
            let prompt = ctx.call.estimate.map_or(0, |e| e.prompt);
            events.attach_charge(charge, prompt);
        }
        let mut meta = Meta::answered(status, request_id, rate_limits, ctx);
        meta.upstream_key = Some(key_label);
        Ok(StreamReply {
            events,
            meta,
            headers,
            started: ctx.started,
            span: tracing::Span::none(),
        })
    }
}

impl Ctx<'_> {
    fn take_charge(&self) -> Option<Charge> {
        self.charge.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// One attempt of a unary or a streamed request (what the retry loop repeats).
trait AttemptKind {
    type Out;
    fn run<'a>(
        engine: &'a Engine,
        ctx: &'a Ctx<'a>,
    ) -> impl Future<Output = Result<Self::Out, Error>> + Send + 'a;
}

struct Unary;
struct Streamed;

impl AttemptKind for Unary {
    type Out = Reply;
    fn run<'a>(
        engine: &'a Engine,
        ctx: &'a Ctx<'a>,
    ) -> impl Future<Output = Result<Reply, Error>> + Send + 'a {
        engine.attempt_unary(ctx)
    }
}

impl AttemptKind for Streamed {
    type Out = StreamReply;
    fn run<'a>(
        engine: &'a Engine,
        ctx: &'a Ctx<'a>,
    ) -> impl Future<Output = Result<StreamReply, Error>> + Send + 'a {
        engine.attempt_stream(ctx)
    }
}

/// An admitted attempt in progress.
struct Admitted {
    admission: Arc<Admission>,
    scope: String,
    ticket: Ticket,
}

impl Admitted {
    /// The attempt failed: nothing was generated, so the token reservation is given back, and
    /// the concurrency limiter hears whether it looked like overload.
    fn fail(mut self, e: &Error) {
        self.ticket.settle(0, 0);
        self.ticket.finish(outcome_of(e));
    }
}

/// How an attempt's failure reads to the concurrency limiter.
pub(crate) fn outcome_of(e: &Error) -> AttemptOutcome {
    match e.kind() {
        ErrorKind::RateLimitedRequests
        | ErrorKind::RateLimitedTokens
        | ErrorKind::TimeoutConnect
        | ErrorKind::TimeoutFirstByte
        | ErrorKind::TimeoutIdle => AttemptOutcome::Overload,
        ErrorKind::ServerError if e.status() == Some(503) => AttemptOutcome::Overload,
        _ => AttemptOutcome::Neutral,
    }
}

fn request_id(h: &HeaderMap) -> Option<String> {
    h.get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Record the end of a logical request in metrics and its span.
fn finish(call: &Call, span: &tracing::Span, started: Instant, outcome: Result<&Meta, &Error>) {
    let latency = started.elapsed();
    let model = call.model.as_deref().unwrap_or("");
    span.record("latency_ms", latency.as_millis() as u64);
    match outcome {
        Ok(meta) => {
            span.record("attempts", meta.attempts);
            span.record("status", meta.status);
            if let Some(id) = &meta.request_id {
                span.record("request_id", id.as_str());
            }
            observe::request_done(call.endpoint, model, "ok", latency);
        }
        Err(e) => {
            span.record("attempts", e.attempts());
            span.record("error_kind", e.kind().as_str());
            if let Some(s) = e.status() {
                span.record("status", s);
            }
            if let Some(id) = e.request_id() {
                span.record("request_id", id);
            }
            observe::request_done(call.endpoint, model, e.kind().as_str(), latency);
            span.in_scope(|| {
                tracing::warn!(kind = e.kind().as_str(), attempts = e.attempts(), error = %e, "request failed");
            });
        }
    }
}

/// Record the end of a stream that was handed to the caller in its span and log (its metrics
/// are the stream's own, recorded once when it ends: [`EventStream::watch`]).
pub(crate) fn finish_stream(span: &tracing::Span, started: Instant, outcome: Result<(), &Error>) {
    let latency = started.elapsed();
    span.record("latency_ms", latency.as_millis() as u64);
    if let Err(e) = outcome {
        span.record("error_kind", e.kind().as_str());
        span.in_scope(|| tracing::warn!(kind = e.kind().as_str(), error = %e, "stream failed"));
    }
}
