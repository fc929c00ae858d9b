//! The model registry: what sluice knows about each model (tokenizer, context window, prices,
//! lifecycle). It exists so a retired model is caught before a cron job fails on it, and so a
//! request's cost is known without asking anyone.
//!
//! The registry shipped in `data/models.toml` (fields, sources and the dates they were read are
//! in its header) is the default; a user's file of the same form extends it, and an entry whose
//! id is already known overlays only the fields it sets. A bad entry is reported with its file,
//! index, id and field.
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    #[serde(default, rename = "model")]
    models: Vec<RawModel>,
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
}

/// The registry: the shipped table plus any user files.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    models: Vec<ModelInfo>,
    /// id and snapshot names → index into `models`.
    by_name: HashMap<String, usize>,
    /// alias → id.
    aliases: HashMap<String, String>,
}

/// Parse `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Option<Date> {
    s.trim().parse::<Date>().ok()
}

/// Today in UTC.
pub fn today_utc() -> Date {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
}

impl Registry {
    /// The registry shipped with sluice.
    pub fn builtin() -> Self {
        // The shipped file is checked by a test; an error here would be a build defect, and an
        // empty table (no costs, no lifecycle) is the safe fallback.
        Self::from_toml("built-in registry", include_str!("../data/models.toml"))
            .unwrap_or_default()
    }

    /// The shipped registry extended by a user's file.
    pub fn builtin_with(path: Option<&std::path::Path>) -> Result<Self, Error> {
        let mut r = Self::builtin();
        if let Some(p) = path {
            let text = std::fs::read_to_string(p).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("model registry {}: {e}", p.display()),
                )
            })?;
            r.extend_toml(&p.display().to_string(), &text)?;
        }
        Ok(r)
    }

    /// Parse a registry file. `origin` names it in errors.
    pub fn from_toml(origin: &str, text: &str) -> Result<Self, Error> {
        let mut r = Registry::default();
        r.extend_toml(origin, text)?;
        Ok(r)
    }

    /// Add or overlay the entries of a registry file.
    pub fn extend_toml(&mut self, origin: &str, text: &str) -> Result<(), Error> {
        let raw: RawRegistry = toml::from_str(text).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("model registry {origin}: {}", e.to_string().trim_end()),
            )
        })?;
        for (i, m) in raw.models.into_iter().enumerate() {
            let at = format!("model registry {origin}: model[{i}] (id {:?})", m.id);
            self.overlay(m)
                .map_err(|e| Error::new(ErrorKind::Config, format!("{at}: {e}")))?;
        }
        Ok(())
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
            match v {
                None => Ok(None),
                Some(p) if p.is_finite() && p >= 0.0 => Ok(Some((p * 1e6).round() as u64)),
                Some(p) => Err(format!("{field}: must be a non-negative number, got {p}")),
            }
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
        // Legacy: deprecated without a shutdown date.
        assert_eq!(
            r.lifecycle("gpt-4-0314").unwrap().status(d("2026-11-28")),
            Status::Deprecated { days_left: None }
        );
        // Every replacement named is itself in the registry, so the advice can be followed.
        for m in r.models() {
            if let Some(rep) = &m.lifecycle.replacement {
                assert!(r.get(rep).is_some(), "{}: replacement {rep} unknown", m.id);
            }
        }
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
