//! `sluice models` and `sluice models check`: the registry as a table, and the guard a CI
//! pipeline or cron job runs over its request files and configs.

use std::path::PathBuf;

use sluice::models::{today_utc, Registry, Status};
use sluice::models_check::{self, Verdict};
use sluice::pricing::Price;

use crate::{exit, Fail};

pub fn registry(path: Option<&PathBuf>) -> Result<Registry, Fail> {
    Registry::builtin_with(path.map(PathBuf::as_path)).map_err(|e| Fail(exit::USAGE, e.to_string()))
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
            let days = match st {
                Status::Deprecated { days_left: Some(d) } => format!("{d}"),
                Status::Retired { days_ago } => format!("-{days_ago}"),
                _ => String::new(),
            };
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
        "(prices in USD per million tokens; DAYS: to shutdown, negative since; today {today} UTC)"
    );
    Ok(())
}

pub fn check(
    files: &[PathBuf],
    registry_file: Option<&PathBuf>,
    warn_days: i64,
    json: bool,
) -> Result<(), Fail> {
    if files.is_empty() {
        return Err(Fail(
            exit::USAGE,
            "name at least one JSONL request file or config to check".into(),
        ));
    }
    let reg = registry(registry_file)?;
    let today = today_utc();
    let report = models_check::check(files, &reg, today, warn_days);
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
                let verdict = match f.verdict {
                    Verdict::Ok => "ok",
                    Verdict::Unknown => "unknown",
                    Verdict::Deprecated => "deprecated",
                    Verdict::ShutdownSoon => "SHUTDOWN SOON",
                    Verdict::Retired => "RETIRED",
                };
                let mut at: Vec<String> =
                    f.places.iter().take(2).map(ToString::to_string).collect();
                if f.places.len() > 2 {
                    at.push(format!("(+{} more)", f.places.len() - 2));
                }
                vec![
                    f.model.clone(),
                    verdict.to_string(),
                    f.shutdown.clone().unwrap_or_default(),
                    f.days_left.map(|d| d.to_string()).unwrap_or_default(),
                    f.replacement.clone().unwrap_or_default(),
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
    let unreadable = report.problems.iter().any(|p| !p.contains("line skipped"));
    if report.fails() {
        let n = report.findings.iter().filter(|f| f.verdict.fails()).count();
        return Err(Fail(
            exit::FAILURE,
            format!("{n} model(s) retired or shutting down within {warn_days} days: move to the replacement"),
        ));
    }
    if unreadable {
        return Err(Fail(exit::USAGE, "some files could not be read".into()));
    }
    Ok(())
}
