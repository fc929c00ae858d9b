//! Client CPU cost per request: N non-streaming chat completions at concurrency C against a
//! running `sluice mock` (another process, so its CPU is not counted), through the sluice
//! client. Prints one JSON line: requests, wall seconds, CPU seconds, requests per CPU-second.
//!
//!   client-cpu BASE_URL [N] [C]

use std::time::Instant;

use sluice::{ChatMessage, ChatRequest, Client};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(base_url) = args.get(1).cloned() else {
        eprintln!("usage: client-cpu BASE_URL [N] [CONCURRENCY]");
        std::process::exit(2);
    };
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let c: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(64);
    let rt = sluice_bench::runtime();
    let result = rt.block_on(async move {
        let client = Client::builder()
            .base_url(base_url)
            .api_key("sk-bench-key-0000000")
            .build()?;
        let req = ChatRequest::new(
            "gpt-4o-mini",
            vec![
                ChatMessage::system("You are a helpful assistant."),
                ChatMessage::user(
                    "Summarise the benefits of client-side rate limiting in two sentences.",
                ),
            ],
        )
        .max_tokens(64);
        // Warm up the pool and the allocator, then measure.
        for _ in 0..200 {
            client.chat().create(req.clone()).await?;
        }
        let cpu0 = sluice_bench::process_cpu_time();
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..c {
            let client = client.clone();
            let req = req.clone();
            let share = n / c + usize::from(w < n % c);
            tasks.push(tokio::spawn(async move {
                let mut errors = 0usize;
                for _ in 0..share {
                    if client.chat().create(req.clone()).await.is_err() {
                        errors += 1;
                    }
                }
                errors
            }));
        }
        let mut errors = 0;
        for t in tasks {
            errors += t.await.unwrap_or(1);
        }
        let wall = t0.elapsed().as_secs_f64();
        let cpu = match (cpu0, sluice_bench::process_cpu_time()) {
            (Some(a), Some(b)) => (b - a).as_secs_f64(),
            _ => f64::NAN,
        };
        Ok::<_, sluice::Error>((wall, cpu, errors))
    });
    match result {
        Ok((wall, cpu, errors)) => println!(
            "{}",
            serde_json::json!({
                "client": "sluice",
                "requests": n,
                "concurrency": c,
                "errors": errors,
                "wall_s": wall,
                "cpu_s": cpu,
                "requests_per_cpu_s": n as f64 / cpu,
                "requests_per_s": n as f64 / wall,
            })
        ),
        Err(e) => {
            eprintln!("client-cpu: {e}");
            std::process::exit(1);
        }
    }
}
