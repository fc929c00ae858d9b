//! `sluice models check`: find the models a set of files uses — JSONL request files (OpenAI
//! Batch format or bare request bodies) and configuration files (TOML or JSON, such as a
//! gateway config) — and judge each against the registry's lifecycle, so a CI pipeline or a
//! cron job fails *before* a model's shutdown date instead of after it.
//!
//! With the upstream's own model list (`--base-url`), a model the upstream does not list fails
//! the check too, whatever the registry says: the registry is data of some date, the upstream
//! knows today. Models the registry does not know are warned about, and fail with `strict`.
//!
//! A line or file that cannot be parsed is reported and skipped; it never hides the rest.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use jiff::civil::Date;
use serde_json::Value;

use crate::models::{Registry, Status};

/// Where a model name was found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Place {
    pub file: PathBuf,
    /// 1-based line for JSONL files.
    pub line: Option<usize>,
    /// The field: `body.model`, `models.fallbacks.gpt-4`, `virtual_keys[0].models[1]`.
    pub field: String,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.file.display(), self.field),
            None => write!(f, "{}: {}", self.file.display(), self.field),
        }
    }
}

/// How bad a model's status is for a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    /// Not in the registry: nothing is known (a fine-tune, another provider's model).
    Unknown,
    /// Deprecated with a shutdown beyond the warning window, or no date yet.
    Deprecated,
    /// Shutdown within the warning window: fails the check.
    ShutdownSoon,
    /// The upstream's model list does not have it: fails the check.
    NotListed,
    /// Past shutdown: fails the check.
    Retired,
}

impl Verdict {
    pub fn fails(self) -> bool {
        matches!(
            self,
            Verdict::ShutdownSoon | Verdict::NotListed | Verdict::Retired
        )
    }

    /// How the CLI shows it: failing verdicts in capitals.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Unknown => "unknown",
            Verdict::Deprecated => "deprecated",
            Verdict::ShutdownSoon => "SHUTDOWN SOON",
            Verdict::NotListed => "NOT LISTED",
            Verdict::Retired => "RETIRED",
        }
    }
}

/// One model in use and what the registry says of it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    pub model: String,
    pub verdict: Verdict,
    pub shutdown: Option<String>,
    /// Negative: days since shutdown.
    pub days_left: Option<i64>,
    pub replacement: Option<String>,
    /// The replacement followed while it is itself retired (`[a, b]`: a is retired too, use b).
    pub replacement_chain: Vec<String>,
    /// Whether the upstream lists it (`None`: the upstream was not asked).
    pub upstream_lists: Option<bool>,
    /// Every place it appears (the first few are shown by the CLI).
    pub places: Vec<Place>,
}

/// Everything a scan found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Lines or files that could not be read (reported, skipped).
    pub problems: Vec<String>,
}

impl Report {
    /// Whether the check fails: a failing verdict, or with `strict` an unknown model.
    pub fn fails(&self, strict: bool) -> bool {
        self.findings
            .iter()
            .any(|f| f.verdict.fails() || (strict && f.verdict == Verdict::Unknown))
    }

    /// The models the registry does not know.
    pub fn unknown(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.verdict == Verdict::Unknown)
    }
}

/// What to judge the models against.
#[derive(Debug, Clone, Copy)]
pub struct Against<'a> {
    pub registry: &'a Registry,
    pub today: Date,
    /// A shutdown this many days away or fewer fails.
    pub warn_days: i64,
    /// The upstream's model list, when it was asked.
    pub listed: Option<&'a HashSet<String>>,
}

/// Scan `files` and judge every model found as of `today`, failing those within `warn_days`
/// of shutdown.
pub fn check(files: &[PathBuf], registry: &Registry, today: Date, warn_days: i64) -> Report {
    check_against(
        files,
        Against {
            registry,
            today,
            warn_days,
            listed: None,
        },
    )
}

/// [`check`], and with `against.listed` every model the upstream does not list fails.
pub fn check_against(files: &[PathBuf], against: Against<'_>) -> Report {
    let Against {
        registry,
        today,
        warn_days,
        listed,
    } = against;
    let mut uses: BTreeMap<String, Vec<Place>> = BTreeMap::new();
    let mut report = Report::default();
    for f in files {
        if let Err(e) = scan(f, &mut uses, &mut report.problems) {
            report.problems.push(format!("{}: {e}", f.display()));
        }
    }
    for (model, places) in uses {
        let life = registry
            .lifecycle(&model)
            .or_else(|| registry.alias(&model).and_then(|id| registry.lifecycle(id)));
        let (verdict, days_left) = match life.map(|l| l.status(today)) {
            None => (Verdict::Unknown, None),
            Some(Status::Active) => (Verdict::Ok, None),
            Some(Status::Retired { days_ago }) => (Verdict::Retired, Some(-days_ago)),
            Some(Status::Deprecated { days_left: Some(d) }) if d <= warn_days => {
                (Verdict::ShutdownSoon, Some(d))
            }
            Some(Status::Deprecated { days_left }) => (Verdict::Deprecated, days_left),
        };
        let upstream_lists = listed.map(|l| crate::catalog::is_listed(&model, l, registry));
        // Retired and shutting down say more than "not listed"; anything else that the
        // upstream does not list is about to fail.
        let verdict = match (verdict, upstream_lists) {
            (Verdict::Ok | Verdict::Unknown | Verdict::Deprecated, Some(false)) => {
                Verdict::NotListed
            }
            (v, _) => v,
        };
        report.findings.push(Finding {
            replacement_chain: registry.replacement_chain(&model, today),
            model,
            verdict,
            shutdown: life.and_then(|l| l.shutdown).map(|d| d.to_string()),
            days_left,
            replacement: life.and_then(|l| l.replacement.clone()),
            upstream_lists,
            places,
        });
    }
    report
        .findings
        .sort_by(|a, b| b.verdict.cmp(&a.verdict).then(a.model.cmp(&b.model)));
    report
}

fn scan(
    path: &Path,
    uses: &mut BTreeMap<String, Vec<Place>>,
    problems: &mut Vec<String>,
) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut add = |model: &str, line: Option<usize>, field: String| {
        if !model.is_empty() {
            uses.entry(model.to_string()).or_default().push(Place {
                file: path.to_path_buf(),
                line,
                field,
            });
        }
    };
    match ext.as_str() {
        "toml" => {
            let v: toml::Value =
                toml::from_str(&text).map_err(|e| e.to_string().trim().to_string())?;
            let json = serde_json::to_value(v).map_err(|e| e.to_string())?;
            walk(&json, "", &mut |m, field| add(m, None, field));
        }
        "json" => {
            let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            walk(&v, "", &mut |m, field| add(m, None, field));
        }
        _ => {
            // JSONL: a request per line.
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Value>(line) {
                    Ok(v) => {
                        for (ptr, field) in [("/body/model", "body.model"), ("/model", "model")] {
                            if let Some(m) = v.pointer(ptr).and_then(Value::as_str) {
                                add(m, Some(i + 1), field.to_string());
                            }
                        }
                    }
                    Err(e) => problems.push(format!(
                        "{}:{}: not JSON ({e}); line skipped",
                        path.display(),
                        i + 1
                    )),
                }
            }
        }
    }
    Ok(())
}

/// Model names in a config tree: values of `model`, `models`, `replacement` and
/// `default_model` keys; values of an `aliases` table; keys and values of a `fallbacks` table.
fn walk(v: &Value, at: &str, add: &mut dyn FnMut(&str, String)) {
    let join = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                let here = join(k);
                match (k.as_str(), child) {
                    ("model" | "replacement" | "default_model", Value::String(s)) => add(s, here),
                    ("models", Value::Array(a)) => {
                        for (i, m) in a.iter().enumerate() {
                            if let Some(s) = m.as_str() {
                                add(s, format!("{here}[{i}]"));
                            } else {
                                walk(m, &format!("{here}[{i}]"), add);
                            }
                        }
                    }
                    ("aliases", Value::Object(t)) => {
                        for (name, target) in t {
                            if let Some(s) = target.as_str() {
                                add(s, format!("{here}.{name}"));
                            }
                        }
                    }
                    ("fallbacks", Value::Object(t)) => {
                        for (from, chain) in t {
                            add(from, format!("{here}.{from}"));
                            for (i, m) in chain.as_array().into_iter().flatten().enumerate() {
                                if let Some(s) = m.as_str() {
                                    add(s, format!("{here}.{from}[{i}]"));
                                }
                            }
                        }
                    }
                    _ => walk(child, &here, add),
                }
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                walk(c, &format!("{at}[{i}]"), add);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::parse_date;

    #[test]
    fn finds_models_in_jsonl_and_configs_and_judges_them() {
        let dir = std::env::temp_dir().join(format!("sluice-check-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let jsonl = dir.join("requests.jsonl");
        std::fs::write(
            &jsonl,
            concat!(
                r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini"}}"#, "\n",
                "not json\n",
                r#"{"custom_id":"b","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4-32k"}}"#, "\n",
            ),
        )
        .unwrap();
        let toml = dir.join("sluice.toml");
        std::fs::write(
            &toml,
            "[[virtual_keys]]\nname = \"a\"\nkey = \"k\"\nmodels = [\"gpt-4o\"]\n[models]\naliases = { fast = \"acme-private\" }\nfallbacks = { \"gpt-4.1\" = [\"gpt-4o\"] }\n",
        )
        .unwrap();
        let mut reg = Registry::builtin();
        reg.extend_toml(
            "t",
            "[[model]]\nid = \"gpt-4o\"\nshutdown = \"2026-12-20\"\nreplacement = \"gpt-4.1\"\n",
        )
        .unwrap();
        let r = check(
            &[jsonl.clone(), toml],
            &reg,
            parse_date("2026-11-28").unwrap(),
            30,
        );
        assert!(r.fails(false));
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].contains("requests.jsonl:2"));
        let by: BTreeMap<_, _> = r.findings.iter().map(|f| (f.model.as_str(), f)).collect();
        assert_eq!(by["gpt-4-32k"].verdict, Verdict::Retired);
        assert_eq!(by["gpt-4-32k"].places[0].line, Some(3));
        assert_eq!(by["gpt-4-32k"].replacement.as_deref(), Some("gpt-4o"));
        assert_eq!(by["gpt-4o"].verdict, Verdict::ShutdownSoon);
        assert_eq!(by["gpt-4o"].days_left, Some(22));
        assert_eq!(by["gpt-4o"].places.len(), 2);
        assert_eq!(by["acme-private"].verdict, Verdict::Unknown);
        assert_eq!(by["gpt-4.1"].verdict, Verdict::Ok);
        assert_eq!(r.findings[0].verdict, Verdict::Retired, "worst first");
        // With a shorter window, gpt-4o only warns.
        let r = check(&[jsonl], &reg, parse_date("2026-11-28").unwrap(), 7);
        assert!(r.fails(false), "gpt-4-32k is still retired");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn the_upstream_list_and_strict_fail_what_the_registry_cannot() {
        let dir = std::env::temp_dir().join(format!("sluice-check-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let jsonl = dir.join("r.jsonl");
        std::fs::write(
            &jsonl,
            "{\"body\":{\"model\":\"gpt-4o-mini\"}}\n{\"body\":{\"model\":\"gpt-4.1\"}}\n{\"body\":{\"model\":\"acme-x\"}}\n",
        )
        .unwrap();
        let reg = Registry::builtin();
        let today = parse_date("2026-12-01").unwrap();
        let plain = check(std::slice::from_ref(&jsonl), &reg, today, 30);
        assert!(!plain.fails(false));
        assert!(plain.fails(true), "acme-x is unknown");
        assert_eq!(plain.unknown().count(), 1);
        let listed: HashSet<String> = ["gpt-4o-mini", "acme-x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = check_against(
            &[jsonl],
            Against {
                registry: &reg,
                today,
                warn_days: 30,
                listed: Some(&listed),
            },
        );
        assert!(r.fails(false));
        let by: BTreeMap<_, _> = r.findings.iter().map(|f| (f.model.as_str(), f)).collect();
        assert_eq!(by["gpt-4.1"].verdict, Verdict::NotListed);
        assert_eq!(by["gpt-4.1"].places[0].line, Some(2));
        assert_eq!(by["gpt-4o-mini"].verdict, Verdict::Ok);
        assert_eq!(by["acme-x"].verdict, Verdict::Unknown);
        assert_eq!(by["acme-x"].upstream_lists, Some(true));
        std::fs::remove_dir_all(dir).ok();
    }
}
