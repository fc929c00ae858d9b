//! `sluice spend`: totals from the cost ledger, by key (scope), model or day.

use std::path::PathBuf;

use sluice::pricing::dollars;
use sluice::spend::ledger::{self, By, Filter, Ledger};

use crate::models_cmd::table;
use crate::{exit, Fail};

#[derive(Debug, clap::Args)]
pub struct SpendArgs {
    /// How to group the totals.
    #[arg(long, value_enum, default_value = "key")]
    pub by: ByArg,
    /// Ledger file (default: SLUICE_LEDGER, else ~/.local/share/sluice/ledger.db).
    #[arg(long, conflicts_with = "redis_url")]
    pub ledger: Option<PathBuf>,
    /// Read the ledger shared in Redis instead.
    #[arg(long)]
    pub redis_url: Option<String>,
    #[arg(long, default_value = "sluice")]
    pub redis_prefix: String,
    /// Only days on or after this one (YYYY-MM-DD).
    #[arg(long)]
    pub since: Option<String>,
    /// Only this key (`alice`, `key:alice`, `job:nightly`).
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ByArg {
    Key,
    Model,
    Day,
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
    let by = match a.by {
        ByArg::Key => By::Key,
        ByArg::Model => By::Model,
        ByArg::Day => By::Day,
    };
    let groups = ledger::group(&rows, by);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&groups).unwrap_or_default()
        );
        return Ok(());
    }
    let label = match by {
        By::Key => "KEY",
        By::Model => "MODEL",
        By::Day => "DAY",
    };
    let mut out: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            vec![
                match by {
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
