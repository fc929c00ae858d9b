//! The upstream's own list of models (`GET /v1/models`) as ground truth beside the registry.
//!
//! The registry is data shipped (or fetched) at some date; the upstream knows today. A model
//! that the registry calls active but the upstream no longer lists is about to fail every
//! request for it, and the registry cannot say so. So the gateway and the batch runner ask the
//! upstream at start and periodically, and raise the `model_unavailable` alert for each model in
//! use (it answered since the engine started) or named in configuration that the upstream does
//! not list. A `model_not_found` for a model the registry calls active is logged once per model
//! as "registry out of date": it is the registry, not the caller, that needs mending.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use http::Method;
use serde_json::Value;

use crate::alerts::Alert;
use crate::call::{Call, RequestOptions};
use crate::error::{Error, ErrorKind};
use crate::models::{Registry, Status};
use crate::stack::Engine;

/// The alert rule this module raises.
pub const MODEL_UNAVAILABLE: &str = "model_unavailable";

/// Models remembered as in use, at most (made-up names never get here: only models that
/// answered are remembered, and this bounds the rest).
const MAX_IN_USE: usize = 1024;

/// How often the upstream is asked by default.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(3600);

/// What the engine has learnt about the upstream's models.
#[derive(Debug, Default)]
pub struct Catalog {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The upstream's last listing (`None`: not asked yet, or it could not answer).
    listed: Option<HashSet<String>>,
    /// Looked up on every answer: a fast hash, seeded per map (the names are the upstream's).
    in_use: foldhash::HashSet<String>,
    /// Models already logged as "registry out of date".
    out_of_date: foldhash::HashSet<String>,
}

impl Catalog {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `model` answered a request: it is in use.
    pub fn answered(&self, model: &str) {
        let mut st = self.state();
        if st.in_use.len() < MAX_IN_USE && !st.in_use.contains(model) {
            st.in_use.insert(model.to_string());
        }
    }

    /// The models that answered since the engine started, sorted.
    pub fn in_use(&self) -> Vec<String> {
        let mut v: Vec<String> = self.state().in_use.iter().cloned().collect();
        v.sort();
        v
    }

    /// The upstream's last listing, sorted (`None` before the first successful check).
    pub fn listed(&self) -> Option<Vec<String>> {
        self.state().listed.as_ref().map(|l| {
            let mut v: Vec<String> = l.iter().cloned().collect();
            v.sort();
            v
        })
    }

    fn set_listed(&self, ids: HashSet<String>) {
        self.state().listed = Some(ids);
    }

    /// The upstream answered `model_not_found` for `model`. Logs "registry out of date" the
    /// first time for a model the registry calls active (or deprecated but not yet shut down);
    /// returns whether it did.
    pub fn not_found(&self, model: &str, registry: &Registry, today: jiff::civil::Date) -> bool {
        let live = registry
            .lifecycle(model)
            .or_else(|| registry.alias(model).and_then(|id| registry.lifecycle(id)))
            .is_some_and(|l| !matches!(l.status(today), Status::Retired { .. }));
        if !live || !self.state().out_of_date.insert(model.to_string()) {
            return false;
        }
        let as_of = registry
            .as_of()
            .map_or_else(|| "undated".to_string(), |d| d.to_string());
        tracing::warn!(
            model,
            registry_as_of = %as_of,
            "registry out of date: the upstream answered model_not_found for a model the registry calls active; refresh it with `sluice models update --from URL|FILE`"
        );
        true
    }
}

/// Whether `model` is in `listed`, directly or through the registry (an alias stands for its
/// id; a listed dated snapshot does not make its undated id listed, nor the other way round).
pub fn is_listed(model: &str, listed: &HashSet<String>, registry: &Registry) -> bool {
    listed.contains(model) || registry.alias(model).is_some_and(|id| listed.contains(id))
}

/// The model ids of a `GET /models` answer.
pub fn parse_listing(body: &[u8]) -> Result<HashSet<String>, Error> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        Error::new(
            ErrorKind::Decode,
            format!("the upstream's model list is not JSON: {e}"),
        )
    })?;
    let data = v.get("data").and_then(Value::as_array).ok_or_else(|| {
        Error::new(
            ErrorKind::Decode,
            "the upstream's model list has no `data` array",
        )
    })?;
    Ok(data
        .iter()
        .filter_map(|m| m.get("id").and_then(Value::as_str))
        .map(str::to_string)
        .collect())
}

/// Ask the upstream which models it serves, remember the answer, and raise `model_unavailable`
/// for every model of `configured` and of those in use that it does not list. Returns those
/// models, sorted.
pub async fn check(engine: &Engine, configured: &[String]) -> Result<Vec<String>, Error> {
    let call = Call {
        method: Method::GET,
        path: "/models".into(),
        body: None,
        endpoint: "models",
        model: None,
        estimate: None,
        options: RequestOptions {
            timeout: Some(Duration::from_secs(30)),
            ..RequestOptions::default()
        },
    };
    let reply = engine.send(call).await?;
    let listed = parse_listing(&reply.body)?;
    crate::observe::know_models(&listed);
    let catalog = engine.catalog();
    let registry = engine.models().registry();
    let mut wanted: Vec<String> = configured.to_vec();
    wanted.extend(catalog.in_use());
    wanted.sort();
    wanted.dedup();
    let missing: Vec<String> = wanted
        .into_iter()
        .filter(|m| !m.is_empty() && !is_listed(m, &listed, registry))
        .collect();
    for m in &missing {
        engine.alerts().fire(Alert {
            rule: MODEL_UNAVAILABLE,
            subject: m.clone(),
            message: format!(
                "model {m} is in use or configured, but the upstream's /v1/models does not list it: requests for it will fail with model_not_found"
            ),
            value: 1.0,
            threshold: 0.0,
        });
    }
    tracing::debug!(
        listed = listed.len(),
        missing = missing.len(),
        "upstream model list checked"
    );
    catalog.set_listed(listed);
    Ok(missing)
}

/// The periodic check, running until this is dropped (or [`Watch::abort`]ed): a face holds it
/// for as long as it runs.
#[derive(Debug)]
pub struct Watch(tokio::task::JoinHandle<()>);

impl Watch {
    pub fn abort(&self) {
        self.0.abort();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Check at once and then every `every`. `current` gives the engine in force and the models
/// configuration names (a gateway's change on reload).
pub fn watch<F>(current: F, every: Duration) -> Watch
where
    F: Fn() -> (Engine, Vec<String>) + Send + 'static,
{
    watch_after(current, every, Duration::ZERO)
}

/// [`watch`], with the first check after `first` (a face that has just checked itself).
pub fn watch_after<F>(current: F, every: Duration, first: Duration) -> Watch
where
    F: Fn() -> (Engine, Vec<String>) + Send + 'static,
{
    let every = every.max(Duration::from_secs(1));
    Watch(tokio::spawn(async move {
        tokio::time::sleep(first).await;
        loop {
            let (engine, configured) = current();
            if let Err(e) = check(&engine, &configured).await {
                tracing::warn!(error = %e, next_check_in_s = every.as_secs(), "could not read the upstream's model list");
            }
            drop(engine);
            tokio::time::sleep(every).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::parse_date;

    #[test]
    fn listing_is_read_and_aliases_count() {
        let l = parse_listing(
            br#"{"object":"list","data":[{"id":"gpt-4o-mini","object":"model"},{"id":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(l.len(), 2);
        let mut r = Registry::builtin();
        r.extend_toml(
            "t",
            "[[model]]\nid = \"gpt-4o-mini\"\naliases = [\"fast\"]\n",
        )
        .unwrap();
        assert!(is_listed("fast", &l, &r));
        assert!(is_listed("gpt-4o-mini", &l, &r));
        assert!(!is_listed("gpt-4o-mini-2024-07-18", &l, &r));
        assert!(parse_listing(b"{}").is_err());
        assert!(parse_listing(b"<html>").is_err());
    }

    #[test]
    fn out_of_date_is_said_once_and_only_for_live_models() {
        let c = Catalog::default();
        let r = Registry::builtin();
        let today = parse_date("2026-12-01").unwrap();
        assert!(c.not_found("gpt-4o-mini", &r, today));
        assert!(!c.not_found("gpt-4o-mini", &r, today), "once per model");
        assert!(
            !c.not_found("gpt-3.5-turbo", &r, today),
            "retired: the registry knew"
        );
        assert!(
            !c.not_found("acme-x", &r, today),
            "unknown: nothing to mend"
        );
    }

    #[test]
    fn in_use_is_bounded() {
        let c = Catalog::default();
        for i in 0..(MAX_IN_USE + 10) {
            c.answered(&format!("m{i}"));
        }
        c.answered("m0");
        assert_eq!(c.in_use().len(), MAX_IN_USE);
    }
}
