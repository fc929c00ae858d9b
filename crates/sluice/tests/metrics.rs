//! Metrics are recorded with the documented names and low-cardinality labels, and never carry a
//! key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use sluice::{ChatMessage, ChatRequest, Client, RetryPolicy};
use sluice_mock::{MockServer, Scenario};

const KEY: &str = "sk-metrics-test-secret-0001";

#[test]
fn requests_retries_tokens_and_finish_reasons_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let m = MockServer::start(
                Scenario::from_toml("[limits]\nrpm = 60\nburst = \"1s\"\n[output]\nmin_tokens = 20\nmax_tokens = 20\n").unwrap(),
            )
            .await
            .unwrap();
            let c = Client::builder()
                .base_url(m.base_url())
                .api_key(KEY)
                .retry_policy(RetryPolicy::default())
                // Without admission the second request meets the server's 429 (and a retry).
                .no_admission()
                .build()
                .unwrap();
            let req = ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user("x")]).max_tokens(5);
            c.chat().create(req.clone()).await.unwrap();
            // Second one hits the 1/s limit, waits, and succeeds on attempt 2.
            c.chat().create(req.clone()).await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
            let s = c.chat().stream(req).await.unwrap();
            s.collect_completion().await.unwrap();
        });
    });
    let snap = snapshotter.snapshot().into_vec();
    let find = |name: &str, labels: &[(&str, &str)]| -> u64 {
        snap.iter()
            .filter(|(k, _, _, _)| {
                k.key().name() == name
                    && labels.iter().all(|(ln, lv)| {
                        k.key().labels().any(|l| l.key() == *ln && l.value() == *lv)
                    })
            })
            .map(|(_, _, _, v)| match v {
                DebugValue::Counter(c) => *c,
                DebugValue::Histogram(h) => h.len() as u64,
                DebugValue::Gauge(_) => 0,
            })
            .sum()
    };
    assert_eq!(
        find(
            "sluice_requests_total",
            &[("endpoint", "chat"), ("outcome", "ok")]
        ),
        3
    );
    assert_eq!(find("sluice_attempts_total", &[("endpoint", "chat")]), 4);
    assert_eq!(
        find(
            "sluice_retries_total",
            &[("reason", "rate_limited_requests")]
        ),
        1
    );
    assert_eq!(
        find(
            "sluice_tokens_total",
            &[("model", "gpt-4o-mini"), ("kind", "completion")]
        ),
        15
    );
    assert_eq!(
        find("sluice_finish_reasons_total", &[("reason", "length")]),
        3
    );
    assert_eq!(
        find("sluice_request_duration_seconds", &[("outcome", "ok")]),
        3
    );
    assert_eq!(find("sluice_time_to_first_token_seconds", &[]), 1);
    for (k, _, _, _) in &snap {
        for l in k.key().labels() {
            assert!(!l.value().contains(KEY), "a key leaked into a metric label");
        }
    }
}
