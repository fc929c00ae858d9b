//! Two numbers for admission (issue 4): how fast tokens are estimated, and what admission adds
//! to a request. The baseline is the same request through the same client without admission,
//! measured in the same run against the same in-process mock (latency off, no limits reached).
//!
//!   admission-overhead [N]   (REDIS_URL for the Redis case; skipped if unreachable)

use std::time::{Duration, Instant};

use serde_json::json;
use sluice::admission::{estimate, AdmissionConfig, OnStateError, StateBackend};
use sluice::{ChatMessage, ChatRequest, Client};

fn body() -> serde_json::Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 128, "messages": [
        {"role": "system", "content": "You are a helpful assistant that answers briefly and precisely."},
        {"role": "user", "content": "Explain in two sentences why client-side rate limiting with token estimates avoids 429 storms when many requests are sent at once to an API with per-minute quotas."}
    ]})
}

async fn per_request(client: &Client, n: usize) -> Result<Duration, sluice::Error> {
    let req = ChatRequest::new(
        "gpt-4o-mini",
        vec![
            ChatMessage::system("You are a helpful assistant."),
            ChatMessage::user("Say something short."),
        ],
    )
    .max_tokens(16);
    for _ in 0..200 {
        client.chat().create(req.clone()).await?;
    }
    let t0 = Instant::now();
    for _ in 0..n {
        client.chat().create(req.clone()).await?;
    }
    Ok(t0.elapsed() / n as u32)
}

/// Token estimation with a long system prompt (~2,500 tokens) and a short question that differs
/// on every request, as production traffic looks: the first request counts the system prompt,
/// later ones find its count remembered. Baseline in the same run: every system prompt distinct
/// (each counted from scratch).
fn long_prompts() {
    let para = "Retrieval-augmented generation combines a search step with a language model: the \
        application finds passages relevant to the question, puts them in the prompt, and asks the \
        model to answer from them; the instructions, examples and retrieved documents add up. ";
    let system = para.repeat(40);
    let req = |system: &str, i: usize| {
        json!({"model": "gpt-4o-mini", "max_tokens": 128, "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": format!("Question {i}: what does the passage say?")}
        ]})
    };
    let iters = 300;
    // Distinct system prompts: every estimate tokenizes ~2,500 tokens.
    let distinct: Vec<_> = (0..iters)
        .map(|i| req(&format!("{i} {system}"), i))
        .collect();
    let t0 = Instant::now();
    let mut prompt = 0;
    for b in &distinct {
        prompt = estimate::estimate("/chat/completions", b).prompt;
    }
    let cold = t0.elapsed().as_secs_f64() * 1e6 / iters as f64;
    // The same system prompt, a different question each time.
    let repeated: Vec<_> = (0..iters).map(|i| req(&system, i)).collect();
    let t0 = Instant::now();
    for b in &repeated {
        prompt = estimate::estimate("/chat/completions", b).prompt;
    }
    let warm = t0.elapsed().as_secs_f64() * 1e6 / iters as f64;
    println!(
        "token estimation, {prompt}-token prompt: {cold:.1} µs per request with a new system prompt each time, \
         {warm:.1} µs with the same system prompt (×{:.0} faster)",
        cold / warm
    );
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);

    // Token estimation: the same two-message request, again and again.
    estimate::warm_up();
    let b = body();
    let iters = 20_000;
    let t0 = Instant::now();
    let mut total = 0u64;
    for _ in 0..iters {
        total += estimate::estimate("/chat/completions", &b).total();
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "token estimation: {:.0} requests/s = {:.0} messages/s ({} tokens each, {:.1} µs per request)",
        iters as f64 / secs,
        2.0 * iters as f64 / secs,
        total / iters as u64,
        secs * 1e6 / iters as f64
    );
    long_prompts();

    let rt = sluice_bench::runtime();
    let result = rt.block_on(async move {
        let scenario = sluice_mock::Scenario::from_toml(
            "[limits]\nrpm = 1000000000\ntpm = 1000000000000\n[output]\nmin_tokens = 16\nmax_tokens = 16\n",
        )
        .map_err(|e| sluice::Error::new(sluice::ErrorKind::Config, e.to_string()))?;
        let mock = sluice_mock::MockServer::start(scenario)
            .await
            .map_err(|e| sluice::Error::new(sluice::ErrorKind::Config, e.to_string()))?;
        let build = |admission: Option<AdmissionConfig>| {
            let b = Client::builder()
                .base_url(mock.base_url())
                .api_key("sk-overhead-bench-0001");
            match admission {
                Some(a) => b.admission(a),
                None => b.no_admission(),
            }
            .build()
        };
        let base = per_request(&build(None)?, n).await?;
        let local = per_request(&build(Some(AdmissionConfig::default()))?, n).await?;
        println!(
            "per request, sequential, {n} requests: without admission {:.1} µs; with in-process admission {:.1} µs (+{:.1} µs, ratio {:.3})",
            base.as_secs_f64() * 1e6,
            local.as_secs_f64() * 1e6,
            (local.as_secs_f64() - base.as_secs_f64()) * 1e6,
            local.as_secs_f64() / base.as_secs_f64()
        );
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let redis = AdmissionConfig {
            state: StateBackend::Redis {
                url,
                prefix: format!("sluice-bench-{}", std::process::id()),
                on_error: OnStateError::FailClosed,
            },
            ..AdmissionConfig::default()
        };
        match per_request(&build(Some(redis))?, n).await {
            Ok(d) => println!(
                "with Redis admission {:.1} µs (+{:.1} µs over no admission, ratio {:.3})",
                d.as_secs_f64() * 1e6,
                (d.as_secs_f64() - base.as_secs_f64()) * 1e6,
                d.as_secs_f64() / base.as_secs_f64()
            ),
            Err(e) => println!("Redis admission skipped: {e}"),
        }
        Ok::<_, sluice::Error>(())
    });
    if let Err(e) = result {
        eprintln!("admission-overhead: {e}");
        std::process::exit(1);
    }
}
