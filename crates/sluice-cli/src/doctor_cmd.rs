//! `sluice doctor`: run the checks and print each with its meaning and advice.

use std::sync::Arc;
use std::time::Duration;

use sluice::doctor::{self, Options, Outcome};
use sluice::models::today_utc;

use crate::Fail;

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// API base URL (default: OPENAI_BASE_URL, else the public API).
    #[arg(long)]
    pub base_url: Option<String>,
    /// Environment variable holding the API key.
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
    /// A model to check (exists for this key; lifecycle).
    #[arg(long)]
    pub model: Option<String>,
    /// Send one smallest completion (costs a few tokens) to read the key's limits and quota.
    #[arg(long)]
    pub probe: bool,
    #[arg(long)]
    pub json: bool,
    /// Time allowed per network step.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Your model registry file.
    #[arg(long)]
    pub registry: Option<std::path::PathBuf>,
    /// Check every upstream of this file (the gateway's format: `[[upstreams]]`, or
    /// `[upstream]` base_url and keys) with its own key. Exit code: the worst of them.
    #[arg(long, conflicts_with_all = ["base_url"])]
    pub config: Option<std::path::PathBuf>,
}

/// One upstream to check: its name, base URL, key and where the key comes from.
struct Target {
    name: Option<String>,
    base_url: String,
    key: Option<sluice::SecretString>,
    key_source: String,
}

/// The upstreams of a gateway-format file.
fn targets_of(path: &std::path::Path) -> Result<Vec<Target>, Fail> {
    let cfg = sluice_gateway::GatewayConfig::load(path).map_err(|e| Fail(crate::exit::USAGE, e))?;
    let first = |keys: &[sluice::keypool::KeySpec]| match keys.first() {
        None => sluice::keypool::KeySpec::Env("OPENAI_API_KEY".into())
            .first()
            .ok(),
        Some(k) => k.first().ok(),
    };
    if cfg.upstreams.is_empty() {
        return Ok(vec![Target {
            name: None,
            base_url: cfg
                .base_url
                .clone()
                .unwrap_or_else(|| sluice::DEFAULT_BASE_URL.to_string()),
            key: first(&cfg.keys),
            key_source: "upstream.keys[0]".into(),
        }]);
    }
    Ok(cfg
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| Target {
            name: Some(u.name.clone()),
            // Azure serves its model list under /openai, with the api-version.
            base_url: match &u.dialect {
                sluice::upstreams::Dialect::OpenAi => u.base_url.clone(),
                sluice::upstreams::Dialect::Azure { .. } => format!("{}/openai", u.base_url),
                sluice::upstreams::Dialect::AzureV1 { .. } => format!("{}/openai/v1", u.base_url),
            },
            key: first(&u.keys),
            key_source: format!("upstreams[{i}].keys[0]"),
        })
        .collect())
}

/// Returns the exit code: 0 healthy, 1 degraded, 2 broken.
pub async fn doctor(a: DoctorArgs) -> Result<u8, Fail> {
    let targets = match &a.config {
        Some(path) => targets_of(path)?,
        None => vec![Target {
            name: None,
            base_url: a
                .base_url
                .clone()
                .or_else(|| {
                    std::env::var("OPENAI_BASE_URL")
                        .ok()
                        .filter(|v| !v.is_empty())
                })
                .unwrap_or_else(|| sluice::DEFAULT_BASE_URL.to_string()),
            key: std::env::var(&a.api_key_env)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| sluice::SecretString::from(v.trim())),
            key_source: format!("env {}", a.api_key_env),
        }],
    };
    let registry = Arc::new(crate::models_cmd::registry(a.registry.as_ref())?);
    let mut worst = 0u8;
    let mut reports = Vec::new();
    for t in targets {
        let o = Options {
            base_url: t.base_url,
            key: t.key,
            key_source: t.key_source,
            model: a.model.clone(),
            probe: a.probe,
            timeout: a.timeout,
            registry: registry.clone(),
            today: today_utc(),
            low_fraction: 0.2,
        };
        let r = doctor::run(&o).await;
        worst = worst.max(r.verdict.exit_code());
        if !a.json {
            print_report(t.name.as_deref(), &r);
        }
        reports.push(r);
    }
    if a.json {
        let v = if a.config.is_some() {
            serde_json::to_string_pretty(&reports)
        } else {
            serde_json::to_string_pretty(&reports[0])
        };
        println!("{}", v.unwrap_or_default());
    }
    Ok(worst)
}

fn print_report(name: Option<&str>, r: &doctor::Report) {
    {
        match name {
            Some(n) => println!("sluice doctor: {n} ({})", r.base_url),
            None => println!("sluice doctor: {}", r.base_url),
        }
        for c in &r.checks {
            let mark = match c.outcome {
                Outcome::Ok => "ok  ",
                Outcome::Skipped => "--  ",
                Outcome::Warn => "WARN",
                Outcome::Fail => "FAIL",
            };
            let took = c.millis.map(|m| format!(" ({m} ms)")).unwrap_or_default();
            println!("  {mark} {:<10} {}{took}", c.name, c.detail);
            if let Some(a) = &c.advice {
                println!("       {:<10} → {a}", "");
            }
        }
        let mark = if r.registry.stale { "WARN" } else { "ok  " };
        println!("  {mark} {:<10} {}", "registry", r.registry.message);
        println!("verdict: {:?}", r.verdict);
    }
}
