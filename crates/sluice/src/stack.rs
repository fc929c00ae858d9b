//! The engine: the one place where the order of concerns is decided. Every request, whichever
//! face sent it (client library, gateway, batch runner), goes through [`Engine::send`] or
//! [`Engine::send_stream`], outer to inner:
//!
//! ```text
//! request end(metrics, alerts, settlement, log: request_end.rs) -> deadline(total)
//!   -> model policy(alias, lifecycle, fallback chain)
//!   -> budget reservation(worst case, per model of the chain: spend/)
//!   -> retry(classify, backoff + jitter, retry budget: retry.rs)
//!   -> metrics(attempt) -> key pool(choose by capacity; one outcome per attempt: keypool.rs)
//!   -> admission(RPM + TPM reservation, FIFO wait, adaptive concurrency: admission/)
//!   -> transport(pool; connect/first-byte/idle: transport.rs)
//!   -> after the response: rate-limit headers back into admission and the key pool; the
//!      reservations settled to usage when the answer (or the stream) ends
//! ```
//!
//! The model policy sits outside the retry loop (unlike the handbook's sketch) because a
//! fallback is a new request for another model with its own retries, not one more attempt of
//! the same. Nothing else decides the order; each concern is its own module.
//!
//! Why plain composition and not tower layers: a streamed response's permits, deadline and
//! metrics must live until the last chunk or the drop, not until the headers. Holding them in
//! the stream value that owns the body ([`crate::EventStream`], through its
//! [`crate::request_end::RequestEnd`]) is direct; threading them through `Service` futures and
//! body wrappers would hide the same thing behind more types.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use http::HeaderMap;
use tokio::time::Instant;
use tracing::Instrument;

use crate::admission::{self, Admission, AdmissionConfig, Ticket};
use crate::alerts::{AlertRules, Alerter};
use crate::call::{Call, Meta, Reply, Routed, StreamReply};
use crate::catalog::Catalog;
use crate::config::RetryPolicy;
use crate::error::{Error, ErrorKind};
use crate::event_stream::EventStream;
use crate::headers::RateLimits;
use crate::model_policy::ModelPolicy;
use crate::observe;
use crate::request_end::{Ended, Request, RequestEnd};
use crate::request_headers::AttemptHeaders;
use crate::retry::{Retries, RetryBudget};
use crate::spend::{Accountant, Charge, SpendConfig};
use crate::transport::{read_body, TransportConfig, MAX_BODY};

/// Largest error body kept (they are short; a proxy's HTML page is cut).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Everything the engine needs to be built.
#[derive(Debug)]
pub struct EngineConfig {
    /// Where requests go: one or more upstreams (see [`crate::upstreams`]).
    pub upstreams: Vec<crate::upstreams::UpstreamConfig>,
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
    /// Each upstream's circuit breaker (default on: see [`crate::breaker`]).
    pub breaker: crate::breaker::BreakerConfig,
    /// The engine this one replaces (a gateway reload): upstreams with the same name, URL and
    /// breaker settings keep their breaker's state.
    pub replaces: Option<Engine>,
}

/// The shared engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    upstreams: crate::upstreams::Upstreams,
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

/// A 429 that asks for at least this long a wait sends the next attempt to another upstream
/// (when one serves the model) instead of waiting for this one.
const FAILOVER_AFTER_429_WAIT: Duration = Duration::from_secs(1);

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
    /// The caller's, or one made for this request (`sluice-` and 32 hex digits).
    idempotency_key: std::borrow::Cow<'a, str>,
    max_attempts: u32,
    /// The budget reservation of this request, taken by the attempt that succeeds.
    charge: std::sync::Mutex<Option<Charge>>,
    /// The upstreams (by index) an attempt of this request failed on: the next goes elsewhere.
    failed_on: std::sync::Mutex<Vec<usize>>,
    /// The attempt's wait has a timer of its own (see [`crate::retry::Covered`]).
    covered: std::sync::atomic::AtomicBool,
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
        let alerts = Arc::new(Alerter::new(cfg.alerts));
        let carried = cfg
            .replaces
            .as_ref()
            .map(|e| e.inner.upstreams.breakers())
            .unwrap_or_default();
        let upstreams = crate::upstreams::Upstreams::new(
            cfg.upstreams,
            &cfg.transport,
            cfg.breaker,
            &alerts,
            &carried,
        )?;
        let shared_health = match cfg
            .admission
            .as_ref()
            .filter(|a| a.enabled)
            .map(|a| &a.state)
        {
            Some(admission::StateBackend::Redis { url, prefix, .. }) => {
                Some((url.clone(), prefix.clone(), upstreams.health_targets()))
            }
            _ => None,
        };
        let engine = Engine {
            inner: Arc::new(Inner {
                upstreams,
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
        };
        // Replicas that share the quota share what they learn of upstream health too.
        if let Some((url, prefix, targets)) = shared_health {
            crate::shared_health::start(&url, &prefix, targets, Arc::downgrade(&engine.inner));
        }
        Ok(engine)
    }

    pub fn base_url(&self) -> &str {
        self.inner.upstreams.first().transport.base_url()
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

    /// The most a request for `model` can cost per million tokens: the highest price among
    /// the upstreams that serve it (each its own `prices`, else the registry's), or the
    /// registry's when none serves that exact name (an answer's dated snapshot of a served
    /// alias); `None`: no price is known, so no budget can hold over it.
    pub fn price(&self, model: &str) -> Option<crate::pricing::Price> {
        let registry = self.inner.models.registry();
        self.inner
            .upstreams
            .worst_price(model, registry)
            .or_else(|| registry.price(model))
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
            idempotency_key: match &call.options.idempotency_key {
                Some(k) => std::borrow::Cow::Borrowed(k.as_str()),
                None => {
                    let mut k = String::with_capacity(39);
                    k.push_str("sluice-");
                    crate::hex::push(&mut k, rand::random::<u128>(), 32);
                    std::borrow::Cow::Owned(k)
                }
            },
            max_attempts: call
                .options
                .max_attempts
                .unwrap_or(self.inner.retry.max_attempts)
                .max(1),
            charge: std::sync::Mutex::new(None),
            failed_on: std::sync::Mutex::new(Vec::new()),
            covered: std::sync::atomic::AtomicBool::new(false),
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

    /// What the request's end reports for (see [`RequestEnd`]).
    /// Its texts are borrowed from the call and the answer (see [`Request::into_owned`]).
    fn request<'a>(
        &self,
        ctx: &'a Ctx<'_>,
        span: tracing::Span,
        meta: Option<&'a Meta>,
    ) -> Request<'a> {
        if let Some(m) = meta {
            span.record("attempts", m.attempts);
            span.record("status", m.status);
            if let Some(id) = &m.request_id {
                span.record("request_id", id.as_str());
            }
        }
        Request {
            alerts: self.inner.alerts.clone(),
            started: ctx.started,
            endpoint: ctx.call.endpoint,
            model: std::borrow::Cow::Borrowed(ctx.call.model.as_deref().unwrap_or("")),
            request_id: meta
                .and_then(|m| m.request_id.as_deref())
                .map(std::borrow::Cow::Borrowed),
            span,
        }
    }

    /// The end of a request that failed before it had an answer.
    fn failed(&self, ctx: &Ctx<'_>, span: tracing::Span, e: &Error) {
        let mut end = RequestEnd::new(None);
        end.report(self.request(ctx, span, None));
        end.end(Ended::Failed(e));
    }

    /// Send a request and read the whole answer.
    ///
    /// The route and its retries run in a box: that future is three kilobytes, and held
    /// inline it would make this one (and every caller's around it, up to a connection's)
    /// that much larger, each copied whole when made or moved — a face would have to box this
    /// one instead, and the span's wrapper would copy it once more.
    pub async fn send(&self, call: Call) -> Result<Reply, Error> {
        let ctx = self.ctx(&call);
        let span = Self::span(&call, &ctx);
        self.inner.budget.deposit();
        let result = crate::boxed::pinned_box(|| self.routed(&ctx, Unary))
            .instrument(span.clone())
            .await;
        match result {
            Ok((mut answer, routed)) => {
                // Worked on where it is, in its box: the pair is over a kilobyte, and taking
                // it out whole would copy both halves (the answer is moved out once, at the
                // end; the guard is dropped with the box).
                let (reply, end) = &mut *answer;
                reply.meta.routed(routed);
                let now = Instant::now();
                reply.meta.latency = now.saturating_duration_since(ctx.started);
                for c in &reply.facts.choices {
                    if let Some(r) = &c.finish_reason {
                        end.finish_reason(r.clone());
                    }
                }
                end.end_reporting(Ended::Ok, now, &self.request(&ctx, span, Some(&reply.meta)));
                reply.facts.usage = end.take_usage();
                Ok(answer.0)
            }
            Err(e) => {
                self.failed(&ctx, span, &e);
                Err(e)
            }
        }
    }

    /// Send a streaming request. Returns once the first event has arrived: failures before it
    /// are retried like any other; after it, the stream is the caller's and is never retried
    /// (that would repeat content the caller has already seen).
    ///
    /// As with [`Engine::send`], the route and its retries run in a box.
    pub async fn send_stream(&self, call: Call) -> Result<StreamReply, Error> {
        let ctx = self.ctx(&call);
        let span = Self::span(&call, &ctx);
        self.inner.budget.deposit();
        let result = crate::boxed::pinned_box(|| self.routed(&ctx, Streamed))
            .instrument(span.clone())
            .await;
        match result {
            Ok((r, routed)) => {
                let mut r = *r;
                r.meta.routed(routed);
                let ttft = ctx.started.elapsed();
                r.meta.ttft = Some(ttft);
                r.meta.latency = ttft;
                span.record("ttft_ms", ttft.as_millis() as u64);
                observe::ttft(call.model.as_deref().unwrap_or(""), ttft);
                let request = self.request(&ctx, span, Some(&r.meta));
                r.events.request_end().report(request);
                Ok(r)
            }
            Err(e) => {
                self.failed(&ctx, span, &e);
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
        if let Some(why) = ctx.call.estimate.as_ref().and_then(|e| e.refusal()) {
            return Err(Error::new(ErrorKind::BadRequest, why).with_retryable(false));
        }
        let Some(requested) = ctx.call.model.as_deref() else {
            let (v, attempts) = self.retries(ctx).run(|| A::run(self, ctx)).await?;
            let routed = Routed {
                attempts,
                route: None,
                fallback_from: None,
            };
            return Ok((v, routed));
        };
        let policy = &self.inner.models;
        // `None`: sent as named, nothing to tell (nearly every request).
        let route = policy.route_unless_plain(requested)?;
        if let Some(n) = route.as_ref().and_then(|r| r.notice.as_ref()) {
            self.inner
                .alerts
                .deprecated_model(&n.model, &n.header_value());
        }
        let sent = route.as_ref().map_or(requested, |r| r.model.as_str());
        let mut call = if sent == requested {
            std::borrow::Cow::Borrowed(ctx.call)
        } else {
            std::borrow::Cow::Owned(ctx.call.with_model(sent)?)
        };
        let chain = policy.fallbacks(sent);
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
                    0 => std::borrow::Cow::Borrowed(&*ctx.idempotency_key),
                    n => std::borrow::Cow::Owned(format!("{}-fallback{n}", ctx.idempotency_key)),
                },
                max_attempts: ctx.max_attempts,
                charge: std::sync::Mutex::new(Some(self.reserve(&call, ctx.deadline).await?)),
                failed_on: std::sync::Mutex::new(Vec::new()),
                covered: std::sync::atomic::AtomicBool::new(false),
            };
            let outcome = self.retries(&here).run(|| A::run(self, &here)).await;
            drop(here);
            match outcome {
                Ok((v, n)) => {
                    if let Some(m) = call.model.as_deref() {
                        self.inner.catalog.answered(m);
                    }
                    // A fallback's answer names the model asked for, plain route or not.
                    let route = match route {
                        None if fallback_from.is_some() => Some(crate::model_policy::Route::plain(
                            requested,
                            requested.to_string(),
                        )),
                        r => r,
                    };
                    let routed = Routed {
                        attempts: attempts + n,
                        route,
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
        let model = call.model.as_deref().unwrap_or("");
        let price = self
            .inner
            .upstreams
            .worst_price(model, self.inner.models.registry());
        self.inner
            .spend
            .reserve_at(
                model,
                price,
                &call.options.spend,
                est.prompt,
                est.output,
                hold,
            )
            .await
    }
    fn retries<'a>(&'a self, ctx: &'a Ctx<'_>) -> Retries<'a> {
        Retries {
            policy: &self.inner.retry,
            budget: &self.inner.budget,
            counter: &self.inner.counters.retries,
            endpoint: ctx.call.endpoint,
            deadline: ctx.deadline,
            max_attempts: ctx.max_attempts,
            covered: &ctx.covered,
        }
    }

    /// Admission, then the request until its headers; error statuses become errors here.
    /// Returns the response and the admission ticket that must live as long as its body.
    async fn open(&self, ctx: &Ctx<'_>, stream: bool) -> Result<Box<OkResponse>, Error> {
        // The upstream: one that serves the model, not failed on yet by this request, whose
        // breaker is closed; a failing upstream is not sent to while its breaker is open.
        let model = ctx.call.model.as_deref().unwrap_or("");
        let ups = &self.inner.upstreams;
        let failed_on = ctx
            .failed_on
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // With several upstreams, one whose admission would wait is passed over for one with
        // room now; only when none has room does the request wait (on the first choice).
        let patient_first = !ups.several() || self.inner.admission.is_none();
        let (mut i, mut pass) = ups.pick(model, &failed_on)?;
        let mut skipped: Vec<usize> = Vec::new();
        let result = loop {
            let up = ups.get(i);
            let patient = patient_first || skipped.len() >= ups.len();
            match self.open_on(up, ctx, stream, patient).await {
                Ok(Some(ok)) => break Ok(ok),
                Err(e) => break Err(e),
                Ok(None) => {
                    drop(pass);
                    metrics::counter!("sluice_upstream_skipped_total", "upstream" => up.label, "reason" => "no_capacity").increment(1);
                    skipped.push(i);
                    (i, pass) = match ups.pick_but(model, &failed_on, &skipped) {
                        Ok(next) => next,
                        Err(_) => {
                            // None has room: wait on the first choice after all.
                            skipped = (0..ups.len()).collect();
                            ups.pick(model, &failed_on)?
                        }
                    };
                }
            }
        };
        let up = ups.get(i);
        let health = match &result {
            Ok(_) => crate::breaker::Health::Answered,
            Err(e) => crate::breaker::Health::of(e),
        };
        pass.record(health);
        use observe::AttemptResult as R;
        up.attempts.count(
            up.label,
            match (&result, health) {
                (Ok(_), _) => R::Answered,
                (Err(e), _) if e.status() == Some(429) => R::RateLimited,
                (Err(_), crate::breaker::Health::Failed) => R::Failed,
                (Err(_), crate::breaker::Health::Answered) => R::Refused,
                (Err(_), crate::breaker::Health::Unknown) => R::NotSent,
            },
        );
        match result {
            Ok(mut ok) => {
                ok.upstream = up.answered_by.clone();
                if ups.own_prices() {
                    // Settled at what the upstream that answered charges.
                    if let Some(c) = ctx
                        .charge
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .as_mut()
                    {
                        c.answered_at(up.price(model, self.inner.models.registry()));
                    }
                }
                Ok(ok)
            }
            Err(mut e) => {
                // Failed, or rate-limited for longer than a moment (its window is spent): the
                // next attempt goes to another upstream that serves the model, at once.
                let spent = e.kind().is_rate_limited()
                    && e.retry_after()
                        .is_some_and(|w| w >= FAILOVER_AFTER_429_WAIT);
                if health == crate::breaker::Health::Failed || spent {
                    ctx.failed_on
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(i);
                    if e.is_retryable() && ups.another_serves(model, i) {
                        e.set_failover();
                    }
                }
                Err(e)
            }
        }
    }

    async fn open_on(
        &self,
        up: &crate::upstreams::Upstream,
        ctx: &Ctx<'_>,
        stream: bool,
        patient: bool,
    ) -> Result<Option<Box<OkResponse>>, Error> {
        let keys = &up.keys;
        let chosen = keys.take(ctx.deadline).await?;
        let headers = AttemptHeaders {
            configured: &self.inner.headers,
            caller: &ctx.call.options.headers,
            idempotency_key: &ctx.idempotency_key,
            has_body: ctx.call.body.is_some(),
            stream,
            api_key_header: up.dialect.api_key_header() && !keys.bearer(),
        }
        .build(&chosen.key, || keys.describe())?;
        let model = ctx.call.model.as_deref().unwrap_or("");
        let path = up.dialect.path(&ctx.call.path, model);
        let admitted = match &self.inner.admission {
            Some(a) => {
                let scope = up.scopes.name(
                    up.transport.base_url(),
                    &chosen.key,
                    model,
                    a.config().per_model,
                );
                let est = ctx.call.estimate.unwrap_or_default();
                let Some(ticket) = a
                    .admit_in(&scope, model, up.limits, est, ctx.deadline, patient)
                    .await?
                else {
                    return Ok(None);
                };
                Some(Admitted { ticket })
            }
            None => None,
        };
        // An upstream that names the model otherwise in the body (an Azure deployment) gets its
        // name there, and its answer's echo of that name is given back (below).
        let sent_as = match &ctx.call.options.upload {
            None => up.dialect.body_model(&ctx.call.path, model),
            Some(_) => None,
        };
        let payload = match &ctx.call.options.upload {
            None => match sent_as {
                Some(named) => match &ctx.call.body {
                    Some(b) => match crate::model_policy::rewrite_model(b, named) {
                        Ok(b) => crate::transport::Payload::Bytes(Some(b)),
                        Err(e) => {
                            if let Some(a) = admitted {
                                a.fail(&e);
                            }
                            return Err(e);
                        }
                    },
                    None => crate::transport::Payload::Bytes(None),
                },
                None => crate::transport::Payload::Bytes(ctx.call.body.clone()),
            },
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
        // The send waits under its first-byte timer, which ends by the deadline: the retry
        // loop's own timer is not needed for it.
        let covered = crate::retry::Covered::enter(&ctx.covered);
        let sent = up
            .transport
            .send(
                ctx.call.method.clone(),
                &path,
                headers,
                payload,
                self.inner.timeouts.first_byte,
                ctx.deadline,
            )
            .await;
        drop(covered);
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
            keys.after_attempt(&chosen, Ok(&rl), &self.inner.alerts);
            if let Some(a) = &admitted {
                a.ticket.observe(&rl, None).await;
            }
            return Ok(Some(Box::new(OkResponse {
                resp,
                ticket: admitted.map(|a| a.ticket),
                key_label: chosen.label,
                rate_limits: rl,
                upstream: std::borrow::Cow::Borrowed(""),
                renamed: sent_as.map(|d| Renamed {
                    sent: d.to_string(),
                    asked: model.to_string(),
                }),
            })));
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
        keys.after_attempt(&chosen, Err(&mut err), &self.inner.alerts);
        if let Some(a) = admitted {
            let limited = err
                .kind()
                .is_rate_limited()
                .then(|| (err.kind(), err.retry_after()));
            a.ticket.observe(&rl, limited).await;
            a.fail(&err);
        }
        Err(err)
    }

    /// The answer comes boxed: it is a kilobyte and a half, and goes up through half a dozen
    /// futures (the retry loop, its timeout, the model route) that would each copy it.
    async fn attempt_unary(&self, ctx: &Ctx<'_>) -> Result<Box<(Reply, RequestEnd)>, Error> {
        let OkResponse {
            resp,
            ticket,
            key_label,
            upstream,
            rate_limits,
            renamed,
        } = *self.open(ctx, false).await?;
        let status = resp.status().as_u16();
        // The headers are moved out (the body is all that is read from here), not copied.
        let mut resp = resp;
        let headers = std::mem::take(resp.headers_mut());
        let request_id = crate::headers::request_id(&headers);
        let body = match read_body(resp, self.inner.timeouts.idle, ctx.deadline, MAX_BODY).await {
            Ok(b) => b,
            Err(e) => {
                if let Some(t) = ticket {
                    Admitted::release(t, &e);
                }
                return Err(e.with_request_id(request_id));
            }
        };
        let body = match &renamed {
            Some(r) => r.apply_to(body),
            None => body,
        };
        let mut facts = crate::call::BodyFacts::read(&body);
        let mut end = RequestEnd::new(ticket);
        if let Some(charge) = ctx.take_charge() {
            // A unary answer without usage is settled at zero tokens.
            end.charge(charge, 0);
        }
        // The usage travels in the request's end until that has reported it, and goes back
        // into the answer then ([`Engine::send`]): moved, not copied.
        match facts.usage.take() {
            Some(u) => end.usage(u),
            None => end.settle_charge(),
        }
        let mut meta = Meta::answered(
            status,
            request_id,
            rate_limits,
            &ctx.idempotency_key,
            ctx.call.model.clone(),
        );
        meta.upstream_key = Some(key_label);
        meta.upstream = Some(upstream);
        meta.cost_nanos = end.cost();
        let reply = Reply {
            body,
            meta,
            headers,
            facts,
        };
        Ok(Box::new((reply, end)))
    }

    /// Boxed, as [`Engine::attempt_unary`]'s answer.
    async fn attempt_stream(&self, ctx: &Ctx<'_>) -> Result<Box<StreamReply>, Error> {
        let OkResponse {
            resp,
            ticket,
            key_label,
            upstream,
            rate_limits,
            renamed,
        } = *self.open(ctx, true).await?;
        let status = resp.status().as_u16();
        let mut resp = resp;
        let headers = std::mem::take(resp.headers_mut());
        let request_id = crate::headers::request_id(&headers);
        // How the stream ends: Responses API streams at their terminal event, no `[DONE]`.
        let framing = match ctx.call.endpoint {
            "responses" => crate::routes::Stream::Responses,
            "chat" | "completions" => crate::routes::Stream::Chat,
            _ => crate::routes::Stream::Events,
        };
        let mut events = EventStream::new(
            resp,
            self.inner.timeouts.idle,
            ctx.deadline,
            framing,
            RequestEnd::new(ticket),
        );
        if let Some(r) = renamed {
            events.rename(r.sent, r.asked);
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
            events.request_end().charge(charge, prompt);
        }
        let mut meta = Meta::answered(
            status,
            request_id,
            rate_limits,
            &ctx.idempotency_key,
            ctx.call.model.clone(),
        );
        meta.upstream_key = Some(key_label);
        meta.upstream = Some(upstream);
        Ok(Box::new(StreamReply {
            events,
            meta,
            headers,
        }))
    }
}

/// A 2xx response whose body is still to be read, the admission ticket that let it through (it lives as long as the
/// body), and what the headers said about limits (read once).
struct OkResponse {
    resp: crate::transport::Response,
    ticket: Option<Ticket>,
    key_label: crate::keypool::KeyLabel,
    rate_limits: RateLimits,
    /// The upstream's name.
    upstream: std::borrow::Cow<'static, str>,
    /// The body named the model otherwise for this upstream (an Azure deployment).
    renamed: Option<Renamed>,
}

/// The name a request's body was sent with instead of the one the caller asked for; the
/// answer's `model`, where it echoes the first, is given back as the second.
struct Renamed {
    sent: String,
    asked: String,
}

impl Renamed {
    fn apply_to(&self, body: bytes::Bytes) -> bytes::Bytes {
        match std::str::from_utf8(&body)
            .ok()
            .and_then(|t| crate::model_policy::rename_model(t, &self.sent, &self.asked))
        {
            Some(t) => bytes::Bytes::from(t),
            None => body,
        }
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
    type Out = Box<(Reply, RequestEnd)>;
    fn run<'a>(
        engine: &'a Engine,
        ctx: &'a Ctx<'a>,
    ) -> impl Future<Output = Result<Self::Out, Error>> + Send + 'a {
        engine.attempt_unary(ctx)
    }
}

impl AttemptKind for Streamed {
    type Out = Box<StreamReply>;
    fn run<'a>(
        engine: &'a Engine,
        ctx: &'a Ctx<'a>,
    ) -> impl Future<Output = Result<Self::Out, Error>> + Send + 'a {
        engine.attempt_stream(ctx)
    }
}

/// An admitted attempt in progress.
struct Admitted {
    ticket: Ticket,
}

impl Admitted {
    /// The attempt failed before its answer: nothing was generated, so the token reservation
    /// is given back, and the concurrency limiter hears whether it looked like overload.
    fn fail(self, e: &Error) {
        Self::release(self.ticket, e);
    }

    fn release(mut ticket: Ticket, e: &Error) {
        ticket.give_back();
        ticket.finish(admission::outcome_of(e));
    }
}
