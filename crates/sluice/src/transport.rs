//! One pooled HTTP client (hyper-util's pooled client over rustls, HTTP/1.1 keep-alive and
//! HTTP/2 by ALPN, TCP nodelay) and the phase timeouts around a single attempt: connect (inside
//! the connector), first byte (send until headers), idle (between body chunks) — each bounded by
//! the request's total deadline, and each its own error kind.
//!
//! Why not reqwest, which wraps the same client: per request it re-parses the URL twice (its
//! redirect layer and its response, even with redirects off), matches proxies and runs a stack of
//! tower layers — measured at ~25–40k instructions a request in the gateway, as much as all of
//! sluice's own bookkeeping (bench/RESULTS.md). reqwest is still used when the environment names
//! a proxy (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, any case), because it knows how to tunnel
//! through one and honours `NO_PROXY`.
//!
//! The pool is sized by configuration and never has a hidden wait of its own: concurrency above
//! it is the admission layer's to queue.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use http::{HeaderMap, Method, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use crate::config::Timeouts;
use crate::error::{Error, ErrorKind};

/// Largest error or JSON body read into memory.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// Any error a response body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An upstream answer: status, headers, and its body as it arrives.
pub type Response = http::Response<BoxBody<Bytes, BoxError>>;

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

/// A request body sent as it arrives (a large upload a gateway does not hold in memory).
pub type Upload = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// What an attempt sends: bytes held in memory (sent again on a retry) or an upload that can be
/// sent once.
#[derive(Debug)]
pub enum Payload {
    Bytes(Option<Bytes>),
    Stream(Upload),
}

type DirectBody = http_body_util::Either<Full<Bytes>, Upload>;

type Direct =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, DirectBody>;

#[derive(Debug, Clone)]
enum Http {
    Direct(Box<Direct>),
    /// Through the proxy the environment names.
    Proxied(reqwest::Client),
}

/// The HTTP client and the base URL it talks to.
#[derive(Debug, Clone)]
pub struct Transport {
    http: Http,
    base_url: String,
    /// Parsed targets by path: a client calls few distinct paths.
    uris: Arc<RwLock<rustc_hash::FxHashMap<String, Arc<Target>>>>,
}

/// A request path's URI (the direct client) and URL (reqwest, when proxied), parsed once, and
/// the `Host` header its URI implies.
#[derive(Debug)]
struct Target {
    uri: Uri,
    url: reqwest::Url,
    /// What hyper-util's client would otherwise write on every request (`host[:port]`, the
    /// port only when it is not the scheme's): made once here, it is a reference count.
    host: Option<http::HeaderValue>,
}

/// The `Host` header of `uri`, as hyper-util's client writes it.
fn host_header(uri: &Uri) -> Option<http::HeaderValue> {
    let host = uri.host()?;
    let default = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    let value = match uri.port_u16().filter(|&p| p != default) {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    http::HeaderValue::try_from(value).ok()
}

/// Whether the environment names a proxy for outgoing requests.
fn proxy_in_env() -> bool {
    ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"].iter().any(|v| {
        [v.to_string(), v.to_ascii_lowercase()]
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|s| !s.is_empty()))
    })
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
        let http = if proxy_in_env() {
            Http::Proxied(
                reqwest::Client::builder()
                    .connect_timeout(cfg.timeouts.connect)
                    .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
                    .pool_idle_timeout(cfg.pool_idle_timeout)
                    .tcp_nodelay(true)
                    // An API does not redirect; following one would carry the key to another host.
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| {
                        Error::new(ErrorKind::Config, "cannot build the HTTP client").with_source(e)
                    })?,
            )
        } else {
            let mut tcp = HttpConnector::new();
            tcp.set_connect_timeout(Some(cfg.timeouts.connect));
            tcp.set_nodelay(true);
            tcp.enforce_http(false);
            // The ring provider named, as `doctor` does: rustls's process default panics when
            // more than one provider is compiled in.
            let provider = tokio_rustls::rustls::crypto::ring::default_provider();
            let tls = hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_webpki_roots(provider)
                .map_err(|e| Error::new(ErrorKind::Config, "cannot set up TLS").with_source(e))?
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(tcp);
            let mut b = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
            b.pool_max_idle_per_host(cfg.pool_max_idle_per_host)
                .pool_idle_timeout(cfg.pool_idle_timeout)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new());
            Http::Direct(Box::new(b.build(tls)))
        };
        Ok(Transport {
            http,
            base_url: base.to_string(),
            uris: Default::default(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn target(&self, path: &str) -> Result<Arc<Target>, Error> {
        if let Some(t) = self
            .uris
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
        {
            return Ok(t.clone());
        }
        let full = format!("{}{}", self.base_url, path);
        let invalid = |e: &dyn std::fmt::Display| {
            Error::new(
                ErrorKind::Config,
                format!("invalid request path {path:?}: {e}"),
            )
            .with_retryable(false)
        };
        let uri: Uri = full.parse().map_err(|e| invalid(&e))?;
        let t = Arc::new(Target {
            host: host_header(&uri),
            uri,
            url: reqwest::Url::parse(&full).map_err(|e| invalid(&e))?,
        });
        let mut uris = self.uris.write().unwrap_or_else(|p| p.into_inner());
        // Paths come from code and configuration, but `client.request` takes any: bound it.
        if uris.len() < 256 {
            uris.insert(path.to_string(), t.clone());
        }
        Ok(t)
    }

    /// Send one attempt and wait for the response headers, within `first_byte` and the
    /// deadline.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Payload,
        first_byte: Duration,
        deadline: Instant,
    ) -> Result<Response, Error> {
        let target = self.target(path)?;
        let (limit, kind) = phase_limit(first_byte, deadline, ErrorKind::TimeoutFirstByte);
        let timed_out = || {
            Error::new(
                kind,
                format!("no response headers within {:.3}s", limit.as_secs_f64()),
            )
        };
        match &self.http {
            Http::Direct(client) => {
                let body = match body {
                    Payload::Bytes(b) => {
                        http_body_util::Either::Left(Full::new(b.unwrap_or_default()))
                    }
                    Payload::Stream(u) => http_body_util::Either::Right(u),
                };
                let mut req = http::Request::new(body);
                *req.method_mut() = method;
                *req.uri_mut() = target.uri.clone();
                *req.headers_mut() = headers;
                if let Some(host) = &target.host {
                    // One lookup, not two (the caller's `Host` never gets this far).
                    req.headers_mut()
                        .entry(http::header::HOST)
                        .or_insert_with(|| host.clone());
                }
                match tokio::time::timeout(limit, client.request(req)).await {
                    Err(_) => Err(timed_out()),
                    Ok(Err(e)) => Err(classify_hyper(e)),
                    Ok(Ok(resp)) => Ok(resp.map(|b| b.map_err(BoxError::from).boxed())),
                }
            }
            Http::Proxied(client) => {
                let mut req = client.request(method, target.url.clone()).headers(headers);
                match body {
                    Payload::Bytes(Some(b)) => req = req.body(b),
                    Payload::Bytes(None) => {}
                    Payload::Stream(u) => {
                        req = req.body(reqwest::Body::wrap_stream(
                            http_body_util::BodyDataStream::new(u),
                        ))
                    }
                }
                match tokio::time::timeout(limit, req.send()).await {
                    Err(_) => Err(timed_out()),
                    Ok(Err(e)) => Err(classify_reqwest(e)),
                    Ok(Ok(resp)) => {
                        let resp: http::Response<reqwest::Body> = resp.into();
                        Ok(resp.map(|b| b.map_err(BoxError::from).boxed()))
                    }
                }
            }
        }
    }
}

/// Await `fut` within the time `limit` gives, the timer made only if `fut` is not ready when
/// first polled. Why: most of what is read under a timeout has arrived by the time it is read
/// (an answer's one body frame and its end, a small request body), and a timer made and dropped
/// for each costs a clock read and a timer entry every time; one that is pending gets its timer
/// at once, from that first poll, as `tokio::time::timeout` would.
pub async fn within<F: std::future::Future>(
    fut: F,
    limit: impl FnOnce() -> Duration,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut fut = std::pin::pin!(fut);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await;
    match first {
        std::task::Poll::Ready(v) => Ok(v),
        std::task::Poll::Pending => tokio::time::timeout(limit(), fut).await,
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

/// Map a client error to a kind. Connect timeouts and refusals are told apart from failures
/// after the connection was up (resets, early closes).
fn classify_hyper(e: hyper_util::client::legacy::Error) -> Error {
    let timed_out = {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        let mut found = false;
        while let Some(c) = cur {
            if c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            {
                found = true;
                break;
            }
            cur = c.source();
        }
        found
    };
    let (kind, what) = if e.is_connect() && timed_out {
        (ErrorKind::TimeoutConnect, "connect timed out")
    } else if e.is_connect() {
        (ErrorKind::Connection, "cannot connect")
    } else {
        (ErrorKind::Connection, "connection failed")
    };
    let msg = format!("{what}: {}", error_chain(&e));
    Error::new(kind, msg).with_source(e)
}

/// Map a reqwest error (the proxied path) to a kind, as `classify_hyper` does.
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

/// A response's body as a stream of chunks.
pub fn byte_stream(resp: Response) -> BoxStream<'static, Result<Bytes, BoxError>> {
    resp.into_body().into_data_stream().boxed()
}

/// Read a whole body, with the idle timeout between chunks and the deadline overall. A body
/// that arrives in one chunk (most JSON answers) is returned as it came, without a copy.
pub async fn read_body(
    resp: Response,
    idle: Duration,
    deadline: Instant,
    max: usize,
) -> Result<Bytes, Error> {
    // The body's frames read as they are (trailers skipped), not through a boxed stream.
    let mut body = resp.into_body();
    let mut pieces = Pieces::default();
    loop {
        let mut kind = ErrorKind::TimeoutIdle;
        let mut limit = Duration::ZERO;
        let next = async {
            loop {
                match http_body_util::BodyExt::frame(&mut body).await {
                    Some(Ok(f)) => match f.into_data() {
                        Ok(chunk) => return Some(Ok(chunk)),
                        Err(_trailers) => continue,
                    },
                    Some(Err(e)) => return Some(Err(e)),
                    None => return None,
                }
            }
        };
        let timed = within(next, || {
            (limit, kind) = phase_limit(idle, deadline, ErrorKind::TimeoutIdle);
            limit
        });
        match timed.await {
            Err(_) => {
                return Err(Error::new(
                    kind,
                    format!("body stalled for {:.3}s", limit.as_secs_f64()),
                ))
            }
            Ok(None) => return Ok(pieces.whole()),
            Ok(Some(Err(e))) => {
                return Err(Error::new(
                    ErrorKind::Connection,
                    format!("body cut short: {}", error_chain(&*e)),
                )
                .with_source(e))
            }
            Ok(Some(Ok(chunk))) => {
                if pieces.len() + chunk.len() > max {
                    return Err(Error::new(
                        ErrorKind::Decode,
                        format!("response body larger than {max} bytes"),
                    ));
                }
                pieces.push(chunk);
            }
        }
    }
}

/// A body's pieces, gathered as they arrive: the first is kept as it came, so that a body of
/// one piece (most JSON, an answer's or a request's) comes back whole without a copy. Its
/// methods are marked inline: the gateway calls them from another crate on every request.
#[derive(Debug, Default)]
pub struct Pieces {
    first: Option<Bytes>,
    rest: BytesMut,
}

impl Pieces {
    /// Bytes gathered so far.
    #[inline]
    pub fn len(&self) -> usize {
        self.first.as_ref().map_or(0, Bytes::len) + self.rest.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub fn push(&mut self, chunk: Bytes) {
        match self.first.take() {
            None if self.rest.is_empty() => self.first = Some(chunk),
            held => {
                if let Some(b) = held {
                    self.rest.extend_from_slice(&b);
                }
                self.rest.extend_from_slice(&chunk);
            }
        }
    }

    /// The whole body.
    #[inline]
    pub fn whole(self) -> Bytes {
        match self.first {
            Some(b) => b,
            None => self.rest.freeze(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer whose body is `chunks` and then, if `stall`, nothing for good.
    fn answer(chunks: &[&'static [u8]], stall: bool) -> Response {
        let frames: Vec<Result<hyper::body::Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(hyper::body::Frame::data(Bytes::from_static(c))))
            .collect();
        let frames_then = if stall { usize::MAX } else { frames.len() };
        let stream = futures_util::stream::iter(frames)
            .chain(futures_util::stream::pending())
            .take(frames_then);
        http::Response::new(BodyExt::boxed(http_body_util::StreamBody::new(stream)))
    }

    #[tokio::test(start_paused = true)]
    async fn within_makes_no_timer_for_what_is_ready_and_times_what_is_not() {
        let asked = std::cell::Cell::new(false);
        let ready = within(async { 7 }, || {
            asked.set(true);
            Duration::ZERO
        });
        assert_eq!(ready.await.ok(), Some(7));
        assert!(!asked.get(), "no limit is asked for a ready future");

        let t0 = Instant::now();
        let pending = within(std::future::pending::<()>(), || Duration::from_secs(3));
        assert!(pending.await.is_err());
        assert_eq!(t0.elapsed(), Duration::from_secs(3));

        // Pending at first, ready before its limit.
        let later = within(tokio::time::sleep(Duration::from_secs(1)), || {
            Duration::from_secs(2)
        });
        assert!(later.await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_fails_after_the_idle_timeout_and_one_that_does_not_is_whole() {
        let deadline = Instant::now() + Duration::from_secs(60);
        let whole = read_body(
            answer(&[b"{\"a\":", b"1}"], false),
            Duration::from_secs(5),
            deadline,
            1024,
        )
        .await
        .unwrap();
        assert_eq!(&whole[..], b"{\"a\":1}");

        let t0 = Instant::now();
        let e = read_body(
            answer(&[b"{\"a\":"], true),
            Duration::from_secs(5),
            deadline,
            1024,
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimeoutIdle);
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
        assert!(e.to_string().contains("stalled for 5.000s"), "{e}");

        // The deadline nearer than the idle timeout: the deadline's kind, at the deadline.
        let t0 = Instant::now();
        let soon = t0 + Duration::from_secs(2);
        let e = read_body(answer(&[], true), Duration::from_secs(5), soon, 1024)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimeoutTotal);
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
    }

    #[test]
    fn the_host_header_is_what_the_client_would_write() {
        let host = |u: &str| {
            host_header(&u.parse::<Uri>().unwrap()).map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(
            host("http://127.0.0.1:8080/v1/chat/completions").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(
            host("https://api.openai.com/v1/models").as_deref(),
            Some("api.openai.com")
        );
        assert_eq!(
            host("http://example.com:80/v1").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            host("https://example.com:443/v1").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            host("https://example.com:80/v1").as_deref(),
            Some("example.com:80")
        );
        assert_eq!(
            host("http://user:secret@example.com:9000/v1").as_deref(),
            Some("example.com:9000")
        );
        assert_eq!(host("http://[::1]:9000/v1").as_deref(), Some("[::1]:9000"));
    }
}
