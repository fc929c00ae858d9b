//! The model registry: what sluice knows about each model (tokenizer, context window, prices,
//! lifecycle). It exists so a retired model is caught before a cron job fails on it, and so a
//! request's cost is known without asking anyone.
//!
//! The registry has three layers, lowest first: the file shipped in `data/models.toml` (fields,
//! sources and the dates they were read are in its header), the file `sluice models update`
//! fetched into the data directory (so a retirement announced after a release reaches a running
//! installation without a new binary), and the user's own file. Each layer overlays only the
//! fields it sets. A bad entry is reported with its file, index, id and field.
//!
//! The data says how old it is (`[registry] as_of`): shipped data that nobody refreshed is the
//! silent failure this module exists to prevent, so [`Registry::staleness`] turns its age into a
//! warning that every face prints.
//!
//! Names: `id` is the model's name; `snapshots` are dated names that share its prices and
//! lifecycle (sent as written); `aliases` are names rewritten to `id` before sending.

use std::collections::HashMap;

use jiff::civil::Date;
use serde::Deserialize;

use crate::error::{Error, ErrorKind};
use crate::pricing::Price;

/// Where a model is in its life on a given day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No deprecation known.
    Active,
    /// Deprecation announced; still answering. `days_left` is `None` when no shutdown date is
    /// set (a "legacy" model).
    Deprecated { days_left: Option<i64> },
    /// Past its shutdown date.
    Retired { days_ago: i64 },
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Deprecated { .. } => "deprecated",
            Status::Retired { .. } => "retired",
        }
    }
}

/// Deprecation and shutdown dates with the recommended replacement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lifecycle {
    pub deprecated: Option<Date>,
    pub shutdown: Option<Date>,
    pub replacement: Option<String>,
}

impl Lifecycle {
    pub fn status(&self, today: Date) -> Status {
        if let Some(s) = self.shutdown {
            let days = i64::from((s - today).get_days());
            if days <= 0 {
                return Status::Retired { days_ago: -days };
            }
            return Status::Deprecated {
                days_left: Some(days),
            };
        }
        match self.deprecated {
            Some(d) if d <= today => Status::Deprecated { days_left: None },
            _ => Status::Active,
        }
    }
}

/// One model.
#[derive(Debug, Clone, Default)]
pub struct ModelInfo {
    pub id: String,
    pub snapshots: Vec<String>,
    pub aliases: Vec<String>,
    pub encoding: Option<String>,
    pub context_window: Option<u64>,
    pub max_output: Option<u64>,
    pub price: Option<Price>,
    /// Fraction off through the Batch API, in percent (50 = half price).
    pub batch_discount_pct: Option<u8>,
    pub lifecycle: Lifecycle,
    /// Where the entry's facts were read (required in the shipped file).
    pub source: Option<String>,
    /// When they were read.
    pub checked: Option<Date>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    registry: Option<RawMeta>,
    #[serde(default, rename = "model")]
    models: Vec<RawModel>,
}

/// The `[registry]` table: what the file as a whole is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeta {
    as_of: Option<String>,
    source: Option<String>,
}

/// One file the registry was built from, lowest layer first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// `shipped`, `fetched` or `yours`.
    pub kind: &'static str,
    /// The file (the shipped layer has none).
    pub path: Option<std::path::PathBuf>,
    /// The date of its lifecycle data, when it says.
    pub as_of: Option<Date>,
    pub source: Option<String>,
}

/// Lifecycle data older than this many days is called possibly stale.
pub const STALE_AFTER_DAYS: i64 = 90;

/// How old the registry's lifecycle data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staleness {
    /// The newest `as_of` of the layers (`None`: no layer says).
    pub as_of: Option<Date>,
    pub age_days: Option<i64>,
    pub stale: bool,
}

impl Staleness {
    /// One line for a log or a terminal: the date, and past the threshold what to do about it.
    pub fn line(&self) -> String {
        match (self.as_of, self.age_days) {
            (Some(d), Some(age)) if self.stale => format!(
                "model lifecycle data is from {d} ({age} days old): deprecations announced since are unknown to sluice; refresh it with `sluice models update --from URL|FILE` and check your files against the upstream with `sluice models check FILE --base-url URL`"
            ),
            (Some(d), Some(age)) => format!("model lifecycle data as of {d} ({age} days old)"),
            _ => "model lifecycle data has no date: it may be stale; refresh it with `sluice models update --from URL|FILE`".to_string(),
        }
    }
}

/// One registry entry as written in a file; every field but `id` may be left out.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub id: String,
    pub snapshots: Option<Vec<String>>,
    pub aliases: Option<Vec<String>>,
    pub encoding: Option<String>,
    pub context_window: Option<u64>,
    pub max_output: Option<u64>,
    pub input_per_mtok: Option<f64>,
    pub cached_input_per_mtok: Option<f64>,
    pub output_per_mtok: Option<f64>,
    pub batch_discount: Option<f64>,
    pub deprecated: Option<String>,
    pub shutdown: Option<String>,
    pub replacement: Option<String>,
    pub source: Option<String>,
    pub checked: Option<String>,
}

/// The registry: the shipped table plus any user files.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    models: Vec<ModelInfo>,
    /// id and snapshot names → index into `models`.
    by_name: rustc_hash::FxHashMap<String, usize>,
    /// alias → id.
    aliases: HashMap<String, String>,
    layers: Vec<Layer>,
}

/// The directory sluice keeps its data in: `SLUICE_DATA_DIR`, else `$XDG_DATA_HOME/sluice`,
/// else `~/.local/share/sluice`.
pub fn data_dir() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    std::env::var_os("SLUICE_DATA_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_DATA_HOME")
                .filter(|v| !v.is_empty())
                .map(|d| PathBuf::from(d).join("sluice"))
        })
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/sluice")))
}

/// Where `sluice models update` keeps the registry it fetched.
pub fn fetched_path() -> Option<std::path::PathBuf> {
    data_dir().map(|d| d.join("models.toml"))
}

/// The shipped registry file.
const SHIPPED: &str = include_str!("../data/models.toml");

fn read(p: &std::path::Path) -> Result<String, Error> {
    std::fs::read_to_string(p).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("model registry {}: {e}", p.display()),
        )
    })
}

/// Parse `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Option<Date> {
    s.trim().parse::<Date>().ok()
}

/// Today in UTC. Asked on every request (the budget's day, the model's lifecycle): the date is
/// kept per thread with the second its day ends, so that most calls read the clock and compare
/// instead of converting a timestamp to a civil date.
pub fn today_utc() -> Date {
    thread_local! {
        static DAY: std::cell::Cell<Option<(i64, Date)>> = const { std::cell::Cell::new(None) };
    }
    let now = jiff::Timestamp::now();
    let secs = now.as_second();
    DAY.with(|day| match day.get() {
        Some((ends, date)) if secs < ends && secs >= ends - 86_400 => date,
        _ => {
            let date = now.to_zoned(jiff::tz::TimeZone::UTC).date();
            // UTC days are 86,400 seconds (jiff has no leap seconds).
            let ends = secs - secs.rem_euclid(86_400) + 86_400;
            day.set(Some((ends, date)));
            date
        }
    })
}

impl Registry {
    /// The registry shipped with sluice, alone.
    pub fn builtin() -> Self {
        // The shipped file is checked by a test; an error here would be a build defect, and an
        // empty table (no costs, no lifecycle) is the safe fallback.
        let mut r = Self::from_toml("built-in registry", SHIPPED).unwrap_or_default();
        if let Some(l) = r.layers.last_mut() {
            l.kind = "shipped";
        }
        r
    }

    /// The registry every face uses: shipped < fetched (`sluice models update`, in the data
    /// directory) < the user's file.
    pub fn load(user: Option<&std::path::Path>) -> Result<Self, Error> {
        Self::load_layers(fetched_path().as_deref(), user)
    }

    /// [`Registry::load`] with the fetched layer's path named. A fetched file that no longer
    /// parses (written by a newer sluice, or damaged) is skipped with a warning: it was valid
    /// when it was stored, and the layers below still hold. A bad user file is an error.
    pub fn load_layers(
        fetched: Option<&std::path::Path>,
        user: Option<&std::path::Path>,
    ) -> Result<Self, Error> {
        let mut r = Self::builtin();
        if let Some(p) = fetched.filter(|p| p.exists()) {
            let mut next = r.clone();
            match read(p).and_then(|text| next.extend_layer("fetched", Some(p), &text)) {
                Ok(()) => r = next,
                Err(e) => {
                    tracing::warn!(error = %e, "the fetched model registry is skipped; run `sluice models update` again")
                }
            }
        }
        if let Some(p) = user {
            let text = read(p)?;
            r.extend_layer("yours", Some(p), &text)?;
        }
        Ok(r)
    }

    /// Parse a registry file. `origin` names it in errors.
    pub fn from_toml(origin: &str, text: &str) -> Result<Self, Error> {
        let mut r = Registry::default();
        r.extend_toml(origin, text)?;
        Ok(r)
    }

    /// Add or overlay the entries of a registry file (as the user's layer).
    pub fn extend_toml(&mut self, origin: &str, text: &str) -> Result<(), Error> {
        self.extend_named("yours", None, origin, text)
    }

    fn extend_layer(
        &mut self,
        kind: &'static str,
        path: Option<&std::path::Path>,
        text: &str,
    ) -> Result<(), Error> {
        let origin = path.map_or_else(|| kind.to_string(), |p| p.display().to_string());
        self.extend_named(kind, path, &origin, text)
    }

    fn extend_named(
        &mut self,
        kind: &'static str,
        path: Option<&std::path::Path>,
        origin: &str,
        text: &str,
    ) -> Result<(), Error> {
        let cfg =
            |m: String| Error::new(ErrorKind::Config, format!("model registry {origin}: {m}"));
        let raw: RawRegistry =
            toml::from_str(text).map_err(|e| cfg(e.to_string().trim_end().to_string()))?;
        let (as_of, source) = match raw.registry {
            Some(meta) => {
                let as_of = match &meta.as_of {
                    None => None,
                    Some(s) => Some(parse_date(s).ok_or_else(|| {
                        cfg(format!("registry.as_of: {s:?} is not a date (YYYY-MM-DD)"))
                    })?),
                };
                (as_of, meta.source)
            }
            None => (None, None),
        };
        for (i, m) in raw.models.into_iter().enumerate() {
            let at = format!("model[{i}] (id {:?})", m.id);
            self.overlay(m).map_err(|e| cfg(format!("{at}: {e}")))?;
        }
        self.layers.push(Layer {
            kind,
            path: path.map(std::path::Path::to_path_buf),
            as_of,
            source,
        });
        Ok(())
    }

    /// The files this registry was built from, lowest layer first.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The date of the lifecycle data: the newest `as_of` of its layers.
    pub fn as_of(&self) -> Option<Date> {
        self.layers.iter().filter_map(|l| l.as_of).max()
    }

    /// How old the lifecycle data is on `today`.
    pub fn staleness(&self, today: Date) -> Staleness {
        let as_of = self.as_of();
        let age_days = as_of.map(|d| i64::from((today - d).get_days()));
        Staleness {
            as_of,
            age_days,
            stale: age_days.is_none_or(|a| a > STALE_AFTER_DAYS),
        }
    }

    fn overlay(&mut self, m: RawModel) -> Result<(), String> {
        if m.id.trim().is_empty() {
            return Err("id must not be empty".into());
        }
        let idx = match self.by_name.get(&m.id) {
            Some(&i) if self.models[i].id == m.id => i,
            _ => {
                self.models.push(ModelInfo {
                    id: m.id.clone(),
                    ..ModelInfo::default()
                });
                self.models.len() - 1
            }
        };
        let info = &mut self.models[idx];
        let micro = |field: &str, v: Option<f64>| -> Result<Option<u64>, String> {
            v.map(|p| crate::pricing::micro_per_mtok(field, p))
                .transpose()
        };
        let input = micro("input_per_mtok", m.input_per_mtok)?;
        let output = micro("output_per_mtok", m.output_per_mtok)?;
        let cached = micro("cached_input_per_mtok", m.cached_input_per_mtok)?;
        if input.is_some() || output.is_some() || cached.is_some() {
            let old = info.price;
            let input = input.or(old.map(|p| p.input));
            let output = output.or(old.map(|p| p.output));
            match (input, output) {
                (Some(input), Some(output)) => {
                    info.price = Some(Price {
                        input,
                        cached_input: cached
                            .or(old
                                .filter(|p| p.cached_input != p.input)
                                .map(|p| p.cached_input))
                            .unwrap_or(input),
                        output,
                    });
                }
                _ => {
                    return Err("a price needs both input_per_mtok and output_per_mtok".to_string())
                }
            }
        }
        if let Some(d) = m.batch_discount {
            if !(0.0..=1.0).contains(&d) {
                return Err(format!(
                    "batch_discount: must be a fraction between 0 and 1, got {d}"
                ));
            }
            info.batch_discount_pct = Some((d * 100.0).round() as u8);
        }
        let date = |field: &str, v: &Option<String>| -> Result<Option<Date>, String> {
            match v {
                None => Ok(None),
                Some(s) => parse_date(s)
                    .map(Some)
                    .ok_or_else(|| format!("{field}: {s:?} is not a date (YYYY-MM-DD)")),
            }
        };
        if let Some(d) = date("deprecated", &m.deprecated)? {
            info.lifecycle.deprecated = Some(d);
        }
        if let Some(d) = date("shutdown", &m.shutdown)? {
            info.lifecycle.shutdown = Some(d);
        }
        if let (Some(d), Some(s)) = (info.lifecycle.deprecated, info.lifecycle.shutdown) {
            if s < d {
                return Err(format!("shutdown {s} is before deprecated {d}"));
            }
        }
        if let Some(r) = m.replacement {
            if r == m.id {
                return Err("replacement: a model cannot replace itself".into());
            }
            info.lifecycle.replacement = Some(r);
        }
        if let Some(e) = m.encoding {
            if !matches!(
                e.as_str(),
                "o200k_base" | "cl100k_base" | "p50k_base" | "r50k_base"
            ) {
                return Err(format!(
                    "encoding: {e:?} is not one of o200k_base, cl100k_base, p50k_base, r50k_base"
                ));
            }
            info.encoding = Some(e);
        }
        if let Some(v) = m.context_window {
            info.context_window = Some(v);
        }
        if let Some(v) = m.max_output {
            info.max_output = Some(v);
        }
        if let Some(s) = m.snapshots {
            info.snapshots = s;
        }
        if let Some(a) = m.aliases {
            info.aliases = a;
        }
        if let Some(src) = m.source {
            info.source = Some(src);
        }
        if let Some(c) = date("checked", &m.checked)? {
            info.checked = Some(c);
        }
        let names: Vec<String> = std::iter::once(info.id.clone())
            .chain(info.snapshots.iter().cloned())
            .collect();
        let aliases = info.aliases.clone();
        for n in names {
            self.by_name.insert(n, idx);
        }
        for a in aliases {
            if self
                .by_name
                .get(&a)
                .is_some_and(|&i| self.models[i].id == a)
            {
                return Err(format!("aliases: {a:?} is itself a model id"));
            }
            self.aliases.insert(a, m.id.clone());
        }
        Ok(())
    }

    /// Every name the registry knows: ids, snapshots and aliases.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name
            .keys()
            .map(String::as_str)
            .chain(self.aliases.keys().map(String::as_str))
    }

    /// Every model, in file order.
    pub fn models(&self) -> &[ModelInfo] {
        &self.models
    }

    /// The entry for an exact id or snapshot name.
    pub fn get(&self, name: &str) -> Option<&ModelInfo> {
        self.by_name.get(name).map(|&i| &self.models[i])
    }

    /// The id an alias stands for.
    pub fn alias(&self, name: &str) -> Option<&str> {
        self.aliases.get(name).map(String::as_str)
    }

    /// Lifecycle of a model by exact id or snapshot (a dated name not listed is not assumed to
    /// share its base model's dates: snapshots retire on their own schedule).
    pub fn lifecycle(&self, name: &str) -> Option<&Lifecycle> {
        self.get(name).map(|m| &m.lifecycle)
    }

    /// The recommended replacement of `name`, followed while the replacement is itself retired
    /// or shutting down on `today` (chat snapshots retire into snapshots that retire too):
    /// `[gpt-5.1-chat-latest, gpt-5.3-chat-latest, gpt-5.5]` for `chatgpt-4o-latest`. Empty
    /// when none is named.
    pub fn replacement_chain(&self, name: &str, today: Date) -> Vec<String> {
        let mut chain: Vec<String> = Vec::new();
        let mut at = self
            .lifecycle(name)
            .or_else(|| self.alias(name).and_then(|id| self.lifecycle(id)));
        while let Some(next) = at.and_then(|l| l.replacement.clone()) {
            if chain.contains(&next) || chain.len() >= 8 {
                break;
            }
            at = self.lifecycle(&next);
            let done = at.is_none_or(|l| l.shutdown.is_none() || l.status(today) == Status::Active);
            chain.push(next);
            if done {
                break;
            }
        }
        chain
    }

    /// The price of `model`: exact ids and snapshots, then aliases, then a fine-tune
    /// (`ft:gpt-4o-mini:org::id`) or an unlisted dated snapshot (`gpt-4o-mini-2024-07-18`) at
    /// its base model's price.
    pub fn price(&self, model: &str) -> Option<Price> {
        if let Some(p) = self.get(model).and_then(|m| m.price) {
            return Some(p);
        }
        if let Some(p) = self
            .alias(model)
            .and_then(|id| self.get(id))
            .and_then(|m| m.price)
        {
            return Some(p);
        }
        let base = model
            .strip_prefix("ft:")
            .map_or(model, |m| m.split(':').next().unwrap_or(m));
        if let Some(p) = self.get(base).and_then(|m| m.price) {
            return Some(p);
        }
        let mut parts: Vec<&str> = base.split('-').collect();
        while parts.len() > 1 {
            let last = parts[parts.len() - 1];
            if !last.chars().all(|c| c.is_ascii_digit()) {
                break;
            }
            parts.pop();
            if let Some(p) = self.get(&parts.join("-")).and_then(|m| m.price) {
                return Some(p);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_is_the_utc_date_of_now_asked_once_or_often() {
        let direct = || {
            jiff::Timestamp::now()
                .to_zoned(jiff::tz::TimeZone::UTC)
                .date()
        };
        for _ in 0..3 {
            let (before, got, after) = (direct(), today_utc(), direct());
            // (Around midnight the two direct readings bracket the answer.)
            assert!(
                got == before || got == after,
                "{got} not in {before}..{after}"
            );
        }
    }

    fn d(s: &str) -> Date {
        parse_date(s).unwrap()
    }

    #[test]
    fn shipped_registry_parses_and_knows_lifecycles() {
        let r = Registry::from_toml("shipped", include_str!("../data/models.toml")).unwrap();
        assert!(r.price("gpt-4o-mini").is_some());
        let l = r.lifecycle("gpt-4-32k-0613").unwrap();
        assert_eq!(l.shutdown, Some(d("2025-06-06")));
        assert_eq!(l.replacement.as_deref(), Some("gpt-4o"));
        assert_eq!(l.status(d("2026-11-28")), Status::Retired { days_ago: 540 });
        assert_eq!(
            l.status(d("2025-06-01")),
            Status::Deprecated { days_left: Some(5) }
        );
        assert_eq!(l.status(d("2025-06-06")), Status::Retired { days_ago: 0 });
        assert_eq!(
            r.lifecycle("gpt-4o").unwrap().status(d("2026-11-28")),
            Status::Active
        );
        // The 2026 shutdowns the mid-2024 copy missed.
        for m in ["gpt-3.5-turbo", "gpt-3.5-turbo-0125", "gpt-4", "gpt-4-0613"] {
            let l = r.lifecycle(m).unwrap();
            assert_eq!(l.shutdown, Some(d("2026-10-23")), "{m}");
            assert!(matches!(l.status(d("2026-12-01")), Status::Retired { .. }));
        }
        assert_eq!(
            r.lifecycle("gpt-4-0314").unwrap().shutdown,
            Some(d("2026-03-26"))
        );
        // Current models are known and priced.
        for m in [
            "gpt-5.5",
            "gpt-5.4-mini",
            "gpt-5.6-sol",
            "gpt-audio",
            "gpt-realtime",
        ] {
            assert!(r.price(m).is_some(), "{m} has a price");
            assert_eq!(
                r.lifecycle(m).unwrap().status(d("2026-12-01")),
                Status::Active
            );
        }
        // Every replacement named is itself in the registry, so the advice can be followed.
        for m in r.models() {
            if let Some(rep) = &m.lifecycle.replacement {
                assert!(r.get(rep).is_some(), "{}: replacement {rep} unknown", m.id);
            }
        }
    }

    #[test]
    fn every_shipped_entry_says_where_and_when_it_was_read() {
        let r = Registry::builtin();
        assert!(r.models().len() > 80);
        for m in r.models() {
            assert!(
                m.source.as_deref().is_some_and(|s| !s.trim().is_empty()),
                "{}: no source",
                m.id
            );
            assert!(m.checked.is_some(), "{}: no checked date", m.id);
        }
        assert!(
            r.as_of().is_some(),
            "the shipped file says the date of its data"
        );
        assert_eq!(r.layers().len(), 1);
        assert_eq!(r.layers()[0].kind, "shipped");
    }

    #[test]
    fn staleness_follows_the_newest_layer() {
        let mut r = Registry::builtin();
        let as_of = r.as_of().unwrap();
        let fresh = r.staleness(as_of);
        assert!(!fresh.stale);
        assert!(fresh.line().contains(&as_of.to_string()));
        let late = as_of + jiff::Span::new().days(STALE_AFTER_DAYS + 1);
        let st = r.staleness(late);
        assert!(st.stale);
        assert_eq!(st.age_days, Some(STALE_AFTER_DAYS + 1));
        assert!(st.line().contains("sluice models update"), "{}", st.line());
        // A newer layer moves the date.
        r.extend_toml("newer", &format!("[registry]\nas_of = \"{late}\"\n"))
            .unwrap();
        assert!(!r.staleness(late).stale);
        // No date at all is stale.
        assert!(Registry::default().staleness(late).stale);
        let e = Registry::from_toml("x.toml", "[registry]\nas_of = \"June\"\n").unwrap_err();
        assert!(e.to_string().contains("registry.as_of"), "{e}");
    }

    #[test]
    fn layers_are_shipped_then_fetched_then_yours() {
        let dir = std::env::temp_dir().join(format!("sluice-layers-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let fetched = dir.join("fetched.toml");
        let yours = dir.join("yours.toml");
        std::fs::write(
            &fetched,
            "[registry]\nas_of = \"2027-01-10\"\n[[model]]\nid = \"gpt-4o\"\nshutdown = \"2027-06-01\"\nreplacement = \"gpt-5.5\"\n[[model]]\nid = \"gpt-6\"\ninput_per_mtok = 1\noutput_per_mtok = 2\n",
        )
        .unwrap();
        std::fs::write(
            &yours,
            "[[model]]\nid = \"gpt-4o\"\nshutdown = \"2027-03-01\"\n",
        )
        .unwrap();
        let r = Registry::load_layers(Some(&fetched), Some(&yours)).unwrap();
        let kinds: Vec<_> = r.layers().iter().map(|l| l.kind).collect();
        assert_eq!(kinds, ["shipped", "fetched", "yours"]);
        let l = r.lifecycle("gpt-4o").unwrap();
        assert_eq!(l.shutdown, Some(d("2027-03-01")), "your file wins");
        assert_eq!(
            l.replacement.as_deref(),
            Some("gpt-5.5"),
            "fetched over shipped"
        );
        assert!(
            r.price("gpt-6").is_some(),
            "a model only the fetched layer knows"
        );
        assert_eq!(r.as_of(), Some(d("2027-01-10")));
        // Without your file the fetched date holds.
        let r = Registry::load_layers(Some(&fetched), None).unwrap();
        assert_eq!(
            r.lifecycle("gpt-4o").unwrap().shutdown,
            Some(d("2027-06-01"))
        );
        // A damaged fetched file is skipped, the shipped layer holds; a bad file of yours is an error.
        std::fs::write(&fetched, "[[model]]\nid = 3\n").unwrap();
        let r = Registry::load_layers(Some(&fetched), None).unwrap();
        assert_eq!(r.layers().len(), 1);
        assert!(r.get("gpt-6").is_none());
        std::fs::write(&yours, "[[model]]\nid = 3\n").unwrap();
        assert!(Registry::load_layers(None, Some(&yours)).is_err());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn replacements_are_followed_to_a_live_model() {
        let r = Registry::builtin();
        let today = d("2026-12-01");
        assert_eq!(
            r.replacement_chain("chatgpt-4o-latest", today),
            ["gpt-5.1-chat-latest", "gpt-5.3-chat-latest", "gpt-5.5"]
        );
        assert_eq!(
            r.replacement_chain("gpt-3.5-turbo", today),
            ["gpt-4.1-mini"]
        );
        assert!(r.replacement_chain("gpt-5.5", today).is_empty());
    }

    #[test]
    fn user_file_overlays_fields_and_adds_models() {
        let mut r = Registry::builtin();
        let before = r.price("gpt-4o").unwrap();
        r.extend_toml(
            "mine.toml",
            r#"
[[model]]
id = "gpt-4o"
shutdown = "2027-01-01"
replacement = "gpt-4.1"
aliases = ["default-chat"]

[[model]]
id = "acme-llm"
input_per_mtok = 1
output_per_mtok = 2
"#,
        )
        .unwrap();
        let m = r.get("gpt-4o").unwrap();
        assert_eq!(m.price, Some(before), "prices kept");
        assert_eq!(m.lifecycle.shutdown, Some(d("2027-01-01")));
        assert_eq!(r.alias("default-chat"), Some("gpt-4o"));
        assert_eq!(r.price("default-chat"), Some(before));
        assert_eq!(r.price("acme-llm").unwrap().output, 2_000_000);
        assert_eq!(
            r.lifecycle("gpt-4o").unwrap().status(d("2026-12-02")),
            Status::Deprecated {
                days_left: Some(30)
            }
        );
    }

    #[test]
    fn bad_entries_name_file_index_id_and_field() {
        let cases = [
            (
                "[[model]]\nid = \"x\"\ninput_per_mtok = -1\noutput_per_mtok = 1\n",
                "model[0] (id \"x\"): input_per_mtok",
            ),
            ("[[model]]\nid = \"x\"\ncolour = 1\n", "colour"),
            (
                "[[model]]\nid = \"a\"\n[[model]]\nid = \"y\"\nshutdown = \"soon\"\n",
                "model[1] (id \"y\"): shutdown: \"soon\" is not a date",
            ),
            (
                "[[model]]\nid = \"y\"\ndeprecated = \"2025-01-02\"\nshutdown = \"2025-01-01\"\n",
                "before deprecated",
            ),
            ("[[model]]\nid = \"y\"\nencoding = \"utf8\"\n", "encoding"),
            ("[[model]]\nid = \"y\"\ninput_per_mtok = 1\n", "needs both"),
            (
                "[[model]]\nid = \"y\"\nbatch_discount = 2\n",
                "batch_discount",
            ),
        ];
        for (text, want) in cases {
            let e = Registry::from_toml("mine.toml", text).unwrap_err();
            assert!(e.to_string().contains("mine.toml"), "{e}");
            assert!(e.to_string().contains(want), "{e} should contain {want}");
        }
    }

    #[test]
    fn snapshots_finetunes_and_dated_names_price_as_base() {
        let r = Registry::builtin();
        let mini = r.price("gpt-4o-mini").unwrap();
        assert_eq!(r.price("gpt-4o-mini-2024-07-18"), Some(mini));
        assert_eq!(r.price("ft:gpt-4o-mini:acme::abc123"), Some(mini));
        assert_eq!(r.price("gpt-4o-mini-2099-01-01"), Some(mini));
        assert_eq!(r.price("no-such-model"), None);
        // An unlisted dated name is not assumed retired or active: no lifecycle.
        assert!(r.lifecycle("gpt-4o-mini-2099-01-01").is_none());
    }
}
