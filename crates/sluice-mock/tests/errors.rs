//! Every error path answers with the status, `type` and `code` the real service uses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;

const KEYS: &str = r#"
auth = "listed"
[[keys]]
key = "sk-test-key-000001"
name = "good"
[[keys]]
key = "sk-revoked-key-0001"
revoked = true
[[keys]]
key = "sk-broke-key-00001"
quota_exhausted = true
[[keys]]
key = "sk-forbidden-key-01"
forbidden = true
"#;

async fn chat_as(mock: &sluice_mock::MockServer, key: Option<&str>) -> Reply {
    post_with(
        &client(),
        mock,
        "/v1/chat/completions",
        key,
        &[],
        chat("hi").to_string(),
    )
    .await
}

#[tokio::test]
async fn authentication_errors() {
    let mock = start(KEYS).await;
    assert_eq!(chat_as(&mock, Some(KEY)).await.status, 200);

    let missing = chat_as(&mock, None).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json()["error"]["type"], "invalid_request_error");

    let unknown = chat_as(&mock, Some("sk-unknown-key-9999")).await;
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.error_code(), "invalid_api_key");
    // The key is masked in the message, never echoed whole.
    let msg = unknown.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!msg.contains("sk-unknown-key-9999"), "{msg}");

    let revoked = chat_as(&mock, Some("sk-revoked-key-0001")).await;
    assert_eq!(revoked.status, 401);
    assert_eq!(revoked.error_code(), "invalid_api_key");

    let broke = chat_as(&mock, Some("sk-broke-key-00001")).await;
    assert_eq!(broke.status, 429);
    assert_eq!(broke.error_code(), "insufficient_quota");
    assert_eq!(broke.json()["error"]["type"], "insufficient_quota");
    assert!(broke.headers.get("retry-after").is_none());

    let forbidden = chat_as(&mock, Some("sk-forbidden-key-01")).await;
    assert_eq!(forbidden.status, 403);
    assert_eq!(forbidden.error_code(), "insufficient_permissions");

    let stats = mock.stats();
    assert_eq!(stats.by_status["401"], 3);
    assert_eq!(stats.by_key["good"], 1);
}

#[tokio::test]
async fn any_key_mode_accepts_any_bearer() {
    let mock = start("").await;
    assert_eq!(chat_as(&mock, Some("sk-whatever-123456")).await.status, 200);
    assert_eq!(chat_as(&mock, None).await.status, 401);
}

#[tokio::test]
async fn model_errors() {
    let mock = start("").await;
    let r = post(
        &mock,
        "/v1/chat/completions",
        json!({"model":"gpt-4-32k","messages":[{"role":"user","content":"x"}]}),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "model_not_found");
    let r = post(
        &mock,
        "/v1/chat/completions",
        json!({"model":"no-such-model","messages":[{"role":"user","content":"x"}]}),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "model_not_found");
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let mock = start("").await;
    let raw = post_with(
        &client(),
        &mock,
        "/v1/chat/completions",
        Some(KEY),
        &[],
        "{not json".to_string(),
    )
    .await;
    assert_eq!(raw.status, 400);
    assert_eq!(raw.json()["error"]["type"], "invalid_request_error");

    let cases = [
        (
            json!({"messages":[{"role":"user","content":"x"}]}),
            "model",
            "missing_required_parameter",
        ),
        (
            json!({"model":"gpt-4o"}),
            "messages",
            "missing_required_parameter",
        ),
        (
            json!({"model":"gpt-4o","messages":"hi"}),
            "messages",
            "invalid_type",
        ),
        (
            json!({"model":"gpt-4o","messages":[]}),
            "messages",
            "empty_array",
        ),
        (json!({"model":7,"messages":[]}), "model", "invalid_type"),
        (
            json!({"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"max_tokens":"ten"}),
            "max_tokens",
            "invalid_type",
        ),
        (
            json!({"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"n":0}),
            "n",
            "invalid_value",
        ),
        (
            json!({"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}),
            "stream_options",
            "invalid_value",
        ),
        (
            json!({"model":"gpt-4o","messages":[{"role":"user","content":5}]}),
            "messages[0].content",
            "invalid_value",
        ),
    ];
    for (body, param, code) in cases {
        let r = post(&mock, "/v1/chat/completions", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        let e = &r.json()["error"];
        assert_eq!(e["type"], "invalid_request_error", "{body}");
        assert_eq!(e["param"], param, "{body}: {}", r.text);
        assert_eq!(e["code"], code, "{body}: {}", r.text);
    }
    // Embeddings: missing input.
    let r = post(
        &mock,
        "/v1/embeddings",
        json!({"model":"text-embedding-3-small"}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "input");
}

#[tokio::test]
async fn context_length_exceeded() {
    // A scenario that still serves gpt-4 (8k context; shut down upstream on 2026-10-23).
    let mock = start("[[models]]\nid = \"gpt-4\"\n").await;
    let long = "word ".repeat(9000);
    let r = post(
        &mock,
        "/v1/chat/completions",
        json!({"model":"gpt-4","messages":[{"role":"user","content":long}]}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "context_length_exceeded");
    assert_eq!(r.json()["error"]["param"], "messages");
    // Prompt + max_tokens over the window also counts.
    let r = post(
        &mock,
        "/v1/chat/completions",
        json!({"model":"gpt-4","messages":[{"role":"user","content":"x"}],"max_tokens":8190}),
    )
    .await;
    assert_eq!(r.error_code(), "context_length_exceeded");
    let r = post(
        &mock,
        "/v1/embeddings",
        json!({"model":"text-embedding-3-small","input":long}),
    )
    .await;
    assert_eq!(r.error_code(), "context_length_exceeded");
}
