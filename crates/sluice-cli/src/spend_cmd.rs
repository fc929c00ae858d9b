//! `sluice spend`: totals from the cost ledger, by key (scope), model or day.

use std::path::PathBuf;

use sluice::pricing::dollars;
use sluice::spend::ledger::{self, By, Filter, Ledger};

use crate::models_cmd::table;
use crate::{exit, Fail};

pub struct SpendArgs {
    pub by: By,
    pub ledger: Option<PathBuf>,
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    pub since: Option<String>,
    pub key: Option<String>,
    pub json: bool,
}

pub async fn spend(a: SpendArgs) -> Result<(), Fail> {
    let l = match (&a.redis_url, &a.ledger) {
        (Some(url), _) => Ledger::redis(url, &a.redis_prefix)
            .await
            .map_err(|e| Fail(exit::FAILURE, e.to_string()))?,
        (None, p) => {
            let path = p.clone().or_else(ledger::default_path).ok_or_else(|| {
                Fail(
                    exit::USAGE,
                    "no ledger: give --ledger PATH (SLUICE_LEDGER is off)".into(),
                )
            })?;
            if !path.exists() {
                return Err(Fail(
                    exit::USAGE,
                    format!(
                        "no ledger at {}: nothing has been recorded there yet",
                        path.display()
                    ),
                ));
            }
            Ledger::sqlite(path).map_err(|e| Fail(exit::FAILURE, e.to_string()))?
        }
    };
    let since = match &a.since {
        Some(s) => Some(sluice::models::parse_date(s).ok_or_else(|| {
            Fail(
                exit::USAGE,
                format!("--since: {s:?} is not a date (YYYY-MM-DD)"),
            )
        })?),
        None => None,
    };
    let scope = a.key.as_ref().map(|k| {
        if k.contains(':') || k == "-" {
            k.clone()
        } else {
            format!("key:{k}")
        }
    });
    let rows = l
        .rows(Filter { scope, since })
        .await
        .map_err(|e| Fail(exit::FAILURE, e.to_string()))?;
    let groups = ledger::group(&rows, a.by);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&groups).unwrap_or_default()
        );
        return Ok(());
    }
    let label = match a.by {
        By::Key => "KEY",
        By::Model => "MODEL",
        By::Day => "DAY",
    };
    let mut out: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            vec![
                match a.by {
                    By::Key => g.scope.clone(),
                    By::Model => g.model.clone(),
                    By::Day => g.day.clone(),
                },
                g.requests.to_string(),
                g.prompt_tokens.to_string(),
                g.cached_tokens.to_string(),
                g.completion_tokens.to_string(),
                dollars(g.cost_nanos),
            ]
        })
        .collect();
    let total: u64 = groups.iter().map(|g| g.cost_nanos).sum();
    let reqs: u64 = groups.iter().map(|g| g.requests).sum();
    out.push(vec![
        "total".into(),
        reqs.to_string(),
        String::new(),
        String::new(),
        String::new(),
        dollars(total),
    ]);
    print!(
        "{}",
        table(
            &[label, "REQUESTS", "PROMPT", "CACHED", "COMPLETION", "COST"],
            &out
        )
    );
    Ok(())
}
