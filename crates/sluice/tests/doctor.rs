//! `sluice doctor`'s verdicts against `sluice mock`: a good key, a bad key, an out-of-quota key,
//! a retired model, an unreachable host, and low remaining limits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use sluice::doctor::{self, Options, Outcome, Verdict};
use sluice::models::{parse_date, Registry};
use sluice_mock::{MockServer, Scenario};

async fn mock() -> MockServer {
    MockServer::start(
        Scenario::from_toml(
            r#"
auth = "listed"
[[keys]]
key = "sk-doctor-good-0001"
rpm = 500
tpm = 200000
[[keys]]
key = "sk-doctor-broke-001"
quota_exhausted = true
[[keys]]
key = "sk-doctor-revoked-1"
revoked = true
[[keys]]
key = "sk-doctor-busy-0001"
rpm = 2
tpm = 200000
"#,
        )
        .unwrap(),
    )
    .await
    .unwrap()
}

fn opts(base_url: String, key: Option<&str>, model: Option<&str>, probe: bool) -> Options {
    Options {
        base_url,
        key: key.map(sluice::SecretString::from),
        key_source: "test".into(),
        model: model.map(str::to_string),
        probe,
        timeout: Duration::from_secs(3),
        registry: Arc::new(Registry::builtin()),
        today: parse_date("2026-11-28").unwrap(),
        low_fraction: 0.2,
    }
}

fn outcome(r: &doctor::Report, name: &str) -> Outcome {
    r.checks.iter().find(|c| c.name == name).unwrap().outcome
}

#[tokio::test]
async fn a_good_key_is_healthy() {
    let m = mock().await;
    let r = doctor::run(&opts(
        m.base_url(),
        Some("sk-doctor-good-0001"),
        Some("gpt-4o-mini"),
        true,
    ))
    .await;
    assert_eq!(r.verdict, Verdict::Healthy, "{r:#?}");
    assert_eq!(outcome(&r, "dns"), Outcome::Ok);
    assert_eq!(outcome(&r, "tcp"), Outcome::Ok);
    assert_eq!(outcome(&r, "tls"), Outcome::Skipped);
    assert_eq!(outcome(&r, "key"), Outcome::Ok);
    assert_eq!(outcome(&r, "model"), Outcome::Ok);
    let limits = r.checks.iter().find(|c| c.name == "limits").unwrap();
    assert_eq!(limits.outcome, Outcome::Ok);
    assert!(
        limits.detail.contains("/500 remaining"),
        "{}",
        limits.detail
    );
    assert_eq!(r.verdict.exit_code(), 0);
    // Without --probe nothing is spent: one GET /models and one GET /models/{id}.
    let before = m.stats().requests;
    let r = doctor::run(&opts(
        m.base_url(),
        Some("sk-doctor-good-0001"),
        Some("gpt-4o-mini"),
        false,
    ))
    .await;
    assert_eq!(r.verdict, Verdict::Healthy);
    assert_eq!(outcome(&r, "limits"), Outcome::Skipped);
    assert_eq!(m.stats().requests - before, 2);
}

#[tokio::test]
async fn a_bad_key_and_an_out_of_quota_key_are_broken_and_say_why() {
    let m = mock().await;
    let r = doctor::run(&opts(
        m.base_url(),
        Some("sk-doctor-revoked-1"),
        None,
        false,
    ))
    .await;
    assert_eq!(r.verdict, Verdict::Broken);
    let key = r.checks.iter().find(|c| c.name == "key").unwrap();
    assert_eq!(key.outcome, Outcome::Fail);
    assert!(key.detail.starts_with("401"), "{}", key.detail);
    assert!(key.advice.as_deref().unwrap().contains("revoked"));
    let r = doctor::run(&opts(m.base_url(), Some("sk-doctor-broke-001"), None, true)).await;
    assert_eq!(r.verdict, Verdict::Broken);
    let key = r.checks.iter().find(|c| c.name == "key").unwrap();
    assert!(key.detail.contains("insufficient_quota"), "{}", key.detail);
    assert!(key.advice.as_deref().unwrap().contains("Billing"));
    let r = doctor::run(&opts(m.base_url(), None, None, false)).await;
    assert_eq!(r.verdict, Verdict::Broken);
    assert_eq!(r.verdict.exit_code(), 2);
}

#[tokio::test]
async fn a_retired_model_is_broken_and_a_busy_key_is_degraded() {
    let m = mock().await;
    let r = doctor::run(&opts(
        m.base_url(),
        Some("sk-doctor-good-0001"),
        Some("gpt-4-32k"),
        false,
    ))
    .await;
    assert_eq!(r.verdict, Verdict::Broken);
    let model = r.checks.iter().find(|c| c.name == "model").unwrap();
    assert!(
        model.detail.contains("shut down on 2025-06-06"),
        "{}",
        model.detail
    );
    // A model the API does not have.
    let r = doctor::run(&opts(
        m.base_url(),
        Some("sk-doctor-good-0001"),
        Some("acme-x"),
        false,
    ))
    .await;
    assert_eq!(outcome(&r, "model"), Outcome::Fail);
    // 2 rpm: after the probe, 1 of 2 requests is left... under 20% after a second.
    let busy = opts(
        m.base_url(),
        Some("sk-doctor-busy-0001"),
        Some("gpt-4o-mini"),
        true,
    );
    let _ = doctor::run(&busy).await;
    let r = doctor::run(&busy).await;
    assert_eq!(r.verdict, Verdict::Degraded, "{r:#?}");
    assert_eq!(outcome(&r, "limits"), Outcome::Warn);
    assert_eq!(r.verdict.exit_code(), 1);
}

#[tokio::test]
async fn an_unreachable_host_is_broken_at_the_network_step() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let r = doctor::run(&opts(
        "http://127.0.0.1:1/v1".into(),
        Some("sk-x"),
        None,
        false,
    ))
    .await;
    assert_eq!(r.verdict, Verdict::Broken);
    assert_eq!(outcome(&r, "dns"), Outcome::Ok);
    let tcp = r.checks.iter().find(|c| c.name == "tcp").unwrap();
    assert_eq!(tcp.outcome, Outcome::Fail);
    assert!(tcp
        .advice
        .as_deref()
        .unwrap()
        .contains("Nothing accepts connections"));
    assert_eq!(outcome(&r, "key"), Outcome::Skipped);
    let r = doctor::run(&opts("not a url".into(), Some("sk-x"), None, false)).await;
    assert_eq!(r.verdict, Verdict::Broken);
}
