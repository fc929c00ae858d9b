//! Several upstream keys: a revoked key is quarantined while traffic continues on the others,
//! a rate-limited key cools down and the request moves to another key, and rotating a key in
//! its file brings the slot back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sluice::credentials::KeySource;
use sluice::keypool::PoolSource;
use sluice::{ChatMessage, ChatRequest, Client};
use sluice_mock::{MockServer, Scenario};

const KEYS: &str = r#"
auth = "listed"
[[keys]]
key = "sk-pool-good-one-0001"
name = "good-1"
[[keys]]
key = "sk-pool-good-two-0002"
name = "good-2"
[[keys]]
key = "sk-pool-revoked-0003"
name = "revoked"
revoked = true
"#;

fn req() -> ChatRequest {
    ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user("x")]).max_tokens(5)
}

fn fixed(k: &str) -> PoolSource {
    PoolSource::One(KeySource::fixed(k))
}

#[tokio::test]
async fn a_revoked_key_is_quarantined_while_traffic_continues() {
    let m = MockServer::start(Scenario::from_toml(KEYS).unwrap())
        .await
        .unwrap();
    let c = Client::builder()
        .base_url(m.base_url())
        .key_pool(vec![
            fixed("sk-pool-revoked-0003"),
            fixed("sk-pool-good-one-0001"),
            fixed("sk-pool-good-two-0002"),
        ])
        .build()
        .unwrap();
    for _ in 0..30 {
        c.chat().create(req()).await.unwrap();
    }
    let s = m.stats();
    assert_eq!(
        s.by_key.get("revoked").copied().unwrap_or(0),
        1,
        "one 401, then never again"
    );
    assert_eq!(s.by_key["good-1"] + s.by_key["good-2"], 30);
    assert!(
        s.by_key["good-1"] > 5 && s.by_key["good-2"] > 5,
        "spread over the good keys"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_key_cools_down_and_the_request_moves() {
    let m = MockServer::start(
        Scenario::from_toml(
            "[limits]\nrpm = 60\nburst = \"1s\"\n[[keys]]\nkey = \"sk-pool-a-000000001\"\nname = \"a\"\n[[keys]]\nkey = \"sk-pool-b-000000002\"\nname = \"b\"\n",
        )
        .unwrap(),
    )
    .await
    .unwrap();
    // Without admission, so the upstream's 429s are what the pool reacts to.
    let c = Client::builder()
        .base_url(m.base_url())
        .key_pool(vec![
            fixed("sk-pool-a-000000001"),
            fixed("sk-pool-b-000000002"),
        ])
        .no_admission()
        .build()
        .unwrap();
    let t0 = tokio::time::Instant::now();
    for _ in 0..4 {
        c.chat().create(req()).await.unwrap();
    }
    // Two keys at one request a second each: four requests need about one second, not three.
    assert!(
        t0.elapsed() <= Duration::from_millis(1200),
        "{:?}",
        t0.elapsed()
    );
    let s = m.stats();
    assert_eq!(s.by_status["200"], 4);
    assert_eq!(
        s.by_key["a"] + s.by_key["b"] - s.by_status.get("429").copied().unwrap_or(0),
        4
    );
}

#[tokio::test]
async fn rotating_a_bad_key_in_the_keys_file_restores_the_slot() {
    let m = MockServer::start(Scenario::from_toml(KEYS).unwrap())
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("sluice-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keys.txt");
    std::fs::write(&path, "sk-pool-revoked-0003\n").unwrap();
    let c = Client::builder()
        .base_url(m.base_url())
        .key_pool(vec![PoolSource::lines(&path)])
        .max_attempts(1)
        .build()
        .unwrap();
    let e = c.chat().create(req()).await.unwrap_err();
    assert_eq!(e.kind(), sluice::ErrorKind::Authentication);
    // Every key is quarantined now: refused without calling the upstream.
    let e = c.chat().create(req()).await.unwrap_err();
    assert!(e.message().contains("quarantined"), "{e}");
    assert_eq!(m.stats().requests, 1);
    // Rotate in place: the new key works without a new client.
    std::fs::write(&path, "sk-pool-good-one-0001\nsk-pool-good-two-0002\n").unwrap();
    c.chat().create(req()).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
