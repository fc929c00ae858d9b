//! Alerts against `sluice mock` with a webhook on loopback: a storm of the same condition
//! sends one POST, distinct conditions each send theirs, and the payload is JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sluice::alerts::AlertRules;
use sluice::spend::{Budget, BudgetScope, Period, SpendConfig, SpendTags};
use sluice::{ChatMessage, ChatRequest, Client, RequestOptions};
use sluice_mock::{MockServer, Scenario};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A webhook receiver: records each POSTed JSON body.
async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let g = g.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(i) = text.find("\r\n\r\n") {
                        let len: usize = text[..i]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if buf.len() >= i + 4 + len {
                            g.lock()
                                .unwrap()
                                .push(serde_json::from_slice(&buf[i + 4..i + 4 + len]).unwrap());
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, got)
}

#[tokio::test]
async fn a_storm_sends_one_alert_and_distinct_conditions_each_theirs() {
    let m = MockServer::start(
        Scenario::from_toml(
            "[limits]\nrpm = 100000\ntpm = 100000000\n[output]\nmin_tokens = 30\nmax_tokens = 30\n",
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let (url, got) = webhook().await;
    let c = Client::builder()
        .base_url(m.base_url())
        .api_key("sk-alerts-test")
        .alerts(AlertRules {
            completion_tokens_above: Some(10),
            budget_thresholds: vec![0.5],
            webhook: Some(url),
            ..AlertRules::default()
        })
        .spend(SpendConfig {
            budgets: vec![Budget {
                scope: BudgetScope::Key("dana".into()),
                period: Period::Day,
                limit: 1_000_000,
            }],
            ..SpendConfig::default()
        })
        .build()
        .unwrap();
    let opts = RequestOptions {
        spend: SpendTags {
            key: Some("dana".into()),
            job: None,
        },
        ..RequestOptions::default()
    };
    // 30 answers of 30 completion tokens each (bound 10): one large_request alert. Their cost
    // (30 × 600 + prompt) crosses half of $0.001 once: one budget_threshold alert.
    for _ in 0..30 {
        let req = ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user("hello")]).max_tokens(40);
        c.chat().create_with(req, opts.clone()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = got.lock().unwrap().clone();
    let rules: Vec<&str> = got.iter().map(|v| v["rule"].as_str().unwrap()).collect();
    assert_eq!(
        rules.iter().filter(|r| **r == "large_request").count(),
        1,
        "{got:?}"
    );
    assert_eq!(
        rules.iter().filter(|r| **r == "budget_threshold").count(),
        1,
        "{got:?}"
    );
    let large = got.iter().find(|v| v["rule"] == "large_request").unwrap();
    assert_eq!(large["source"], "sluice");
    assert_eq!(large["subject"], "gpt-4o-mini");
    assert_eq!(large["threshold"], 10.0);
    let budget = got
        .iter()
        .find(|v| v["rule"] == "budget_threshold")
        .unwrap();
    assert!(budget["subject"]
        .as_str()
        .unwrap()
        .starts_with("key:dana|day|"));
}
