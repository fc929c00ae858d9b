//! The floor for a gateway's added latency: a bare forwarder on the same stack as `sluice serve`
//! (axum server, reqwest client, same pooling) that passes each POST's body upstream and the
//! answer back — no parsing, admission, retries, key choice, policy, cost or logs. Measured in
//! the gateway's place, it separates what the extra loopback hop costs from what sluice's work
//! costs.
//!
//!   forward LISTEN UPSTREAM_BASE      prints "forward listening on http://ADDR/v1"

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};

#[derive(Clone)]
struct App {
    client: reqwest::Client,
    upstream: String,
}

async fn forward(State(app): State<App>, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().strip_prefix("/v1").unwrap_or(uri.path());
    let sent = app
        .client
        .post(format!("{}{path}", app.upstream))
        .header("content-type", "application/json")
        .bearer_auth("sk-bench-upstream-001")
        .body(body)
        .send()
        .await;
    match sent {
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            match r.bytes().await {
                Ok(b) => (status, [("content-type", "application/json")], b).into_response(),
                Err(_) => StatusCode::BAD_GATEWAY.into_response(),
            }
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (a.get(1), a.get(2)) else {
        eprintln!("forward LISTEN UPSTREAM_BASE");
        std::process::exit(2);
    };
    let rt = sluice_bench::runtime();
    let app = App {
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(2048)
            .build()
            .unwrap_or_default(),
        upstream: upstream.trim_end_matches('/').to_string(),
    };
    rt.block_on(async move {
        let listener = sluice_bench::forward_listener(listen).await;
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let router = axum::Router::new()
            .fallback(axum::routing::post(forward))
            .with_state(app);
        let _ = axum::serve(listener, router).await;
    });
}
