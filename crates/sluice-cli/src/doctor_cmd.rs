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
}

/// Returns the exit code: 0 healthy, 1 degraded, 2 broken.
pub async fn doctor(a: DoctorArgs) -> Result<u8, Fail> {
    let base_url = a
        .base_url
        .or_else(|| {
            std::env::var("OPENAI_BASE_URL")
                .ok()
                .filter(|v| !v.is_empty())
        })
        .unwrap_or_else(|| sluice::DEFAULT_BASE_URL.to_string());
    let key = std::env::var(&a.api_key_env)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| sluice::SecretString::from(v.trim()));
    let registry = crate::models_cmd::registry(a.registry.as_ref())?;
    let o = Options {
        base_url,
        key,
        key_source: format!("env {}", a.api_key_env),
        model: a.model,
        probe: a.probe,
        timeout: a.timeout,
        registry: Arc::new(registry),
        today: today_utc(),
        low_fraction: 0.2,
    };
    let r = doctor::run(&o).await;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    } else {
        println!("sluice doctor: {}", r.base_url);
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
    Ok(r.verdict.exit_code())
}
