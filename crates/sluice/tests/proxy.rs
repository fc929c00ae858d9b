//! When the environment names a proxy, requests go through it (the proxied transport). In its
//! own test binary: the proxy variable is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sluice::{ChatMessage, ChatRequest, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn requests_go_through_the_proxy_the_environment_names() {
    // A proxy that reads one request and answers it itself.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let seen = tokio::spawn(async move {
        let (mut s, _) = proxy.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let body = r#"{"id":"x","object":"chat.completion","created":0,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"via proxy"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
        let _ = s
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
        String::from_utf8_lossy(&got).to_string()
    });
    std::env::set_var("HTTP_PROXY", format!("http://{proxy_addr}"));
    // The upstream itself is never reached: nothing listens there.
    let upstream = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let c = Client::builder()
        .base_url(format!("http://{upstream}/v1"))
        .api_key("sk-proxy-test-0001")
        .max_attempts(1)
        .build()
        .unwrap();
    let r = c
        .chat()
        .create(ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user("hi")]).max_tokens(5))
        .await
        .unwrap();
    assert_eq!(r.text(), Some("via proxy"));
    let head = seen.await.unwrap();
    assert!(
        head.starts_with(&format!("POST http://{upstream}/v1/chat/completions ")),
        "absolute-form request line to the proxy: {head}"
    );
}
