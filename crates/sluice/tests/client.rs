//! The Rust client against `sluice mock`: every error kind, retries and waits (paused time),
//! the retry budget, idempotency keys, and the plain endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use sluice::{
    ChatMessage, ChatRequest, Client, CompletionRequest, EmbeddingRequest, ErrorKind,
    RequestOptions, RetryPolicy,
};
use sluice_mock::{MockServer, Scenario};
use tokio::time::Instant;

const KEY: &str = "sk-client-test-00001";

async fn mock(toml: &str) -> MockServer {
    MockServer::start(Scenario::from_toml(toml).unwrap())
        .await
        .unwrap()
}

/// Quick retries so tests do not wait long even in virtual time.
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(100),
        ..RetryPolicy::default()
    }
}

fn client(m: &MockServer) -> Client {
    Client::builder()
        .base_url(m.base_url())
        .api_key(KEY)
        .retry_policy(fast_retry())
        .build()
        .unwrap()
}

/// Without admission: for tests of the retry layer itself (admission would pace the requests
/// so that the server never answers 429).
fn client_without_admission(m: &MockServer) -> Client {
    Client::builder()
        .base_url(m.base_url())
        .api_key(KEY)
        .retry_policy(fast_retry())
        .no_admission()
        .build()
        .unwrap()
}

fn hello() -> ChatRequest {
    ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user("hello")])
}

#[tokio::test]
async fn chat_create_exposes_usage_and_meta() {
    let m = mock("[limits]\nrpm = 600\ntpm = 100000\n").await;
    let c = client(&m);
    let r = c.chat().create(hello().max_tokens(50)).await.unwrap();
    assert!(!r.text().unwrap().is_empty());
    assert_eq!(r.attempts(), 1);
    assert!(r.request_id().unwrap().starts_with("req_"));
    assert_eq!(r.meta.status, 200);
    assert_eq!(r.meta.rate_limits.requests.limit, Some(600));
    assert_eq!(r.meta.rate_limits.requests.remaining, Some(599));
    assert_eq!(r.meta.rate_limits.tokens.limit, Some(100_000));
    let u = r.usage.as_ref().unwrap();
    assert_eq!(u.total_tokens, u.prompt_tokens + u.completion_tokens);
    assert_eq!(r.finish_reasons().len(), 1);
    assert!(r.meta.idempotency_key.starts_with("sluice-"));
}

#[tokio::test]
async fn answers_written_with_spaces_are_read_the_same() {
    // Python servers write `"usage": {...}`: usage, cost and finish reasons are still read.
    let m = mock("json_style = \"spaced\"\n").await;
    let c = client(&m);
    let r = c.chat().create(hello().max_tokens(50)).await.unwrap();
    assert!(r.usage.as_ref().unwrap().completion_tokens > 0);
    assert!(
        r.meta.cost_nanos.unwrap_or(0) > 0,
        "priced from the usage read by key"
    );
    assert_eq!(r.finish_reasons().len(), 1);
    let s = c.chat().stream(hello().max_tokens(20)).await.unwrap();
    let done = s.collect_completion().await.unwrap();
    assert!(done.usage.is_some());
}

#[tokio::test]
async fn unknown_fields_pass_through() {
    let m = mock("").await;
    let c = client(&m);
    let r = c.chat().create(hello().max_tokens(5)).await.unwrap();
    // The mock sends fields the typed struct does not name; they are kept.
    assert_eq!(r.body.extra.get("service_tier"), Some(&json!("default")));
    let msg = &r.body.choices[0].message;
    assert_eq!(msg.extra.get("annotations"), Some(&json!([])));
    // And fields of ours that have no typed slot reach the server.
    let mut req = hello().max_tokens(5);
    req.extra.insert("seed".into(), json!(7));
    c.chat().create(req).await.unwrap();
}

#[tokio::test]
async fn default_max_tokens_is_applied() {
    let m = mock("[output]\nmin_tokens = 50\nmax_tokens = 50\n").await;
    let c = Client::builder()
        .base_url(m.base_url())
        .api_key(KEY)
        .default_max_tokens(Some(7))
        .build()
        .unwrap();
    let r = c.chat().create(hello()).await.unwrap();
    assert_eq!(r.usage.as_ref().unwrap().completion_tokens, 7);
    assert_eq!(
        r.choices[0].finish_reason,
        Some(sluice::FinishReason::Length)
    );
    // An explicit limit wins.
    let r = c.chat().create(hello().max_tokens(9)).await.unwrap();
    assert_eq!(r.usage.as_ref().unwrap().completion_tokens, 9);
}

#[tokio::test]
async fn other_endpoints() {
    let m = mock("").await;
    let c = client(&m);
    let e = c
        .embeddings()
        .create(EmbeddingRequest::new(
            "text-embedding-3-small",
            vec!["a", "b"],
        ))
        .await
        .unwrap();
    assert_eq!(e.data.len(), 2);
    assert_eq!(e.data[0].vector().unwrap().len(), 1536);
    let mut b64 = EmbeddingRequest::new("text-embedding-3-small", "x");
    b64.encoding_format = Some("base64".into());
    b64.dimensions = Some(8);
    let e = c.embeddings().create(b64).await.unwrap();
    assert_eq!(e.data[0].vector().unwrap().len(), 8);

    let t = c
        .completions()
        .create(CompletionRequest::new(
            "gpt-3.5-turbo-instruct",
            "Once upon",
        ))
        .await
        .unwrap();
    assert_eq!(t.choices.len(), 1);

    let list = c.models().list().await.unwrap();
    assert!(list.data.iter().any(|m| m.id == "gpt-4o"));
    assert_eq!(c.models().get("gpt-4o").await.unwrap().id, "gpt-4o");

    let raw = c
        .request(
            http::Method::POST,
            "/chat/completions",
            Some(json!({"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"max_tokens":3})),
        )
        .await
        .unwrap();
    assert_eq!(raw.body["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn error_kinds_from_the_server() {
    let m = mock(
        r#"
auth = "listed"
[[keys]]
key = "sk-client-test-00001"
[[keys]]
key = "sk-broke-key-000001"
quota_exhausted = true
[[keys]]
key = "sk-forbidden-key-01"
forbidden = true
# A small context window to overflow (gpt-4's 8k, before its 2026 shutdown).
[[models]]
id = "acme-small-8k"
kind = "chat"
context_window = 8192
max_output = 4096
"#,
    )
    .await;
    let as_key = |k: &str| {
        Client::builder()
            .base_url(m.base_url())
            .api_key(k)
            .retry_policy(fast_retry())
            .build()
            .unwrap()
    };
    let c = as_key(KEY);
    let kind = |r: Result<sluice::Response<sluice::ChatCompletion>, sluice::Error>| {
        let e = r.unwrap_err();
        (e.kind(), e.attempts(), e.is_retryable())
    };
    assert_eq!(
        kind(as_key("sk-wrong-key-000001").chat().create(hello()).await),
        (ErrorKind::Authentication, 1, false)
    );
    assert_eq!(
        kind(as_key("sk-forbidden-key-01").chat().create(hello()).await),
        (ErrorKind::PermissionDenied, 1, false)
    );
    assert_eq!(
        kind(as_key("sk-broke-key-000001").chat().create(hello()).await),
        (ErrorKind::QuotaExhausted, 1, false),
        "quota errors are never retried"
    );
    let unknown = ChatRequest::new("acme-no-such-model", vec![ChatMessage::user("x")]);
    assert_eq!(
        kind(c.chat().create(unknown).await),
        (ErrorKind::ModelNotFound, 1, false)
    );
    // A model the registry knows is retired is refused before anything is sent.
    let retired = ChatRequest::new("gpt-4-32k", vec![ChatMessage::user("x")]);
    assert_eq!(
        kind(c.chat().create(retired).await),
        (ErrorKind::ModelRetired, 0, false)
    );
    let long = ChatRequest::new(
        "acme-small-8k",
        vec![ChatMessage::user("word ".repeat(9000))],
    );
    assert_eq!(
        kind(c.chat().create(long).await),
        (ErrorKind::ContextTooLong, 1, false)
    );
    assert_eq!(
        kind(c.chat().create(hello().n(0)).await),
        (ErrorKind::BadRequest, 1, false)
    );
    let e = c
        .request(http::Method::POST, "/no/such/path", Some(json!({})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    // The server's message and request id travel with the error.
    let e = as_key("sk-broke-key-000001")
        .chat()
        .create(hello())
        .await
        .unwrap_err();
    assert!(e.request_id().unwrap().starts_with("req_"));
    assert_eq!(
        e.api_error().unwrap().code.as_deref(),
        Some("insufficient_quota")
    );
    // API requests the mock saw: one per failed call above, no retries of unretryable errors
    // (the unknown path is answered by its router, outside the API counters).
    assert_eq!(m.stats().requests, 7);
}

#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    let m = mock("[faults]\nerror_500 = 1.0\n").await;
    let c = Client::builder()
        .base_url(m.base_url())
        .api_key(KEY)
        .retry_policy(fast_retry())
        .max_attempts(3)
        .build()
        .unwrap();
    let e = c.chat().create(hello()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ServerError);
    assert_eq!(e.status(), Some(500));
    assert_eq!(e.attempts(), 3);
    // One idempotency key for the three attempts.
    let stats = m.stats();
    assert_eq!(stats.requests, 3);
    assert_eq!(stats.idempotency_keys.len(), 1);
    assert_eq!(stats.idempotency_keys.values().next().unwrap().seen, 3);

    // 502 with an HTML body, 503 overloaded: same kind, message kept readable.
    m.set_scenario(Scenario::from_toml("[faults]\nerror_502 = 1.0\n").unwrap());
    let e = c.chat().create(hello()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ServerError);
    assert!(e.message().contains("502 Bad Gateway"), "{}", e.message());
}

#[tokio::test]
async fn caller_idempotency_key_is_sent_on_every_attempt() {
    let m = mock("seed = 3\n[faults]\nerror_503 = 0.6\n").await;
    let c = client(&m);
    let opts = RequestOptions {
        idempotency_key: Some("batch-42-line-7".into()),
        max_attempts: Some(20),
        ..Default::default()
    };
    let r = c.chat().create_with(hello(), opts).await.unwrap();
    let seen = m.stats().idempotency_keys["batch-42-line-7"];
    assert_eq!(seen.seen as u32, r.attempts());
    assert_eq!(seen.completed, 1);
    assert_eq!(r.meta.idempotency_key, "batch-42-line-7");
}

#[tokio::test]
async fn connection_reset_is_retried() {
    let m = mock("[faults]\nreset = 1.0\n").await;
    let c = Client::builder()
        .base_url(m.base_url())
        .api_key(KEY)
        .retry_policy(fast_retry())
        .max_attempts(2)
        .build()
        .unwrap();
    let e = c.chat().create(hello()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection);
    assert_eq!(e.attempts(), 2);
    m.set_scenario(Scenario::from_toml("").unwrap());
    c.chat().create(hello()).await.unwrap();
}

#[tokio::test]
async fn connection_refused() {
    // A port with nothing listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .api_key(KEY)
        .max_attempts(1)
        .build()
        .unwrap();
    let e = c.chat().create(hello()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection);
    assert!(e.is_retryable());
}

#[tokio::test]
async fn connect_timeout() {
    // A listener whose accept queue is full and never drained: further connects hang in SYN.
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        fillers.push(s);
    }
    let c = Client::builder()
        .base_url(format!("http://{addr}/v1"))
        .api_key(KEY)
        .connect_timeout(Duration::from_millis(300))
        .max_attempts(1)
        .build()
        .unwrap();
    let e = c.chat().create(hello()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimeoutConnect, "{e}");
    drop(fillers);
}

#[tokio::test(start_paused = true)]
async fn first_byte_and_total_timeouts() {
    let m = mock("[faults]\nstall_headers = 1.0\nstall_for = \"120s\"\n").await;
    let c = Client::builder()
        .base_url(m.base_url())
        .api_key(KEY)
        .first_byte_timeout(Duration::from_secs(10))
        .max_attempts(1)
        .build()
        .unwrap();
    let t0 = Instant::now();
    let e = c.chat().create(hello()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimeoutFirstByte);
    assert_eq!(t0.elapsed(), Duration::from_secs(10));

    let c = Client::builder()
        .base_url(m.base_url())
        .api_key(KEY)
        .first_byte_timeout(Duration::from_secs(10))
        .total_timeout(Duration::from_secs(25))
        .retry_policy(fast_retry())
        .max_attempts(10)
        .build()
        .unwrap();
    let t0 = Instant::now();
    let e = c.chat().create(hello()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimeoutTotal);
    assert!(
        t0.elapsed() <= Duration::from_secs(25),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(
        e.attempts(),
        3,
        "two first-byte timeouts, then the deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    // 60 rpm with a one-second burst: one request per second.
    let m = mock("[limits]\nrpm = 60\nburst = \"1s\"\n").await;
    let c = client_without_admission(&m);
    c.chat().create(hello()).await.unwrap();
    let t0 = Instant::now();
    let r = c.chat().create(hello()).await.unwrap();
    let waited = t0.elapsed();
    assert_eq!(r.attempts(), 2);
    // The server asked for 1s; the client waits that plus at most 10% jitter, never less.
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    assert!(waited <= Duration::from_millis(1100), "{waited:?}");
    assert_eq!(m.stats().by_status["429"], 1);
}

#[tokio::test(start_paused = true)]
async fn never_sleeps_past_the_deadline() {
    // One request a minute: the second must wait ~60s, but the deadline is 5s.
    let m = mock("[limits]\nrpm = 1\nburst = \"60s\"\n").await;
    let c = Client::builder()
        .base_url(m.base_url())
        .api_key(KEY)
        .total_timeout(Duration::from_secs(5))
        .no_admission()
        .build()
        .unwrap();
    c.chat().create(hello()).await.unwrap();
    let t0 = Instant::now();
    let e = c.chat().create(hello()).await.unwrap_err();
    assert_eq!(
        t0.elapsed(),
        Duration::ZERO,
        "failed at once instead of waiting"
    );
    assert_eq!(e.kind(), ErrorKind::RateLimitedRequests);
    assert_eq!(e.attempts(), 1);
    let wait = e.retry_after().unwrap();
    assert!(
        wait > Duration::from_secs(55),
        "carries the wait the server asked for: {wait:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn tokens_limit_is_its_own_kind() {
    let m = mock("[limits]\ntpm = 3000\n").await;
    let c = Client::builder()
        .base_url(m.base_url())
        .api_key(KEY)
        .max_attempts(1)
        .build()
        .unwrap();
    c.chat().create(hello().max_tokens(2950)).await.unwrap();
    let e = c.chat().create(hello().max_tokens(2950)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimitedTokens);
}

#[tokio::test(start_paused = true)]
async fn retry_budget_caps_attempts_in_an_outage() {
    let m = mock("[faults]\nerror_500 = 1.0\n").await;
    let policy = RetryPolicy {
        max_attempts: 10,
        backoff_base: Duration::from_millis(1),
        backoff_cap: Duration::from_millis(5),
        budget_ratio: 0.2,
        budget_min_per_sec: 1.0,
        ..RetryPolicy::default()
    };
    let c = Client::builder()
        .base_url(m.base_url())
        .api_key(KEY)
        .retry_policy(policy)
        .build()
        .unwrap();
    let t0 = Instant::now();
    let requests = 100u64;
    for _ in 0..requests {
        let e = c.chat().create(hello()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ServerError);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let attempts = m.stats().requests;
    // Floor: ten seconds' worth in the bank at start, plus one per second since.
    let floor = 10.0 + elapsed * 1.0;
    let bound = requests as f64 * 1.2 + floor;
    assert!(
        (attempts as f64) <= bound,
        "{attempts} attempts for {requests} requests (bound {bound:.1})"
    );
    // Without a budget, 10 attempts each would have been 1000.
    assert!(attempts < 200);
}

#[tokio::test]
async fn key_file_rotation_needs_no_new_client() {
    let m = mock(
        "auth = \"listed\"\n[[keys]]\nkey = \"sk-rotate-first-0001\"\nname = \"first\"\n[[keys]]\nkey = \"sk-rotate-second-002\"\nname = \"second\"\n",
    )
    .await;
    let dir = std::env::temp_dir().join(format!("sluice-rot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("openai-key");
    std::fs::write(&path, "sk-rotate-first-0001\n").unwrap();
    let c = Client::builder()
        .base_url(m.base_url())
        .api_key_file(&path)
        .build()
        .unwrap();
    c.chat().create(hello()).await.unwrap();
    std::fs::write(&path, "sk-rotate-second-002\n").unwrap();
    c.chat().create(hello()).await.unwrap();
    let s = m.stats();
    assert_eq!(s.by_key["first"], 1);
    assert_eq!(s.by_key["second"], 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn secrets_stay_out_of_debug_and_errors() {
    let m = mock("auth = \"listed\"\n").await;
    let secret = "sk-very-secret-value-424242";
    let c = Client::builder()
        .base_url(m.base_url())
        .api_key(secret)
        .build()
        .unwrap();
    assert!(!format!("{c:?}").contains(secret));
    let e = c.chat().create(hello()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Authentication);
    assert!(!format!("{e:?}").contains(secret));
    assert!(!e.to_string().contains(secret));
}

#[tokio::test]
async fn undecodable_success_body_is_a_decode_error() {
    let m = mock("").await;
    let c = Client::builder()
        .base_url(format!("http://{}/_mock", m.addr()))
        .api_key(KEY)
        .build()
        .unwrap();
    let e = c
        .request(http::Method::GET, "/health", None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn bad_configuration_is_reported() {
    let e = Client::builder()
        .base_url("not a url")
        .api_key(KEY)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    let e = Client::builder()
        .base_url("ftp://example.invalid")
        .api_key(KEY)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
}

/// An `https://` base URL is spoken to in TLS (the first byte the server reads is a TLS
/// handshake record), and a server that answers in plain HTTP is a connection error, not an
/// answer.
#[tokio::test]
async fn https_base_urls_are_spoken_to_in_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut first = [0u8; 1];
        s.read_exact(&mut first).await.unwrap();
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            .await;
        first[0]
    });
    let c = Client::builder()
        .base_url(format!("https://{addr}/v1"))
        .api_key(KEY)
        .max_attempts(1)
        .build()
        .unwrap();
    let e = c.chat().create(hello()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert_eq!(server.await.unwrap(), 0x16, "a TLS handshake record");
}
