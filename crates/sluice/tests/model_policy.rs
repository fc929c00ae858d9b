//! The model policy against `sluice mock`: aliases resolve before sending, deprecated models
//! pass with a notice, retired ones are refused or substituted, and `model_not_found` follows
//! the fallback chain — for unary and streamed requests alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use sluice::model_policy::{ModelPolicy, OnRetired, PolicyConfig};
use sluice::models::{parse_date, Registry};
use sluice::{ChatMessage, ChatRequest, Client, ErrorKind};
use sluice_mock::{MockServer, Scenario};

async fn mock() -> MockServer {
    MockServer::start(Scenario::from_toml("").unwrap())
        .await
        .unwrap()
}

/// A registry where gpt-4o is deprecated (shutdown 2027-02-01) and the mock's gpt-4o-mini
/// is active, judged on 2026-11-28.
fn client(m: &MockServer, on_retired: OnRetired) -> Client {
    let mut reg = Registry::builtin();
    reg.extend_toml(
        "test",
        "[[model]]\nid = \"gpt-4o\"\ndeprecated = \"2026-11-01\"\nshutdown = \"2027-02-01\"\nreplacement = \"gpt-4.1\"\n",
    )
    .unwrap();
    let mut aliases = HashMap::new();
    aliases.insert("fast".to_string(), "gpt-4o-mini".to_string());
    let mut fallbacks = HashMap::new();
    fallbacks.insert(
        "acme-private".to_string(),
        vec!["acme-older".to_string(), "gpt-4.1-mini".to_string()],
    );
    let policy = ModelPolicy::new(
        Arc::new(reg),
        PolicyConfig {
            on_retired,
            aliases,
            fallbacks,
            today: parse_date("2026-11-28"),
        },
    );
    Client::builder()
        .base_url(m.base_url())
        .api_key("sk-models-test")
        .model_policy(policy)
        .build()
        .unwrap()
}

fn ask(model: &str) -> ChatRequest {
    ChatRequest::new(model, vec![ChatMessage::user("hi")]).max_tokens(4)
}

#[tokio::test]
async fn an_alias_is_resolved_before_sending() {
    let m = mock().await;
    let r = client(&m, OnRetired::Reject)
        .chat()
        .create(ask("fast"))
        .await
        .unwrap();
    assert_eq!(r.meta.model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(r.meta.requested_model.as_deref(), Some("fast"));
    assert_eq!(m.stats().by_model.get("gpt-4o-mini"), Some(&1));
    assert!(!m.stats().by_model.contains_key("fast"));
}

#[tokio::test]
async fn a_deprecated_model_answers_with_a_notice() {
    let m = mock().await;
    let r = client(&m, OnRetired::Reject)
        .chat()
        .create(ask("gpt-4o"))
        .await
        .unwrap();
    let n = r.meta.deprecation.expect("notice");
    assert_eq!(
        n.header_value(),
        "gpt-4o; shutdown=2027-02-01; replacement=gpt-4.1"
    );
    assert!(!r.meta.substituted);
    assert_eq!(m.stats().by_model.get("gpt-4o"), Some(&1));
}

#[tokio::test]
async fn a_retired_model_is_refused_without_a_request() {
    let m = mock().await;
    let e = client(&m, OnRetired::Reject)
        .chat()
        .create(ask("gpt-4-32k"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ModelRetired);
    assert!(e.to_string().contains("use gpt-4o instead"), "{e}");
    assert_eq!(m.stats().requests, 0, "nothing was sent");
}

#[tokio::test]
async fn a_retired_model_is_substituted_when_the_policy_says_so() {
    let m = mock().await;
    let c = client(&m, OnRetired::Substitute);
    let r = c.chat().create(ask("gpt-4-32k-0613")).await.unwrap();
    assert!(r.meta.substituted);
    assert_eq!(r.meta.model.as_deref(), Some("gpt-4o"));
    assert_eq!(r.meta.requested_model.as_deref(), Some("gpt-4-32k-0613"));
    // The answer names the alias's dated snapshot, as the real service does.
    assert_eq!(r.body.model, "gpt-4o-2024-08-06");
    // Streams too.
    let mut s = c.chat().stream(ask("gpt-4-32k")).await.unwrap();
    assert!(s.meta().substituted);
    while let Some(ev) = s.next().await {
        ev.unwrap();
    }
    assert_eq!(m.stats().by_model.get("gpt-4o"), Some(&2));
}

#[tokio::test]
async fn model_not_found_follows_the_fallback_chain() {
    let m = mock().await;
    let c = client(&m, OnRetired::Reject);
    let r = c.chat().create(ask("acme-private")).await.unwrap();
    assert_eq!(r.meta.model.as_deref(), Some("gpt-4.1-mini"));
    assert_eq!(r.meta.fallback_from.as_deref(), Some("acme-private"));
    assert_eq!(r.meta.requested_model.as_deref(), Some("acme-private"));
    // One attempt per model: model_not_found is not retried, it falls back.
    assert_eq!(r.meta.attempts, 3);
    let st = m.stats();
    assert_eq!(st.by_status.get("404"), Some(&2), "{st:?}");
    // A model without a chain fails as the upstream said.
    let e = c.chat().create(ask("nobody-has-this")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ModelNotFound);
}
