//! The floors on hyper alone (hyper's HTTP/1 server, hyper-util's pooled client), without
//! axum's router or reqwest's layers: what any HTTP hop on this machine costs.
//!
//! Two of them, because a forwarder can do less than forward. `forward-hyper` (the floor the
//! gateway's targets were first measured against) sends the body on with fixed headers and
//! answers with the upstream's status and body under a content type of its own: the upstream's
//! headers — `x-request-id`, the rate-limit counts, `openai-*` — never reach the caller.
//! `forward-pass` is the same hop made transparent, as the gateway must be and any proxy in
//! front of this API is (the SDKs read those headers): the caller's headers go up and the
//! upstream's come back, less the hop-by-hop ones and sluice's own namespace
//! ([`sluice::stays_behind`], the gateway's rule), with the upstream key in place of the
//! caller's. Both maps are moved through, not copied, so it is the cheapest transparent hop;
//! measured, it costs what `forward-hyper` does (bench/RESULTS.md), so the first floor was
//! not a lighter job, and two floors of one cost measured in turn show the noise of a run.

use std::convert::Infallible;

use axum::body::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};

type Upstream = Client<HttpConnector, Full<Bytes>>;

/// Whether the floor passes headers both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Headers {
    /// Fixed headers up, none of the upstream's back (`forward-hyper`).
    Dropped,
    /// The caller's up and the upstream's back, less what stays behind (`forward-pass`).
    Passed,
}

const UPSTREAM_KEY: &str = "Bearer sk-bench-upstream-001";

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Leave out of `h` the headers that stay behind, in place: the map is moved through, not
/// copied, so that this floor is the cheapest transparent hop (when nothing but the framing
/// header needs to go, as for nearly every message, the search allocates nothing).
fn strip(h: &mut HeaderMap) {
    let listed = sluice::connection_listed(h);
    let behind: Vec<HeaderName> = h
        .keys()
        .filter(|n| *n != CONTENT_LENGTH && sluice::stays_behind(n, &listed))
        .cloned()
        .collect();
    for name in behind {
        h.remove(name);
    }
    h.remove(CONTENT_LENGTH);
}

async fn forward(
    client: Upstream,
    upstream: &'static str,
    headers: Headers,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let path = path.strip_prefix("/v1").unwrap_or(path);
    let Ok(uri) = format!("{upstream}{path}").parse::<Uri>() else {
        return Ok(reply(StatusCode::BAD_REQUEST, Bytes::new()));
    };
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return Ok(reply(StatusCode::BAD_REQUEST, Bytes::new()));
    };
    // The dropping floor's request is built as it always was, so that its figures stay
    // comparable with those recorded before the passing one existed.
    let out = match headers {
        Headers::Dropped => Request::post(uri)
            .header("content-type", "application/json")
            .header("authorization", UPSTREAM_KEY)
            .body(Full::new(body)),
        Headers::Passed => Request::post(uri).body(Full::new(body)).map(|mut out| {
            let mut headers = parts.headers;
            strip(&mut headers);
            headers.remove(HOST);
            headers.insert(AUTHORIZATION, HeaderValue::from_static(UPSTREAM_KEY));
            *out.headers_mut() = headers;
            out
        }),
    };
    let Ok(out) = out else {
        return Ok(reply(StatusCode::BAD_GATEWAY, Bytes::new()));
    };
    let Ok(resp) = client.request(out).await else {
        return Ok(reply(StatusCode::BAD_GATEWAY, Bytes::new()));
    };
    let (parts, body) = resp.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return Ok(reply(StatusCode::BAD_GATEWAY, Bytes::new()));
    };
    Ok(match headers {
        Headers::Dropped => reply(parts.status, body),
        Headers::Passed => {
            let mut headers = parts.headers;
            strip(&mut headers);
            let mut r = Response::new(Full::new(body));
            *r.status_mut() = parts.status;
            *r.headers_mut() = headers;
            r
        }
    })
}

/// Run a floor: `NAME LISTEN UPSTREAM_BASE` from the command line; prints
/// `forward listening on http://ADDR/v1` and serves until killed.
pub fn run(name: &str, headers: Headers) {
    let a: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (a.get(1), a.get(2)) else {
        eprintln!("{name} LISTEN UPSTREAM_BASE");
        std::process::exit(2);
    };
    let upstream: &'static str = upstream.trim_end_matches('/').to_string().leak();
    let rt = crate::runtime();
    rt.block_on(async move {
        let listener = crate::forward_listener(listen).await;
        // A clean exit on SIGTERM, so that an instrumented build writes its profile
        // (bench/pgo.sh); killed by the signal's default action, it would not.
        tokio::spawn(async {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                term.recv().await;
                std::process::exit(0);
            }
        });
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Upstream = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(2048)
            .build(connector);
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let client = client.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    forward(client.clone(), upstream, headers, req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
}
