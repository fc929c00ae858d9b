//! Model policy: what the engine does with the model a request names, before it is sent.
//! Aliases resolve first; then the registry's lifecycle decides: an active model goes as is, a
//! deprecated one goes with a notice (logged once per model per day, counted, and surfaced as
//! the `x-sluice-model-deprecated` header by the gateway), and a model past its shutdown date is
//! rejected with an error naming its replacement, or sent to the replacement when the policy
//! says `substitute`. A `model_not_found` answer follows the configured fallback chain
//! ([`ModelPolicy::fallbacks`], applied by the engine's stack).
//!
//! Why in the engine and not in each face: the cron job that broke silently for three days used
//! a plain client; the client, the batch runner and the gateway all get the same behaviour.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::civil::Date;

use crate::error::{Error, ErrorKind};
use crate::models::{today_utc, Registry, Status};

/// What to do with a request for a model past its shutdown date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnRetired {
    /// Refuse it here with an error naming the replacement (the upstream would refuse anyway,
    /// less helpfully).
    #[default]
    Reject,
    /// Send it to the registry's replacement, and say so in the log and a header.
    Substitute,
    /// Send it as written (the registry may be wrong for your provider).
    Allow,
}

impl std::str::FromStr for OnRetired {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reject" => Ok(OnRetired::Reject),
            "substitute" => Ok(OnRetired::Substitute),
            "allow" => Ok(OnRetired::Allow),
            other => Err(format!("{other:?} is not one of reject, substitute, allow")),
        }
    }
}

/// How requests' models are handled.
#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    pub on_retired: OnRetired,
    /// Name → model, resolved before anything else (in addition to the registry's aliases).
    pub aliases: HashMap<String, String>,
    /// Model → models to try, in order, when the upstream answers `model_not_found`.
    pub fallbacks: HashMap<String, Vec<String>>,
    /// The day lifecycles are judged on; `None` is today (UTC). Tests pin it.
    pub today: Option<Date>,
}

/// A deprecated or retired model a request named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub model: String,
    pub shutdown: Option<Date>,
    pub replacement: Option<String>,
    pub retired: bool,
}

impl Notice {
    /// The `x-sluice-model-deprecated` header value:
    /// `gpt-4-32k; shutdown=2025-06-06; replacement=gpt-4o`.
    pub fn header_value(&self) -> String {
        let mut v = self.model.clone();
        if let Some(d) = self.shutdown {
            v.push_str(&format!("; shutdown={d}"));
        }
        if let Some(r) = &self.replacement {
            v.push_str(&format!("; replacement={r}"));
        }
        v
    }
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The model the caller named.
    pub requested: String,
    /// The model to send.
    pub model: String,
    /// `model` is a retired model's replacement.
    pub substituted: bool,
    pub notice: Option<Notice>,
}

/// The policy, shared by every request of an engine.
#[derive(Debug)]
pub struct ModelPolicy {
    registry: Arc<Registry>,
    cfg: PolicyConfig,
    /// Model → day it was last warned about, so a deprecated model in a hot loop logs once a
    /// day, not once a request.
    warned: Mutex<HashMap<String, Date>>,
}

impl Default for ModelPolicy {
    fn default() -> Self {
        Self::new(Arc::new(Registry::builtin()), PolicyConfig::default())
    }
}

impl ModelPolicy {
    pub fn new(registry: Arc<Registry>, cfg: PolicyConfig) -> Self {
        ModelPolicy {
            registry,
            cfg,
            warned: Mutex::new(HashMap::new()),
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }

    pub fn today(&self) -> Date {
        self.cfg.today.unwrap_or_else(today_utc)
    }

    /// The model a name stands for: config aliases, then the registry's, a few hops at most (a
    /// cycle stops there). A name that is no alias is returned as it is.
    pub fn resolve_alias<'a>(&'a self, mut name: &'a str) -> &'a str {
        for _ in 0..4 {
            match self
                .cfg
                .aliases
                .get(name)
                .map(String::as_str)
                .or_else(|| self.registry.alias(name))
            {
                Some(next) if next != name => name = next,
                _ => break,
            }
        }
        name
    }

    /// Decide where a request for `requested` goes.
    pub fn route(&self, requested: &str) -> Result<Route, Error> {
        Ok(self
            .route_unless_plain(requested)?
            .unwrap_or_else(|| Route::plain(requested, requested.to_string())))
    }

    /// As [`ModelPolicy::route`], but `None` when the request goes out as it came: its own
    /// name (no alias), a model with no lifecycle notice. That is nearly every request, and
    /// told so without copying the name twice into a `Route` that says nothing.
    pub(crate) fn route_unless_plain(&self, requested: &str) -> Result<Option<Route>, Error> {
        let resolved = self.resolve_alias(requested);
        let Some(life) = self.registry.lifecycle(resolved) else {
            return Ok(
                (resolved != requested).then(|| Route::plain(requested, resolved.to_string()))
            );
        };
        // A model with no date to compare is active whatever the day (the clock not read).
        if life.deprecated.is_none() && life.shutdown.is_none() && resolved == requested {
            return Ok(None);
        }
        let today = self.today();
        let status = life.status(today);
        if status == Status::Active && resolved == requested {
            return Ok(None);
        }
        let name = resolved.to_string();
        let notice = |retired| Notice {
            model: name.clone(),
            shutdown: life.shutdown,
            replacement: life.replacement.clone(),
            retired,
        };
        match status {
            Status::Active => Ok(Some(Route::plain(requested, name))),
            Status::Deprecated { days_left } => {
                let n = notice(false);
                self.warn_once(&n, today, days_left);
                crate::observe::model_lifecycle(&name, "deprecated");
                Ok(Some(Route {
                    requested: requested.to_string(),
                    model: name,
                    substituted: false,
                    notice: Some(n),
                }))
            }
            Status::Retired { .. } => {
                let n = notice(true);
                crate::observe::model_lifecycle(&name, "retired");
                let shutdown = life.shutdown.map(|d| d.to_string()).unwrap_or_default();
                match (self.cfg.on_retired, self.live_replacement(&name, today)) {
                    (OnRetired::Allow, _) => {
                        self.warn_once(&n, today, None);
                        Ok(Some(Route {
                            requested: requested.to_string(),
                            model: name,
                            substituted: false,
                            notice: Some(n),
                        }))
                    }
                    (OnRetired::Substitute, Some(rep)) => {
                        tracing::warn!(
                            model = %name, replacement = %rep, shutdown = %shutdown,
                            "model is past its shutdown date: sending to its replacement"
                        );
                        crate::observe::model_substituted(&name, &rep);
                        Ok(Some(Route {
                            requested: requested.to_string(),
                            model: rep,
                            substituted: true,
                            notice: Some(n),
                        }))
                    }
                    (_, rep) => {
                        let advice = match rep.or(life.replacement.clone()) {
                            Some(r) => format!("; use {r} instead"),
                            None => "; the registry names no replacement".to_string(),
                        };
                        Err(Error::new(
                            ErrorKind::ModelRetired,
                            format!(
                                "the model {name} was shut down on {shutdown}{advice} (sluice model policy: on_retired = {})",
                                match self.cfg.on_retired {
                                    OnRetired::Reject => "reject",
                                    _ => "substitute, but no live replacement is known",
                                }
                            ),
                        ))
                    }
                }
            }
        }
    }

    /// The first replacement along the chain that is not itself retired.
    fn live_replacement(&self, model: &str, today: Date) -> Option<String> {
        let mut cur = model.to_string();
        for _ in 0..8 {
            let rep = self.registry.lifecycle(&cur)?.replacement.clone()?;
            match self.registry.lifecycle(&rep).map(|l| l.status(today)) {
                Some(Status::Retired { .. }) => cur = rep,
                _ => return Some(rep),
            }
        }
        None
    }

    /// Models to try after `model` answered `model_not_found`.
    pub fn fallbacks(&self, model: &str) -> &[String] {
        self.cfg.fallbacks.get(model).map_or(&[], Vec::as_slice)
    }

    fn warn_once(&self, n: &Notice, today: Date, days_left: Option<i64>) {
        let first_today = {
            let mut w = self.warned.lock().unwrap_or_else(|p| p.into_inner());
            w.insert(n.model.clone(), today) != Some(today)
        };
        if first_today {
            tracing::warn!(
                model = %n.model,
                shutdown = %n.shutdown.map(|d| d.to_string()).unwrap_or_else(|| "not set".into()),
                days_left = days_left.unwrap_or(-1),
                replacement = %n.replacement.as_deref().unwrap_or(""),
                "deprecated model in use (logged once per model per day)"
            );
        }
    }
}

impl Route {
    pub(crate) fn plain(requested: &str, model: String) -> Self {
        Route {
            requested: requested.to_string(),
            model,
            substituted: false,
            notice: None,
        }
    }
}

/// The request body with its `model` field replaced. Bodies whose model is rewritten (alias,
/// substitution, fallback) are rare, so the parse-and-reserialize cost is paid only then.
pub fn rewrite_model(body: &[u8], model: &str) -> Result<bytes::Bytes, Error> {
    let mut v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        Error::new(
            ErrorKind::BadRequest,
            format!("the request body is not JSON: {e}"),
        )
    })?;
    match v.as_object_mut() {
        Some(o) => {
            o.insert("model".into(), serde_json::Value::String(model.to_string()));
        }
        None => {
            return Err(Error::new(
                ErrorKind::BadRequest,
                "the request body is not a JSON object",
            ))
        }
    }
    serde_json::to_vec(&v)
        .map(bytes::Bytes::from)
        .map_err(|e| Error::new(ErrorKind::Decode, e.to_string()))
}

/// `json` with every `"model": "<from>"` member given the value `to` instead; `None` when it
/// has none. An answer from an upstream that was sent another name (an Azure deployment) is
/// handed back naming the model the caller asked for, where it echoes that name.
///
/// Text, not a parse: a match needs an unescaped quote right before `model`, before `from`
/// and after it, which only a member can have — inside a JSON string every quote is escaped.
/// So a stream's events and large answers are renamed without being decoded and written again.
pub fn rename_model(json: &str, from: &str, to: &str) -> Option<String> {
    const KEY: &str = "\"model\"";
    let mut out: Option<String> = None;
    let mut done = 0; // bytes of `json` already copied to `out`
    let mut at = 0;
    while let Some(i) = json[at..].find(KEY) {
        let key_end = at + i + KEY.len();
        let escaped = at + i > 0 && json.as_bytes()[at + i - 1] == b'\\';
        at = key_end;
        if escaped {
            continue;
        }
        let rest = json[key_end..].trim_start();
        let Some(rest) = rest.strip_prefix(':') else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(value) = rest
            .strip_prefix('"')
            .and_then(|r| r.strip_prefix(from))
            .filter(|r| r.starts_with('"'))
        else {
            continue;
        };
        let value_start = json.len() - rest.len();
        let value_end = json.len() - value.len() + 1;
        let o = out.get_or_insert_with(|| String::with_capacity(json.len() + to.len()));
        o.push_str(&json[done..value_start]);
        o.push_str(&serde_json::Value::String(to.to_string()).to_string());
        done = value_end;
        at = value_end;
    }
    let mut o = out?;
    o.push_str(&json[done..]);
    Some(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::parse_date;

    #[test]
    fn answers_naming_the_deployment_name_the_model_instead() {
        let r = |j: &str| rename_model(j, "prod-4o", "gpt-4o-mini");
        assert_eq!(
            r(r#"{"id":"x","model":"prod-4o","n":1}"#).as_deref(),
            Some(r#"{"id":"x","model":"gpt-4o-mini","n":1}"#)
        );
        // Spaced JSON, and a member nested in `response` (the Responses API's events).
        assert_eq!(
            r(r#"{"response": {"model" : "prod-4o"}, "model": "prod-4o"}"#).as_deref(),
            Some(r#"{"response": {"model" : "gpt-4o-mini"}, "model": "gpt-4o-mini"}"#)
        );
        // Another model, a longer name, text that mentions it, a key that merely ends so.
        assert_eq!(r(r#"{"model":"gpt-4o-mini-2024-07-18"}"#), None);
        assert_eq!(r(r#"{"model":"prod-4o-large"}"#), None);
        assert_eq!(r(r#"{"content":"the \"model\":\"prod-4o\" said"}"#), None);
        assert_eq!(
            r(r#"{"my_model":"x","model":"prod-4o"}"#).as_deref(),
            Some(r#"{"my_model":"x","model":"gpt-4o-mini"}"#)
        );
        assert_eq!(r("not json at all \"model\""), None);
        // A caller's name is written as a JSON string.
        assert_eq!(
            rename_model(r#"{"model":"d"}"#, "d", "a\"b").as_deref(),
            Some(r#"{"model":"a\"b"}"#)
        );
    }

    fn policy(on_retired: OnRetired) -> ModelPolicy {
        let mut cfg = PolicyConfig {
            on_retired,
            today: parse_date("2026-11-28"),
            ..PolicyConfig::default()
        };
        cfg.aliases.insert("fast".into(), "gpt-4o-mini".into());
        cfg.aliases.insert("old".into(), "gpt-4-32k".into());
        ModelPolicy::new(Arc::new(Registry::builtin()), cfg)
    }

    #[test]
    fn aliases_resolve_and_active_models_pass() {
        let p = policy(OnRetired::Reject);
        let r = p.route("fast").unwrap();
        assert_eq!(r.model, "gpt-4o-mini");
        assert_eq!(r.requested, "fast");
        assert!(r.notice.is_none());
        assert_eq!(p.route("unknown-model").unwrap().model, "unknown-model");
    }

    #[test]
    fn a_request_sent_as_named_needs_no_route() {
        let p = policy(OnRetired::Substitute);
        // Active and unaliased, or unknown to the registry: nothing to route or tell.
        for m in ["gpt-4o-mini", "unknown-model"] {
            assert!(p.route_unless_plain(m).unwrap().is_none(), "{m}");
            let r = p.route(m).unwrap();
            assert_eq!((r.requested.as_str(), r.model.as_str()), (m, m));
            assert!(!r.substituted && r.notice.is_none());
        }
        // An alias, a retired model: a route, the same as `route` gives.
        for m in ["fast", "gpt-4-32k-0613"] {
            let quick = p.route_unless_plain(m).unwrap().expect(m);
            let whole = p.route(m).unwrap();
            assert_eq!(
                (quick.model, quick.substituted),
                (whole.model, whole.substituted)
            );
        }
        assert!(policy(OnRetired::Reject).route_unless_plain("old").is_err());
    }

    #[test]
    fn retired_models_are_rejected_with_their_replacement_named() {
        let e = policy(OnRetired::Reject).route("old").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ModelRetired);
        assert!(!e.is_retryable());
        let m = e.to_string();
        assert!(
            m.contains("gpt-4-32k") && m.contains("2025-06-06") && m.contains("use gpt-4o"),
            "{m}"
        );
    }

    #[test]
    fn substitution_follows_the_chain_to_a_live_model() {
        let p = policy(OnRetired::Substitute);
        let r = p.route("gpt-4-32k-0613").unwrap();
        assert_eq!(r.model, "gpt-4o");
        assert!(r.substituted);
        let n = r.notice.unwrap();
        assert_eq!(
            n.header_value(),
            "gpt-4-32k-0613; shutdown=2025-06-06; replacement=gpt-4o"
        );
        // text-davinci-003 → gpt-3.5-turbo-instruct (active).
        assert_eq!(
            p.route("text-davinci-003").unwrap().model,
            "gpt-3.5-turbo-instruct"
        );
        // Allow sends as written, with the notice.
        let r = policy(OnRetired::Allow).route("gpt-4-32k").unwrap();
        assert_eq!(r.model, "gpt-4-32k");
        assert!(r.notice.unwrap().retired);
    }

    #[test]
    fn deprecated_models_pass_with_a_notice() {
        let mut reg = Registry::builtin();
        reg.extend_toml("t", "[[model]]\nid = \"gpt-4o\"\ndeprecated = \"2026-11-01\"\nshutdown = \"2027-02-01\"\nreplacement = \"gpt-4.1\"\n").unwrap();
        let p = ModelPolicy::new(
            Arc::new(reg),
            PolicyConfig {
                today: parse_date("2026-11-28"),
                ..Default::default()
            },
        );
        let r = p.route("gpt-4o").unwrap();
        assert_eq!(r.model, "gpt-4o");
        let n = r.notice.unwrap();
        assert!(!n.retired);
        assert_eq!(
            n.header_value(),
            "gpt-4o; shutdown=2027-02-01; replacement=gpt-4.1"
        );
    }

    #[test]
    fn rewrite_replaces_only_the_model() {
        let b = rewrite_model(
            br#"{"model":"a","messages":[{"role":"user","content":"hi"}],"max_tokens":3}"#,
            "b",
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["model"], "b");
        assert_eq!(v["messages"][0]["content"], "hi");
        assert_eq!(v["max_tokens"], 3);
        assert_eq!(
            rewrite_model(b"[1]", "b").unwrap_err().kind(),
            ErrorKind::BadRequest
        );
    }
}
