//! The upstream's model list against `sluice mock`: a model in use or in configuration that
//! the upstream stops listing raises `model_unavailable` (the scenario changed at run time, as
//! a retirement would), and the periodic watch sees it without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use sluice::catalog;
use sluice::{ChatMessage, ChatRequest, Client, ErrorKind};
use sluice_mock::{MockServer, Scenario};

fn client(m: &MockServer) -> Client {
    Client::builder()
        .base_url(m.base_url())
        .api_key("sk-catalog-test-0001")
        .no_admission()
        .build()
        .unwrap()
}

fn chat(model: &str) -> ChatRequest {
    ChatRequest::new(model, vec![ChatMessage::user("hi")]).max_tokens(5)
}

/// `sluice_alerts_total{rule="model_unavailable"}` as the recorder saw it.
fn alerts(snap: &metrics_util::debugging::Snapshotter) -> u64 {
    snap.snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| {
            k.key().name() == sluice::alerts::ALERTS
                && k.key()
                    .labels()
                    .any(|l| l.key() == "rule" && l.value() == catalog::MODEL_UNAVAILABLE)
        })
        .map(|(.., v)| match v {
            DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum()
}

#[tokio::test]
async fn a_model_the_upstream_stops_listing_is_reported_in_use_and_configured() {
    let m = MockServer::start(Scenario::from_toml("").unwrap())
        .await
        .unwrap();
    let c = client(&m);
    let engine = c.engine().clone();
    c.chat().create(chat("gpt-4.1-mini")).await.unwrap();
    assert_eq!(engine.catalog().in_use(), ["gpt-4.1-mini"]);
    // Everything in use and configured is listed.
    let missing = catalog::check(&engine, &["gpt-4o-mini".to_string()])
        .await
        .unwrap();
    assert!(missing.is_empty(), "{missing:?}");
    assert!(engine
        .catalog()
        .listed()
        .unwrap()
        .contains(&"gpt-4.1-mini".to_string()));
    // The upstream retires both; the next check names them, and a model only configured too.
    m.set_scenario(
        Scenario::from_toml(
            "[[models]]\nid = \"gpt-4.1-mini\"\nretired = true\n[[models]]\nid = \"gpt-4o-mini\"\nretired = true\n",
        )
        .unwrap(),
    );
    let missing = catalog::check(&engine, &["gpt-4o-mini".to_string(), "gpt-4o".to_string()])
        .await
        .unwrap();
    assert_eq!(missing, ["gpt-4.1-mini", "gpt-4o-mini"]);
    // The registry still calls gpt-4.1-mini active: its model_not_found is the registry's fault.
    let e = c.chat().create(chat("gpt-4.1-mini")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ModelNotFound);
    assert!(
        !engine.catalog().not_found(
            "gpt-4.1-mini",
            engine.models().registry(),
            engine.models().today()
        ),
        "already logged once by the engine"
    );
}

#[test]
fn the_periodic_watch_raises_the_alert_when_the_listing_changes() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let m = MockServer::start(Scenario::from_toml("").unwrap())
                .await
                .unwrap();
            let engine = client(&m).engine().clone();
            let e2 = engine.clone();
            let watch = catalog::watch(
                move || (e2.clone(), vec!["gpt-4o".to_string()]),
                Duration::from_secs(1),
            );
            // The first check, at start, finds everything listed.
            for _ in 0..100 {
                if engine.catalog().listed().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(engine.catalog().listed().is_some(), "checked at start");
            assert_eq!(alerts(&snap), 0);
            m.set_scenario(
                Scenario::from_toml("[[models]]\nid = \"gpt-4o\"\nretired = true\n").unwrap(),
            );
            // A later check sees it (bounded wait: the watch runs every second).
            let mut seen = 0;
            for _ in 0..100 {
                seen = alerts(&snap);
                if seen > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            watch.abort();
            assert_eq!(seen, 1, "one model_unavailable alert for gpt-4o");
        });
    });
}
