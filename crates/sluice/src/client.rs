//! The Rust client: typed endpoints over the engine, configured like the official SDKs
//! (`OPENAI_API_KEY`, `OPENAI_BASE_URL`, `OPENAI_ORG_ID`, `OPENAI_PROJECT_ID`) but with sluice's
//! defaults: phase timeouts, jittered retries under a budget, a default output limit.

use std::collections::HashSet;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::admission::estimate::{self, Estimate};
use crate::admission::AdmissionConfig;
use crate::call::{Call, Meta, Reply, RequestOptions};
use crate::chat_stream::ChatStream;
use crate::config::{RetryPolicy, Timeouts};
use crate::credentials::KeySource;
use crate::error::{Error, ErrorKind};
use crate::keypool::{KeyPool, PoolSource};
use crate::model_policy::ModelPolicy;
use crate::observe;
use crate::secret::SecretString;
use crate::spend::SpendConfig;
use crate::stack::{Engine, EngineConfig};
use crate::transport::TransportConfig;
use crate::wire::{
    ChatCompletion, ChatRequest, Completion, CompletionRequest, EmbeddingRequest,
    EmbeddingResponse, Model, ModelList, StreamOptions,
};

/// The public API's base URL, used when neither the builder nor `OPENAI_BASE_URL` names one.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The output limit set on chat requests that have none, unless configured otherwise.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// A typed answer and what is known about how it was obtained.
#[derive(Debug, Clone)]
pub struct Response<T> {
    pub body: T,
    pub meta: Meta,
}

impl<T> Deref for Response<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.body
    }
}

impl<T> Response<T> {
    /// Upstream `x-request-id`.
    pub fn request_id(&self) -> Option<&str> {
        self.meta.request_id.as_deref()
    }

    /// Attempts it took (1 = no retry).
    pub fn attempts(&self) -> u32 {
        self.meta.attempts
    }
}

/// A client for an OpenAI-compatible API. Cheap to clone; clones share the connection pool, the
/// retry budget and the key source.
#[derive(Debug, Clone)]
pub struct Client {
    engine: Engine,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    default_max_tokens: Option<u32>,
    warned_models: Mutex<HashSet<String>>,
}

impl Client {
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Configured from the environment as the official SDKs are: `OPENAI_API_KEY` (read again at
    /// every request, so it can change), `OPENAI_BASE_URL`, `OPENAI_ORG_ID`, `OPENAI_PROJECT_ID`.
    pub fn from_env() -> Result<Client, Error> {
        Client::builder().build()
    }

    /// The engine under this client (the gateway and batch runner share it).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn chat(&self) -> Chat<'_> {
        Chat { client: self }
    }

    pub fn embeddings(&self) -> Embeddings<'_> {
        Embeddings { client: self }
    }

    pub fn completions(&self) -> Completions<'_> {
        Completions { client: self }
    }

    pub fn models(&self) -> Models<'_> {
        Models { client: self }
    }

    /// Any endpoint, with a JSON body or none: `client.request(Method::POST, "/moderations",
    /// Some(json!({...})))`. Retries, timeouts and metrics apply as to every other call.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Response<Value>, Error> {
        let model = body
            .as_ref()
            .and_then(|b| b.get("model"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let est = match (&body, self.engine.admission()) {
            (Some(b), Some(_)) => Some(estimate::estimate(&path, b)),
            _ => None,
        };
        let body = match body {
            Some(b) => Some(encode(&b)?),
            None => None,
        };
        let call = Call {
            method,
            path,
            body,
            endpoint: "other",
            model,
            estimate: est,
            options: RequestOptions::default(),
        };
        let reply = self.engine.send(call).await?;
        if reply.body.is_empty() {
            return Ok(Response {
                body: Value::Null,
                meta: reply.meta,
            });
        }
        decode(reply)
    }

    fn apply_default_max_tokens(&self, req: &mut ChatRequest) {
        let Some(default) = self.shared.default_max_tokens else {
            return;
        };
        if req.output_limit().is_some() {
            return;
        }
        // Reasoning models accept only the newer field; others accept both.
        let reasoning = ["o1", "o3", "o4", "gpt-5"]
            .iter()
            .any(|p| req.model.starts_with(p));
        if reasoning {
            req.max_completion_tokens = Some(default);
        } else {
            req.max_tokens = Some(default);
        }
        observe::default_max_tokens(&req.model);
        let mut warned = self
            .shared
            .warned_models
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if warned.insert(req.model.clone()) {
            tracing::warn!(
                model = %req.model,
                max_tokens = default,
                "chat request without an output limit: applying the default (set max_tokens to silence this)"
            );
        }
    }
}

impl Client {
    /// A POST of a typed request to one of the typed endpoints.
    fn post_call<T: Serialize>(
        &self,
        path: &'static str,
        endpoint: &'static str,
        model: &str,
        req: &T,
        options: RequestOptions,
    ) -> Result<Call, Error> {
        let (body, estimate) = self.body(path, req)?;
        Ok(Call {
            method: Method::POST,
            path: path.into(),
            body: Some(body),
            endpoint,
            model: Some(model.to_string()),
            estimate,
            options,
        })
    }

    /// The request body, and its token estimate when admission needs one.
    fn body<T: Serialize>(&self, path: &str, v: &T) -> Result<(Bytes, Option<Estimate>), Error> {
        if self.engine.admission().is_none() {
            return Ok((encode(v)?, None));
        }
        let value = serde_json::to_value(v).map_err(|e| {
            Error::new(ErrorKind::Config, format!("cannot encode the request: {e}"))
                .with_retryable(false)
        })?;
        let est = estimate::estimate(path, &value);
        Ok((encode(&value)?, Some(est)))
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Bytes, Error> {
    serde_json::to_vec(v).map(Bytes::from).map_err(|e| {
        Error::new(ErrorKind::Config, format!("cannot encode the request: {e}"))
            .with_retryable(false)
    })
}

fn decode<T: DeserializeOwned>(reply: Reply) -> Result<Response<T>, Error> {
    match serde_json::from_slice::<T>(&reply.body) {
        Ok(body) => Ok(Response {
            body,
            meta: reply.meta,
        }),
        Err(e) => {
            let mut err = Error::new(
                ErrorKind::Decode,
                format!("response body does not decode: {e}"),
            )
            .with_retryable(false)
            .with_request_id(reply.meta.request_id.clone());
            err.set_attempts(reply.meta.attempts);
            Err(err)
        }
    }
}

/// `client.chat()`.
#[derive(Debug, Clone, Copy)]
pub struct Chat<'a> {
    client: &'a Client,
}

impl Chat<'_> {
    /// A chat completion.
    pub async fn create(&self, req: ChatRequest) -> Result<Response<ChatCompletion>, Error> {
        self.create_with(req, RequestOptions::default()).await
    }

    pub async fn create_with(
        &self,
        mut req: ChatRequest,
        options: RequestOptions,
    ) -> Result<Response<ChatCompletion>, Error> {
        self.client.apply_default_max_tokens(&mut req);
        req.stream = None;
        req.stream_options = None;
        let model = req.model.clone();
        let call = self
            .client
            .post_call("/chat/completions", "chat", &model, &req, options)?;
        let resp: Response<ChatCompletion> = decode(self.client.engine.send(call).await?)?;
        Ok(resp)
    }

    /// A streamed chat completion. Usage is requested (`stream_options.include_usage`) unless
    /// the request says otherwise, so the last chunk carries the token counts.
    pub async fn stream(&self, req: ChatRequest) -> Result<ChatStream, Error> {
        self.stream_with(req, RequestOptions::default()).await
    }

    pub async fn stream_with(
        &self,
        mut req: ChatRequest,
        options: RequestOptions,
    ) -> Result<ChatStream, Error> {
        self.client.apply_default_max_tokens(&mut req);
        req.stream = Some(true);
        let opts = req
            .stream_options
            .get_or_insert_with(StreamOptions::default);
        if opts.include_usage.is_none() {
            opts.include_usage = Some(true);
        }
        let model = req.model.clone();
        let call = self
            .client
            .post_call("/chat/completions", "chat", &model, &req, options)?;
        let reply = self.client.engine.send_stream(call).await?;
        Ok(ChatStream::new(reply))
    }
}

/// `client.embeddings()`.
#[derive(Debug, Clone, Copy)]
pub struct Embeddings<'a> {
    client: &'a Client,
}

impl Embeddings<'_> {
    pub async fn create(
        &self,
        req: EmbeddingRequest,
    ) -> Result<Response<EmbeddingResponse>, Error> {
        let model = req.model.clone();
        let call = self.client.post_call(
            "/embeddings",
            "embeddings",
            &model,
            &req,
            RequestOptions::default(),
        )?;
        let resp: Response<EmbeddingResponse> = decode(self.client.engine.send(call).await?)?;
        Ok(resp)
    }
}

/// `client.completions()` (legacy).
#[derive(Debug, Clone, Copy)]
pub struct Completions<'a> {
    client: &'a Client,
}

impl Completions<'_> {
    pub async fn create(&self, mut req: CompletionRequest) -> Result<Response<Completion>, Error> {
        req.stream = None;
        let model = req.model.clone();
        let call = self.client.post_call(
            "/completions",
            "completions",
            &model,
            &req,
            RequestOptions::default(),
        )?;
        let resp: Response<Completion> = decode(self.client.engine.send(call).await?)?;
        Ok(resp)
    }
}

/// `client.models()`.
#[derive(Debug, Clone, Copy)]
pub struct Models<'a> {
    client: &'a Client,
}

impl Models<'_> {
    pub async fn list(&self) -> Result<Response<ModelList>, Error> {
        let call = Call {
            method: Method::GET,
            path: "/models".into(),
            body: None,
            estimate: None,
            endpoint: "models",
            model: None,
            options: RequestOptions::default(),
        };
        decode(self.client.engine.send(call).await?)
    }

    pub async fn get(&self, id: &str) -> Result<Response<Model>, Error> {
        let call = Call {
            method: Method::GET,
            path: format!("/models/{id}"),
            body: None,
            estimate: None,
            endpoint: "models",
            model: Some(id.to_string()),
            options: RequestOptions::default(),
        };
        decode(self.client.engine.send(call).await?)
    }
}

/// Builds a [`Client`]. Anything not set falls back to the environment, then to the defaults.
#[derive(Debug, Default)]
pub struct ClientBuilder {
    base_url: Option<String>,
    key: Option<KeySource>,
    pool: Vec<PoolSource>,
    organization: Option<String>,
    project: Option<String>,
    timeouts: Timeouts,
    retry: RetryPolicy,
    pool_max_idle_per_host: Option<usize>,
    default_max_tokens: Option<Option<u32>>,
    headers: Vec<(String, String)>,
    admission: Option<Option<AdmissionConfig>>,
    models: Option<Arc<ModelPolicy>>,
    spend: SpendConfig,
    alerts: Option<crate::alerts::AlertRules>,
    breaker: crate::breaker::BreakerConfig,
    upstreams: Vec<UpstreamSpec>,
    replaces: Option<Engine>,
}

/// One of several upstreams ([`ClientBuilder::upstream`]). `Default` fills what is left out
/// (`..UpstreamSpec::default()`): all models, priority 0, OpenAI's dialect, no limits or
/// prices of its own; a weight of 0 counts as 1.
#[derive(Debug, Default)]
pub struct UpstreamSpec {
    /// In logs, metrics and `x-sluice-upstream`; never a secret.
    pub name: String,
    pub base_url: String,
    /// Its keys (empty: `OPENAI_API_KEY`).
    pub keys: Vec<PoolSource>,
    /// The models it serves, exact or with `*` (empty: all).
    pub models: Vec<String>,
    /// Lower is tried first.
    pub priority: i32,
    /// Share among the upstreams of the same priority (at least 1).
    pub weight: u32,
    /// How its URLs and key are written (OpenAI's, or Azure OpenAI's).
    pub dialect: crate::upstreams::Dialect,
    /// Its own requests and tokens per minute (per key and model), instead of the client's
    /// admission limits; `None`: those (or what its headers teach).
    pub limits: Option<crate::admission::Limits>,
    /// Its own prices by model (exact names or `*` globs, the longest match wins), where they
    /// differ from the registry's; budgets reserve the most any candidate upstream charges
    /// and settle at the price of the one that answered.
    pub prices: Vec<(String, crate::pricing::Price)>,
}

impl ClientBuilder {
    /// The API's base URL, e.g. `https://api.openai.com/v1` or a gateway's.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// A fixed API key.
    pub fn api_key(mut self, key: impl Into<SecretString>) -> Self {
        self.key = Some(KeySource::fixed(key));
        self
    }

    /// Read the key from this environment variable at every request.
    pub fn api_key_env(mut self, var: impl Into<String>) -> Self {
        self.key = Some(KeySource::env(var));
        self
    }

    /// Read the key from this file, again whenever it changes (a rotated secret).
    pub fn api_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.key = Some(KeySource::file(path));
        self
    }

    pub fn key_source(mut self, source: KeySource) -> Self {
        self.key = Some(source);
        self
    }

    /// Several keys: each attempt takes the healthy key with the most capacity left; a key the
    /// upstream rejects (401/403) is quarantined, one that gets a 429 cools down. Replaces any
    /// single key set with the other methods.
    pub fn key_pool(mut self, sources: Vec<PoolSource>) -> Self {
        self.pool = sources;
        self
    }

    pub fn organization(mut self, org: impl Into<String>) -> Self {
        self.organization = Some(org.into());
        self
    }

    pub fn project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    pub fn timeouts(mut self, t: Timeouts) -> Self {
        self.timeouts = t;
        self
    }

    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.timeouts.connect = d;
        self
    }

    pub fn first_byte_timeout(mut self, d: Duration) -> Self {
        self.timeouts.first_byte = d;
        self
    }

    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.timeouts.idle = d;
        self
    }

    /// The deadline of a logical request across all of its attempts.
    pub fn total_timeout(mut self, d: Duration) -> Self {
        self.timeouts.total = d;
        self
    }

    pub fn retry_policy(mut self, p: RetryPolicy) -> Self {
        self.retry = p;
        self
    }

    pub fn max_attempts(mut self, n: u32) -> Self {
        self.retry.max_attempts = n.max(1);
        self
    }

    pub fn pool_max_idle_per_host(mut self, n: usize) -> Self {
        self.pool_max_idle_per_host = Some(n);
        self
    }

    /// The output limit applied to chat requests that set none (`None` turns it off).
    /// Default [`DEFAULT_MAX_TOKENS`].
    pub fn default_max_tokens(mut self, n: Option<u32>) -> Self {
        self.default_max_tokens = Some(n);
        self
    }

    /// Client-side admission: RPM/TPM budgets, FIFO waiting and adaptive concurrency. On by
    /// default, learning the limits from the server's headers.
    pub fn admission(mut self, cfg: AdmissionConfig) -> Self {
        self.admission = Some(Some(cfg));
        self
    }

    /// Send without admission control (retries, timeouts and the retry budget still apply).
    pub fn no_admission(mut self) -> Self {
        self.admission = Some(None);
        self
    }

    /// The model policy: registry, aliases, what to do with retired models, fallback chains.
    /// Default: the shipped registry, retired models refused with their replacement named.
    pub fn model_policy(mut self, policy: ModelPolicy) -> Self {
        self.models = Some(Arc::new(policy));
        self
    }

    /// Budgets and the cost ledger. Default: costs computed (in [`Meta::cost_nanos`] and the
    /// cost metric), nothing stored, no budget.
    pub fn spend(mut self, cfg: SpendConfig) -> Self {
        self.spend = cfg;
        self
    }

    /// Alert rules (default: [`crate::alerts::AlertRules::default`]: log events and metrics).
    pub fn alerts(mut self, rules: crate::alerts::AlertRules) -> Self {
        self.alerts = Some(rules);
        self
    }

    /// The upstream's circuit breaker (default on; [`crate::breaker::BreakerConfig::off`] sends
    /// every request whatever the upstream's state).
    pub fn breaker(mut self, cfg: crate::breaker::BreakerConfig) -> Self {
        self.breaker = cfg;
        self
    }

    /// The engine the new client replaces (a configuration reload): upstreams that stay the
    /// same keep their circuit breakers' state.
    pub fn replaces(mut self, engine: Engine) -> Self {
        self.replaces = Some(engine);
        self
    }

    /// Add an upstream. With one or more added, they are where requests go (by model, priority
    /// and weight, failing over between them) and `base_url` / the keys set above are not used;
    /// see [`crate::upstreams`].
    pub fn upstream(mut self, spec: UpstreamSpec) -> Self {
        self.upstreams.push(spec);
        self
    }

    /// An extra header on every request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let base_url = self
            .base_url
            .or_else(|| env("OPENAI_BASE_URL"))
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        let upstreams = if self.upstreams.is_empty() {
            let keys = if self.pool.is_empty() {
                KeyPool::single(self.key.unwrap_or_else(|| KeySource::env("OPENAI_API_KEY")))
            } else {
                KeyPool::new(self.pool)
            };
            vec![crate::upstreams::UpstreamConfig {
                name: "default".into(),
                base_url,
                keys,
                models: Vec::new(),
                priority: 0,
                weight: 1,
                dialect: crate::upstreams::Dialect::OpenAi,
                limits: None,
                prices: Vec::new(),
            }]
        } else {
            self.upstreams
                .into_iter()
                .map(|u| crate::upstreams::UpstreamConfig {
                    keys: if u.keys.is_empty() {
                        KeyPool::single(KeySource::env("OPENAI_API_KEY"))
                    } else {
                        KeyPool::new(u.keys)
                    },
                    name: u.name,
                    base_url: u.base_url,
                    models: u.models,
                    priority: u.priority,
                    weight: u.weight,
                    dialect: u.dialect,
                    limits: u.limits,
                    prices: u.prices,
                })
                .collect()
        };
        let mut headers = HeaderMap::new();
        let mut put = |name: &str, value: &str| -> Result<(), Error> {
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                Error::new(ErrorKind::Config, format!("invalid header name {name:?}"))
            })?;
            let v = HeaderValue::from_str(value).map_err(|_| {
                Error::new(
                    ErrorKind::Config,
                    format!("invalid value for header {name}"),
                )
            })?;
            headers.insert(n, v);
            Ok(())
        };
        if let Some(org) = self.organization.or_else(|| env("OPENAI_ORG_ID")) {
            put("openai-organization", &org)?;
        }
        if let Some(p) = self.project.or_else(|| env("OPENAI_PROJECT_ID")) {
            put("openai-project", &p)?;
        }
        for (k, v) in &self.headers {
            if k.eq_ignore_ascii_case("authorization") {
                return Err(Error::new(
                    ErrorKind::Config,
                    "set the key with api_key/api_key_env/api_key_file, not as a header",
                ));
            }
            put(k, v)?;
        }
        put("user-agent", concat!("sluice/", env!("CARGO_PKG_VERSION")))?;
        let mut transport = TransportConfig {
            timeouts: self.timeouts,
            ..TransportConfig::default()
        };
        if let Some(n) = self.pool_max_idle_per_host {
            transport.pool_max_idle_per_host = n;
        }
        let engine = Engine::new(EngineConfig {
            upstreams,
            transport,
            retry: self.retry,
            headers,
            admission: self
                .admission
                .unwrap_or_else(|| Some(AdmissionConfig::default())),
            models: self.models.unwrap_or_default(),
            spend: self.spend,
            alerts: self.alerts.unwrap_or_default(),
            breaker: self.breaker,
            replaces: self.replaces,
        })?;
        Ok(Client {
            engine,
            shared: Arc::new(Shared {
                default_max_tokens: self.default_max_tokens.unwrap_or(Some(DEFAULT_MAX_TOKENS)),
                warned_models: Mutex::new(HashSet::new()),
            }),
        })
    }
}
