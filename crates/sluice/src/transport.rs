//! One pooled HTTP client (reqwest over hyper, rustls, HTTP/1.1 keep-alive and HTTP/2, TCP
//! nodelay) and the phase timeouts around a single attempt: connect (inside reqwest), first
//! byte (send until headers), idle (between body chunks) — each bounded by the request's total
//! deadline, and each its own error kind.
//!
//! The pool is sized by configuration and never has a hidden wait of its own: concurrency above
//! it is the admission layer's to queue.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, Method};
use tokio::time::Instant;

use crate::config::Timeouts;
use crate::error::{Error, ErrorKind};

/// Largest error or JSON body read into memory.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// Transport settings.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub timeouts: Timeouts,
    /// Idle connections kept per host. Default 256.
    pub pool_max_idle_per_host: usize,
    /// How long an idle pooled connection is kept. Default 90 s.
    pub pool_idle_timeout: Option<Duration>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            timeouts: Timeouts::default(),
            pool_max_idle_per_host: 256,
            pool_idle_timeout: Some(Duration::from_secs(90)),
        }
    }
}

/// The HTTP client and the base URL it talks to.
#[derive(Debug, Clone)]
pub struct Transport {
    http: reqwest::Client,
    base_url: String,
    /// Parsed URLs by path: parsing a URL costs more than the rest of building a request, and
    /// a client calls few distinct paths.
    urls: std::sync::Arc<std::sync::RwLock<std::collections::HashMap<String, reqwest::Url>>>,
}

impl Transport {
    pub fn new(base_url: &str, cfg: &TransportConfig) -> Result<Self, Error> {
        let base = base_url.trim_end_matches('/');
        let parsed = reqwest::Url::parse(base).map_err(|e| {
            Error::new(ErrorKind::Config, format!("invalid base URL {base:?}: {e}"))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::new(
                ErrorKind::Config,
                format!("base URL {base:?} must be http or https"),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.timeouts.connect)
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .tcp_nodelay(true)
            // An API does not redirect; following one would carry the key to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Config, "cannot build the HTTP client").with_source(e)
            })?;
        Ok(Transport {
            http,
            base_url: base.to_string(),
            urls: Default::default(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn url(&self, path: &str) -> Result<reqwest::Url, Error> {
        if let Some(u) = self
            .urls
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
        {
            return Ok(u.clone());
        }
        let u = reqwest::Url::parse(&format!("{}{}", self.base_url, path)).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("invalid request path {path:?}: {e}"),
            )
            .with_retryable(false)
        })?;
        let mut urls = self.urls.write().unwrap_or_else(|p| p.into_inner());
        // Paths come from code and configuration, but `client.request` takes any: bound it.
        if urls.len() < 256 {
            urls.insert(path.to_string(), u.clone());
        }
        Ok(u)
    }

    /// Send one attempt and wait for the response headers, within `first_byte` and the
    /// deadline.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Option<Bytes>,
        first_byte: Duration,
        deadline: Instant,
    ) -> Result<reqwest::Response, Error> {
        let url = self.url(path)?;
        let mut req = self.http.request(method, url).headers(headers);
        if let Some(b) = body {
            req = req.body(b);
        }
        let (limit, kind) = phase_limit(first_byte, deadline, ErrorKind::TimeoutFirstByte);
        match tokio::time::timeout(limit, req.send()).await {
            Err(_) => Err(Error::new(
                kind,
                format!("no response headers within {:.3}s", limit.as_secs_f64()),
            )),
            Ok(Err(e)) => Err(classify_reqwest(e)),
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

/// The time allowed for a phase: its own timeout or what is left of the deadline, whichever is
/// shorter, and the error kind to report if it runs out.
pub fn phase_limit(phase: Duration, deadline: Instant, kind: ErrorKind) -> (Duration, ErrorKind) {
    let left = deadline.saturating_duration_since(Instant::now());
    if left < phase {
        (left, ErrorKind::TimeoutTotal)
    } else {
        (phase, kind)
    }
}

/// Map a reqwest error to a kind. Connect timeouts and refusals are told apart from failures
/// after the connection was up (resets, early closes).
pub fn classify_reqwest(e: reqwest::Error) -> Error {
    let (kind, what) = if e.is_connect() && e.is_timeout() {
        (ErrorKind::TimeoutConnect, "connect timed out")
    } else if e.is_connect() {
        (ErrorKind::Connection, "cannot connect")
    } else if e.is_timeout() {
        (ErrorKind::TimeoutFirstByte, "timed out")
    } else if e.is_builder() {
        (ErrorKind::Config, "cannot build the request")
    } else if e.is_decode() {
        (ErrorKind::Decode, "cannot decode the response")
    } else {
        (ErrorKind::Connection, "connection failed")
    };
    // reqwest's Display includes the URL (never a key: keys travel in headers).
    let msg = format!("{what}: {}", error_chain(&e));
    Error::new(kind, msg).with_source(e)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Read a whole body, with the idle timeout between chunks and the deadline overall.
pub async fn read_body(
    resp: reqwest::Response,
    idle: Duration,
    deadline: Instant,
    max: usize,
) -> Result<Bytes, Error> {
    let mut stream = resp.bytes_stream();
    let mut buf = BytesMut::new();
    loop {
        let (limit, kind) = phase_limit(idle, deadline, ErrorKind::TimeoutIdle);
        match tokio::time::timeout(limit, stream.next()).await {
            Err(_) => {
                return Err(Error::new(
                    kind,
                    format!("body stalled for {:.3}s", limit.as_secs_f64()),
                ))
            }
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) => {
                return Err(Error::new(
                    ErrorKind::Connection,
                    format!("body cut short: {}", error_chain(&e)),
                )
                .with_source(e))
            }
            Ok(Some(Ok(chunk))) => {
                if buf.len() + chunk.len() > max {
                    return Err(Error::new(
                        ErrorKind::Decode,
                        format!("response body larger than {max} bytes"),
                    ));
                }
                buf.extend_from_slice(&chunk);
            }
        }
    }
}
