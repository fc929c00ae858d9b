//! Rate limits as the real service applies them: headers on every response, 429 bodies and
//! waits, continuous refill (proved with paused time, no wall-clock sleeps), refunds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// A Go duration as the headers write it, back to milliseconds (test-side parser, independent
/// of the simulator's formatter).
fn go_ms(s: &str) -> f64 {
    let mut total = 0.0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            "ms"
        } else {
            match c {
                'h' => "h",
                'm' => "m",
                's' => "s",
                other => panic!("unexpected unit {other} in {s}"),
            }
        };
        let v: f64 = num.parse().unwrap();
        num.clear();
        total += match unit {
            "h" => v * 3_600_000.0,
            "m" => v * 60_000.0,
            "s" => v * 1000.0,
            _ => v,
        };
    }
    assert!(num.is_empty(), "trailing number in {s}");
    total
}

#[tokio::test(start_paused = true)]
async fn headers_on_every_response() {
    let mock = start("[limits]\nrpm = 600\ntpm = 100000\n").await;
    let r = post(&mock, "/v1/chat/completions", chat("hi")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit-requests"), "600");
    assert_eq!(r.header("x-ratelimit-limit-tokens"), "100000");
    assert_eq!(r.header("x-ratelimit-remaining-requests"), "599");
    let charged = r.json()["usage"]["prompt_tokens"].as_u64().unwrap() + 1024;
    assert_eq!(
        r.header("x-ratelimit-remaining-tokens"),
        (100_000 - charged).to_string()
    );
    // 1 request at 10/s refills in 100ms; `charged` tokens at 100000/60 per second.
    assert_eq!(r.header("x-ratelimit-reset-requests"), "100ms");
    let want_ms = (charged as f64 / (100_000.0 / 60.0) * 1000.0).ceil();
    assert_eq!(go_ms(r.header("x-ratelimit-reset-tokens")), want_ms);
    assert!(r.header("x-request-id").starts_with("req_"));
    r.header("openai-processing-ms").parse::<u64>().unwrap();
}

#[tokio::test(start_paused = true)]
async fn requests_limit_429_then_refill() {
    let mock = start("[limits]\nrpm = 120\ntpm = 10000000\nburst = \"1s\"\n").await;
    // 2 requests/s, burst of one second: two pass, the third is refused.
    for _ in 0..2 {
        assert_eq!(
            post(&mock, "/v1/chat/completions", chat("x")).await.status,
            200
        );
    }
    let r = post(&mock, "/v1/chat/completions", chat("x")).await;
    assert_eq!(r.status, 429);
    let e = &r.json()["error"];
    assert_eq!(e["type"], "requests");
    assert_eq!(e["code"], "rate_limit_exceeded");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains(
            "on requests per min (RPM): Limit 120, Used 2, Requested 1. Please try again in 500ms."
        ),
        "{msg}"
    );
    assert_eq!(r.header("retry-after-ms"), "500");
    assert_eq!(r.header("retry-after"), "1");
    assert_eq!(r.header("x-ratelimit-remaining-requests"), "0");

    // Not yet refilled at 499ms, refilled at 500ms.
    tokio::time::advance(Duration::from_millis(499)).await;
    assert_eq!(
        post(&mock, "/v1/chat/completions", chat("x")).await.status,
        429
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        post(&mock, "/v1/chat/completions", chat("x")).await.status,
        200
    );
}

#[tokio::test(start_paused = true)]
async fn token_reservation_is_refunded_after_generation() {
    let mock = start(
        "[limits]\nrpm = 10000\ntpm = 6000\ncharge = \"refund_unused\"\n[output]\nmin_tokens = 10\nmax_tokens = 10\n",
    )
    .await;
    let mut body = chat("x");
    body["max_tokens"] = json!(5000);
    let r = post(&mock, "/v1/chat/completions", body.clone()).await;
    assert_eq!(r.status, 200);
    // The header shows the reservation at admission time (prompt + 5000).
    let prompt = r.json()["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        r.header("x-ratelimit-remaining-tokens"),
        (6000 - prompt - 5000).to_string()
    );
    // After the response the unused 4990 are back, so another 5000-token request fits at once.
    let r = post(&mock, "/v1/chat/completions", body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Now charge more than is left: refused on tokens, with a wait computed from the shortfall.
    let mut body = chat("x");
    body["max_tokens"] = json!(5990);
    let r = post(&mock, "/v1/chat/completions", body).await;
    assert_eq!(r.status, 429);
    let e = &r.json()["error"];
    assert_eq!(e["type"], "tokens");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("on tokens per min (TPM): Limit 6000"), "{msg}");
    let requested = prompt + 5990;
    assert!(msg.contains(&format!("Requested {requested}")), "{msg}");
    let remaining: u64 = r.header("x-ratelimit-remaining-tokens").parse().unwrap();
    let wait_ms: f64 = r.header("retry-after-ms").parse().unwrap();
    let want = ((requested - remaining) as f64 / 100.0 * 1000.0).ceil();
    assert!((wait_ms - want).abs() <= 10.0, "{wait_ms} vs {want}");
    tokio::time::advance(Duration::from_millis(wait_ms as u64)).await;
    let mut body = chat("x");
    body["max_tokens"] = json!(5990);
    assert_eq!(post(&mock, "/v1/chat/completions", body).await.status, 200);
}

#[tokio::test(start_paused = true)]
async fn request_larger_than_the_bucket() {
    let mock = start("[limits]\ntpm = 1000\n").await;
    let mut body = chat("x");
    body["max_tokens"] = json!(2000);
    let r = post(&mock, "/v1/chat/completions", body).await;
    assert_eq!(r.status, 429);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Request too large"));
}

#[tokio::test(start_paused = true)]
async fn per_key_and_per_model_scopes() {
    let mock = start(
        "per_model_limits = true\n[limits]\nrpm = 60\nburst = \"1s\"\n[[keys]]\nkey = \"sk-other-key-00002\"\nrpm = 120\n",
    )
    .await;
    let c = client();
    let send = |key: &'static str, model: &'static str| {
        let c = c.clone();
        let mock = &mock;
        async move {
            post_with(
                &c,
                mock,
                "/v1/chat/completions",
                Some(key),
                &[],
                json!({"model":model,"messages":[{"role":"user","content":"x"}]}).to_string(),
            )
            .await
        }
    };
    assert_eq!(send(KEY, "gpt-4o").await.status, 200);
    assert_eq!(send(KEY, "gpt-4o").await.status, 429);
    // Another model has its own budget, and so does another key (with its own limit).
    assert_eq!(send(KEY, "gpt-4o-mini").await.status, 200);
    let r = send("sk-other-key-00002", "gpt-4o").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit-requests"), "120");
}

#[tokio::test(start_paused = true)]
async fn embeddings_are_charged_their_input() {
    let mock = start("[limits]\ntpm = 60000\n").await;
    let r = post(
        &mock,
        "/v1/embeddings",
        json!({"model":"text-embedding-3-small","input":"hello world"}),
    )
    .await;
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), "59998");
}

#[tokio::test(start_paused = true)]
async fn by_default_the_whole_reservation_is_kept() {
    let mock =
        start("[limits]\nrpm = 10000\ntpm = 6000\n[output]\nmin_tokens = 10\nmax_tokens = 10\n")
            .await;
    let mut body = chat("x");
    body["max_tokens"] = json!(2500);
    let r = post(&mock, "/v1/chat/completions", body.clone()).await;
    assert_eq!(r.status, 200);
    let prompt = r.json()["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        r.header("x-ratelimit-remaining-tokens"),
        (6000 - prompt - 2500).to_string()
    );
    // Only 10 tokens were generated, but nothing comes back: the next header shows both
    // reservations taken.
    let r = post(&mock, "/v1/chat/completions", body.clone()).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-ratelimit-remaining-tokens"),
        (6000 - 2 * (prompt + 2500)).to_string()
    );
    // A third does not fit until the budget refills (100 tokens a second).
    assert_eq!(
        post(&mock, "/v1/chat/completions", body.clone())
            .await
            .status,
        429
    );
    let s = mock.stats();
    assert_eq!(s.tokens.charged, 2 * (prompt + 2500), "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn characters_mode_counts_about_four_characters_a_token() {
    let mock = start(
        "[limits]\nrpm = 10000\ntpm = 60000\nprompt_count = \"characters\"\n[output]\nmin_tokens = 5\nmax_tokens = 5\n",
    )
    .await;
    // 396 characters of content plus the role's 4: 400 characters, 100 tokens by the estimate.
    let text = "word ".repeat(79) + "x";
    let mut body = chat(&text);
    body["max_tokens"] = json!(50);
    let r = post(&mock, "/v1/chat/completions", body).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-ratelimit-remaining-tokens"),
        (60000 - 100 - 50).to_string()
    );
    // `usage` is still the tokenizer's count, which differs from the estimate.
    let exact = r.json()["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_ne!(exact, 100);
}

#[tokio::test]
async fn azure_and_header_less_dialects() {
    let mock = start("headers = \"azure\"\n[limits]\nrpm = 600\ntpm = 100000\n").await;
    let r = post(&mock, "/v1/chat/completions", chat("hi")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-remaining-requests"), "599");
    assert!(!r.header("x-ratelimit-remaining-tokens").is_empty());
    assert!(r.header("apim-request-id").starts_with("req_"));
    assert_eq!(r.header("x-ms-region"), "East US");
    for absent in [
        "x-ratelimit-limit-requests",
        "x-ratelimit-reset-tokens",
        "x-request-id",
        "openai-version",
    ] {
        assert!(r.headers.get(absent).is_none(), "{absent}");
    }
    let mock = start("headers = \"none\"\n").await;
    let r = post(&mock, "/v1/chat/completions", chat("hi")).await;
    assert_eq!(r.status, 200);
    for absent in [
        "x-ratelimit-remaining-requests",
        "x-request-id",
        "openai-processing-ms",
    ] {
        assert!(r.headers.get(absent).is_none(), "{absent}");
    }
}
