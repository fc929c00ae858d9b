//! `sluice mock --demo`: one chat request to a running simulator over a plain HTTP/1.1
//! connection, printed as it went. A self-check that needs no client library and no key.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Send one chat completion request to `addr` and return a printable transcript.
pub async fn exchange(addr: SocketAddr) -> std::io::Result<String> {
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to sluice."}],"max_tokens":32}"#;
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer sk-demo-key-0000\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut out = format!("> POST http://{addr}/v1/chat/completions\n> {body}\n\n");
    for line in head.lines() {
        let l = line.to_ascii_lowercase();
        if l.starts_with("http/") || l.starts_with("x-ratelimit") || l.starts_with("x-request-id") {
            out.push_str(&format!("< {line}\n"));
        }
    }
    let pretty = serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| payload.to_string());
    out.push_str(&format!("<\n{pretty}"));
    Ok(out)
}
