//! `sluice serve`'s configuration file (TOML). Two stages as everywhere in sluice: `Raw*` with
//! `deny_unknown_fields` (a typo is an error naming the field and line), then checked values.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! max_body_bytes = 33554432
//!
//! [upstream]
//! base_url = "https://api.openai.com/v1"
//! keys = [{ env = "OPENAI_API_KEY" }, { file = "/run/secrets/openai" }, { keys_file = "/run/secrets/pool" }]
//! rpm = 5000          # optional: otherwise learned from the upstream's headers
//! tpm = 800000
//! per_model = true
//! refunds_unused = false  # true: the upstream gives unused max_tokens back (OpenAI does not)
//! prompt_count = "larger" # or "characters" / "tokenizer": how the upstream's limiter counts a prompt
//! burst = "1s"            # how far above its steady rate the upstream lets a burst go
//! timeouts = { connect = "5s", first_byte = "60s", idle = "30s", total = "10m" }
//! max_concurrency = 2048 # requests (and streams) in flight upstream at most
//! breaker = { failures = 5, failing_for = "1s", cooldown = "30s", max_cooldown = "5m" }
//!   # and optionally error_fraction = 0.5, window = "10s", min_requests = 20 (off by default)
//!
//! [[upstreams]]                   # several upstreams (then [upstream] keeps only shared settings)
//! name = "azure-east"
//! kind = "azure"                   # openai (default) | azure | compatible
//! endpoint = "https://my-resource.openai.azure.com"   # base_url for the others
//! api_version = "2024-10-21"         # or api = "v1" for Azure's /openai/v1/ surface
//! deployments = { "gpt-4o-mini" = "prod-4o-mini" }
//! keys = [{ env = "AZURE_OPENAI_API_KEY" }]
//! models = ["gpt-4o*"]             # globs; default all
//! priority = 0                     # lower first
//! weight = 1                       # share within a priority
//! rpm = 5000                       # optional: its own limits (per key and model)
//! tpm = 2000000
//!
//! [[virtual_keys]]
//! name = "team-a"
//! key = "sk-team-a-..."            # or sha256 = "<hex digest of the key>"
//! models = ["gpt-4o-mini"]         # allowed models (empty or absent: all)
//! rpm = 600                        # this caller's own limits (optional)
//! tpm = 100000
//! budget = { day = "5.00", month = "100" }   # USD; refused past it (x-should-retry: false)
//!
//! [models]
//! registry = "my-models.toml"      # extends the shipped model registry
//! on_retired = "reject"            # or "substitute" (send to the replacement) or "allow"
//! aliases = { fast = "gpt-4o-mini" }
//! fallbacks = { "gpt-4.1" = ["gpt-4o"] }   # on model_not_found, try these in order
//! check_upstream_every = "1h"      # GET /v1/models at start and this often ("0s": off)
//!
//! [spend]
//! ledger = "/var/lib/sluice/ledger.db"    # SQLite; "off" for none (default: see README)
//! redis_url = "redis://127.0.0.1:6379"    # budgets (and the ledger) shared by replicas
//! redis_prefix = "sluice"
//! budget = { day = "50", month = "1000" } # global, USD
//! allow_unpriced = false                  # refuse unpriced models while a budget applies
//!
//! [alerts]                                # log event + metric each; webhook optional
//! webhook = "https://hooks.example.com/sluice"
//! dedup = "10m"                           # the same alert at most once per period
//! max_per_minute = 10
//! remaining_below = 0.2                   # upstream requests/tokens left
//! budget_thresholds = [0.8]
//! error_rate_above = 0.1                  # judged per window (1m) over min_requests (20)
//! error_kind_above = { timeout_first_byte = 0.05 }
//! p99_above = "20s"
//! completion_tokens_above = 1000
//! finish_reason_above = { length = 0.1, content_filter = 0.01 }
//!
//! [server]                                # connection limits (fixed until a restart)
//! max_connections = 4096                  # default: half the open-file limit, at most 4096
//! header_timeout = "30s"                  # a request head; also idle keep-alive (HTTP/1)
//! body_timeout = "60s"                    # a request body read whole (408 past it)
//! idle_timeout = "5m"                     # no byte either way: closed
//! http2_max_streams = 100                 # concurrent streams per HTTP/2 connection
//!
//! [state]                                 # quotas shared by replicas (admission, callers' limits)
//! redis_url = "redis://127.0.0.1:6379"
//! prefix = "sluice:gateway"               # the same on every replica
//! on_redis_error = "fail_closed"          # or "fallback_local"
//!
//! [reload]                                # read from the new file: the change is meant
//! allow_removing_upstream = false         # a reload without [upstream] is refused
//! allow_removing_all_virtual_keys = false # a reload without virtual keys is refused
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::collections::HashMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use sluice::model_policy::OnRetired;
use sluice::pricing::{parse_dollars, Nanos};
use sluice::spend::Period;

/// A bad configuration: the field and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}{}: `{field}`: {reason}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        path: String,
        /// Where the setting is written (1-based), when it is written at all.
        line: Option<usize>,
        field: String,
        reason: String,
    },
}

/// The line (1-based) of `text` on which the setting `field` (`virtual_keys[1].budget.day`) is
/// written: the deepest part of the path that the file spells out. Only read on the error
/// path, so the file is parsed a second time, with spans.
fn line_of(text: &str, field: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut item = doc.as_item();
    let mut at = None;
    for part in field.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some(next) = item.get(name) else { break };
        item = next;
        at = item.span().map(|s| s.start).or(at);
        if let Some(i) = index {
            let Some(next) = item.get(i) else { break };
            item = next;
            at = item.span().map(|s| s.start).or(at);
        }
    }
    let at = at?;
    Some(text.get(..at)?.bytes().filter(|b| *b == b'\n').count() + 1)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<SocketAddr>,
    max_body_bytes: Option<usize>,
    upstream: Option<RawUpstream>,
    #[serde(default)]
    virtual_keys: Vec<RawVirtualKey>,
    models: Option<RawModels>,
    spend: Option<RawSpend>,
    alerts: Option<RawAlerts>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    reload: Option<RawReload>,
    server: Option<RawServer>,
    #[serde(default)]
    upstreams: Vec<RawUpstreamEntry>,
    state: Option<RawState>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    redis_url: String,
    prefix: Option<String>,
    /// `fail_closed` (default) or `fallback_local`.
    on_redis_error: Option<String>,
}

/// Admission state shared by every replica through Redis (`[state]`).
#[derive(Debug, Clone)]
pub struct StateSettings {
    /// May carry a password: never shown by `Debug`.
    pub redis_url: sluice::SecretString,
    /// Replicas that share quotas use the same prefix.
    pub prefix: String,
    pub on_error: sluice::admission::OnStateError,
}

/// One of several upstreams (`[[upstreams]]`); the shared settings stay in `[upstream]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstreamEntry {
    name: String,
    /// `openai` (default), `azure` or `compatible`.
    kind: Option<String>,
    base_url: Option<String>,
    /// Azure: the resource's endpoint (`https://NAME.openai.azure.com`).
    endpoint: Option<String>,
    api_version: Option<String>,
    /// Azure: `"v1"` for the `/openai/v1/` surface (no `api_version` then).
    api: Option<String>,
    #[serde(default)]
    deployments: HashMap<String, String>,
    #[serde(default)]
    keys: Vec<RawKey>,
    #[serde(default)]
    models: Vec<String>,
    priority: Option<i32>,
    weight: Option<u32>,
    /// Its own limits per key and model (else the shared `[upstream]` ones, or learned).
    rpm: Option<u64>,
    tpm: Option<u64>,
    /// What it charges per model (exact names or `*` globs), where the registry's price is
    /// not what this upstream bills (an Azure contract, a self-hosted server's own cost).
    #[serde(default)]
    prices: std::collections::BTreeMap<String, RawPrice>,
}

/// Dollars per million tokens, as the model registry writes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    input_per_mtok: f64,
    output_per_mtok: f64,
    cached_input_per_mtok: Option<f64>,
}

/// One of several upstreams, checked (the engine's type: the batch runner reads the same).
pub use sluice::upstreams::UpstreamSetting as UpstreamEntry;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    max_connections: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    header_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    body_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    idle_timeout: Option<Duration>,
    http2_max_streams: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReload {
    allow_removing_upstream: Option<bool>,
    allow_removing_all_virtual_keys: Option<bool>,
}

/// What a reload may do that would otherwise be refused as a mistake (a truncated or emptied
/// file): both are read from the *new* file, so the change has to say it is meant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadSettings {
    /// Apply a file without `[upstream]` while the running one has it (the upstream would
    /// fall back to `OPENAI_BASE_URL` or the public API).
    pub allow_removing_upstream: bool,
    /// Apply a file with no virtual key while the running one has some (loopback callers
    /// would then need no key at all).
    pub allow_removing_all_virtual_keys: bool,
}

/// An operation the built-in route table lacks (`[[routes]]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    path: String,
    methods: Vec<String>,
    /// `json` (default), `multipart`, `json_or_multipart`, `none`, `any`.
    body: Option<String>,
    /// `json` (default) or `binary`.
    framing: Option<String>,
    /// `never` (default), `chat`, `responses`, `events`.
    stream: Option<String>,
    /// `none` (default), `body`, `path`.
    model: Option<String>,
    /// `other` (default), `tokens`, `free`.
    billing: Option<String>,
    /// Default: the path's first segment.
    family: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    webhook: Option<String>,
    #[serde(default, with = "humantime_serde")]
    dedup: Option<Duration>,
    max_per_minute: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    window: Option<Duration>,
    min_requests: Option<u64>,
    remaining_below: Option<f64>,
    budget_thresholds: Option<Vec<f64>>,
    deprecated_model: Option<bool>,
    key_quarantined: Option<bool>,
    error_rate_above: Option<f64>,
    #[serde(default)]
    error_kind_above: HashMap<String, f64>,
    #[serde(default, with = "humantime_serde")]
    p99_above: Option<Duration>,
    completion_tokens_above: Option<u64>,
    finish_reason_above: Option<HashMap<String, f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModels {
    registry: Option<PathBuf>,
    on_retired: Option<String>,
    #[serde(default)]
    aliases: HashMap<String, String>,
    #[serde(default)]
    fallbacks: HashMap<String, Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    check_upstream_every: Option<std::time::Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpend {
    ledger: Option<String>,
    redis_url: Option<String>,
    redis_prefix: Option<String>,
    budget: Option<RawBudget>,
    allow_unpriced: Option<bool>,
}

/// USD amounts, written as strings (`"5.00"`) or numbers.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Dollars {
    Text(String),
    Number(f64),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    day: Option<Dollars>,
    month: Option<Dollars>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    base_url: Option<String>,
    #[serde(default)]
    keys: Vec<RawKey>,
    rpm: Option<u64>,
    tpm: Option<u64>,
    per_model: Option<bool>,
    refunds_unused: Option<bool>,
    prompt_count: Option<String>,
    /// The burst the upstream allows above its steady rate, as refill time.
    #[serde(default, with = "humantime_serde")]
    burst: Option<Duration>,
    timeouts: Option<RawTimeouts>,
    max_attempts: Option<u32>,
    max_concurrency: Option<usize>,
    breaker: Option<RawBreaker>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    enabled: Option<bool>,
    failures: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    failing_for: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    cooldown: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    max_cooldown: Option<Duration>,
    error_fraction: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    window: Option<Duration>,
    min_requests: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    env: Option<String>,
    file: Option<PathBuf>,
    keys_file: Option<PathBuf>,
    value: Option<String>,
    /// A bearer token (Entra ID) re-read when the file changes.
    token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    #[serde(default, with = "humantime_serde")]
    connect: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    first_byte: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    idle: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    total: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVirtualKey {
    name: String,
    key: Option<String>,
    sha256: Option<String>,
    #[serde(default)]
    models: Vec<String>,
    rpm: Option<u64>,
    tpm: Option<u64>,
    budget: Option<RawBudget>,
    #[serde(default)]
    routes: Vec<String>,
}

/// A caller's key: its name (logged), the SHA-256 of its secret (compared in constant time),
/// and the models it may use.
#[derive(Clone)]
pub struct VirtualKey {
    pub name: String,
    pub digest: [u8; 32],
    pub models: Vec<String>,
    /// This caller's own requests and tokens per minute (on top of the upstream's).
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// Spending limits per period (nano-dollars).
    pub budgets: Vec<(Period, Nanos)>,
    /// Route families this key may use although sluice cannot price them (`files`,
    /// `batches`, ...): needed only by a key with a model list or a budget.
    pub routes: Vec<String>,
}

impl std::fmt::Debug for VirtualKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualKey")
            .field("name", &self.name)
            .field("models", &self.models)
            .field("budgets", &self.budgets)
            .field("routes", &self.routes)
            .finish()
    }
}

pub use sluice::keypool::KeySpec;
pub use sluice::spend::LedgerSetting;

/// Model policy settings.
#[derive(Debug, Clone)]
pub struct ModelsSettings {
    pub registry: Option<PathBuf>,
    pub on_retired: OnRetired,
    pub aliases: HashMap<String, String>,
    pub fallbacks: HashMap<String, Vec<String>>,
    /// Ask the upstream's `GET /models` at start and this often, raising `model_unavailable`
    /// for a configured or used model it does not list (`None`: never). Default hourly.
    pub check_upstream_every: Option<std::time::Duration>,
}

impl Default for ModelsSettings {
    fn default() -> Self {
        ModelsSettings {
            registry: None,
            on_retired: OnRetired::default(),
            aliases: HashMap::new(),
            fallbacks: HashMap::new(),
            check_upstream_every: Some(sluice::catalog::DEFAULT_EVERY),
        }
    }
}

impl GatewayConfig {
    /// The models this configuration names as the upstream will see them: virtual keys'
    /// allowed models, alias targets and fallback chains.
    pub fn named_models(&self) -> Vec<String> {
        let mut v: Vec<String> =
            self.virtual_keys
                .iter()
                .flat_map(|k| k.models.iter().cloned())
                .chain(self.models.aliases.values().cloned())
                .chain(
                    self.models.fallbacks.iter().flat_map(|(from, to)| {
                        std::iter::once(from.clone()).chain(to.iter().cloned())
                    }),
                )
                .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Money settings.
#[derive(Debug, Clone, Default)]
pub struct SpendSettings {
    pub ledger: LedgerSetting,
    /// May carry a password: a secret, never shown by `Debug`.
    pub redis_url: Option<sluice::SecretString>,
    pub redis_prefix: String,
    /// Global budgets (nano-dollars per period).
    pub budgets: Vec<(Period, Nanos)>,
    pub allow_unpriced: bool,
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// `None`: `OPENAI_BASE_URL`, else the public API.
    pub base_url: Option<String>,
    /// Empty: `OPENAI_API_KEY`.
    pub keys: Vec<KeySpec>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub per_model: bool,
    /// The upstream settles a request's token reservation to its usage when the answer ends
    /// (some self-hosted servers); default false: OpenAI and Azure keep whole reservations.
    pub refunds_unused: bool,
    /// How the upstream's limiter counts a prompt (`larger` by default: not known).
    pub prompt_count: sluice::admission::PromptCount,
    /// The burst the upstream allows above its steady rate, as refill time. Default 1 s
    /// (OpenAI enforces per-minute limits over short windows).
    pub burst: Duration,
    pub timeouts: sluice::Timeouts,
    pub max_attempts: u32,
    /// Most requests in flight upstream (the adaptive limit moves below it). A stream holds
    /// its slot until it ends, so this bounds concurrent streams too. Default 2048.
    pub max_concurrency: usize,
    /// The upstream's circuit breaker (`[upstream] breaker`).
    pub breaker: sluice::breaker::BreakerConfig,
    /// Empty: any caller, but only from loopback.
    pub virtual_keys: Vec<VirtualKey>,
    pub models: ModelsSettings,
    pub spend: SpendSettings,
    pub alerts: sluice::alerts::AlertRules,
    /// The route table: OpenAI's operations plus `[[routes]]`.
    pub routes: sluice::routes::RouteTable,
    /// Several upstreams (`[[upstreams]]`): when any, requests go to them (by model, priority
    /// and weight, with failover) and `base_url` / `keys` above are unused.
    pub upstreams: Vec<UpstreamEntry>,
    /// The file had an `[upstream]` table or `[[upstreams]]` (a reload that drops them is
    /// refused).
    pub upstream_table: bool,
    pub reload: ReloadSettings,
    /// Connection limits (read at start; a reload does not change them).
    pub server: crate::ServerLimits,
    /// Upstream admission and callers' limits shared by replicas (`None`: this process's own).
    pub state: Option<StateSettings>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 32 * 1024 * 1024,
            base_url: None,
            keys: Vec::new(),
            rpm: None,
            tpm: None,
            per_model: true,
            refunds_unused: false,
            prompt_count: sluice::admission::PromptCount::Larger,
            burst: Duration::from_secs(1),
            timeouts: sluice::Timeouts::default(),
            max_attempts: 5,
            max_concurrency: 2048,
            breaker: sluice::breaker::BreakerConfig::default(),
            virtual_keys: Vec::new(),
            models: ModelsSettings::default(),
            spend: SpendSettings {
                redis_prefix: "sluice".into(),
                ..SpendSettings::default()
            },
            alerts: sluice::alerts::AlertRules::default(),
            routes: sluice::routes::RouteTable::builtin(),
            upstreams: Vec::new(),
            upstream_table: false,
            reload: ReloadSettings::default(),
            server: crate::ServerLimits::default(),
            state: None,
        }
    }
}

/// The operations of one `[[routes]]` entry (one per method).
fn route(
    r: RawRoute,
    i: usize,
    invalid: &dyn Fn(String, &str) -> ConfigError,
) -> Result<Vec<sluice::routes::Op>, ConfigError> {
    use sluice::routes::{canonical, Billing, Body, Framing, ModelAt, Op, Stream};
    let at = |f: &str| format!("routes[{i}].{f}");
    let path = r.path.strip_prefix("/v1").unwrap_or(&r.path).to_string();
    if canonical(&path).is_err() {
        return Err(invalid(
            at("path"),
            "must be a canonical path below /v1 such as \"/tokenize\" ({param} segments allowed)",
        ));
    }
    fn pick<T: Copy>(
        v: Option<&str>,
        choices: &[(&str, T)],
        default: T,
        field: String,
        invalid: &dyn Fn(String, &str) -> ConfigError,
    ) -> Result<T, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => choices
                .iter()
                .find(|(n, _)| *n == s)
                .map(|(_, t)| *t)
                .ok_or_else(|| {
                    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                    invalid(field, &format!("must be one of {}", names.join(", ")))
                }),
        }
    }
    let body = pick(
        r.body.as_deref(),
        &[
            ("json", Body::Json),
            ("multipart", Body::Multipart),
            ("json_or_multipart", Body::JsonOrMultipart),
            ("none", Body::None),
            ("any", Body::Any),
        ],
        Body::Json,
        at("body"),
        invalid,
    )?;
    let framing = pick(
        r.framing.as_deref(),
        &[("json", Framing::Json), ("binary", Framing::Binary)],
        Framing::Json,
        at("framing"),
        invalid,
    )?;
    let stream = pick(
        r.stream.as_deref(),
        &[
            ("never", Stream::Never),
            ("chat", Stream::Chat),
            ("responses", Stream::Responses),
            ("events", Stream::Events),
        ],
        Stream::Never,
        at("stream"),
        invalid,
    )?;
    let model = pick(
        r.model.as_deref(),
        &[
            ("none", ModelAt::None),
            ("body", ModelAt::Body),
            ("path", ModelAt::Path),
        ],
        ModelAt::None,
        at("model"),
        invalid,
    )?;
    let billing = pick(
        r.billing.as_deref(),
        &[
            ("other", Billing::Other),
            ("tokens", Billing::Tokens),
            ("free", Billing::Free),
        ],
        Billing::Other,
        at("billing"),
        invalid,
    )?;
    let family = r.family.unwrap_or_else(|| {
        path.trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("")
            .to_string()
    });
    if r.methods.is_empty() {
        return Err(invalid(at("methods"), "must name at least one method"));
    }
    let mut ops = Vec::new();
    for (j, m) in r.methods.iter().enumerate() {
        let method = match m.to_ascii_uppercase().as_str() {
            "GET" => http::Method::GET,
            "POST" => http::Method::POST,
            "PUT" => http::Method::PUT,
            "PATCH" => http::Method::PATCH,
            "DELETE" => http::Method::DELETE,
            _ => {
                return Err(invalid(
                    format!("routes[{i}].methods[{j}]"),
                    "must be GET, POST, PUT, PATCH or DELETE",
                ))
            }
        };
        ops.push(Op {
            path: path.clone(),
            method,
            body,
            framing,
            stream,
            model,
            billing,
            family: family.clone(),
        });
    }
    Ok(ops)
}

/// A limit that, when given, is at least 1: `0` would mean "unlimited" to some readers and
/// "refuse everything" to others, so it is refused and the message says how to ask for each.
fn at_least_one(
    v: Option<u64>,
    field: &str,
    invalid: &dyn Fn(String, &str) -> ConfigError,
) -> Result<Option<u64>, ConfigError> {
    match v {
        Some(0) => Err(invalid(
            field.to_string(),
            "must be at least 1 (leave it out for no limit of sluice's own)",
        )),
        v => Ok(v),
    }
}

/// Key sources from `[{ env = ... }, { file = ... }, ...]`, by their place in `field`.
fn keys(
    raw: Vec<RawKey>,
    field: &str,
    invalid: &dyn Fn(String, &str) -> ConfigError,
) -> Result<Vec<KeySpec>, ConfigError> {
    let mut out = Vec::new();
    for (i, k) in raw.into_iter().enumerate() {
        let set = [
            k.env.is_some(),
            k.file.is_some(),
            k.keys_file.is_some(),
            k.value.is_some(),
            k.token_file.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            return Err(invalid(
                format!("{field}[{i}]"),
                "give exactly one of env, file, keys_file, value, token_file",
            ));
        }
        if let Some(t) = k.token_file {
            out.push(KeySpec::TokenFile(t));
            continue;
        }
        out.push(match (k.env, k.file, k.keys_file, k.value) {
            (Some(e), ..) => KeySpec::Env(e),
            (_, Some(f), ..) => KeySpec::File(f),
            (_, _, Some(f), _) => KeySpec::KeysFile(f),
            (.., Some(v)) => {
                if v.trim() != v || v.is_empty() {
                    return Err(invalid(
                        format!("{field}[{i}].value"),
                        "has spaces around it or is empty: the upstream would refuse it",
                    ));
                }
                KeySpec::Value(v.into())
            }
            _ => return Err(invalid(format!("{field}[{i}]"), "empty")),
        });
    }
    let tokens = out
        .iter()
        .filter(|k| matches!(k, KeySpec::TokenFile(_)))
        .count();
    if tokens > 0 && tokens < out.len() {
        return Err(invalid(
            field.to_string(),
            "mixes token_file with keys: an upstream takes bearer tokens or keys, not both",
        ));
    }
    Ok(out)
}

/// SHA-256 of a caller's key.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Budgets per period from `{ day = "5", month = 100 }`.
fn budgets(
    raw: Option<RawBudget>,
    field: &str,
    invalid: &dyn Fn(String, &str) -> ConfigError,
) -> Result<Vec<(Period, Nanos)>, ConfigError> {
    let Some(b) = raw else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for (period, v) in [(Period::Day, b.day), (Period::Month, b.month)] {
        let Some(v) = v else { continue };
        let n = match v {
            Dollars::Text(t) => parse_dollars(&t),
            Dollars::Number(f) => parse_dollars(&f.to_string()),
        };
        match n {
            Some(n) => out.push((period, n)),
            None => {
                return Err(invalid(
                    format!("{field}.{}", period.as_str()),
                    "must be a non-negative amount in USD, like \"5.00\"",
                ))
            }
        }
    }
    Ok(out)
}

impl GatewayConfig {
    /// Read and parse the file at `path` (the gateway's, `sluice batch run --config`'s and
    /// `sluice doctor --config`'s); the error names the file.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_toml(&path.display().to_string(), &text).map_err(|e| e.to_string())
    }

    /// Parse `text` (from `path`, for messages).
    pub fn from_toml(path: &str, text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        let invalid = |field: String, reason: &str| ConfigError::Invalid {
            path: path.to_string(),
            line: line_of(text, &field),
            field,
            reason: reason.to_string(),
        };
        let mut c = GatewayConfig::default();
        if let Some(l) = raw.listen {
            c.listen = l;
        }
        if let Some(m) = raw.max_body_bytes {
            if m == 0 {
                return Err(invalid("max_body_bytes".into(), "must be at least 1"));
            }
            c.max_body_bytes = m;
        }
        c.upstream_table = raw.upstream.is_some() || !raw.upstreams.is_empty();
        if let Some(r) = raw.reload {
            c.reload = ReloadSettings {
                allow_removing_upstream: r.allow_removing_upstream.unwrap_or(false),
                allow_removing_all_virtual_keys: r.allow_removing_all_virtual_keys.unwrap_or(false),
            };
        }
        if let Some(st) = raw.state {
            if !(st.redis_url.starts_with("redis://") || st.redis_url.starts_with("rediss://")) {
                return Err(invalid(
                    "state.redis_url".into(),
                    "must be a redis:// or rediss:// URL",
                ));
            }
            c.state = Some(StateSettings {
                redis_url: st.redis_url.into(),
                prefix: st.prefix.unwrap_or_else(|| "sluice:gateway".into()),
                on_error: match st.on_redis_error.as_deref() {
                    None | Some("fail_closed") => sluice::admission::OnStateError::FailClosed,
                    Some("fallback_local") => sluice::admission::OnStateError::FallbackLocal,
                    Some(_) => {
                        return Err(invalid(
                            "state.on_redis_error".into(),
                            "must be fail_closed or fallback_local",
                        ))
                    }
                },
            });
        }
        if let Some(sv) = raw.server {
            let d = crate::ServerLimits::default();
            let nonzero = |v: Option<Duration>, field: &str, dflt: Duration| match v {
                Some(t) if t.is_zero() => Err(invalid(
                    format!("server.{field}"),
                    "must be longer than zero",
                )),
                v => Ok(v.unwrap_or(dflt)),
            };
            c.server =
                crate::ServerLimits {
                    max_connections: match sv.max_connections {
                        Some(0) => return Err(invalid(
                            "server.max_connections".into(),
                            "must be at least 1 (leave it out to size it from the open-file limit)",
                        )),
                        n => n,
                    },
                    header_timeout: nonzero(sv.header_timeout, "header_timeout", d.header_timeout)?,
                    body_timeout: nonzero(sv.body_timeout, "body_timeout", d.body_timeout)?,
                    idle_timeout: nonzero(sv.idle_timeout, "idle_timeout", d.idle_timeout)?,
                    http2_max_streams: match sv.http2_max_streams {
                        Some(0) => {
                            return Err(invalid(
                                "server.http2_max_streams".into(),
                                "must be at least 1",
                            ))
                        }
                        n => n.unwrap_or(d.http2_max_streams),
                    },
                };
        }
        let up = raw.upstream.unwrap_or_default();
        c.base_url = up.base_url;
        c.keys = keys(up.keys, "upstream.keys", &invalid)?;
        let single = c.base_url.is_some() || !c.keys.is_empty();
        for (i, u) in raw.upstreams.into_iter().enumerate() {
            let at = |f: &str| format!("upstreams[{i}].{f}");
            if single {
                return Err(invalid(
                    "upstream".into(),
                    "has base_url or keys, and [[upstreams]] is given too: with several upstreams, each [[upstreams]] entry has its own (the shared settings stay in [upstream])",
                ));
            }
            if u.name.trim().is_empty() || u.name.trim() != u.name {
                return Err(invalid(
                    at("name"),
                    "must be a name without spaces around it",
                ));
            }
            if let Some(j) = c.upstreams.iter().position(|e| e.name == u.name) {
                return Err(invalid(
                    at("name"),
                    &format!("is also the name of upstreams[{j}]: names must be unique"),
                ));
            }
            let azure = match u.kind.as_deref() {
                None | Some("openai") | Some("compatible") => false,
                Some("azure") => true,
                Some(_) => return Err(invalid(at("kind"), "must be openai, azure or compatible")),
            };
            let (url_field, url) = match (azure, u.base_url, u.endpoint) {
                (false, Some(b), None) => ("base_url", b),
                (true, None, Some(e)) => ("endpoint", e.trim_end_matches('/').to_string()),
                (false, _, _) => {
                    return Err(invalid(at("base_url"), "give base_url (endpoint is for kind = \"azure\")"))
                }
                (true, _, _) => {
                    return Err(invalid(at("endpoint"), "give the Azure resource's endpoint (https://NAME.openai.azure.com), not base_url"))
                }
            };
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(at(url_field), "must be an http(s) URL"));
            }
            let dialect = if azure && u.api.is_some() {
                if u.api.as_deref() != Some("v1") {
                    return Err(invalid(at("api"), "must be \"v1\" (Azure's /openai/v1 surface); leave it out for the deployment URLs with api_version"));
                }
                if u.api_version.is_some() {
                    return Err(invalid(
                        at("api_version"),
                        "is not taken by api = \"v1\" (that surface has no dated versions)",
                    ));
                }
                sluice::upstreams::Dialect::AzureV1 {
                    deployments: u.deployments,
                }
            } else if azure {
                let Some(v) = u.api_version.filter(|v| !v.trim().is_empty()) else {
                    return Err(invalid(
                        at("api_version"),
                        "is needed for kind = \"azure\" (e.g. \"2024-10-21\")",
                    ));
                };
                sluice::upstreams::Dialect::Azure {
                    api_version: v,
                    deployments: u.deployments,
                }
            } else {
                if u.api_version.is_some() || u.api.is_some() || !u.deployments.is_empty() {
                    return Err(invalid(
                        at("kind"),
                        "api_version, api and deployments are for kind = \"azure\"",
                    ));
                }
                sluice::upstreams::Dialect::OpenAi
            };
            if u.weight == Some(0) {
                return Err(invalid(at("weight"), "must be at least 1"));
            }
            let rpm = at_least_one(u.rpm, &at("rpm"), &invalid)?;
            let tpm = at_least_one(u.tpm, &at("tpm"), &invalid)?;
            let limits = (rpm.is_some() || tpm.is_some()).then_some(sluice::admission::Limits {
                rpm,
                tpm,
                ..Default::default()
            });
            let mut prices = Vec::with_capacity(u.prices.len());
            for (model, p) in u.prices {
                if model.trim().is_empty() {
                    return Err(invalid(at("prices"), "has an empty model name"));
                }
                let price = sluice::pricing::Price::per_mtok(
                    p.input_per_mtok,
                    p.output_per_mtok,
                    p.cached_input_per_mtok,
                )
                .map_err(|e| invalid(at(&format!("prices.{model:?}")), &e))?;
                prices.push((model, price));
            }
            c.upstreams.push(UpstreamEntry {
                limits,
                prices,
                keys: keys(u.keys, &at("keys"), &invalid)?,
                name: u.name,
                base_url: url,
                models: u.models,
                priority: u.priority.unwrap_or(0),
                weight: u.weight.unwrap_or(1),
                dialect,
            });
        }
        c.rpm = at_least_one(up.rpm, "upstream.rpm", &invalid)?;
        c.tpm = at_least_one(up.tpm, "upstream.tpm", &invalid)?;
        c.per_model = up.per_model.unwrap_or(true);
        c.refunds_unused = up.refunds_unused.unwrap_or(false);
        if let Some(p) = &up.prompt_count {
            c.prompt_count = sluice::admission::PromptCount::parse(p)
                .map_err(|why| invalid("upstream.prompt_count".into(), &why))?;
        }
        if let Some(b) = up.burst {
            c.burst = sluice::admission::check_burst(b)
                .map_err(|why| invalid("upstream.burst".into(), why))?;
        }
        if let Some(n) = up.max_attempts {
            if n == 0 {
                return Err(invalid(
                    "upstream.max_attempts".into(),
                    "must be at least 1",
                ));
            }
            c.max_attempts = n;
        }
        if let Some(n) = up.max_concurrency {
            if n == 0 {
                return Err(invalid(
                    "upstream.max_concurrency".into(),
                    "must be at least 1",
                ));
            }
            c.max_concurrency = n;
        }
        if let Some(b) = up.breaker {
            let d = sluice::breaker::BreakerConfig::default();
            if b.failures == Some(0) {
                return Err(invalid(
                    "upstream.breaker.failures".into(),
                    "must be at least 1 (enabled = false turns the breaker off)",
                ));
            }
            if b.cooldown.is_some_and(|c| c.is_zero()) {
                return Err(invalid(
                    "upstream.breaker.cooldown".into(),
                    "must be longer than zero",
                ));
            }
            c.breaker = sluice::breaker::BreakerConfig {
                enabled: b.enabled.unwrap_or(true),
                failures: b.failures.unwrap_or(d.failures),
                failing_for: b.failing_for.unwrap_or(d.failing_for),
                cooldown: b.cooldown.unwrap_or(d.cooldown),
                max_cooldown: b.max_cooldown.unwrap_or(d.max_cooldown),
                error_fraction: match b.error_fraction {
                    Some(f) if !(f > 0.0 && f <= 1.0) => {
                        return Err(invalid(
                            "upstream.breaker.error_fraction".into(),
                            "must be a fraction above 0 and at most 1",
                        ))
                    }
                    f => f,
                },
                window: match b.window {
                    Some(w) if w.is_zero() => {
                        return Err(invalid(
                            "upstream.breaker.window".into(),
                            "must be longer than zero",
                        ))
                    }
                    w => w.unwrap_or(d.window),
                },
                min_requests: b.min_requests.unwrap_or(d.min_requests),
            };
            c.breaker.max_cooldown = c.breaker.max_cooldown.max(c.breaker.cooldown);
        }
        if let Some(t) = up.timeouts {
            let d = sluice::Timeouts::default();
            c.timeouts = sluice::Timeouts {
                connect: t.connect.unwrap_or(d.connect),
                first_byte: t.first_byte.unwrap_or(d.first_byte),
                idle: t.idle.unwrap_or(d.idle),
                total: t.total.unwrap_or(d.total),
            };
        }
        // A connection silent for idle_timeout is closed, so it must outlast every silence a
        // request may have upstream (waiting for the first byte, or between two events).
        let quiet = c.timeouts.first_byte.max(c.timeouts.idle);
        if c.server.idle_timeout <= quiet {
            return Err(invalid(
                "server.idle_timeout".into(),
                &format!("must be longer than upstream.timeouts first_byte and idle ({}s here): a caller's connection would be closed while its request waits upstream", quiet.as_secs_f64()),
            ));
        }
        for (i, v) in raw.virtual_keys.into_iter().enumerate() {
            let digest = match (v.key, v.sha256) {
                (Some(k), None) if k.trim() != k => {
                    return Err(invalid(
                        format!("virtual_keys[{i}].key"),
                        "has spaces around it: no caller could send it (SDKs trim keys)",
                    ))
                }
                (Some(k), None) if !k.is_empty() => digest(&k),
                (None, Some(h)) => parse_hex(&h).ok_or_else(|| {
                    invalid(
                        format!("virtual_keys[{i}].sha256"),
                        "must be 64 hex digits (the SHA-256 of the key)",
                    )
                })?,
                _ => {
                    return Err(invalid(
                        format!("virtual_keys[{i}]"),
                        "give exactly one of key or sha256",
                    ))
                }
            };
            if v.name.is_empty() {
                return Err(invalid(
                    format!("virtual_keys[{i}].name"),
                    "must not be empty",
                ));
            }
            if let Some(j) = c.virtual_keys.iter().position(|k| k.name == v.name) {
                return Err(invalid(
                    format!("virtual_keys[{i}].name"),
                    &format!("is also the name of virtual_keys[{j}]: names must be unique (logs, metrics and budgets go by them)"),
                ));
            }
            if let Some(j) = c.virtual_keys.iter().position(|k| k.digest == digest) {
                return Err(invalid(
                    format!("virtual_keys[{i}]"),
                    &format!("has the same key as virtual_keys[{j}]: a caller must be one key"),
                ));
            }
            c.virtual_keys.push(VirtualKey {
                name: v.name,
                digest,
                models: v.models,
                rpm: at_least_one(v.rpm, &format!("virtual_keys[{i}].rpm"), &invalid)?,
                tpm: at_least_one(v.tpm, &format!("virtual_keys[{i}].tpm"), &invalid)?,
                budgets: budgets(v.budget, &format!("virtual_keys[{i}].budget"), &invalid)?,
                routes: v.routes,
            });
        }
        let mut extra = Vec::new();
        for (i, r) in raw.routes.into_iter().enumerate() {
            extra.extend(route(r, i, &invalid)?);
        }
        c.routes = sluice::routes::RouteTable::builtin().with(extra);
        let models = raw.models.unwrap_or_default();
        c.models.registry = models.registry;
        if let Some(p) = models.on_retired {
            c.models.on_retired = p
                .parse()
                .map_err(|e: String| invalid("models.on_retired".into(), &e))?;
        }
        for (name, target) in &models.aliases {
            if target.is_empty() {
                return Err(invalid(
                    format!("models.aliases.{name}"),
                    "must name a model",
                ));
            }
        }
        for (name, chain) in &models.fallbacks {
            if chain.is_empty() || chain.iter().any(|m| m.is_empty() || m == name) {
                return Err(invalid(
                    format!("models.fallbacks.{name}"),
                    "must list other models to try, in order",
                ));
            }
        }
        c.models.aliases = models.aliases;
        c.models.fallbacks = models.fallbacks;
        if let Some(d) = models.check_upstream_every {
            c.models.check_upstream_every = Some(d).filter(|d| !d.is_zero());
        }
        let spend = raw.spend.unwrap_or_default();
        c.spend.ledger = match spend.ledger.as_deref() {
            None => LedgerSetting::Default,
            Some(v) => LedgerSetting::parse(v).map_err(|e| invalid("spend.ledger".into(), &e))?,
        };
        c.spend.redis_url = spend.redis_url.map(sluice::SecretString::from);
        if let Some(p) = spend.redis_prefix {
            c.spend.redis_prefix = p;
        }
        c.spend.budgets = budgets(spend.budget, "spend.budget", &invalid)?;
        c.spend.allow_unpriced = spend.allow_unpriced.unwrap_or(false);
        if let Some(a) = raw.alerts {
            let frac = |field: &str, v: f64| {
                if (0.0..=1.0).contains(&v) {
                    Ok(v)
                } else {
                    Err(invalid(
                        format!("alerts.{field}"),
                        "must be a fraction between 0 and 1",
                    ))
                }
            };
            let r = &mut c.alerts;
            if let Some(w) = a.webhook {
                if !(w.starts_with("http://") || w.starts_with("https://")) {
                    return Err(invalid("alerts.webhook".into(), "must be an http(s) URL"));
                }
                r.webhook = Some(w);
            }
            if let Some(d) = a.dedup {
                r.dedup = d;
            }
            if let Some(n) = a.max_per_minute {
                r.max_per_minute = n;
            }
            if let Some(w) = a.window {
                if w.is_zero() {
                    return Err(invalid("alerts.window".into(), "must be longer than zero"));
                }
                r.window = w;
            }
            if let Some(n) = a.min_requests {
                r.min_requests = n;
            }
            if let Some(v) = a.remaining_below {
                r.remaining_below = Some(frac("remaining_below", v)?).filter(|v| *v > 0.0);
            }
            if let Some(v) = a.budget_thresholds {
                for t in &v {
                    frac("budget_thresholds", *t)?;
                }
                r.budget_thresholds = v;
            }
            if let Some(v) = a.deprecated_model {
                r.deprecated_model = v;
            }
            if let Some(v) = a.key_quarantined {
                r.key_quarantined = v;
            }
            if let Some(v) = a.error_rate_above {
                r.error_rate_above = Some(frac("error_rate_above", v)?);
            }
            for (k, v) in a.error_kind_above {
                frac(&format!("error_kind_above.{k}"), v)?;
                r.error_kind_above.insert(k, v);
            }
            if a.p99_above.is_some() {
                r.p99_above = a.p99_above;
            }
            if let Some(n) = a.completion_tokens_above {
                r.completion_tokens_above = Some(n).filter(|n| *n > 0);
            }
            if let Some(m) = a.finish_reason_above {
                for (k, v) in &m {
                    frac(&format!("finish_reason_above.{k}"), *v)?;
                }
                r.finish_reason_above = m;
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_file() {
        let c = GatewayConfig::from_toml(
            "g.toml",
            r#"
listen = "127.0.0.1:9999"
[upstream]
base_url = "http://127.0.0.1:1/v1"
keys = [{ env = "A" }, { keys_file = "/tmp/k" }, { value = "sk-inline-upstream-key" }]
rpm = 10
refunds_unused = true
prompt_count = "characters"
burst = "10s"
timeouts = { idle = "5s" }
[[virtual_keys]]
name = "team-a"
key = "sk-team-a-secret"
models = ["gpt-4o-mini"]
[[virtual_keys]]
name = "team-b"
sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
"#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.keys.len(), 3);
        assert!(c.refunds_unused);
        assert_eq!(c.prompt_count, sluice::admission::PromptCount::Characters);
        assert_eq!(c.burst, Duration::from_secs(10));
        // An inline upstream key is a secret: the config's Debug never shows it.
        assert!(!format!("{c:?}").contains("sk-inline-upstream-key"));
        let r = GatewayConfig::from_toml(
            "g.toml",
            "[spend]\nredis_url = \"redis://:hunter2@127.0.0.1:6379\"\n",
        )
        .unwrap();
        assert!(r.spend.redis_url.is_some());
        assert!(
            !format!("{r:?}").contains("hunter2"),
            "a Redis password is a secret"
        );
        assert_eq!(c.timeouts.idle, Duration::from_secs(5));
        assert_eq!(c.virtual_keys[0].digest, digest("sk-team-a-secret"));
        assert_eq!(c.virtual_keys[1].digest, digest(""));
        assert!(!format!("{:?}", c.virtual_keys[0]).contains("digest"));
    }

    #[test]
    fn errors_name_the_field() {
        let e = GatewayConfig::from_toml("g.toml", "[upstream]\nrpmm = 3\n").unwrap_err();
        assert!(e.to_string().contains("rpmm"), "{e}");
        let e = GatewayConfig::from_toml("g.toml", "[upstream]\nkeys = [{}]\n").unwrap_err();
        assert!(e.to_string().contains("upstream.keys[0]"), "{e}");
        let e = GatewayConfig::from_toml(
            "g.toml",
            "[[virtual_keys]]\nname = \"x\"\nsha256 = \"zz\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("virtual_keys[0].sha256"), "{e}");
        let e = GatewayConfig::from_toml("g.toml", "[upstream.timeouts]\nidle = \"soon\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("idle"), "{e}");
        for (text, field) in [
            ("[models]\non_retired = \"maybe\"\n", "models.on_retired"),
            ("[models]\nfallbacks = { a = [] }\n", "models.fallbacks.a"),
            ("[spend]\nbudget = { day = \"lots\" }\n", "spend.budget.day"),
            (
                "[[virtual_keys]]\nname = \"x\"\nkey = \"k\"\nbudget = { month = -1 }\n",
                "virtual_keys[0].budget.month",
            ),
            ("[alerts]\nremaining_below = 2\n", "alerts.remaining_below"),
            ("[alerts]\nwebhook = \"ftp://x\"\n", "alerts.webhook"),
            (
                "[alerts]\nfinish_reason_above = { length = 5 }\n",
                "alerts.finish_reason_above.length",
            ),
        ] {
            let e = GatewayConfig::from_toml("g.toml", text).unwrap_err();
            assert!(e.to_string().contains(field), "{e} should name {field}");
        }
    }

    #[test]
    fn semantic_errors_name_the_line() {
        let text = "listen = \"127.0.0.1:0\"\n\n[[virtual_keys]]\nname = \"a\"\nkey = \"k1\"\n\n[[virtual_keys]]\nname = \"b\"\nkey = \"k2\"\nbudget = { month = \"lots\" }\n";
        let e = GatewayConfig::from_toml("g.toml", text).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("g.toml:10: `virtual_keys[1].budget.month`"),
            "{e}"
        );
        let e = GatewayConfig::from_toml("g.toml", "[upstream]\n\nmax_attempts = 0\n").unwrap_err();
        assert!(e.to_string().starts_with("g.toml:3: "), "{e}");
    }

    #[test]
    fn mistakes_that_would_pass_silently_are_refused() {
        for (text, field) in [
            (
                "[[virtual_keys]]\nname = \"a\"\nkey = \"k1\"\n[[virtual_keys]]\nname = \"a\"\nkey = \"k2\"\n",
                "virtual_keys[1].name",
            ),
            (
                "[[virtual_keys]]\nname = \"a\"\nkey = \"k1\"\n[[virtual_keys]]\nname = \"b\"\nkey = \"k1\"\n",
                "virtual_keys[1]",
            ),
            (
                "[[virtual_keys]]\nname = \"a\"\nkey = \" sk-padded \"\n",
                "virtual_keys[0].key",
            ),
            (
                "[upstream]\nkeys = [{ value = \"sk-x \" }]\n",
                "upstream.keys[0].value",
            ),
            // 0 means the same everywhere: nothing; it is refused with how to say "no limit".
            ("[upstream]\nrpm = 0\n", "upstream.rpm"),
            ("[upstream]\nburst = \"0s\"\n", "upstream.burst"),
            ("[upstream]\nburst = \"2m\"\n", "upstream.burst"),
            (
                "[[upstreams]]\nname = \"a\"\nbase_url = \"https://a.example/v1\"\ntpm = 0\n",
                "upstreams[0].tpm",
            ),
            ("[upstream]\ntpm = 0\n", "upstream.tpm"),
            (
                "[[virtual_keys]]\nname = \"a\"\nkey = \"k\"\nrpm = 0\n",
                "virtual_keys[0].rpm",
            ),
        ] {
            let e = GatewayConfig::from_toml("g.toml", text).unwrap_err();
            assert!(e.to_string().contains(&format!("`{field}`")), "{e} should name {field}");
        }
        let c = GatewayConfig::from_toml(
            "g.toml",
            "[upstream]\n[reload]\nallow_removing_all_virtual_keys = true\n",
        )
        .unwrap();
        assert!(c.upstream_table);
        assert!(c.reload.allow_removing_all_virtual_keys);
        assert!(!c.reload.allow_removing_upstream);
        assert!(
            !GatewayConfig::from_toml("g.toml", "")
                .unwrap()
                .upstream_table
        );
    }

    /// A file that uses every table, for the fuzz target to mutate.
    const EVERYTHING: &str = r#"listen = "127.0.0.1:9999"
max_body_bytes = 1000
[server]
max_connections = 10
header_timeout = "5s"
[upstream]
base_url = "http://127.0.0.1:1/v1"
keys = [{ env = "A" }, { value = "sk-x" }]
rpm = 10
timeouts = { idle = "5s", first_byte = "10s" }
[[virtual_keys]]
name = "a"
key = "k"
models = ["gpt-4o-mini"]
budget = { day = "5.25", month = 100 }
[[routes]]
path = "/tokenize"
methods = ["POST"]
[models]
aliases = { fast = "gpt-4o-mini" }
fallbacks = { "gpt-4.1" = ["gpt-4o"] }
[spend]
ledger = "off"
[alerts]
remaining_below = 0.5
finish_reason_above = { length = 0.1 }
[reload]
allow_removing_upstream = true
"#;

    // Fuzz targets (bounded here; `PROPTEST_CASES=200000 cargo test -p sluice-gateway fuzz_`
    // for a long run): any text, and a full file with a byte cut out, swapped or added, is
    // either a config or an error that names the file, never a panic.
    proptest::proptest! {
        #[test]
        fn fuzz_any_text(text in "\\PC{0,300}") {
            if let Err(e) = GatewayConfig::from_toml("g.toml", &text) {
                proptest::prop_assert!(e.to_string().starts_with("g.toml"));
            }
        }

        #[test]
        fn fuzz_mutated_file(at in 0usize..700, op in 0u8..3, ch in proptest::char::any()) {
            let mut chars: Vec<char> = EVERYTHING.chars().collect();
            let i = at % chars.len();
            match op {
                0 => { chars.remove(i); }
                1 => chars[i] = ch,
                _ => chars.insert(i, ch),
            }
            let text: String = chars.into_iter().collect();
            if let Err(e) = GatewayConfig::from_toml("g.toml", &text) {
                proptest::prop_assert!(e.to_string().starts_with("g.toml"));
            }
        }
    }

    #[test]
    fn everything_parses() {
        GatewayConfig::from_toml("g.toml", EVERYTHING).unwrap();
    }

    #[test]
    fn azure_v1_surface() {
        let base = "[[upstreams]]\nname = \"az\"\nkind = \"azure\"\nendpoint = \"https://r.openai.azure.com\"\n";
        let c = GatewayConfig::from_toml("g.toml", &format!("{base}api = \"v1\"\n")).unwrap();
        assert!(matches!(
            c.upstreams[0].dialect,
            sluice::upstreams::Dialect::AzureV1 { .. }
        ));
        for (extra, field) in [
            ("api = \"v2\"\n", "upstreams[0].api"),
            (
                "api = \"v1\"\napi_version = \"2024-10-21\"\n",
                "upstreams[0].api_version",
            ),
        ] {
            let e = GatewayConfig::from_toml("g.toml", &format!("{base}{extra}")).unwrap_err();
            assert!(e.to_string().contains(field), "{extra}: {e}");
        }
    }

    #[test]
    fn several_upstreams() {
        let c = GatewayConfig::from_toml(
            "g.toml",
            "[upstream]\nmax_attempts = 3\n[[upstreams]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:1/v1\"\nkeys = [{ env = \"A\" }]\nmodels = [\"gpt-4o*\"]\nweight = 3\n[[upstreams]]\nname = \"b\"\nbase_url = \"https://b.example/v1\"\npriority = 1\n",
        )
        .unwrap();
        assert_eq!(c.upstreams.len(), 2);
        assert_eq!((c.upstreams[0].weight, c.upstreams[1].priority), (3, 1));
        assert!(c.upstream_table);
        let priced = GatewayConfig::from_toml(
            "g.toml",
            "[[upstreams]]\nname = \"a\"\nbase_url = \"http://y/v1\"\nprices = { \"llama-*\" = { input_per_mtok = 0.2, output_per_mtok = 0.6 } }\n",
        )
        .unwrap();
        let (model, p) = &priced.upstreams[0].prices[0];
        assert_eq!(
            (model.as_str(), p.input, p.cached_input, p.output),
            ("llama-*", 200_000, 200_000, 600_000)
        );
        for (text, field) in [
            (
                "[upstream]\nbase_url = \"http://x/v1\"\n[[upstreams]]\nname = \"a\"\nbase_url = \"http://y/v1\"\n",
                "upstream",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nbase_url = \"http://y/v1\"\n[[upstreams]]\nname = \"a\"\nbase_url = \"http://z/v1\"\n",
                "upstreams[1].name",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nbase_url = \"http://y/v1\"\nweight = 0\n",
                "upstreams[0].weight",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nbase_url = \"y\"\n",
                "upstreams[0].base_url",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nbase_url = \"http://y/v1\"\nkeys = [{}]\n",
                "upstreams[0].keys[0]",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nkind = \"azure\"\nendpoint = \"https://r.openai.azure.com\"\n",
                "upstreams[0].api_version",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nkind = \"azure\"\nbase_url = \"https://r.openai.azure.com\"\napi_version = \"2024-10-21\"\n",
                "upstreams[0].endpoint",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nkind = \"bedrock\"\nbase_url = \"http://y/v1\"\n",
                "upstreams[0].kind",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nbase_url = \"http://y/v1\"\nprices = { \"llama\" = { input_per_mtok = -1, output_per_mtok = 1 } }\n",
                "upstreams[0].prices.\"llama\"",
            ),
        ] {
            let e = GatewayConfig::from_toml("g.toml", text).unwrap_err();
            assert!(e.to_string().contains(&format!("`{field}`")), "{e} should name {field}");
        }
    }

    #[test]
    fn shared_state() {
        let c = GatewayConfig::from_toml(
            "g.toml",
            "[state]\nredis_url = \"redis://:pw@127.0.0.1:6379\"\non_redis_error = \"fallback_local\"\n",
        )
        .unwrap();
        let st = c.state.as_ref().unwrap();
        assert_eq!(st.prefix, "sluice:gateway");
        assert_eq!(st.on_error, sluice::admission::OnStateError::FallbackLocal);
        assert!(
            !format!("{c:?}").contains(":pw@"),
            "the URL's password is a secret"
        );
        for (text, field) in [
            ("[state]\nredis_url = \"http://x\"\n", "state.redis_url"),
            (
                "[state]\nredis_url = \"redis://x\"\non_redis_error = \"shrug\"\n",
                "state.on_redis_error",
            ),
        ] {
            let e = GatewayConfig::from_toml("g.toml", text).unwrap_err();
            assert!(
                e.to_string().contains(&format!("`{field}`")),
                "{e} should name {field}"
            );
        }
    }

    #[test]
    fn server_limits() {
        let c = GatewayConfig::from_toml(
            "g.toml",
            "[server]\nmax_connections = 10\nheader_timeout = \"5s\"\nbody_timeout = \"1m\"\nhttp2_max_streams = 8\n",
        )
        .unwrap();
        assert_eq!(c.server.max_connections, Some(10));
        assert_eq!(c.server.connections(), 10);
        assert_eq!(c.server.header_timeout, Duration::from_secs(5));
        assert_eq!(c.server.body_timeout, Duration::from_secs(60));
        assert_eq!(c.server.http2_max_streams, 8);
        // Sized from the open-file limit when not given: never zero, never past 4096.
        let d = GatewayConfig::default().server.connections();
        assert!((16..=4096).contains(&d), "{d}");
        for (text, field) in [
            ("[server]\nmax_connections = 0\n", "server.max_connections"),
            ("[server]\nheader_timeout = \"0s\"\n", "server.header_timeout"),
            ("[server]\nhttp2_max_streams = 0\n", "server.http2_max_streams"),
            (
                "[upstream]\nbreaker = { error_fraction = 1.5 }\n",
                "upstream.breaker.error_fraction",
            ),
            // A connection closed for silence while its request waits upstream: refused.
            (
                "[server]\nidle_timeout = \"30s\"\n[upstream]\ntimeouts = { first_byte = \"60s\" }\n",
                "server.idle_timeout",
            ),
        ] {
            let e = GatewayConfig::from_toml("g.toml", text).unwrap_err();
            assert!(e.to_string().contains(&format!("`{field}`")), "{e} should name {field}");
        }
    }

    #[test]
    fn models_spend_and_alerts() {
        let c = GatewayConfig::from_toml(
            "g.toml",
            r#"
[models]
on_retired = "substitute"
aliases = { fast = "gpt-4o-mini" }
fallbacks = { "gpt-4.1" = ["gpt-4o"] }
[spend]
ledger = "off"
budget = { day = "50", month = 1000 }
[alerts]
webhook = "http://127.0.0.1:9/hook"
dedup = "1m"
p99_above = "20s"
[[virtual_keys]]
name = "a"
key = "k"
budget = { day = "5.25" }
"#,
        )
        .unwrap();
        assert_eq!(c.models.on_retired, OnRetired::Substitute);
        assert_eq!(c.models.fallbacks["gpt-4.1"], vec!["gpt-4o".to_string()]);
        assert_eq!(c.spend.ledger, LedgerSetting::Off);
        assert_eq!(
            c.spend.budgets,
            vec![
                (Period::Day, 50_000_000_000),
                (Period::Month, 1_000_000_000_000)
            ]
        );
        assert_eq!(
            c.virtual_keys[0].budgets,
            vec![(Period::Day, 5_250_000_000)]
        );
        assert_eq!(c.alerts.dedup, Duration::from_secs(60));
        assert_eq!(c.alerts.p99_above, Some(Duration::from_secs(20)));
    }
}
