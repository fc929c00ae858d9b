//! Several upstreams behind one engine: which of them serve a model (`models` globs), the order
//! they are tried in (priority, then weight), and failover — an attempt that failed on one
//! upstream (connection, timeout, 5xx) sends the next attempt of the same request to another at
//! once, under the same retry budget, idempotency key and deadline. Each upstream has its own
//! connection pool, key pool and circuit breaker; an open breaker is skipped before anything
//! waits, and so is one whose admission would have to wait for its rate budget when another has
//! room now. Admission scopes include the upstream's base URL, so each upstream is paced on its
//! own (with its own `rpm`/`tpm` when it has them).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use crate::breaker::{Breaker, BreakerConfig, Pass};
use crate::error::{Error, ErrorKind};
use crate::keypool::KeyPool;
use crate::transport::{Transport, TransportConfig};

/// One upstream, as a face configures it.
#[derive(Debug)]
pub struct UpstreamConfig {
    /// In logs, metrics and `x-sluice-upstream`; never a secret.
    pub name: String,
    pub base_url: String,
    pub keys: KeyPool,
    /// The models it serves: exact names or globs with `*` (`gpt-4o*`, `*`). Empty: all.
    pub models: Vec<String>,
    /// Lower is tried first.
    pub priority: i32,
    /// Share of the requests among the upstreams of the same priority.
    pub weight: u32,
    /// How its URLs and key are written.
    pub dialect: Dialect,
    /// Its own limits (per key and model), instead of the admission's.
    pub limits: Option<crate::admission::Limits>,
    /// What it charges, by model (exact names or `*` globs, the longest match wins), where that
    /// differs from the registry's price (an Azure contract, a self-hosted server's own cost).
    pub prices: Vec<(String, crate::pricing::Price)>,
}

/// One upstream as a configuration file names it (`[[upstreams]]`), shared by every face: the
/// gateway's file and `sluice batch run --config` read the same table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSetting {
    /// In logs, metrics and `x-sluice-upstream`.
    pub name: String,
    pub base_url: String,
    /// Empty: `OPENAI_API_KEY`.
    pub keys: Vec<crate::keypool::KeySpec>,
    /// Models it serves (`*` globs); empty: all.
    pub models: Vec<String>,
    pub priority: i32,
    pub weight: u32,
    pub dialect: Dialect,
    /// Its own `rpm`/`tpm` (per key and model); `None`: the shared `[upstream]` ones.
    pub limits: Option<crate::admission::Limits>,
    /// Its own prices by model (exact or `*` globs, longest match wins); others: the registry's.
    pub prices: Vec<(String, crate::pricing::Price)>,
}

impl UpstreamSetting {
    /// What [`crate::ClientBuilder::upstream`] takes.
    pub fn spec(&self) -> crate::UpstreamSpec {
        crate::UpstreamSpec {
            name: self.name.clone(),
            base_url: self.base_url.clone(),
            keys: crate::keypool::KeySpec::sources(&self.keys),
            models: self.models.clone(),
            priority: self.priority,
            weight: self.weight,
            dialect: self.dialect.clone(),
            limits: self.limits,
            prices: self.prices.clone(),
        }
    }
}

/// How an upstream spells its requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI and compatible servers: `{base_url}/chat/completions`, `Authorization: Bearer`.
    #[default]
    OpenAi,
    /// Azure OpenAI: the base URL is the resource's endpoint; model operations go to
    /// `/openai/deployments/{deployment}/{operation}?api-version=…`, the rest to
    /// `/openai/{operation}?api-version=…`, and the key is sent as `api-key`.
    Azure {
        api_version: String,
        /// Model → deployment; a model not listed is its own deployment name.
        deployments: HashMap<String, String>,
    },
    /// Azure OpenAI's v1 surface (`api = "v1"`): `{endpoint}/openai/v1/{operation}`, OpenAI's
    /// paths with no `api-version`, the body's `model` naming the deployment, the key sent as
    /// `api-key`.
    AzureV1 {
        /// Model → deployment; a model not listed is its own deployment name.
        deployments: HashMap<String, String>,
    },
}

/// Operations Azure serves per deployment.
const DEPLOYMENT_OPS: &[&str] = &[
    "/chat/completions",
    "/completions",
    "/embeddings",
    "/audio/transcriptions",
    "/audio/translations",
    "/audio/speech",
    "/images/generations",
    "/images/edits",
];

impl Dialect {
    /// The path (and query) of `path` (OpenAI's, below `/v1`) for a request naming `model`.
    pub(crate) fn path<'a>(&self, path: &'a str, model: &str) -> Cow<'a, str> {
        match self {
            Dialect::OpenAi => Cow::Borrowed(path),
            Dialect::AzureV1 { .. } => Cow::Owned(format!("/openai/v1{path}")),
            Dialect::Azure {
                api_version,
                deployments,
            } => {
                let (op, query) = match path.split_once('?') {
                    Some((p, q)) => (p, Some(q)),
                    None => (path, None),
                };
                let version = format!("api-version={api_version}");
                let query = match query {
                    Some(q) if !q.is_empty() => format!("{q}&{version}"),
                    _ => version,
                };
                if !model.is_empty() && DEPLOYMENT_OPS.contains(&op) {
                    let dep = deployments.get(model).map_or(model, String::as_str);
                    Cow::Owned(format!(
                        "/openai/deployments/{}{op}?{query}",
                        encode_segment(dep)
                    ))
                } else {
                    Cow::Owned(format!("/openai{op}?{query}"))
                }
            }
        }
    }

    /// The key goes in `api-key`, not `Authorization`.
    pub(crate) fn api_key_header(&self) -> bool {
        matches!(self, Dialect::Azure { .. } | Dialect::AzureV1 { .. })
    }

    /// The name the request body's `model` must carry instead of `model`, when this upstream
    /// names it otherwise: Azure's v1 surface takes the deployment there, and so do Azure's
    /// operations outside a deployment's URL (`/openai/responses?api-version=…`). The answer's
    /// `model`, where it echoes that name, is given back as `model` (see
    /// [`crate::model_policy::rename_model`]).
    pub(crate) fn body_model(&self, path: &str, model: &str) -> Option<&str> {
        let deployments = match self {
            Dialect::AzureV1 { deployments } => deployments,
            Dialect::Azure { deployments, .. } => {
                let op = path.split_once('?').map_or(path, |(p, _)| p);
                if DEPLOYMENT_OPS.contains(&op) {
                    return None;
                }
                deployments
            }
            Dialect::OpenAi => return None,
        };
        deployments
            .get(model)
            .map(String::as_str)
            .filter(|d| *d != model)
    }
}

/// What stays as it is in a path segment: RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A path segment with everything but unreserved characters percent-encoded.
fn encode_segment(s: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(s, SEGMENT)
}

#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) name: String,
    /// `name` as the `upstream` metric label.
    pub(crate) label: &'static str,
    /// `name` as an answer's `Meta::upstream` gives it: borrowed from the interned label, so
    /// that naming the upstream of an answer copies nothing.
    pub(crate) answered_by: Cow<'static, str>,
    pub(crate) transport: Transport,
    pub(crate) keys: Arc<KeyPool>,
    pub(crate) breaker: Arc<Breaker>,
    models: Vec<String>,
    priority: i32,
    weight: u32,
    pub(crate) dialect: Dialect,
    pub(crate) limits: Option<crate::admission::Limits>,
    prices: Vec<(String, crate::pricing::Price)>,
    /// `sluice_upstream_attempts_total`, by result.
    pub(crate) attempts: crate::observe::UpstreamAttempts,
    /// Its admission scopes' names, by key and model.
    pub(crate) scopes: crate::admission::ScopeNames,
}

/// `*` matches any run of characters; everything else matches itself.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*` at all: exact
    };
    for p in middle {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

impl Upstream {
    fn serves(&self, model: &str) -> bool {
        model.is_empty() || self.models.is_empty() || self.models.iter().any(|p| glob(p, model))
    }

    /// What `model` costs here: this upstream's own price (its exact name first, then the
    /// longest glob that matches), else the registry's.
    pub(crate) fn price(
        &self,
        model: &str,
        registry: &crate::models::Registry,
    ) -> Option<crate::pricing::Price> {
        self.prices
            .iter()
            .find(|(m, _)| m == model)
            .or_else(|| {
                self.prices
                    .iter()
                    .filter(|(m, _)| glob(m, model))
                    .max_by_key(|(m, _)| m.len())
            })
            .map(|(_, p)| *p)
            .or_else(|| registry.price(model))
    }
}

/// The engine's upstreams, in configuration order (the first is [`Upstreams::first`]).
#[derive(Debug)]
pub(crate) struct Upstreams(Vec<Upstream>);

impl Upstreams {
    pub(crate) fn new(
        configs: Vec<UpstreamConfig>,
        transport: &TransportConfig,
        breaker: BreakerConfig,
        alerts: &Arc<crate::alerts::Alerter>,
        carried: &[(String, String, Arc<Breaker>)],
    ) -> Result<Self, Error> {
        if configs.is_empty() {
            return Err(Error::new(ErrorKind::Config, "no upstream configured"));
        }
        let mut out = Vec::with_capacity(configs.len());
        for c in configs {
            // The same upstream (name and URL) in the engine this one replaces keeps its
            // breaker: a reload during an outage does not send the dead upstream a new wave.
            let kept = carried
                .iter()
                .find(|(n, u, b)| *n == c.name && *u == c.base_url && b.config() == breaker)
                .map(|(_, _, b)| b.clone());
            let label = crate::observe::upstream_label(&c.name);
            out.push(Upstream {
                // The interned label's text is the name unless names ran past its bound.
                answered_by: if label == c.name {
                    Cow::Borrowed(label)
                } else {
                    Cow::Owned(c.name.clone())
                },
                label,
                transport: Transport::new(&c.base_url, transport)?,
                breaker: kept
                    .unwrap_or_else(|| Breaker::new(breaker, c.name.clone(), alerts.clone())),
                name: c.name,
                keys: Arc::new(c.keys),
                models: c.models,
                priority: c.priority,
                weight: c.weight.max(1),
                dialect: c.dialect,
                limits: c.limits,
                prices: c.prices,
                attempts: Default::default(),
                scopes: Default::default(),
            });
        }
        Ok(Upstreams(out))
    }

    /// Each upstream's name, URL and breaker, for the engine that replaces this one.
    pub(crate) fn breakers(&self) -> Vec<(String, String, Arc<Breaker>)> {
        self.0
            .iter()
            .map(|u| {
                (
                    u.name.clone(),
                    u.transport.base_url().to_string(),
                    u.breaker.clone(),
                )
            })
            .collect()
    }

    /// What shared health applies the other replicas' findings to.
    pub(crate) fn health_targets(&self) -> crate::shared_health::Targets {
        self.0
            .iter()
            .map(|u| (u.name.clone(), u.breaker.clone(), u.keys.clone()))
            .collect()
    }

    pub(crate) fn first(&self) -> &Upstream {
        &self.0[0]
    }

    pub(crate) fn get(&self, i: usize) -> &Upstream {
        &self.0[i]
    }

    /// The upstream for the next attempt at `model`, and its breaker's leave: those that serve
    /// the model, those this request has not failed on yet first, then by priority, then by
    /// weight at random; an upstream whose breaker is open is passed over for the next. When
    /// none can take it, one error says why for each.
    pub(crate) fn pick(&self, model: &str, failed_on: &[usize]) -> Result<(usize, Pass), Error> {
        self.pick_but(model, failed_on, &[])
    }

    /// Whether any upstream prices models itself (else every price is the registry's).
    pub(crate) fn own_prices(&self) -> bool {
        self.0.iter().any(|u| !u.prices.is_empty())
    }

    /// The most `model` can cost on any upstream that serves it, each component the highest
    /// (a budget reserves this before it is known which upstream answers); `None` when no
    /// upstream that serves it has a price for it.
    pub(crate) fn worst_price(
        &self,
        model: &str,
        registry: &crate::models::Registry,
    ) -> Option<crate::pricing::Price> {
        if !self.own_prices() {
            return registry.price(model);
        }
        self.0
            .iter()
            .filter(|u| u.serves(model))
            .filter_map(|u| u.price(model, registry))
            .reduce(crate::pricing::Price::max)
    }

    /// Whether there is more than one upstream to choose from.
    pub(crate) fn several(&self) -> bool {
        self.0.len() > 1
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// [`Upstreams::pick`] among the upstreams not in `skip` (those with no room now).
    pub(crate) fn pick_but(
        &self,
        model: &str,
        failed_on: &[usize],
        skip: &[usize],
    ) -> Result<(usize, Pass), Error> {
        if self.0.len() == 1 && skip.is_empty() {
            let u = &self.0[0];
            if !u.serves(model) {
                return Err(self.none_serves(model));
            }
            return u
                .breaker
                .admit()
                .map(|p| (0, p))
                .map_err(|wait| unavailable(&[(u.name.as_str(), wait)]));
        }
        let failures = |i: usize| failed_on.iter().filter(|f| **f == i).count();
        let mut left: Vec<usize> = (0..self.0.len())
            .filter(|i| self.0[*i].serves(model))
            .collect();
        if left.is_empty() {
            return Err(self.none_serves(model));
        }
        left.retain(|i| !skip.contains(i));
        let mut refused: Vec<(&str, std::time::Duration)> = Vec::new();
        while !left.is_empty() {
            let best = left
                .iter()
                .map(|i| (failures(*i), self.0[*i].priority))
                .min()
                .unwrap_or((0, 0));
            let group: Vec<usize> = left
                .iter()
                .copied()
                .filter(|i| (failures(*i), self.0[*i].priority) == best)
                .collect();
            let total: u64 = group.iter().map(|i| u64::from(self.0[*i].weight)).sum();
            let mut at = rand::random::<u64>() % total.max(1);
            let mut chosen = group[0];
            for i in &group {
                let w = u64::from(self.0[*i].weight);
                if at < w {
                    chosen = *i;
                    break;
                }
                at -= w;
            }
            match self.0[chosen].breaker.admit() {
                Ok(pass) => return Ok((chosen, pass)),
                Err(wait) => {
                    refused.push((self.0[chosen].name.as_str(), wait));
                    left.retain(|i| *i != chosen);
                }
            }
        }
        Err(unavailable(&refused))
    }

    /// Whether another upstream than `i` serves `model` (so a failure on `i` is retried there
    /// at once, without the backoff a retry on the same upstream waits).
    pub(crate) fn another_serves(&self, model: &str, i: usize) -> bool {
        self.0
            .iter()
            .enumerate()
            .any(|(j, u)| j != i && u.serves(model) && !u.breaker.is_open())
    }

    fn none_serves(&self, model: &str) -> Error {
        let list: Vec<String> = self
            .0
            .iter()
            .map(|u| format!("{} [{}]", u.name, u.models.join(", ")))
            .collect();
        Error::new(
            ErrorKind::ModelNotFound,
            format!(
                "no upstream serves the model {model:?} (upstreams and their models: {})",
                list.join("; ")
            ),
        )
        .with_retryable(false)
    }
}

fn unavailable(refused: &[(&str, std::time::Duration)]) -> Error {
    let why: Vec<String> = refused
        .iter()
        .map(|(n, w)| {
            format!(
                "{n}: failing, circuit breaker open for {:.1}s more",
                w.as_secs_f64()
            )
        })
        .collect();
    let wait = refused.iter().map(|(_, w)| *w).min();
    Error::new(
        ErrorKind::UpstreamUnavailable,
        format!(
            "no upstream can take the request now, not sent ({}); try again in {:.1}s",
            why.join("; "),
            wait.unwrap_or_default().as_secs_f64()
        ),
    )
    .with_retry_after(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_paths() {
        let d = Dialect::Azure {
            api_version: "2024-10-21".into(),
            deployments: HashMap::from([("gpt-4o-mini".to_string(), "prod 4o".to_string())]),
        };
        assert_eq!(
            d.path("/chat/completions", "gpt-4o-mini"),
            "/openai/deployments/prod%204o/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            d.path("/embeddings", "text-embedding-3-small"),
            "/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21"
        );
        assert_eq!(
            d.path("/files?purpose=batch", ""),
            "/openai/files?purpose=batch&api-version=2024-10-21"
        );
        assert_eq!(
            Dialect::OpenAi.path("/chat/completions", "m"),
            "/chat/completions"
        );
        let v1 = Dialect::AzureV1 {
            deployments: HashMap::from([("gpt-4o-mini".to_string(), "prod-4o".to_string())]),
        };
        assert_eq!(
            v1.path("/chat/completions", "gpt-4o-mini"),
            "/openai/v1/chat/completions"
        );
        assert_eq!(
            v1.body_model("/chat/completions", "gpt-4o-mini"),
            Some("prod-4o")
        );
        assert_eq!(v1.body_model("/responses", "gpt-4o"), None);
        // Classic Azure names the deployment in the URL where it can, in the body elsewhere.
        assert_eq!(d.body_model("/chat/completions", "gpt-4o-mini"), None);
        assert_eq!(d.body_model("/responses", "gpt-4o-mini"), Some("prod 4o"));
        assert_eq!(
            Dialect::OpenAi.body_model("/responses", "gpt-4o-mini"),
            None
        );
    }

    #[test]
    fn globs() {
        assert!(glob("*", "gpt-4o"));
        assert!(glob("gpt-4o", "gpt-4o"));
        assert!(!glob("gpt-4o", "gpt-4o-mini"));
        assert!(glob("gpt-4o*", "gpt-4o-mini"));
        assert!(glob("*-mini", "gpt-4o-mini"));
        assert!(glob("gpt-*-mini", "gpt-4o-mini"));
        assert!(!glob("gpt-*-mini", "gpt-4o"));
        assert!(!glob("text-*", "gpt-4o"));
        assert!(glob("a*a", "aa"));
        assert!(!glob("a*a", "a"));
    }

    fn upstream(name: &str, models: &[&str], prices: &[(&str, u64)]) -> UpstreamConfig {
        UpstreamConfig {
            name: name.into(),
            base_url: "http://127.0.0.1:9/v1".into(),
            keys: KeyPool::single(crate::credentials::KeySource::env("SLUICE_TEST_NO_KEY")),
            models: models.iter().map(|m| m.to_string()).collect(),
            priority: 0,
            weight: 1,
            dialect: Dialect::OpenAi,
            limits: None,
            prices: prices
                .iter()
                .map(|(m, p)| {
                    let price = crate::pricing::Price {
                        input: *p,
                        cached_input: *p / 2,
                        output: *p * 2,
                    };
                    (m.to_string(), price)
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn a_budget_reserves_the_dearest_upstream_and_each_upstream_prices_its_own() {
        let reg = crate::models::Registry::builtin();
        let mini = reg.price("gpt-4o-mini").unwrap();
        let alerts = Arc::new(crate::alerts::Alerter::new(Default::default()));
        let ups = Upstreams::new(
            vec![
                upstream("cheap", &[], &[("gpt-*", 1), ("gpt-4o-*", 2)]),
                upstream("dear", &["gpt-4o-mini"], &[("gpt-4o-mini", 900_000)]),
                upstream("plain", &["gpt-*"], &[]),
            ],
            &TransportConfig::default(),
            BreakerConfig::default(),
            &alerts,
            &[],
        )
        .unwrap();
        // Exact name first, then the longest glob, then the registry.
        assert_eq!(ups.get(0).price("gpt-4o-mini", &reg).unwrap().input, 2);
        assert_eq!(ups.get(0).price("gpt-4.1", &reg).unwrap().input, 1);
        assert_eq!(ups.get(0).price("llama", &reg), None);
        assert_eq!(
            ups.get(1).price("gpt-4o-mini", &reg).unwrap().input,
            900_000
        );
        assert_eq!(ups.get(2).price("gpt-4o-mini", &reg), Some(mini));
        // Before it is known which answers, the most any that serves the model charges.
        let worst = ups.worst_price("gpt-4o-mini", &reg).unwrap();
        assert_eq!(
            (worst.input, worst.output),
            (900_000, 1_800_000.max(mini.output))
        );
        // `dear` does not serve gpt-4.1: the registry's price (from `plain`) is the most.
        assert_eq!(
            ups.worst_price("gpt-4.1", &reg),
            reg.price("gpt-4.1")
                .map(|p| p.max(ups.get(0).price("gpt-4.1", &reg).unwrap()))
        );
        // Priced only by `cheap`'s glob: that price, not "unpriced".
        assert!(ups.worst_price("gpt-unknown-9", &reg).is_some());
        assert_eq!(ups.worst_price("llama", &reg), None);
    }
}
