//! A second floor, below `forward`: the same bare forwarding on hyper alone (hyper's HTTP/1
//! server, hyper-util's pooled client), without axum's router or reqwest's layers (redirect
//! policy, proxy matching, URL re-parsing). What this adds over direct is what any HTTP hop on
//! this machine costs.
//!
//!   forward-hyper LISTEN UPSTREAM_BASE    prints "forward listening on http://ADDR/v1"

use std::convert::Infallible;

use axum::body::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};

type Upstream = Client<HttpConnector, Full<Bytes>>;

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

async fn forward(
    client: Upstream,
    upstream: &'static str,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let path = path.strip_prefix("/v1").unwrap_or(path);
    let Ok(uri) = format!("{upstream}{path}").parse::<Uri>() else {
        return Ok(reply(StatusCode::BAD_REQUEST, Bytes::new()));
    };
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return Ok(reply(StatusCode::BAD_REQUEST, Bytes::new()));
    };
    let Ok(out) = Request::post(uri)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench-upstream-001")
        .body(Full::new(body))
    else {
        return Ok(reply(StatusCode::BAD_GATEWAY, Bytes::new()));
    };
    let Ok(resp) = client.request(out).await else {
        return Ok(reply(StatusCode::BAD_GATEWAY, Bytes::new()));
    };
    let status = resp.status();
    match resp.into_body().collect().await {
        Ok(b) => Ok(reply(status, b.to_bytes())),
        Err(_) => Ok(reply(StatusCode::BAD_GATEWAY, Bytes::new())),
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (a.get(1), a.get(2)) else {
        eprintln!("forward-hyper LISTEN UPSTREAM_BASE");
        std::process::exit(2);
    };
    let upstream: &'static str = upstream.trim_end_matches('/').to_string().leak();
    let rt = sluice_bench::runtime();
    rt.block_on(async move {
        let listener = sluice_bench::forward_listener(listen).await;
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
                let svc =
                    hyper::service::service_fn(move |req| forward(client.clone(), upstream, req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
}
