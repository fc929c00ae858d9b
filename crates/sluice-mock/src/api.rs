//! The steps every API request goes through, in the order the real service applies them:
//! network faults, authentication, body parsing, model lookup, server faults and storms, rate
//! limits. Each endpoint module calls these and then generates its own answer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use rand::Rng;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::config::{AuthMode, Limits, ModelKind, ModelSpec};
use crate::errors::{self, openai_error, BadField};
use crate::generate::{hash64, SplitMix};
use crate::godur::go_duration;
use crate::ratelimit::{Decision, LimitKind, Snapshot};
use crate::server::ConnKill;
use crate::stats::{Record, Settlement};
use crate::{AppState, Live};

/// Largest request body accepted (the real API's limit is in this range).
pub const MAX_BODY: usize = 32 * 1024 * 1024;

/// The random draws for one request, taken under one lock.
#[derive(Debug, Clone)]
pub struct Rolls {
    pub reset: bool,
    pub stall_headers: bool,
    pub e500: bool,
    pub e502: bool,
    pub e503: bool,
    pub stall_stream: bool,
    pub drop_stream: bool,
    pub no_done: bool,
    pub sse_error: bool,
    /// Where in a stream a mid-stream fault strikes, as a fraction of its content chunks.
    pub cut: f64,
    pub ttft: Duration,
    /// Seeds per-token jitter.
    pub jitter_seed: u64,
}

impl Rolls {
    /// No fault and no latency.
    fn calm() -> Rolls {
        Rolls {
            reset: false,
            stall_headers: false,
            e500: false,
            e502: false,
            e503: false,
            stall_stream: false,
            drop_stream: false,
            no_done: false,
            sse_error: false,
            cut: 0.0,
            ttft: Duration::ZERO,
            jitter_seed: 0,
        }
    }

    fn draw(live: &Live) -> Rolls {
        let f = &live.scenario.faults;
        let l = &live.scenario.latency;
        let mut rng = live.rng.lock().unwrap_or_else(|p| p.into_inner());
        let mut hit = |p: f64| p > 0.0 && rng.random::<f64>() < p;
        let reset = hit(f.reset);
        let stall_headers = hit(f.stall_headers);
        let e500 = hit(f.error_500);
        let e502 = hit(f.error_502);
        let e503 = hit(f.error_503);
        let stall_stream = hit(f.stall_stream);
        let drop_stream = hit(f.drop_stream);
        let no_done = hit(f.no_done);
        let sse_error = hit(f.sse_error);
        let cut = rng.random::<f64>();
        let ttft = l.ttft + l.ttft_jitter.mul_f64(rng.random::<f64>());
        let jitter_seed = rng.random::<u64>();
        Rolls {
            reset,
            stall_headers,
            e500,
            e502,
            e503,
            stall_stream,
            drop_stream,
            no_done,
            sse_error,
            cut,
            ttft,
            jitter_seed,
        }
    }
}

/// Per-token delays with jitter, reproducible from the request's seed.
#[derive(Debug, Clone)]
pub struct Pacer {
    base: Duration,
    jitter: Duration,
    rng: SplitMix,
}

impl Pacer {
    pub fn next_delay(&mut self) -> Duration {
        if self.jitter.is_zero() {
            return self.base;
        }
        let frac = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        self.base + self.jitter.mul_f64(frac)
    }

    pub fn is_off(&self) -> bool {
        self.base.is_zero() && self.jitter.is_zero()
    }
}

/// One API call in progress.
#[derive(Debug)]
pub struct Call {
    pub live: Arc<Live>,
    pub rec: Record,
    pub kill: Option<ConnKill>,
    pub started: Instant,
    pub response_id: String,
    pub rolls: Rolls,
    pub api_key: String,
    pub limits: Limits,
    pub snapshot: Snapshot,
    /// A line of a batch the mock runs itself: the Batch API has its own quota, so no rate
    /// limit, fault or latency applies.
    pub internal: bool,
    /// The name an answer gives as its `model` instead of the model's id (Azure's Responses
    /// API echoes the deployment the body named).
    pub answer_model: Option<String>,
}

/// The header that marks the mock's own batch requests (its value is the process's salt, so a
/// client cannot send it).
pub const INTERNAL_BATCH: &str = "x-sluice-mock-batch";

impl Call {
    /// [`Call::begin`] for a handler that takes the connection's kill switch as an extractor.
    pub async fn begin_with(
        app: &Arc<AppState>,
        headers: &HeaderMap,
        kill: Option<axum::Extension<ConnKill>>,
    ) -> Result<Call, Response> {
        Call::begin(app, headers, kill.map(|axum::Extension(k)| k)).await
    }

    /// Start a call: count it, note the ids the caller sent, and apply network-level faults.
    /// `Err` is a finished response (or a connection about to be reset).
    pub async fn begin(
        app: &Arc<AppState>,
        headers: &HeaderMap,
        kill: Option<ConnKill>,
    ) -> Result<Call, Response> {
        let live = app.live();
        let mut rec = Record::new(&app.stats);
        rec.idempotency_key = header_str(headers, "idempotency-key").map(str::to_string);
        rec.request_id = header_str(headers, "x-request-id").map(str::to_string);
        let n = app.counter.fetch_add(1, Ordering::Relaxed);
        let rolls = Rolls::draw(&live);
        let salt = app.salt.to_le_bytes();
        let nb = n.to_le_bytes();
        let response_id = format!(
            "req_{:016x}{:016x}",
            hash64(&[&nb, &salt]),
            hash64(&[&salt, &nb])
        );
        let limits = live.scenario.limits;
        let internal =
            header_str(headers, INTERNAL_BATCH) == Some(format!("{:016x}", app.salt).as_str());
        let mut rolls = rolls;
        if internal {
            rolls = Rolls::calm();
        }
        let mut call = Call {
            live,
            rec,
            kill,
            started: Instant::now(),
            response_id,
            rolls,
            api_key: String::new(),
            limits,
            snapshot: Snapshot::default(),
            internal,
            answer_model: None,
        };
        if call.rolls.reset {
            if let Some(k) = call.kill.as_ref() {
                call.rec.faults.push("reset");
                k.kill();
                // Never written: the connection fails at the first write.
                return Err(Response::new(Body::empty()));
            }
        }
        if call.rolls.stall_headers {
            call.rec.faults.push("stall_headers");
            tokio::time::sleep(call.live.scenario.faults.stall_for).await;
        }
        call.authenticate(headers)?;
        Ok(call)
    }

    /// Finish a response: the headers the real service always sends, and the status count.
    pub fn respond(&mut self, mut resp: Response) -> Response {
        use crate::config::HeaderDialect;
        self.rec.status = Some(resp.status().as_u16());
        let h = resp.headers_mut();
        match self.live.scenario.headers {
            HeaderDialect::Openai => {}
            HeaderDialect::None => return resp,
            HeaderDialect::Azure => {
                put(h, "apim-request-id", &self.response_id);
                put(h, "x-ms-region", "East US");
                if let Some(r) = self.snapshot.requests {
                    put(
                        h,
                        "x-ratelimit-remaining-requests",
                        &r.remaining.to_string(),
                    );
                }
                if let Some(t) = self.snapshot.tokens {
                    put(h, "x-ratelimit-remaining-tokens", &t.remaining.to_string());
                }
                return resp;
            }
        }
        put(h, "x-request-id", &self.response_id);
        put(
            h,
            "openai-processing-ms",
            &self.started.elapsed().as_millis().to_string(),
        );
        put(h, "openai-version", "2020-10-01");
        put(h, "openai-organization", "org-sluice-mock");
        if let Some(r) = self.snapshot.requests {
            put(h, "x-ratelimit-limit-requests", &r.limit.to_string());
            put(
                h,
                "x-ratelimit-remaining-requests",
                &r.remaining.to_string(),
            );
            put(h, "x-ratelimit-reset-requests", &go_duration(r.reset));
        }
        if let Some(t) = self.snapshot.tokens {
            put(h, "x-ratelimit-limit-tokens", &t.limit.to_string());
            put(h, "x-ratelimit-remaining-tokens", &t.remaining.to_string());
            put(h, "x-ratelimit-reset-tokens", &go_duration(t.reset));
        }
        resp
    }

    /// A finished JSON answer, written in the scenario's `json_style`.
    pub fn json<T: serde::Serialize>(&mut self, v: &T) -> Response {
        self.rec.completed = true;
        let resp = crate::json_style::response(v, self.live.scenario.json_style);
        self.respond(resp)
    }

    /// An error response, finished.
    pub fn fail(
        &mut self,
        status: StatusCode,
        message: impl Into<String>,
        ty: &str,
        param: Option<&str>,
        code: Option<&str>,
    ) -> Response {
        let r = openai_error(status, message, ty, param, code);
        self.respond(r)
    }

    pub fn bad(&mut self, b: BadField) -> Response {
        let r = b.into_response();
        self.respond(r)
    }

    fn authenticate(&mut self, headers: &HeaderMap) -> Result<(), Response> {
        let Some(key) = header_str(headers, "authorization")
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty())
        else {
            return Err(self.fail(
                StatusCode::UNAUTHORIZED,
                "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
                None,
                None,
            ));
        };
        let live = self.live.clone();
        let spec = live.scenario.key(key);
        let masked = crate::config::mask_key(key);
        match spec {
            None if live.scenario.auth == AuthMode::Listed => {
                return Err(self.fail(
                    StatusCode::UNAUTHORIZED,
                    format!("Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys."),
                    "invalid_request_error",
                    None,
                    Some("invalid_api_key"),
                ));
            }
            None => {
                self.rec.key = Some(masked);
            }
            Some(spec) => {
                self.rec.key = Some(spec.name.clone());
                if spec.revoked {
                    return Err(self.fail(
                        StatusCode::UNAUTHORIZED,
                        format!("The API key provided ({masked}) has been revoked."),
                        "invalid_request_error",
                        None,
                        Some("invalid_api_key"),
                    ));
                }
                if spec.forbidden {
                    return Err(self.fail(
                        StatusCode::FORBIDDEN,
                        "You have insufficient permissions for this operation.",
                        "invalid_request_error",
                        None,
                        Some("insufficient_permissions"),
                    ));
                }
                if spec.quota_exhausted {
                    return Err(self.fail(
                        StatusCode::TOO_MANY_REQUESTS,
                        "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
                        "insufficient_quota",
                        None,
                        Some("insufficient_quota"),
                    ));
                }
                self.limits = spec.limits;
            }
        }
        self.api_key = key.to_string();
        Ok(())
    }

    /// Read the body as a JSON object.
    pub async fn json_body(&mut self, body: Body) -> Result<Map<String, Value>, Response> {
        let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(b) => b,
            Err(_) => {
                return Err(self.fail(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("Request body too large: the limit is {MAX_BODY} bytes."),
                    "invalid_request_error",
                    None,
                    None,
                ))
            }
        };
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(self.fail(
                StatusCode::BAD_REQUEST,
                "Invalid body: expected a JSON object.",
                "invalid_request_error",
                None,
                None,
            )),
            Err(e) => Err(self.fail(
                StatusCode::BAD_REQUEST,
                format!("We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON: {e}.)"),
                "invalid_request_error",
                None,
                None,
            )),
        }
    }

    /// The requested model, if it exists, is not retired, and serves this endpoint.
    pub fn model(
        &mut self,
        body: &Map<String, Value>,
        kind: ModelKind,
    ) -> Result<ModelSpec, Response> {
        let id = match body.get("model") {
            None => return Err(self.bad(BadField::missing("model"))),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(self.bad(BadField::wrong_type("model", "a string", other)));
            }
        };
        self.rec.model = Some(id.clone());
        let spec = match self.live.scenario.models.get(&id) {
            Some(m) if !m.retired => m.clone(),
            _ => {
                let r = errors::model_not_found(&id);
                return Err(self.respond(r));
            }
        };
        if spec.kind != kind {
            let what = match kind {
                ModelKind::Chat => "v1/chat/completions",
                ModelKind::Completion => "v1/completions",
                ModelKind::Embedding => "v1/embeddings",
            };
            return Err(self.fail(
                StatusCode::BAD_REQUEST,
                format!("The model `{id}` is not supported in the {what} endpoint."),
                "invalid_request_error",
                Some("model"),
                None,
            ));
        }
        Ok(spec)
    }

    /// 5xx faults and the 429 storm, which strike valid requests before they are charged.
    pub fn server_faults(&mut self) -> Result<(), Response> {
        if self.internal {
            return Ok(());
        }
        if let Some(storm) = self.live.scenario.faults.storm {
            let since = self.live.applied_at.elapsed();
            if since >= storm.after && since < storm.after + storm.duration {
                let wait = storm
                    .retry_after
                    .unwrap_or(storm.after + storm.duration - since);
                self.rec.faults.push("storm");
                let model = self.rec.model.clone().unwrap_or_default();
                let msg = format!("Rate limit reached for {model} in organization org-sluice-mock on requests per min (RPM): the service is shedding load. Please try again in {}.", go_duration(wait));
                let r = self.fail(
                    StatusCode::TOO_MANY_REQUESTS,
                    msg,
                    "requests",
                    None,
                    Some("rate_limit_exceeded"),
                );
                return Err(with_retry_after(r, wait));
            }
        }
        if self.rolls.e500 {
            self.rec.faults.push("error_500");
            let r = errors::server_error();
            return Err(self.respond(r));
        }
        if self.rolls.e502 {
            self.rec.faults.push("error_502");
            let r = errors::bad_gateway();
            return Err(self.respond(r));
        }
        if self.rolls.e503 {
            self.rec.faults.push("error_503");
            let r = errors::overloaded();
            return Err(self.respond(r));
        }
        Ok(())
    }

    /// The prompt as the rate limiter counts it: `exact` (the tokenizer's count), or with
    /// `prompt_count = "characters"` about a token per four characters of every string in
    /// `texts` (the request's messages, prompt or input, and its tools).
    pub fn limiter_prompt(&self, exact: u64, texts: &[Option<&serde_json::Value>]) -> u64 {
        match self.live.scenario.prompt_count {
            crate::config::PromptCount::Tokenizer => exact,
            crate::config::PromptCount::Characters => {
                let chars: u64 = texts.iter().flatten().map(|v| text_chars(v)).sum();
                chars.div_ceil(4)
            }
        }
    }

    /// Charge one request and `tokens` tokens, or answer 429 as the real service does.
    pub fn admit(&mut self, model: &str, tokens: u64) -> Result<(), Response> {
        if self.internal {
            return Ok(());
        }
        let scope = if self.live.scenario.per_model_limits {
            format!("{}\u{0}{}", self.api_key, model)
        } else {
            self.api_key.clone()
        };
        let limits = self.limits;
        let decision = self.live.limiter.admit(&scope, &limits, tokens);
        match decision {
            Decision::Admitted { snapshot, charged } => {
                self.snapshot = snapshot;
                self.rec.settlement = Some(Settlement {
                    limiter: self.live.limiter.clone(),
                    scope,
                    charged,
                    refund: self.live.scenario.charge == crate::config::ChargeMode::RefundUnused,
                });
                Ok(())
            }
            Decision::Limited {
                kind,
                limit,
                used,
                requested,
                wait,
                snapshot,
            } => {
                self.snapshot = snapshot;
                let (what, abbr, ty) = match kind {
                    LimitKind::Requests => ("requests", "RPM", "requests"),
                    LimitKind::Tokens => ("tokens", "TPM", "tokens"),
                };
                self.rec.faults.push(match kind {
                    LimitKind::Requests => "rate_limit_requests",
                    LimitKind::Tokens => "rate_limit_tokens",
                });
                let msg = format!("Rate limit reached for {model} in organization org-sluice-mock on {what} per min ({abbr}): Limit {limit}, Used {used}, Requested {requested}. Please try again in {}. Visit https://platform.openai.com/account/rate-limits to learn more.", go_duration(wait));
                let r = self.fail(
                    StatusCode::TOO_MANY_REQUESTS,
                    msg,
                    ty,
                    None,
                    Some("rate_limit_exceeded"),
                );
                Err(with_retry_after(r, wait))
            }
            Decision::TooLarge {
                limit,
                requested,
                snapshot,
            } => {
                self.snapshot = snapshot;
                self.rec.faults.push("request_too_large");
                let msg = format!("Request too large for {model} in organization org-sluice-mock on tokens per min (TPM): Limit {limit}, Requested {requested}. The input or output tokens must be reduced in order to run successfully. Visit https://platform.openai.com/account/rate-limits to learn more.");
                Err(self.fail(
                    StatusCode::TOO_MANY_REQUESTS,
                    msg,
                    "tokens",
                    None,
                    Some("rate_limit_exceeded"),
                ))
            }
        }
    }

    /// Length of the prompt prefix (in tokens) that the prefix cache already holds.
    pub fn cached_prefix(&self, prompt: &[u32]) -> u64 {
        let c = self.live.scenario.cache;
        if !c.enabled || (prompt.len() as u64) < c.min_tokens {
            return 0;
        }
        let mut boundaries = Vec::new();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (i, t) in prompt.iter().enumerate() {
            h ^= u64::from(*t);
            h = h.wrapping_mul(0x0100_0000_01b3);
            let n = i as u64 + 1;
            if n >= c.min_tokens && (n - c.min_tokens).is_multiple_of(c.block) {
                boundaries.push((n, h));
            }
        }
        let mut set = self
            .live
            .prefix_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let hit = boundaries
            .iter()
            .rev()
            .find(|(_, h)| set.contains(h))
            .map_or(0, |(n, _)| *n);
        if set.len() > 1_000_000 {
            set.clear();
        }
        set.extend(boundaries.iter().map(|(_, h)| *h));
        hit
    }

    /// Per-token pacing for this request.
    pub fn pacer(&self) -> Pacer {
        let l = if self.internal {
            &crate::config::Latency::default()
        } else {
            &self.live.scenario.latency
        };
        Pacer {
            base: l.per_token,
            jitter: l.per_token_jitter,
            rng: SplitMix::new(self.rolls.jitter_seed),
        }
    }

    /// A stable id suffix for objects in this response.
    /// An object id from this call's: `prefix` with its separator, as upstream writes each
    /// (`chatcmpl-`, `file-`, `resp_`, `batch_`).
    pub fn object_id(&self, prefix: &str) -> String {
        format!("{prefix}{}", &self.response_id[4..])
    }
}

/// One page of a list endpoint in OpenAI's cursor shape (`data`, `first_id`, `last_id`,
/// `has_more`): the `limit` items after the one whose id is `after`.
pub fn list_page<T>(
    items: &[T],
    id_of: impl Fn(&T) -> &str,
    object: impl Fn(&T) -> Value,
    after: Option<&str>,
    limit: usize,
) -> Value {
    let start = after
        .and_then(|a| items.iter().position(|x| id_of(x) == a).map(|i| i + 1))
        .unwrap_or(0);
    let page: Vec<&T> = items.iter().skip(start).take(limit).collect();
    serde_json::json!({
        "object": "list",
        "data": page.iter().map(|x| object(x)).collect::<Vec<_>>(),
        "first_id": page.first().map(|x| id_of(x)),
        "last_id": page.last().map(|x| id_of(x)),
        "has_more": start + page.len() < items.len(),
    })
}

/// Seconds since the epoch, for `created` fields.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn put(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(HeaderName::from_static(name), v);
    }
}

fn with_retry_after(mut r: Response, wait: Duration) -> Response {
    let ms = wait.as_nanos().div_ceil(1_000_000);
    let secs = ms.div_ceil(1000).max(1);
    put(r.headers_mut(), "retry-after", &secs.to_string());
    put(r.headers_mut(), "retry-after-ms", &ms.to_string());
    r
}

/// Typed getters that produce OpenAI-worded 400s naming the field.
pub mod fields {
    use serde_json::{Map, Value};

    use crate::errors::BadField;

    pub fn opt_u64(
        body: &Map<String, Value>,
        name: &str,
        min: u64,
        max: u64,
    ) -> Result<Option<u64>, BadField> {
        match body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v @ Value::Number(n)) => match n.as_u64() {
                Some(x) if x >= min && x <= max => Ok(Some(x)),
                Some(x) => Err(BadField::invalid(
                    name,
                    format!("Invalid '{name}': {x} is out of range; expected a value between {min} and {max}."),
                )),
                None => Err(BadField::wrong_type(name, "an integer", v)),
            },
            Some(v) => Err(BadField::wrong_type(name, "an integer", v)),
        }
    }

    pub fn opt_bool(body: &Map<String, Value>, name: &str) -> Result<Option<bool>, BadField> {
        match body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(BadField::wrong_type(name, "a boolean", v)),
        }
    }

    /// `stream` and `stream_options.include_usage`.
    pub fn stream_flags(body: &Map<String, Value>) -> Result<(bool, bool), BadField> {
        let stream = opt_bool(body, "stream")?.unwrap_or(false);
        let include_usage = match body.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => {
                if !stream {
                    return Err(BadField::invalid(
                        "stream_options",
                        "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                    ));
                }
                match o.get("include_usage") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(v) => {
                        return Err(BadField::wrong_type(
                            "stream_options.include_usage",
                            "a boolean",
                            v,
                        ))
                    }
                }
            }
            Some(v) => return Err(BadField::wrong_type("stream_options", "an object", v)),
        };
        Ok((stream, include_usage))
    }
}

/// The `usage` object.
pub fn usage_json(prompt: u64, completion: u64, cached: u64) -> Value {
    serde_json::json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

/// Characters of every string in a JSON value (keys excluded).
fn text_chars(v: &serde_json::Value) -> u64 {
    use serde_json::Value;
    match v {
        Value::String(s) => s.chars().count() as u64,
        Value::Array(a) => a.iter().map(text_chars).sum(),
        Value::Object(o) => o.values().map(text_chars).sum(),
        _ => 0,
    }
}
