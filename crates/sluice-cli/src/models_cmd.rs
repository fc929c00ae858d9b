//! `sluice models`, `sluice models check` and `sluice models update`: the registry as a table,
//! the guard a CI pipeline or cron job runs over its request files and configs (against the
//! registry and, with `--base-url`, against the upstream's own model list), and the refresh of
//! the registry's data without a new release.

use std::collections::HashSet;
use std::path::PathBuf;

use sluice::models::{today_utc, Registry, Status};
use sluice::models_check::{self, Against, Verdict};
use sluice::pricing::Price;

use crate::{exit, Fail};

/// The registry every command uses: shipped < fetched < yours.
pub fn registry(path: Option<&PathBuf>) -> Result<Registry, Fail> {
    Registry::load(path.map(PathBuf::as_path)).map_err(|e| Fail(exit::USAGE, e.to_string()))
}

/// Say how old the lifecycle data is: on stdout's last line for the table, and as a warning on
/// stderr when it is stale.
fn freshness(reg: &Registry) -> String {
    let st = reg.staleness(today_utc());
    if st.stale {
        eprintln!("sluice: warning: {}", st.line());
    }
    let layers: Vec<String> = reg
        .layers()
        .iter()
        .map(|l| match (&l.path, l.as_of) {
            (Some(p), Some(d)) => format!("{} {} ({d})", l.kind, p.display()),
            (Some(p), None) => format!("{} {}", l.kind, p.display()),
            (None, Some(d)) => format!("{} ({d})", l.kind),
            (None, None) => l.kind.to_string(),
        })
        .collect();
    format!(
        "{}; layers: {}",
        match (st.as_of, st.age_days) {
            (Some(d), Some(a)) => format!("lifecycle data as of {d}, {a} days old"),
            _ => "lifecycle data undated".to_string(),
        },
        layers.join(" < ")
    )
}

/// Days to a shutdown as a person reads them: `in 12 days`, `retired 39 days ago`.
pub fn days_text(days_left: Option<i64>) -> String {
    match days_left {
        None => String::new(),
        Some(0) => "retired today".to_string(),
        Some(1) => "in 1 day".to_string(),
        Some(-1) => "retired 1 day ago".to_string(),
        Some(d) if d > 0 => format!("in {d} days"),
        Some(d) => format!("retired {} days ago", d.unsigned_abs()),
    }
}

/// USD per million tokens from micro-dollars.
fn per_m(micro: u64) -> String {
    let s = format!("{:.4}", micro as f64 / 1e6);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("${s}")
}

fn prices(p: Option<Price>) -> (String, String, String) {
    match p {
        Some(p) => (per_m(p.input), per_m(p.cached_input), per_m(p.output)),
        None => ("-".into(), "-".into(), "-".into()),
    }
}

/// Print rows as aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

pub fn list(registry_file: Option<&PathBuf>, json: bool) -> Result<(), Fail> {
    let reg = registry(registry_file)?;
    let today = today_utc();
    if json {
        let v: Vec<serde_json::Value> = reg
            .models()
            .iter()
            .map(|m| {
                let st = m.lifecycle.status(today);
                serde_json::json!({
                    "id": m.id, "snapshots": m.snapshots, "aliases": m.aliases,
                    "status": st.as_str(),
                    "days_to_shutdown": match st { Status::Deprecated { days_left } => days_left, Status::Retired { days_ago } => Some(-days_ago), Status::Active => None },
                    "deprecated": m.lifecycle.deprecated.map(|d| d.to_string()),
                    "shutdown": m.lifecycle.shutdown.map(|d| d.to_string()),
                    "replacement": m.lifecycle.replacement,
                    "encoding": m.encoding, "context_window": m.context_window, "max_output": m.max_output,
                    "input_per_mtok": m.price.map(|p| p.input as f64 / 1e6),
                    "cached_input_per_mtok": m.price.map(|p| p.cached_input as f64 / 1e6),
                    "output_per_mtok": m.price.map(|p| p.output as f64 / 1e6),
                    "batch_discount": m.batch_discount_pct.map(|p| f64::from(p) / 100.0),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = reg
        .models()
        .iter()
        .map(|m| {
            let st = m.lifecycle.status(today);
            let days = days_text(match st {
                Status::Deprecated { days_left } => days_left,
                Status::Retired { days_ago } => Some(-days_ago),
                Status::Active => None,
            });
            let (i, c, o) = prices(m.price);
            vec![
                m.id.clone(),
                st.as_str().to_string(),
                m.lifecycle
                    .shutdown
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
                days,
                m.lifecycle.replacement.clone().unwrap_or_default(),
                i,
                c,
                o,
                m.context_window.map(|c| c.to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "MODEL",
                "STATUS",
                "SHUTDOWN",
                "DAYS",
                "REPLACEMENT",
                "IN/M",
                "CACHED/M",
                "OUT/M",
                "CONTEXT"
            ],
            &rows
        )
    );
    println!(
        "(prices in USD per million tokens; today {today} UTC; {})",
        freshness(&reg)
    );
    Ok(())
}

/// The upstream to check against.
#[derive(Debug)]
pub struct Upstream {
    pub base_url: String,
    pub api_key_env: String,
}

#[derive(Debug)]
pub struct CheckOptions {
    pub warn_days: i64,
    pub json: bool,
    pub strict: bool,
    pub upstream: Option<Upstream>,
}

/// The upstream's model ids.
async fn upstream_models(u: &Upstream) -> Result<HashSet<String>, Fail> {
    let client = sluice::Client::builder()
        .base_url(u.base_url.clone())
        .api_key_env(u.api_key_env.clone())
        .no_admission()
        .max_attempts(3)
        .build()
        .map_err(|e| Fail(exit::USAGE, format!("--base-url {}: {e}", u.base_url)))?;
    let list = client.models().list().await.map_err(|e| {
        Fail(
            exit::USAGE,
            format!(
                "cannot read the model list of {} ({}): {e}",
                u.base_url,
                e.kind()
            ),
        )
    })?;
    Ok(list.body.data.into_iter().map(|m| m.id).collect())
}

pub async fn check(
    files: &[PathBuf],
    registry_file: Option<&PathBuf>,
    opts: CheckOptions,
) -> Result<(), Fail> {
    let CheckOptions {
        warn_days,
        json,
        strict,
        upstream,
    } = opts;
    if files.is_empty() {
        return Err(Fail(
            exit::USAGE,
            "name at least one JSONL request file or config to check".into(),
        ));
    }
    let reg = registry(registry_file)?;
    let st = reg.staleness(today_utc());
    if st.stale {
        eprintln!("sluice: warning: {}", st.line());
    }
    let listed = match &upstream {
        Some(u) => Some(upstream_models(u).await?),
        None => None,
    };
    let today = today_utc();
    let report = models_check::check_against(
        files,
        Against {
            registry: &reg,
            today,
            warn_days,
            listed: listed.as_ref(),
        },
    );
    for p in &report.problems {
        eprintln!("sluice: {p}");
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        let rows: Vec<Vec<String>> = report
            .findings
            .iter()
            .map(|f| {
                let verdict = f.verdict.label();
                let mut at: Vec<String> =
                    f.places.iter().take(2).map(ToString::to_string).collect();
                if f.places.len() > 2 {
                    at.push(format!("(+{} more)", f.places.len() - 2));
                }
                vec![
                    f.model.clone(),
                    verdict.to_string(),
                    f.shutdown.clone().unwrap_or_default(),
                    days_text(f.days_left),
                    f.replacement_chain.join(" -> "),
                    at.join(", "),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &[
                    "MODEL",
                    "VERDICT",
                    "SHUTDOWN",
                    "DAYS",
                    "REPLACEMENT",
                    "WHERE"
                ],
                &rows
            )
        );
    }
    let unknown: Vec<&str> = report.unknown().map(|f| f.model.as_str()).collect();
    if !unknown.is_empty() {
        eprintln!(
            "sluice: warning: {} model(s) unknown to the registry, so neither their lifecycle nor their price is known: {}; add them to your registry file (--registry){}",
            unknown.len(),
            unknown.join(", "),
            if strict { "" } else { " or pass --strict to fail on them" }
        );
    }
    let unreadable = report.problems.iter().any(|p| !p.contains("line skipped"));
    if report.fails(strict) {
        let count = |v: Verdict| report.findings.iter().filter(|f| f.verdict == v).count();
        let mut why = Vec::new();
        for (v, what) in [
            (Verdict::Retired, "retired"),
            (
                Verdict::ShutdownSoon,
                "shutting down within the warning window",
            ),
            (Verdict::NotListed, "not listed by the upstream"),
        ] {
            if count(v) > 0 {
                why.push(format!("{} {what}", count(v)));
            }
        }
        if strict && !unknown.is_empty() {
            why.push(format!("{} unknown (--strict)", unknown.len()));
        }
        return Err(Fail(
            exit::FAILURE,
            format!(
                "{} (warning window {warn_days} days): move to the replacement",
                why.join(", ")
            ),
        ));
    }
    if unreadable {
        return Err(Fail(exit::USAGE, "some files could not be read".into()));
    }
    Ok(())
}

pub async fn update(from: &str, json: bool) -> Result<(), Fail> {
    let dest = sluice::models::fetched_path().ok_or_else(|| {
        Fail(
            exit::USAGE,
            "no data directory: set SLUICE_DATA_DIR (or HOME)".into(),
        )
    })?;
    let today = today_utc();
    let u = sluice::models_update::update(from, &dest, today)
        .await
        .map_err(|e| {
            Fail(
                exit::FAILURE,
                format!("{e}; the stored registry is unchanged"),
            )
        })?;
    if json {
        let v = serde_json::json!({
            "stored": u.stored, "models": u.models, "as_of": u.as_of.to_string(),
            "previous_as_of": u.previous_as_of.map(|d| d.to_string()), "changes": u.changes,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    println!(
        "sluice: stored {} model entries as of {} in {} (was {}); the gateway and the batch runner use it from their next start or reload",
        u.models,
        u.as_of,
        u.stored.display(),
        u.previous_as_of
            .map_or_else(|| "undated".to_string(), |d| d.to_string())
    );
    for c in &u.changes {
        println!("  {c}");
    }
    if u.previous_as_of.is_some_and(|p| p > u.as_of) {
        eprintln!(
            "sluice: warning: the stored data is older than what was there before ({})",
            u.previous_as_of.map(|d| d.to_string()).unwrap_or_default()
        );
    }
    Ok(())
}
