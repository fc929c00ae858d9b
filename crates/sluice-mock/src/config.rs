//! The scenario: everything the simulator can be told to do, read from TOML or JSON.
//!
//! Two stages, as the design handbook asks: `Raw*` structs mirror the file with
//! `deny_unknown_fields` (so a typo is an error that names the field), then [`Scenario::from_raw`]
//! checks values and fills defaults. Nothing here panics on bad input.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A problem with a scenario file, naming the field and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text could not be parsed (the parser's message names the line and field).
    #[error("scenario parse error: {0}")]
    Parse(String),
    /// A value parsed but is not acceptable.
    #[error("scenario field `{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

/// Default requests per minute when a scenario sets none.
pub const DEFAULT_RPM: u64 = 10_000;
/// Default tokens per minute when a scenario sets none.
pub const DEFAULT_TPM: u64 = 10_000_000;

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// How callers are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Any bearer token is accepted (each distinct token gets its own limits).
    #[default]
    Any,
    /// Only keys listed under `[[keys]]` are accepted; others get 401 `invalid_api_key`.
    Listed,
}

/// What a request costs the tokens-per-minute budget, and whether any of it comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ChargeMode {
    /// The prompt estimate plus the whole `max_tokens` reservation, nothing given back (what
    /// the real services document and their users report; the default).
    #[default]
    MaxTokens,
    /// The reservation is settled to the tokens really used when the answer ends.
    RefundUnused,
}

/// Which response headers the simulated service sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HeaderDialect {
    /// OpenAI's: `x-request-id`, `openai-*`, and the six `x-ratelimit-*` (limit, remaining,
    /// reset for requests and tokens).
    #[default]
    Openai,
    /// Azure OpenAI's: `apim-request-id` and `x-ms-region` instead of OpenAI's ids, and of the
    /// rate-limit headers only `x-ratelimit-remaining-requests` and
    /// `x-ratelimit-remaining-tokens` (no limits, no resets).
    Azure,
    /// None at all, as vLLM and many local servers answer.
    None,
}

/// How JSON is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum JsonStyle {
    /// `{"a":1}`, as OpenAI writes it.
    #[default]
    Compact,
    /// `{"a": 1}`, as Python servers (vLLM) write it.
    Spaced,
}

/// How the rate limiter counts a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PromptCount {
    /// With the model's tokenizer (exact; `usage` is always counted this way).
    #[default]
    Tokenizer,
    /// OpenAI's estimate: about four characters a token over the request's text.
    Characters,
}

/// What a model is for, which decides the endpoints that accept it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Chat,
    Completion,
    Embedding,
}

/// The tokenizer a model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    O200kBase,
    Cl100kBase,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScenario {
    pub seed: Option<u64>,
    pub auth: Option<AuthMode>,
    /// Tokens charged up front for the output when a request sets no `max_tokens`.
    pub default_max_tokens: Option<u64>,
    /// Keep separate budgets per (key, model) instead of per key.
    pub per_model_limits: Option<bool>,
    pub limits: Option<RawLimits>,
    #[serde(default)]
    pub keys: Vec<RawKey>,
    pub latency: Option<RawLatency>,
    pub faults: Option<RawFaults>,
    pub output: Option<RawOutput>,
    pub cache: Option<RawCache>,
    #[serde(default)]
    pub models: Vec<RawModel>,
    /// Remember at most this many distinct Idempotency-Key / X-Request-Id values in stats.
    pub max_tracked_ids: Option<usize>,
    /// `POST /v1/moderations`: the words that flag each category.
    pub moderations: Option<RawModerations>,
    /// `"openai"` (default), `"azure"` or `"none"`.
    pub headers: Option<HeaderDialect>,
    /// `"compact"` (default) or `"spaced"`.
    pub json_style: Option<JsonStyle>,
    /// What answers name as their `model`: `"snapshot"` (default, as the real service: an
    /// alias's current dated snapshot) or `"requested"` (the name the request gave).
    pub answer_model: Option<String>,
    /// `/v1/files`: the largest upload kept (in memory).
    pub files: Option<RawFiles>,
    /// `/v1/batches`: how fast the compressed clock runs.
    pub batches: Option<RawBatches>,
    /// Azure OpenAI's URL shape: `/openai/deployments/{name}/...?api-version=`.
    pub azure: Option<RawAzure>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAzure {
    /// Deployment name → the model it runs.
    #[serde(default)]
    pub deployments: BTreeMap<String, String>,
    /// What a Responses API answer's `model` says where the body named a deployment:
    /// `"deployment"` (default — the harsher case: the name as sent, which a client that asked
    /// for a model does not recognise) or `"model"` (the model the deployment runs).
    pub responses_model: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFiles {
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatches {
    /// From creation to `completed` (default 2 s; the real window is up to 24 h).
    #[serde(default, with = "humantime_serde")]
    pub complete_after: Option<Duration>,
    /// A batch not complete by then is `expired` (default: never).
    #[serde(default, with = "humantime_serde")]
    pub expire_after: Option<Duration>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModerations {
    /// Category (`violence`, `hate`, `self-harm/intent`, …) → words that flag it.
    #[serde(default)]
    pub words: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// Bucket capacity as a span of refill time: `"60s"` lets a full minute's budget through at
    /// once, `"1s"` allows only a second's worth of burst.
    #[serde(default, with = "humantime_serde")]
    pub burst: Option<Duration>,
    /// `"max_tokens"` (default) or `"refund_unused"`.
    pub charge: Option<ChargeMode>,
    /// `"tokenizer"` (default) or `"characters"`.
    pub prompt_count: Option<PromptCount>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub key: String,
    /// Name shown in stats (defaults to a masked form of the key).
    pub name: Option<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    pub burst: Option<Duration>,
    #[serde(default)]
    pub quota_exhausted: bool,
    #[serde(default)]
    pub revoked: bool,
    /// Valid key without permission for the API: 403.
    #[serde(default)]
    pub forbidden: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLatency {
    #[serde(default, with = "humantime_serde")]
    pub ttft: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub ttft_jitter: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub per_token: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub per_token_jitter: Option<Duration>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFaults {
    pub error_500: Option<f64>,
    pub error_502: Option<f64>,
    pub error_503: Option<f64>,
    pub reset: Option<f64>,
    pub stall_headers: Option<f64>,
    pub stall_stream: Option<f64>,
    pub drop_stream: Option<f64>,
    pub no_done: Option<f64>,
    pub sse_error: Option<f64>,
    /// How long a stall lasts (the client's timeout should fire first).
    #[serde(default, with = "humantime_serde")]
    pub stall_for: Option<Duration>,
    pub storm: Option<RawStorm>,
    #[serde(default)]
    pub content_filter_words: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorm {
    /// Start of the window, counted from when the scenario was applied.
    #[serde(default, with = "humantime_serde")]
    pub after: Option<Duration>,
    #[serde(default, with = "humantime_serde", rename = "for")]
    pub duration: Option<Duration>,
    /// The wait the storm's 429s ask for (default: until the window ends).
    #[serde(default, with = "humantime_serde")]
    pub retry_after: Option<Duration>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutput {
    pub min_tokens: Option<u64>,
    pub max_tokens: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    #[serde(default)]
    pub enabled: bool,
    pub min_tokens: Option<u64>,
    pub block: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub id: String,
    pub kind: Option<ModelKind>,
    pub encoding: Option<Encoding>,
    pub context_window: Option<u64>,
    pub max_output: Option<u64>,
    pub dimensions: Option<u32>,
    #[serde(default)]
    pub retired: bool,
}

/// Validated per-bucket limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub burst: Duration,
}

#[derive(Debug, Clone)]
pub struct KeySpec {
    pub key: String,
    pub name: String,
    pub limits: Limits,
    pub quota_exhausted: bool,
    pub revoked: bool,
    pub forbidden: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub ttft: Duration,
    pub ttft_jitter: Duration,
    pub per_token: Duration,
    pub per_token_jitter: Duration,
}

impl Latency {
    pub fn is_off(&self) -> bool {
        self.ttft.is_zero()
            && self.ttft_jitter.is_zero()
            && self.per_token.is_zero()
            && self.per_token_jitter.is_zero()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Storm {
    pub after: Duration,
    pub duration: Duration,
    pub retry_after: Option<Duration>,
}

#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub error_500: f64,
    pub error_502: f64,
    pub error_503: f64,
    pub reset: f64,
    pub stall_headers: f64,
    pub stall_stream: f64,
    pub drop_stream: f64,
    pub no_done: f64,
    pub sse_error: f64,
    pub stall_for: Duration,
    pub storm: Option<Storm>,
    /// Lower-cased trigger words.
    pub content_filter_words: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct Cache {
    pub enabled: bool,
    pub min_tokens: u64,
    pub block: u64,
}

#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub id: String,
    /// What answers name as their `model`: an alias's current dated snapshot (as the real
    /// service answers `gpt-4o-mini` with `gpt-4o-mini-2024-07-18`), else `id`.
    pub answers_as: String,
    pub kind: ModelKind,
    pub encoding: Encoding,
    pub context_window: u64,
    pub max_output: u64,
    pub dimensions: u32,
    pub retired: bool,
}

/// A validated scenario. Build one from a file with [`Scenario::from_toml`] /
/// [`Scenario::from_json`], or start from [`Scenario::default`] and change fields.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub auth: AuthMode,
    pub default_max_tokens: u64,
    pub per_model_limits: bool,
    pub limits: Limits,
    pub charge: ChargeMode,
    pub prompt_count: PromptCount,
    pub keys: Vec<KeySpec>,
    pub latency: Latency,
    pub faults: Faults,
    pub output_min_tokens: u64,
    pub output_max_tokens: u64,
    pub cache: Cache,
    pub models: BTreeMap<String, ModelSpec>,
    pub max_tracked_ids: usize,
    /// Moderation categories and their lower-cased trigger words.
    pub moderation_words: BTreeMap<String, Vec<String>>,
    pub headers: HeaderDialect,
    pub json_style: JsonStyle,
    pub files_max_bytes: u64,
    pub batch_complete_after: Duration,
    pub batch_expire_after: Option<Duration>,
    /// Azure deployments (name → model) served under `/openai/deployments/`.
    pub azure_deployments: BTreeMap<String, String>,
    /// Responses API answers from Azure's routes name the deployment (else its model).
    pub azure_responses_deployment: bool,
}

impl Default for Scenario {
    fn default() -> Self {
        // The empty scenario always validates; fall back to a hand-built one only if a
        // default ever fails validation (a bug this keeps from becoming a panic).
        Scenario::from_raw(RawScenario::default()).unwrap_or_else(|_| Scenario {
            seed: 0,
            auth: AuthMode::Any,
            default_max_tokens: 1024,
            per_model_limits: false,
            limits: Limits {
                rpm: Some(DEFAULT_RPM),
                tpm: Some(DEFAULT_TPM),
                burst: Duration::from_secs(60),
            },
            charge: ChargeMode::default(),
            prompt_count: PromptCount::default(),
            keys: Vec::new(),
            latency: Latency::default(),
            faults: Faults::default(),
            output_min_tokens: 8,
            output_max_tokens: 64,
            cache: Cache {
                enabled: false,
                min_tokens: 1024,
                block: 128,
            },
            models: default_models(),
            moderation_words: BTreeMap::new(),
            headers: HeaderDialect::default(),
            json_style: JsonStyle::default(),
            files_max_bytes: 64 * 1024 * 1024,
            batch_complete_after: Duration::from_secs(2),
            batch_expire_after: None,
            azure_deployments: BTreeMap::new(),
            azure_responses_deployment: true,
            max_tracked_ids: 2_000_000,
        })
    }
}

impl Scenario {
    /// Parse and validate a TOML scenario.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: RawScenario =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        Self::from_raw(raw)
    }

    /// Parse and validate a JSON scenario (same fields as TOML; durations as strings).
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let raw: RawScenario =
            serde_json::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        Self::from_raw(raw)
    }

    /// Validate a raw scenario and fill in defaults.
    pub fn from_raw(raw: RawScenario) -> Result<Self, ConfigError> {
        let raw_limits = raw.limits.unwrap_or_default();
        let default_burst = Duration::from_secs(60);
        // Without configuration, limits like a generous paid tier: always some limit and always
        // the headers, as upstream does.
        let limits = Limits {
            rpm: nonzero("limits.rpm", raw_limits.rpm)?.or(Some(DEFAULT_RPM)),
            tpm: nonzero("limits.tpm", raw_limits.tpm)?.or(Some(DEFAULT_TPM)),
            burst: burst("limits.burst", raw_limits.burst, default_burst)?,
        };
        let mut keys = Vec::with_capacity(raw.keys.len());
        for (i, k) in raw.keys.into_iter().enumerate() {
            if k.key.is_empty() {
                return Err(invalid(format!("keys[{i}].key"), "must not be empty"));
            }
            if keys.iter().any(|other: &KeySpec| other.key == k.key) {
                return Err(invalid(format!("keys[{i}].key"), "listed twice"));
            }
            let name = k.name.unwrap_or_else(|| mask_key(&k.key));
            keys.push(KeySpec {
                limits: Limits {
                    rpm: nonzero(&format!("keys[{i}].rpm"), k.rpm)?.or(limits.rpm),
                    tpm: nonzero(&format!("keys[{i}].tpm"), k.tpm)?.or(limits.tpm),
                    burst: burst(&format!("keys[{i}].burst"), k.burst, limits.burst)?,
                },
                key: k.key,
                name,
                quota_exhausted: k.quota_exhausted,
                revoked: k.revoked,
                forbidden: k.forbidden,
            });
        }
        let l = raw.latency.unwrap_or_default();
        let latency = Latency {
            ttft: l.ttft.unwrap_or_default(),
            ttft_jitter: l.ttft_jitter.unwrap_or_default(),
            per_token: l.per_token.unwrap_or_default(),
            per_token_jitter: l.per_token_jitter.unwrap_or_default(),
        };
        let f = raw.faults.unwrap_or_default();
        let faults = Faults {
            error_500: prob("faults.error_500", f.error_500)?,
            error_502: prob("faults.error_502", f.error_502)?,
            error_503: prob("faults.error_503", f.error_503)?,
            reset: prob("faults.reset", f.reset)?,
            stall_headers: prob("faults.stall_headers", f.stall_headers)?,
            stall_stream: prob("faults.stall_stream", f.stall_stream)?,
            drop_stream: prob("faults.drop_stream", f.drop_stream)?,
            no_done: prob("faults.no_done", f.no_done)?,
            sse_error: prob("faults.sse_error", f.sse_error)?,
            stall_for: f.stall_for.unwrap_or(Duration::from_secs(300)),
            storm: match f.storm {
                None => None,
                Some(s) => {
                    let duration = s
                        .duration
                        .ok_or_else(|| invalid("faults.storm.for", "is required"))?;
                    Some(Storm {
                        after: s.after.unwrap_or_default(),
                        duration,
                        retry_after: s.retry_after,
                    })
                }
            },
            content_filter_words: f
                .content_filter_words
                .into_iter()
                .filter(|w| !w.is_empty())
                .map(|w| w.to_lowercase())
                .collect(),
        };
        let o = raw.output.unwrap_or_default();
        let output_min_tokens = o.min_tokens.unwrap_or(8);
        let output_max_tokens = o.max_tokens.unwrap_or(64.max(output_min_tokens));
        if output_min_tokens == 0 {
            return Err(invalid("output.min_tokens", "must be at least 1"));
        }
        if output_max_tokens < output_min_tokens {
            return Err(invalid(
                "output.max_tokens",
                format!("must be >= output.min_tokens ({output_min_tokens})"),
            ));
        }
        let c = raw.cache.unwrap_or_default();
        let cache = Cache {
            enabled: c.enabled,
            min_tokens: c.min_tokens.unwrap_or(1024),
            block: c.block.unwrap_or(128),
        };
        if cache.block == 0 {
            return Err(invalid("cache.block", "must be at least 1"));
        }
        let mut models = default_models();
        for (i, m) in raw.models.into_iter().enumerate() {
            if m.id.is_empty() {
                return Err(invalid(format!("models[{i}].id"), "must not be empty"));
            }
            let base = models.get(&m.id).cloned();
            let kind = m
                .kind
                .or(base.as_ref().map(|b| b.kind))
                .unwrap_or_else(|| guess_kind(&m.id));
            let spec = ModelSpec {
                kind,
                encoding: m
                    .encoding
                    .or(base.as_ref().map(|b| b.encoding))
                    .unwrap_or_else(|| guess_encoding(&m.id)),
                context_window: m
                    .context_window
                    .or(base.as_ref().map(|b| b.context_window))
                    .unwrap_or(128_000),
                max_output: m
                    .max_output
                    .or(base.as_ref().map(|b| b.max_output))
                    .unwrap_or(16_384),
                dimensions: m
                    .dimensions
                    .or(base.as_ref().map(|b| b.dimensions))
                    .unwrap_or(1536),
                retired: m.retired,
                answers_as: base
                    .as_ref()
                    .map_or_else(|| m.id.clone(), |b| b.answers_as.clone()),
                id: m.id.clone(),
            };
            if spec.context_window == 0 {
                return Err(invalid(
                    format!("models[{i}].context_window"),
                    "must be at least 1",
                ));
            }
            models.insert(m.id, spec);
        }
        match raw.answer_model.as_deref() {
            None | Some("snapshot") => {}
            Some("requested") => {
                for (id, m) in models.iter_mut() {
                    m.answers_as = id.clone();
                }
            }
            Some(other) => {
                return Err(invalid(
                    "answer_model",
                    format!("must be \"snapshot\" or \"requested\", got {other:?}"),
                ))
            }
        }
        Ok(Scenario {
            seed: raw.seed.unwrap_or(0x5eed),
            auth: raw.auth.unwrap_or_default(),
            default_max_tokens: raw.default_max_tokens.unwrap_or(1024),
            per_model_limits: raw.per_model_limits.unwrap_or(false),
            limits,
            charge: raw_limits.charge.unwrap_or_default(),
            prompt_count: raw_limits.prompt_count.unwrap_or_default(),
            keys,
            latency,
            faults,
            output_min_tokens,
            output_max_tokens,
            cache,
            models,
            max_tracked_ids: raw.max_tracked_ids.unwrap_or(2_000_000),
            moderation_words: moderation_words(raw.moderations.unwrap_or_default())?,
            headers: raw.headers.unwrap_or_default(),
            json_style: raw.json_style.unwrap_or_default(),
            files_max_bytes: raw
                .files
                .as_ref()
                .and_then(|f| f.max_bytes)
                .unwrap_or(64 * 1024 * 1024),
            batch_complete_after: raw
                .batches
                .as_ref()
                .and_then(|b| b.complete_after)
                .unwrap_or(Duration::from_secs(2)),
            batch_expire_after: raw.batches.as_ref().and_then(|b| b.expire_after),
            azure_responses_deployment: match raw
                .azure
                .as_ref()
                .and_then(|a| a.responses_model.as_deref())
            {
                None | Some("deployment") => true,
                Some("model") => false,
                Some(other) => {
                    return Err(invalid(
                        "azure.responses_model",
                        format!("must be \"deployment\" or \"model\", got {other:?}"),
                    ))
                }
            },
            azure_deployments: raw.azure.map(|a| a.deployments).unwrap_or_default(),
        })
    }

    /// The spec for a listed key, if any.
    pub fn key(&self, key: &str) -> Option<&KeySpec> {
        self.keys.iter().find(|k| k.key == key)
    }
}

fn nonzero(field: &str, v: Option<u64>) -> Result<Option<u64>, ConfigError> {
    match v {
        Some(0) => Err(invalid(field, "must be at least 1 (omit it for no limit)")),
        other => Ok(other),
    }
}

/// The categories `POST /v1/moderations` reports (omni-moderation's set).
pub const MODERATION_CATEGORIES: [&str; 13] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

fn moderation_words(raw: RawModerations) -> Result<BTreeMap<String, Vec<String>>, ConfigError> {
    let mut out = BTreeMap::new();
    for (category, words) in raw.words {
        if !MODERATION_CATEGORIES.contains(&category.as_str()) {
            return Err(ConfigError::Invalid {
                field: "moderations.words".into(),
                reason: format!(
                    "unknown category {category:?} (one of {})",
                    MODERATION_CATEGORIES.join(", ")
                ),
            });
        }
        let words: Vec<String> = words
            .into_iter()
            .filter(|w| !w.is_empty())
            .map(|w| w.to_lowercase())
            .collect();
        out.insert(category, words);
    }
    Ok(out)
}

fn burst(field: &str, v: Option<Duration>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        Some(d) if d < Duration::from_millis(1) => Err(invalid(field, "must be at least 1ms")),
        Some(d) => Ok(d),
        None => Ok(default),
    }
}

fn prob(field: &str, v: Option<f64>) -> Result<f64, ConfigError> {
    match v {
        None => Ok(0.0),
        Some(p) if (0.0..=1.0).contains(&p) => Ok(p),
        Some(p) => Err(invalid(
            field,
            format!("a probability between 0 and 1, got {p}"),
        )),
    }
}

/// `sk-abc…wxyz`: enough to tell keys apart in stats and errors, never the secret itself.
pub fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "***".to_string();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}***{tail}")
}

fn guess_kind(id: &str) -> ModelKind {
    if id.contains("embedding") {
        ModelKind::Embedding
    } else if id.contains("instruct") || id.starts_with("davinci") || id.starts_with("babbage") {
        ModelKind::Completion
    } else {
        ModelKind::Chat
    }
}

fn guess_encoding(id: &str) -> Encoding {
    let cl100k = [
        "gpt-4-",
        "gpt-3.5",
        "text-embedding",
        "davinci-002",
        "babbage-002",
    ];
    if id == "gpt-4" || cl100k.iter().any(|p| id.starts_with(p)) {
        Encoding::Cl100kBase
    } else {
        Encoding::O200kBase
    }
}

/// The models the simulator knows without configuration: current families plus a few retired
/// ids so that `model_not_found` paths can be exercised with real names.
pub fn default_models() -> BTreeMap<String, ModelSpec> {
    use Encoding::*;
    use ModelKind::*;
    let table: &[(&str, ModelKind, Encoding, u64, u64, u32, bool)] = &[
        ("gpt-4o", Chat, O200kBase, 128_000, 16_384, 0, false),
        (
            "gpt-4o-2024-08-06",
            Chat,
            O200kBase,
            128_000,
            16_384,
            0,
            false,
        ),
        ("gpt-4o-mini", Chat, O200kBase, 128_000, 16_384, 0, false),
        ("gpt-4.1", Chat, O200kBase, 1_047_576, 32_768, 0, false),
        ("gpt-4.1-mini", Chat, O200kBase, 1_047_576, 32_768, 0, false),
        ("gpt-4.1-nano", Chat, O200kBase, 1_047_576, 32_768, 0, false),
        ("gpt-5", Chat, O200kBase, 400_000, 128_000, 0, false),
        ("gpt-5-mini", Chat, O200kBase, 400_000, 128_000, 0, false),
        ("o3", Chat, O200kBase, 200_000, 100_000, 0, false),
        ("o4-mini", Chat, O200kBase, 200_000, 100_000, 0, false),
        ("gpt-4-turbo", Chat, Cl100kBase, 128_000, 4_096, 0, false),
        // Shut down on 2026-10-23 (OpenAI's deprecations page, 2026-04-22 entry).
        ("gpt-4", Chat, Cl100kBase, 8_192, 8_192, 0, true),
        ("gpt-3.5-turbo", Chat, Cl100kBase, 16_385, 4_096, 0, true),
        (
            "gpt-3.5-turbo-instruct",
            Completion,
            Cl100kBase,
            4_096,
            4_096,
            0,
            false,
        ),
        (
            "davinci-002",
            Completion,
            Cl100kBase,
            16_384,
            16_384,
            0,
            false,
        ),
        (
            "babbage-002",
            Completion,
            Cl100kBase,
            16_384,
            16_384,
            0,
            false,
        ),
        (
            "text-embedding-3-small",
            Embedding,
            Cl100kBase,
            8_192,
            0,
            1536,
            false,
        ),
        (
            "text-embedding-3-large",
            Embedding,
            Cl100kBase,
            8_192,
            0,
            3072,
            false,
        ),
        (
            "text-embedding-ada-002",
            Embedding,
            Cl100kBase,
            8_192,
            0,
            1536,
            false,
        ),
        ("gpt-4-32k", Chat, Cl100kBase, 32_768, 32_768, 0, true),
        (
            "gpt-4-vision-preview",
            Chat,
            Cl100kBase,
            128_000,
            4_096,
            0,
            true,
        ),
        (
            "gpt-3.5-turbo-0613",
            Chat,
            Cl100kBase,
            4_096,
            4_096,
            0,
            true,
        ),
        (
            "text-davinci-003",
            Completion,
            Cl100kBase,
            4_097,
            4_097,
            0,
            true,
        ),
    ];
    let mut models: BTreeMap<String, ModelSpec> = table
        .iter()
        .map(
            |&(id, kind, encoding, context_window, max_output, dimensions, retired)| {
                (
                    id.to_string(),
                    ModelSpec {
                        id: id.to_string(),
                        answers_as: id.to_string(),
                        kind,
                        encoding,
                        context_window,
                        max_output,
                        dimensions,
                        retired,
                    },
                )
            },
        )
        .collect();
    // Dated snapshots the real service serves beside its aliases (OpenAI's models pages): each
    // is its own model, answering with its own id.
    let snapshots: &[(&str, &str)] = &[
        ("gpt-4o-2024-05-13", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-11-20", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
        ("o3-2025-04-16", "o3"),
        ("o4-mini-2025-04-16", "o4-mini"),
        ("gpt-4-turbo-2024-04-09", "gpt-4-turbo"),
    ];
    for (snapshot, alias) in snapshots {
        if let Some(spec) = models.get(*alias).cloned() {
            models.insert(
                snapshot.to_string(),
                ModelSpec {
                    id: snapshot.to_string(),
                    answers_as: snapshot.to_string(),
                    ..spec
                },
            );
        }
    }
    // The snapshot each alias points to today (OpenAI's models pages); its answers name it.
    let current: &[(&str, &str)] = &[
        ("gpt-4o", "gpt-4o-2024-08-06"),
        ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
        ("gpt-4.1", "gpt-4.1-2025-04-14"),
        ("gpt-4.1-mini", "gpt-4.1-mini-2025-04-14"),
        ("gpt-4.1-nano", "gpt-4.1-nano-2025-04-14"),
        ("gpt-5", "gpt-5-2025-08-07"),
        ("gpt-5-mini", "gpt-5-mini-2025-08-07"),
        ("o3", "o3-2025-04-16"),
        ("o4-mini", "o4-mini-2025-04-16"),
        ("gpt-4-turbo", "gpt-4-turbo-2024-04-09"),
    ];
    for (alias, snapshot) in current {
        if let Some(m) = models.get_mut(*alias) {
            m.answers_as = snapshot.to_string();
        }
    }
    models
}

#[cfg(test)]
mod tests {
    use super::*;

    // Fuzz targets (bounded here; `PROPTEST_CASES=200000 cargo test -p sluice-mock fuzz_` for a
    // long run): any text, and each shipped scenario with a character cut out, replaced or
    // added, loads or fails with an error, never a panic.
    proptest::proptest! {
        #[test]
        fn fuzz_any_text(text in "\\PC{0,300}") {
            let _ = Scenario::from_toml(&text);
        }

        #[test]
        fn fuzz_mutated_scenarios(which in 0usize..6, at in 0usize..4000, op in 0u8..3,
                                  ch in proptest::char::any()) {
            let files = [
                include_str!("../../../examples/mock/realistic-tier.toml"),
                include_str!("../../../examples/mock/chaos-drill.toml"),
                include_str!("../../../examples/mock/azure-openai.toml"),
                include_str!("../../../examples/mock/openai-strict.toml"),
                include_str!("../../../examples/mock/local-server.toml"),
                include_str!("../../../examples/mock/throughput.toml"),
            ];
            let mut chars: Vec<char> = files[which].chars().collect();
            let i = at % chars.len().max(1);
            match op {
                0 if !chars.is_empty() => { chars.remove(i); }
                1 if !chars.is_empty() => chars[i] = ch,
                _ => chars.insert(i.min(chars.len()), ch),
            }
            let _ = Scenario::from_toml(&chars.into_iter().collect::<String>());
        }
    }

    #[test]
    fn empty_scenario_has_defaults() {
        let s = Scenario::from_toml("").unwrap();
        assert_eq!(s.auth, AuthMode::Any);
        assert_eq!(s.limits.rpm, Some(DEFAULT_RPM));
        assert!(s.latency.is_off());
        assert!(s.models.contains_key("gpt-4o-mini"));
        assert!(s.models["gpt-4-32k"].retired);
    }

    #[test]
    fn unknown_field_is_named() {
        let err = Scenario::from_toml("[limits]\nrpmm = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rpmm"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn bad_probability_names_field() {
        let err = Scenario::from_toml("[faults]\nerror_500 = 1.5\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "scenario field `faults.error_500`: a probability between 0 and 1, got 1.5"
        );
    }

    #[test]
    fn keys_inherit_default_limits() {
        let s = Scenario::from_toml(
            "[limits]\nrpm = 10\ntpm = 1000\nburst = \"1s\"\n[[keys]]\nkey = \"sk-a\"\ntpm = 50\n",
        )
        .unwrap();
        let k = s.key("sk-a").unwrap();
        assert_eq!(k.limits.rpm, Some(10));
        assert_eq!(k.limits.tpm, Some(50));
        assert_eq!(k.limits.burst, Duration::from_secs(1));
    }

    #[test]
    fn json_and_durations() {
        let s = Scenario::from_json(
            r#"{"latency":{"ttft":"250ms","per_token":"5ms"},"faults":{"storm":{"after":"1s","for":"2s"}}}"#,
        )
        .unwrap();
        assert_eq!(s.latency.ttft, Duration::from_millis(250));
        assert_eq!(s.faults.storm.unwrap().duration, Duration::from_secs(2));
        let err = Scenario::from_json(r#"{"faults":{"storm":{"after":"1s"}}}"#).unwrap_err();
        assert!(err.to_string().contains("faults.storm.for"));
    }

    #[test]
    fn mask_never_shows_the_middle() {
        assert_eq!(mask_key("sk-proj-abcdefghijkl"), "sk-***ijkl");
        assert_eq!(mask_key("short"), "***");
    }
}
