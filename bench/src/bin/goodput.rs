//! The sluice side of the goodput benchmark: every request of a workload file fired at once
//! through the sluice client with admission on (limits learned from the server's headers, one
//! budget per key as the benchmark's upstream has).
//! Prints one JSON line.
//!
//!   goodput BASE_URL WORKLOAD.jsonl
//!
//! `BURST_SECS=S`: the burst sluice allows itself (default 1 s); `CONC=N`: a fixed concurrency
//! limit of N instead of the adaptive one (with `CONC=1000` every request holds its slot at
//! once, which shows whether sleeping requests come forward when tokens are given back);
//! `REFUNDS=told`: tell sluice the upstream refunds (`upstream_refunds`) instead of letting it
//! learn that from the server's `x-ratelimit-remaining-tokens`.

use std::time::Instant;

use serde_json::Value;
use sluice::admission::AdmissionConfig;
use sluice::Client;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(base_url), Some(path)) = (args.get(1).cloned(), args.get(2).cloned()) else {
        eprintln!("usage: goodput BASE_URL WORKLOAD.jsonl");
        std::process::exit(2);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("goodput: cannot read {path}: {e}");
            std::process::exit(2);
        }
    };
    let items: Vec<(String, Value)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| Some((v.get("path")?.as_str()?.to_string(), v.get("body")?.clone())))
        .collect();
    let rt = sluice_bench::runtime();
    let out = rt.block_on(async move {
        let client = Client::builder()
            .base_url(base_url)
            .api_key("sk-goodput-sluice-001")
            // bench/goodput.toml limits per key, not per model: say so, or the chat and the
            // embeddings scopes would each believe they have the whole budget.
            .admission(AdmissionConfig {
                per_model: false,
                // BURST_SECS: the burst sluice allows itself (default 1 s, conservative).
                burst: std::env::var("BURST_SECS")
                    .ok()
                    .and_then(|s| s.parse::<f64>().ok())
                    .map_or(
                        AdmissionConfig::default().burst,
                        std::time::Duration::from_secs_f64,
                    ),
                // bench/goodput.toml's upstream settles reservations to usage; untold (the
                // default), sluice learns it from the server's headers. REFUNDS=told says so.
                upstream_refunds: std::env::var("REFUNDS").is_ok_and(|v| v == "told"),
                concurrency: {
                    let mut c = AdmissionConfig::default().concurrency;
                    if let Some(n) = std::env::var("CONC").ok().and_then(|s| s.parse().ok()) {
                        (c.initial, c.max, c.adaptive) = (n, n, false);
                    }
                    c
                },
                ..AdmissionConfig::default()
            })
            .build()?;
        let n = items.len();
        let t0 = Instant::now();
        let tasks: Vec<_> = items
            .into_iter()
            .map(|(path, body)| {
                let c = client.clone();
                tokio::spawn(async move {
                    c.request(http::Method::POST, &path, Some(body))
                        .await
                        .map(|r| r.body["usage"]["total_tokens"].as_u64().unwrap_or(0))
                })
            })
            .collect();
        let (mut ok, mut tokens, mut first_error) = (0usize, 0u64, None);
        for t in tasks {
            match t.await {
                Ok(Ok(used)) => {
                    ok += 1;
                    tokens += used;
                }
                Ok(Err(e)) => {
                    first_error.get_or_insert_with(|| e.to_string());
                }
                Err(e) => {
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        let wall = t0.elapsed().as_secs_f64();
        Ok::<_, sluice::Error>(serde_json::json!({
            "sender": "sluice (admission on)",
            "requests": n, "completed": ok, "lost": n - ok,
            "tokens": tokens, "wall_s": wall, "first_error": first_error,
        }))
    });
    match out {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("goodput: {e}");
            std::process::exit(1);
        }
    }
}
