//! Streams against `sluice mock`: accumulation, backpressure, early drop, idle timeout,
//! failures before and after the first chunk, and the word/sentence adapter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use sluice::{Boundary, ChatMessage, ChatRequest, Client, ErrorKind, RetryPolicy, Tool};
use sluice_mock::{MockServer, Scenario};
use tokio::time::Instant;

const KEY: &str = "sk-stream-test-00001";

async fn mock(toml: &str) -> MockServer {
    MockServer::start(Scenario::from_toml(toml).unwrap())
        .await
        .unwrap()
}

fn client(m: &MockServer) -> Client {
    Client::builder()
        .base_url(m.base_url())
        .api_key(KEY)
        .retry_policy(RetryPolicy {
            backoff_base: Duration::from_millis(5),
            backoff_cap: Duration::from_millis(50),
            max_attempts: 20,
            ..RetryPolicy::default()
        })
        .build()
        .unwrap()
}

fn req(text: &str) -> ChatRequest {
    ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user(text)]).max_tokens(200)
}

#[tokio::test]
async fn stream_accumulates_to_the_same_completion() {
    let m = mock("").await;
    let c = client(&m);
    let plain = c.chat().create(req("same answer")).await.unwrap();
    let mut s = c.chat().stream(req("same answer")).await.unwrap();
    assert_eq!(s.meta().attempts, 1);
    assert!(s.meta().ttft.is_some());
    let mut text = String::new();
    let mut chunks = 0;
    while let Some(chunk) = s.next().await {
        let chunk = chunk.unwrap();
        if let Some(t) = chunk.content(0) {
            text.push_str(t);
        }
        chunks += 1;
    }
    assert!(chunks > 3);
    assert_eq!(text, plain.text().unwrap());
    let done = s.accumulated();
    assert_eq!(done.text(), plain.text());
    // Usage was asked for on the caller's behalf and arrives in the last chunk.
    let u = done.usage.as_ref().unwrap();
    assert_eq!(
        u.completion_tokens,
        plain.usage.as_ref().unwrap().completion_tokens
    );
    assert_eq!(
        done.choices[0].finish_reason,
        plain.choices[0].finish_reason
    );
    assert_eq!(m.stats().streams.completed, 1);
}

#[tokio::test]
async fn tool_call_fragments_accumulate() {
    let m = mock("").await;
    let c = client(&m);
    let tools = vec![Tool::function(
        "lookup",
        json!({"type":"object","properties":{"q":{"type":"string"},"k":{"type":"integer"},"exact":{"type":"boolean"}}}),
    )];
    let r = req("find it")
        .tools(tools)
        .tool_choice(json!({"type":"function","function":{"name":"lookup"}}));
    let plain = c.chat().create(r.clone()).await.unwrap();
    let streamed = c
        .chat()
        .stream(r)
        .await
        .unwrap()
        .collect_completion()
        .await
        .unwrap();
    let want = plain.choices[0].message.tool_calls.as_ref().unwrap();
    let got = streamed.choices[0].message.tool_calls.as_ref().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, want[0].id);
    assert_eq!(got[0].function.name, "lookup");
    assert_eq!(got[0].function.arguments, want[0].function.arguments);
    serde_json::from_str::<serde_json::Value>(&got[0].function.arguments).unwrap();
    assert_eq!(
        streamed.choices[0].finish_reason,
        Some(sluice::FinishReason::ToolCalls)
    );
}

#[tokio::test]
async fn slow_consumer_keeps_buffering_bounded_and_drop_closes_upstream() {
    // A 30,000-token stream (several MB), read slowly.
    let m = mock("[output]\nmin_tokens = 30000\nmax_tokens = 30000\n").await;
    let c = client(&m);
    let r = ChatRequest::new("gpt-4.1", vec![ChatMessage::user("long")]).max_tokens(30000);
    let mut s = c.chat().stream(r).await.unwrap();
    let mut max_received = 0;
    for _ in 0..300 {
        s.next().await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        max_received = max_received.max(s.received_bytes());
    }
    // 300 chunks are ~60 KB; the whole stream is ~6 MB. The client holds at most a socket
    // read's worth beyond what the consumer took.
    assert!(max_received < 1_000_000, "read ahead {max_received} bytes");
    drop(s);
    let mut seen = false;
    for _ in 0..200 {
        if m.stats().streams.client_disconnected == 1 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        seen,
        "the upstream saw the connection close: {:?}",
        m.stats().streams
    );
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_on_a_stalled_stream() {
    let m = mock("[output]\nmin_tokens = 40\nmax_tokens = 40\n[faults]\nstall_stream = 1.0\nstall_for = \"120s\"\n").await;
    let c = Client::builder()
        .base_url(m.base_url())
        .api_key(KEY)
        .idle_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut s = c.chat().stream(req("x")).await.unwrap();
    let t0 = Instant::now();
    let mut got = 0;
    let err = loop {
        match s.next().await.unwrap() {
            Ok(_) => got += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), ErrorKind::TimeoutIdle);
    assert_eq!(t0.elapsed(), Duration::from_secs(5));
    assert!(got >= 1);
    assert!(s.next().await.is_none(), "the stream ends after its error");
}

#[tokio::test]
async fn mid_stream_cut_is_not_retried_and_duplicates_nothing() {
    let m = mock("[output]\nmin_tokens = 60\nmax_tokens = 60\n[faults]\ndrop_stream = 1.0\n").await;
    let c = client(&m);
    let mut s = c.chat().stream(req("x")).await.unwrap();
    let mut text = String::new();
    let mut tokens = 0;
    let err = loop {
        match s.next().await.unwrap() {
            Ok(chunk) => {
                if let Some(t) = chunk.content(0) {
                    text.push_str(t);
                    tokens += 1;
                }
            }
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), ErrorKind::StreamInterrupted);
    let partial = err
        .partial()
        .expect("what was received travels with the error");
    assert_eq!(partial.text().unwrap_or(""), text);
    assert!(
        tokens < 60,
        "the stream was cut before its end ({tokens} tokens)"
    );
    assert_eq!(
        m.stats().requests,
        1,
        "no retry after content was handed out"
    );
}

#[tokio::test]
async fn missing_done_and_error_events_are_interruptions() {
    for fault in ["no_done", "sse_error"] {
        let m = mock(&format!(
            "[output]\nmin_tokens = 30\nmax_tokens = 30\n[faults]\n{fault} = 1.0\n"
        ))
        .await;
        let c = client(&m);
        let s = c.chat().stream(req("x")).await.unwrap();
        let e = s.collect_completion().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::StreamInterrupted, "{fault}");
        assert!(e.partial().is_some(), "{fault}");
    }
}

#[tokio::test]
async fn failures_before_the_first_chunk_are_retried() {
    // Half of all requests fail before any byte (5xx or reset); every stream still succeeds.
    // (A generous retry budget here: the budget's own limits are tested elsewhere.)
    let m = mock("seed = 11\n[faults]\nerror_503 = 0.3\nreset = 0.2\n").await;
    let c = Client::builder()
        .base_url(m.base_url())
        .api_key(KEY)
        .retry_policy(RetryPolicy {
            backoff_base: Duration::from_millis(5),
            backoff_cap: Duration::from_millis(50),
            max_attempts: 20,
            budget_ratio: 10.0,
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    let mut retried = 0;
    for i in 0..20 {
        let s = c.chat().stream(req(&format!("q{i}"))).await.unwrap();
        if s.meta().attempts > 1 {
            retried += 1;
        }
        let done = s.collect_completion().await.unwrap();
        assert!(done.text().is_some());
    }
    assert!(retried > 0);
    // One idempotency key per logical stream, reused by its retries.
    assert_eq!(m.stats().idempotency_keys.len(), 20);
}

#[tokio::test]
async fn word_and_sentence_adapter() {
    let m = mock("[output]\nmin_tokens = 40\nmax_tokens = 40\n").await;
    let c = client(&m);
    let plain = c.chat().create(req("words")).await.unwrap();
    let full = plain.text().unwrap().to_string();
    let mut words = c
        .chat()
        .stream(req("words"))
        .await
        .unwrap()
        .text(Boundary::Word);
    let mut pieces = Vec::new();
    while let Some(p) = words.next().await {
        pieces.push(p.unwrap());
    }
    assert_eq!(pieces.concat(), full);
    let (last, rest) = pieces.split_last().unwrap();
    for p in rest {
        assert!(p.ends_with(' '), "{p:?} is a whole word with its space");
        assert!(!p.trim().contains(' '), "{p:?} is one word");
    }
    assert!(last.ends_with('.'));
    let sentences: Vec<String> = c
        .chat()
        .stream(req("words"))
        .await
        .unwrap()
        .text(Boundary::Sentence)
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(sentences, vec![full]);
}
