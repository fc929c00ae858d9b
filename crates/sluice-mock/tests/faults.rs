//! Each fault the scenario can inject, the stats that record it, and run-time scenario changes.
//! Time is paused: stalls and latencies pass instantly in wall time but fully in tokio time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::json;
use tokio::time::Instant;

fn streaming(content: &str) -> serde_json::Value {
    let mut b = chat(content);
    b["stream"] = json!(true);
    b
}

#[tokio::test]
async fn server_errors() {
    let mock = start("[faults]\nerror_500 = 1.0\n").await;
    let r = post(&mock, "/v1/chat/completions", chat("x")).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"]["type"], "server_error");

    mock.set_scenario(sluice_mock::Scenario::from_toml("[faults]\nerror_502 = 1.0\n").unwrap());
    let r = post(&mock, "/v1/chat/completions", chat("x")).await;
    assert_eq!(r.status, 502);
    assert!(r.header("content-type").starts_with("text/html"));
    assert!(
        serde_json::from_str::<serde_json::Value>(&r.text).is_err(),
        "502 body is not JSON"
    );

    mock.set_scenario(sluice_mock::Scenario::from_toml("[faults]\nerror_503 = 1.0\n").unwrap());
    let r = post(&mock, "/v1/chat/completions", chat("x")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.error_code(), "overloaded");

    let s = mock.stats();
    assert_eq!(s.by_fault["error_500"], 1);
    assert_eq!(s.by_fault["error_502"], 1);
    assert_eq!(s.by_fault["error_503"], 1);
}

#[tokio::test]
async fn half_the_requests_fail_when_asked() {
    let mock = start("seed = 7\n[faults]\nerror_500 = 0.5\n").await;
    let mut fails = 0;
    for i in 0..200 {
        if post(&mock, "/v1/chat/completions", chat(&format!("{i}")))
            .await
            .status
            == 500
        {
            fails += 1;
        }
    }
    assert!((70..=130).contains(&fails), "{fails} of 200");
}

#[tokio::test]
async fn reset_before_any_byte() {
    let mock = start("[faults]\nreset = 1.0\n").await;
    let err = client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .bearer_auth(KEY)
        .json(&chat("x"))
        .send()
        .await
        .expect_err("the connection is reset");
    assert!(!err.is_timeout());
    assert!(err.status().is_none(), "no status was received: {err:?}");
    assert_eq!(mock.stats().by_fault["reset"], 1);
}

#[tokio::test(start_paused = true)]
async fn stall_before_headers() {
    let mock = start("[faults]\nstall_headers = 1.0\nstall_for = \"45s\"\n").await;
    let t0 = Instant::now();
    let r = post(&mock, "/v1/chat/completions", chat("x")).await;
    assert!(t0.elapsed() >= Duration::from_secs(45));
    assert_eq!(r.status, 200, "the stall ends eventually");
    // A client with a first-byte timeout gives up first.
    let c = reqwest::Client::builder()
        .pool_idle_timeout(None)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let err = c
        .post(format!("{}/chat/completions", mock.base_url()))
        .bearer_auth(KEY)
        .json(&chat("x"))
        .send()
        .await
        .expect_err("times out");
    assert!(err.is_timeout());
}

#[tokio::test(start_paused = true)]
async fn stall_in_the_middle_of_a_stream() {
    let mock = start("[faults]\nstall_stream = 1.0\nstall_for = \"30s\"\n").await;
    let t0 = Instant::now();
    let r = post(&mock, "/v1/chat/completions", streaming("x")).await;
    assert!(t0.elapsed() >= Duration::from_secs(30));
    assert_eq!(
        r.events().last().unwrap(),
        "[DONE]",
        "the stream resumes after the stall"
    );
    assert_eq!(mock.stats().by_fault["stall_stream"], 1);
}

#[tokio::test]
async fn dropped_in_the_middle_of_a_stream() {
    let mock =
        start("[output]\nmin_tokens = 40\nmax_tokens = 40\n[faults]\ndrop_stream = 1.0\n").await;
    let resp = client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .bearer_auth(KEY)
        .json(&streaming("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut got = Vec::new();
    let mut failed = false;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(b) => got.extend_from_slice(&b),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the body ends in an error, not a clean end");
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains("[DONE]"));
    assert_eq!(mock.stats().by_fault["drop_stream"], 1);
    assert_eq!(mock.stats().streams.client_disconnected, 0);
}

#[tokio::test]
async fn stream_without_done() {
    let mock = start("[faults]\nno_done = 1.0\n").await;
    let r = post(&mock, "/v1/chat/completions", streaming("x")).await;
    let events = r.events();
    assert!(!events.is_empty());
    assert_ne!(events.last().unwrap(), "[DONE]");
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(mock.stats().by_fault["no_done"], 1);
}

#[tokio::test]
async fn error_event_mid_stream() {
    let mock =
        start("[output]\nmin_tokens = 20\nmax_tokens = 20\n[faults]\nsse_error = 1.0\n").await;
    let r = post(&mock, "/v1/chat/completions", streaming("x")).await;
    let events = r.events();
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "server_error");
    assert!(events.len() > 1, "some content came before the error");
    assert!(!events.iter().any(|e| e == "[DONE]"));
}

#[tokio::test(start_paused = true)]
async fn storm_window() {
    let mock = start("[faults.storm]\nafter = \"10s\"\nfor = \"20s\"\n").await;
    assert_eq!(
        post(&mock, "/v1/chat/completions", chat("x")).await.status,
        200
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    let r = post(&mock, "/v1/chat/completions", chat("x")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.error_code(), "rate_limit_exceeded");
    assert_eq!(r.header("retry-after"), "20");
    tokio::time::advance(Duration::from_secs(20)).await;
    assert_eq!(
        post(&mock, "/v1/chat/completions", chat("x")).await.status,
        200
    );
    assert_eq!(mock.stats().by_fault["storm"], 1);
}

#[tokio::test(start_paused = true)]
async fn latency_ttft_and_per_token() {
    let mock = start(
        "[output]\nmin_tokens = 11\nmax_tokens = 11\n[latency]\nttft = \"300ms\"\nper_token = \"20ms\"\n",
    )
    .await;
    let t0 = Instant::now();
    let r = post(&mock, "/v1/chat/completions", chat("x")).await;
    assert_eq!(r.status, 200);
    // 300ms to the first token, then 10 gaps of 20ms.
    assert_eq!(t0.elapsed().as_millis(), 500);
    let t0 = Instant::now();
    let resp = client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .bearer_auth(KEY)
        .json(&streaming("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        t0.elapsed().as_millis(),
        300,
        "headers arrive with the first token"
    );
    resp.text().await.unwrap();
    assert_eq!(t0.elapsed().as_millis(), 500);
}

#[tokio::test(start_paused = true)]
async fn client_disconnect_is_counted_and_peak_in_flight() {
    let mock =
        start("[output]\nmin_tokens = 50\nmax_tokens = 50\n[latency]\nper_token = \"100ms\"\n")
            .await;
    let resp = client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .bearer_auth(KEY)
        .json(&streaming("x"))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let _first = body.next().await.unwrap().unwrap();
    drop(body);
    let mut seen = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if mock.stats().streams.client_disconnected == 1 {
            seen = true;
            break;
        }
    }
    assert!(
        seen,
        "the mock saw the client go away: {:?}",
        mock.stats().streams
    );
    assert_eq!(mock.stats().in_flight, 0);

    let c = client();
    let futs = (0..5).map(|i| {
        post_with(
            &c,
            &mock,
            "/v1/chat/completions",
            Some(KEY),
            &[],
            chat(&i.to_string()).to_string(),
        )
    });
    let replies = futures_util::future::join_all(futs).await;
    assert!(replies.iter().all(|r| r.status == 200));
    assert!(mock.stats().peak_in_flight >= 5);
}

#[tokio::test]
async fn idempotency_keys_and_request_ids_are_counted() {
    let mock = start("").await;
    let c = client();
    for _ in 0..2 {
        let r = post_with(
            &c,
            &mock,
            "/v1/chat/completions",
            Some(KEY),
            &[
                ("Idempotency-Key", "job-1-line-7"),
                ("X-Request-Id", "client-req-1"),
            ],
            chat("x").to_string(),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    mock.set_scenario(sluice_mock::Scenario::from_toml("[faults]\nerror_500 = 1.0\n").unwrap());
    post_with(
        &c,
        &mock,
        "/v1/chat/completions",
        Some(KEY),
        &[("Idempotency-Key", "job-1-line-8")],
        chat("x").to_string(),
    )
    .await;
    let s = mock.stats();
    assert_eq!(s.idempotency_keys["job-1-line-7"].seen, 2);
    assert_eq!(s.idempotency_keys["job-1-line-7"].completed, 2);
    assert_eq!(s.idempotency_keys["job-1-line-8"].seen, 1);
    assert_eq!(s.idempotency_keys["job-1-line-8"].completed, 0);
    assert_eq!(s.request_ids["client-req-1"], 2);
    assert!(s.tokens.prompt > 0 && s.tokens.completion > 0);
    // The default charge: prompt + the whole max_tokens reservation (the scenario's default of
    // 1024 here), nothing given back.
    assert_eq!(s.tokens.charged, s.tokens.prompt + 2 * 1024);
}

#[tokio::test]
async fn scenario_changes_at_run_time_over_http() {
    let mock = start("").await;
    let c = client();
    let url = format!("http://{}/_mock/scenario", mock.addr());
    let r = c
        .post(&url)
        .body("[faults]\nerror_503 = 1.0\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        post(&mock, "/v1/chat/completions", chat("x")).await.status,
        503
    );
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .body(r#"{"faults":{"error_503":0.0}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        post(&mock, "/v1/chat/completions", chat("x")).await.status,
        200
    );
    // A bad scenario is refused, naming the field, and the old one stays.
    let r = c
        .post(&url)
        .body("[faults]\nerror_503 = 2\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("faults.error_503"));
    assert_eq!(
        post(&mock, "/v1/chat/completions", chat("x")).await.status,
        200
    );

    let stats: sluice_mock::StatsSnapshot = c
        .get(format!("http://{}/_mock/stats", mock.addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.by_status["503"], 1);
    c.post(format!("http://{}/_mock/reset", mock.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(mock.stats().requests, 0);
}
