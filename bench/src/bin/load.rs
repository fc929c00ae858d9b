//! An open-loop load generator: requests start on a fixed schedule (R per second for D
//! seconds) whatever the answers do, and each latency is measured from its scheduled start, so
//! a slow server cannot hide its queueing (no coordinated omission). Prints one JSON line.
//!
//!   load rate URL RATE SECONDS           non-streaming chat completions
//!   load streams URL COUNT PID           COUNT streams held open at once; reports PID's peak RSS
//!
//! `LOAD_SYSTEM=same|distinct` adds a ~2,000-token system prompt to every request: the same one
//! each time (as production traffic repeats its system prompt), or a different one each time.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

fn body(stream: bool, i: u64) -> serde_json::Value {
    let user = serde_json::json!({"role": "user", "content": format!("request {i}")});
    let messages = match std::env::var("LOAD_SYSTEM").as_deref() {
        Ok("same") => vec![
            serde_json::json!({"role": "system", "content": system_prompt()}),
            user,
        ],
        Ok("distinct") => vec![
            serde_json::json!({"role": "system", "content": format!("{i} {}", system_prompt())}),
            user,
        ],
        _ => vec![user],
    };
    serde_json::json!({"model": "gpt-4o-mini", "max_tokens": if stream { 100 } else { 16 }, "stream": stream,
        "messages": messages})
}

/// ~2,000 tokens of instructions and retrieved text.
fn system_prompt() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        "You answer from the passages below. Retrieval-augmented generation combines a search \
         step with a language model: the application finds passages relevant to the question, \
         puts them in the prompt, and asks the model to answer from them. "
            .repeat(40)
    })
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_kb(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn rate(url: String, rate: f64, secs: f64) -> serde_json::Value {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .build()
        .unwrap_or_default();
    let n = (rate * secs) as u64;
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let ok = match client
                .post(&url)
                .bearer_auth("sk-load-0000000001")
                .json(&body(false, i))
                .send()
                .await
            {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            (at.elapsed().as_secs_f64() * 1000.0, ok)
        }));
    }
    let mut lat = Vec::with_capacity(n as usize);
    let mut errors = 0;
    for t in tasks {
        match t.await {
            Ok((ms, true)) => lat.push(ms),
            _ => errors += 1,
        }
    }
    let wall = start.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    serde_json::json!({"mode": "rate", "target_rps": rate, "requests": n, "errors": errors,
        "achieved_rps": lat.len() as f64 / wall, "p50_ms": pct(&lat, 0.5), "p99_ms": pct(&lat, 0.99),
        "max_ms": lat.last().copied().unwrap_or(f64::NAN)})
}

async fn streams(url: String, count: u64, pid: String) -> serde_json::Value {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .build()
        .unwrap_or_default();
    let before = rss_kb(&pid);
    let started = Instant::now();
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let Ok(r) = client
                    .post(&url)
                    .bearer_auth("sk-load-0000000001")
                    .json(&body(true, i))
                    .send()
                    .await
                else {
                    return false;
                };
                let mut s = r.bytes_stream();
                let mut done = false;
                while let Some(Ok(b)) = s.next().await {
                    if b.windows(6).any(|w| w == b"[DONE]") {
                        done = true;
                    }
                }
                done
            })
        })
        .collect();
    // Peak RSS while the streams are open, sampled every 20 ms until the last one ends.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let pid = pid.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kb(&pid));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        })
    };
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap_or(false) {
            ok += 1;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.unwrap_or(0).max(before);
    // What the process keeps once every stream has ended (idle pooled connections, caches).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kb(&pid);
    serde_json::json!({"mode": "streams", "streams": count, "completed": ok, "wall_s": wall,
        "rss_before_mb": before / 1024, "rss_peak_mb": peak / 1024, "rss_after_mb": after / 1024})
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let rt = sluice_bench::runtime();
    let out = match (a.get(1).map(String::as_str), a.get(2), a.get(3), a.get(4)) {
        (Some("rate"), Some(url), Some(r), Some(s)) => {
            let (Ok(r), Ok(s)) = (r.parse(), s.parse()) else {
                eprintln!("load rate URL RATE SECONDS");
                std::process::exit(2);
            };
            rt.block_on(rate(url.clone(), r, s))
        }
        (Some("streams"), Some(url), Some(n), Some(pid)) => {
            let Ok(n) = n.parse() else {
                eprintln!("load streams URL COUNT PID");
                std::process::exit(2);
            };
            rt.block_on(streams(url.clone(), n, pid.clone()))
        }
        _ => {
            eprintln!("usage: load rate URL RATE SECONDS | load streams URL COUNT PID");
            std::process::exit(2);
        }
    };
    println!("{out}");
}
