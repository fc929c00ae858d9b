//! The gateway's edges, tried as an attacker would, in front of a recording upstream that sees
//! every request that gets through: non-canonical paths, methods the route table does not list,
//! `TRACE`, traversal, a restricted key on every route sluice cannot price, `stream: true` on
//! a route that cannot stream, the upstream rejecting the gateway's own key. None of them may
//! reach the upstream; the routes a key is allowed do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{json, Value};
use sluice_gateway::{Gateway, GatewayConfig, LedgerSetting};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the upstream saw: method and path (with query) of every request.
type Seen = Arc<Mutex<Vec<String>>>;
/// The headers and body of every request.
type Got = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// An upstream that records every request and answers like OpenAI would for the few it knows;
/// `sk-upstream-bad…` keys get OpenAI's 401 with the key's tail in the message.
async fn upstream() -> (String, Seen) {
    let (url, seen, _) = recording_upstream().await;
    (url, seen)
}

async fn recording_upstream() -> (String, Seen, Got) {
    let seen: Seen = Arc::default();
    let got: Got = Arc::default();
    let s = seen.clone();
    let g = got.clone();
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let s = s.clone();
        let g = g.clone();
        async move {
            s.lock().unwrap().push(format!("{method} {uri}"));
            g.lock().unwrap().push((headers.clone(), body.clone()));
            let key = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if key.contains("sk-upstream-bad") {
                return (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"error": {"message": "Incorrect API key provided: sk-upstr*****0001.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})),
                )
                    .into_response();
            }
            let asked: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if uri.path() == "/v1/chat/completions" && asked["stream"] == true {
                // An upstream that writes its JSON with spaces, as some compatible servers do.
                let mut sse = String::new();
                for word in ["Hello", " there"] {
                    sse.push_str(&format!("data: {{\"id\": \"c1\", \"object\": \"chat.completion.chunk\", \"choices\": [{{\"index\": 0, \"delta\": {{\"content\": \"{word}\"}}, \"finish_reason\": null}}], \"usage\": null}}\n\n"));
                }
                sse.push_str("data: {\"id\": \"c1\", \"object\": \"chat.completion.chunk\", \"choices\": [{\"index\": 0, \"delta\": {}, \"finish_reason\": \"stop\"}], \"usage\": null}\n\n");
                sse.push_str("data: {\"id\": \"c1\", \"object\": \"chat.completion.chunk\", \"choices\": [], \"usage\": {\"prompt_tokens\": 9, \"completion_tokens\": 2, \"total_tokens\": 11}}\n\n");
                sse.push_str("data: [DONE]\n\n");
                return ([("content-type", "text/event-stream")], sse).into_response();
            }
            if uri.path() == "/v1/responses" && asked["stream"] == true {
                // The Responses API's framing: named events, sequence numbers, no [DONE].
                let events = [
                    ("response.created", json!({"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1", "object": "response", "status": "in_progress"}})),
                    ("response.output_text.delta", json!({"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Hi"})),
                    ("response.completed", json!({"type": "response.completed", "sequence_number": 2, "response": {"id": "resp_1", "object": "response", "status": "completed",
                        "usage": {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 1}, "total_tokens": 15}}})),
                ];
                let mut sse = String::from(": a comment the upstream sends\n\n");
                for (name, data) in events {
                    sse.push_str(&format!("event: {name}\nid: {}\ndata: {data}\n\n", data["sequence_number"]));
                }
                return ([("content-type", "text/event-stream"), ("x-ratelimit-remaining-requests", "99")], sse).into_response();
            }
            if uri.path() == "/v1/images/generations" && asked["stream"] == true {
                // A named-event stream that ends with the body.
                let sse = "event: image_generation.partial_image\ndata: {\"type\":\"image_generation.partial_image\",\"partial_image_index\":0,\"b64_json\":\"AAAA\"}\n\nevent: image_generation.completed\ndata: {\"type\":\"image_generation.completed\",\"b64_json\":\"BBBB\",\"usage\":{\"input_tokens\":5,\"output_tokens\":100,\"total_tokens\":105}}\n\n";
                return ([("content-type", "text/event-stream")], sse).into_response();
            }
            if uri.path() == "/v1/models" {
                return axum::Json(json!({"object": "list", "data": [
                    {"id": "gpt-4o-mini", "object": "model", "created": 1, "owned_by": "openai"},
                    {"id": "gpt-4o", "object": "model", "created": 1, "owned_by": "openai"},
                    {"id": "text-embedding-3-small", "object": "model", "created": 1, "owned_by": "openai"},
                ]}))
                .into_response();
            }
            (
                [
                    ("x-ratelimit-limit-requests", "100"),
                    ("x-ratelimit-remaining-requests", "99"),
                    ("openai-organization", "org-upstream"),
                    ("openai-version", "2020-10-01"),
                    ("openai-processing-ms", "12"),
                    ("x-request-id", "req_upstream_1"),
                ],
                axum::Json(json!({"id": "x", "object": "ok"})),
            )
                .into_response()
        }
    });
    let app = app.layer(axum::extract::DefaultBodyLimit::disable());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", l.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (url, seen, got)
}

const KEYS: &str = r#"
[[virtual_keys]]
name = "team-a"
key = "sk-team-a-000001"
models = ["gpt-4o-mini", "text-embedding-3-small"]

[[virtual_keys]]
name = "batcher"
key = "sk-batcher-00001"
models = ["gpt-4o-mini"]
routes = ["batches", "files"]

[[virtual_keys]]
name = "free"
key = "sk-free-0000001"

[models]
aliases = { fast = "gpt-4o-mini" }
"#;

async fn gateway(upstream: &str, upstream_key: &str, extra: &str) -> Gateway {
    gateway_with(upstream, upstream_key, "", extra).await
}

/// `top` goes before the first table (`max_body_bytes = …`), `extra` after the keys.
async fn gateway_with(upstream: &str, upstream_key: &str, top: &str, extra: &str) -> Gateway {
    let mut cfg = GatewayConfig::from_toml(
        "edges.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\n{top}[upstream]\nbase_url = \"{upstream}\"\nkeys = [{{ value = \"{upstream_key}\" }}]\nmax_attempts = 1\n{KEYS}{extra}"
        ),
    )
    .unwrap();
    cfg.spend.ledger = LedgerSetting::Off;
    cfg.models.check_upstream_every = None;
    Gateway::start(cfg).await.unwrap()
}

/// One raw HTTP/1.1 request, exactly as written (no client normalises the path).
async fn raw(
    g: &Gateway,
    method: &str,
    target: &str,
    key: &str,
    body: &str,
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(g.addr()).await.unwrap();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn chat(model: &str) -> String {
    json!({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

#[tokio::test]
async fn paths_methods_and_traversal_never_reach_the_upstream() {
    let (url, seen) = upstream().await;
    let g = gateway(&url, "sk-upstream-good-0001", "").await;
    let body = chat("gpt-4o");
    for (target, want) in [
        ("/v1/chat/completions/", 400),
        ("/v1//chat/completions", 400),
        ("/v1/./chat/completions", 400),
        ("/v1/chat/./completions", 400),
        ("/v1/chat/../chat/completions", 400),
        ("/v1/chat/%2e%2e/chat/completions", 400),
        ("/v1/chat%2fcompletions", 400),
        ("/v1/chat/%63ompletions", 404),
        ("/v1/chat/completions%00", 400),
        ("/v1/no/such/route", 404),
        ("/v1/../v1/chat/completions", 400),
    ] {
        let (status, head, body_text) = raw(&g, "POST", target, "sk-team-a-000001", &body).await;
        assert_eq!(status, want, "{target}: {body_text}");
        assert!(
            head.contains("x-request-id: req_sluice_"),
            "{target}: {head}"
        );
        let v: Value = serde_json::from_str(&body_text).unwrap();
        assert!(v["error"]["message"].is_string(), "{target}: {body_text}");
    }
    for (method, target) in [
        ("PUT", "/v1/chat/completions"),
        ("PATCH", "/v1/embeddings"),
        ("TRACE", "/v1/chat/completions"),
        ("TRACE", "/v1/models"),
        ("PROPFIND", "/v1/models"),
        ("DELETE", "/v1/embeddings"),
    ] {
        let (status, head, _) = raw(&g, method, target, "sk-free-0000001", "").await;
        assert_eq!(status, 405, "{method} {target}");
        if method == "PUT" {
            assert!(head.contains("allow: get, post"), "{head}");
        }
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "reached the upstream: {:?}",
        seen.lock().unwrap()
    );
    // The canonical path with an allowed model does get through.
    let (status, ..) = raw(
        &g,
        "POST",
        "/v1/chat/completions",
        "sk-team-a-000001",
        &chat("gpt-4o-mini"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(seen.lock().unwrap().len(), 1);
    g.shutdown().await;
}

#[tokio::test]
async fn a_restricted_key_is_held_on_every_route_it_cannot_be_limited_on() {
    let (url, seen) = upstream().await;
    let g = gateway(&url, "sk-upstream-good-0001", "").await;
    let key = "sk-team-a-000001";
    for (method, target, body) in [
        ("POST", "/v1/images/generations", json!({"model": "gpt-image-1", "prompt": "x"}).to_string()),
        ("POST", "/v1/batches", json!({"input_file_id": "file-1", "endpoint": "/v1/chat/completions", "completion_window": "24h"}).to_string()),
        ("GET", "/v1/files", String::new()),
        ("POST", "/v1/fine_tuning/jobs", json!({"model": "gpt-4o-mini", "training_file": "file-1"}).to_string()),
        ("DELETE", "/v1/models/ft:gpt-4o-mini:acme::x", String::new()),
        ("POST", "/v1/audio/speech", json!({"model": "gpt-4o-mini-tts", "input": "x", "voice": "alloy"}).to_string()),
        ("POST", "/v1/vector_stores", "{}".to_string()),
        ("GET", "/v1/chat/completions", String::new()),
        ("GET", "/v1/responses/resp_123", String::new()),
        ("POST", "/v1/threads/runs", json!({"assistant_id": "asst_1"}).to_string()),
    ] {
        let (status, _, text) = raw(&g, method, target, key, &body).await;
        assert_eq!(status, 403, "{method} {target}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["code"], "route_not_allowed", "{text}");
    }
    // Routes that name a model: only the key's models (and aliases standing for them).
    for (target, body) in [
        ("/v1/chat/completions", chat("gpt-4o")),
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-large", "input": "x"}).to_string(),
        ),
        (
            "/v1/responses",
            json!({"model": "gpt-4o", "input": "x"}).to_string(),
        ),
        (
            "/v1/completions",
            json!({"model": "gpt-3.5-turbo-instruct", "prompt": "x"}).to_string(),
        ),
    ] {
        let (status, _, text) = raw(&g, "POST", target, key, &body).await;
        assert_eq!(status, 403, "{target}: {text}");
    }
    let (status, ..) = raw(&g, "GET", "/v1/models/gpt-4o", key, "").await;
    assert_eq!(
        status, 404,
        "a model the key cannot use does not exist for it"
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "reached the upstream: {:?}",
        seen.lock().unwrap()
    );

    // A key allowed the family gets through (its model list still holds where the body names one).
    let (status, _, text) = raw(
        &g,
        "POST",
        "/v1/batches",
        "sk-batcher-00001",
        &json!({"input_file_id": "file-1", "endpoint": "/v1/chat/completions", "completion_window": "24h"}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // A key without limits may use any route in the table.
    let (status, ..) = raw(&g, "GET", "/v1/files", "sk-free-0000001", "").await;
    assert_eq!(status, 200);
    let (status, ..) = raw(
        &g,
        "DELETE",
        "/v1/models/ft:gpt-4o-mini:acme::x",
        "sk-free-0000001",
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "POST /v1/batches",
            "GET /v1/files",
            "DELETE /v1/models/ft:gpt-4o-mini:acme::x"
        ]
    );

    // The model list through a restricted key shows its models and the aliases for them.
    let (status, _, text) = raw(&g, "GET", "/v1/models", key, "").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&text).unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gpt-4o-mini", "text-embedding-3-small", "fast"]);
    let (_, _, text) = raw(&g, "GET", "/v1/models", "sk-free-0000001", "").await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["data"].as_array().unwrap().len(),
        3,
        "a key without a list sees everything"
    );
    g.shutdown().await;
}

#[tokio::test]
async fn stream_on_a_route_that_cannot_stream_is_refused_before_sending() {
    let (url, seen) = upstream().await;
    let g = gateway(&url, "sk-upstream-good-0001", "").await;
    let body = json!({"model": "text-embedding-3-small", "input": "x", "stream": true}).to_string();
    let (status, _, text) = raw(&g, "POST", "/v1/embeddings", "sk-team-a-000001", &body).await;
    assert_eq!(status, 400, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["param"], "stream");
    let body = json!({"model": "omni-moderation-latest", "input": "x", "stream": true}).to_string();
    let (status, ..) = raw(&g, "POST", "/v1/moderations", "sk-free-0000001", &body).await;
    assert_eq!(status, 400);
    assert!(seen.lock().unwrap().is_empty());
    g.shutdown().await;
}

#[tokio::test]
async fn the_upstream_rejecting_the_gateway_key_is_a_502_that_names_no_key() {
    let (url, _seen) = upstream().await;
    let g = gateway(&url, "sk-upstream-bad-0001", "").await;
    let (status, head, text) = raw(
        &g,
        "POST",
        "/v1/chat/completions",
        "sk-team-a-000001",
        &chat("gpt-4o-mini"),
    )
    .await;
    assert_eq!(status, 502, "{text}");
    assert!(!text.contains("sk-") && !text.contains("0001"), "{text}");
    assert!(head.contains("x-should-retry: false"), "{head}");
    assert!(head.contains("x-request-id:"), "{head}");
    // The gateway's own 401 for a wrong caller key: its own id and x-should-retry.
    let (status, head, _) = raw(
        &g,
        "POST",
        "/v1/chat/completions",
        "sk-wrong",
        &chat("gpt-4o-mini"),
    )
    .await;
    assert_eq!(status, 401);
    assert!(head.contains("x-request-id: req_sluice_"), "{head}");
    assert!(head.contains("x-should-retry: false"), "{head}");
    g.shutdown().await;
}

#[tokio::test]
async fn configured_routes_extend_the_table() {
    let (url, seen) = upstream().await;
    let g = gateway(&url, "sk-upstream-good-0001", "").await;
    let (status, ..) = raw(&g, "POST", "/v1/tokenize", "sk-free-0000001", "{}").await;
    assert_eq!(status, 404, "unknown without configuration");
    g.shutdown().await;
    let g = gateway(
        &url,
        "sk-upstream-good-0001",
        "[[routes]]\npath = \"/tokenize\"\nmethods = [\"POST\"]\nmodel = \"body\"\nbilling = \"free\"\n",
    )
    .await;
    let (status, ..) = raw(
        &g,
        "POST",
        "/v1/tokenize",
        "sk-free-0000001",
        &json!({"model": "m", "prompt": "x"}).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    // Free and naming a model: a restricted key may use it for its models only.
    let (status, ..) = raw(
        &g,
        "POST",
        "/v1/tokenize",
        "sk-team-a-000001",
        &json!({"model": "gpt-4o", "prompt": "x"}).to_string(),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(*seen.lock().unwrap(), ["POST /v1/tokenize"]);
    let e = GatewayConfig::from_toml(
        "bad.toml",
        "[[routes]]\npath = \"/a/../b\"\nmethods = [\"POST\"]\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("routes[0].path"), "{e}");
    let e = GatewayConfig::from_toml(
        "bad.toml",
        "[[routes]]\npath = \"/echo\"\nmethods = [\"TRACE\"]\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("routes[0].methods[0]"), "{e}");
    g.shutdown().await;
}

#[tokio::test]
async fn spaced_json_streams_keep_their_usage_and_hide_it_unless_asked() {
    let (url, _seen) = upstream().await;
    let g = gateway(&url, "sk-upstream-good-0001", "").await;
    for include in [false, true] {
        let mut body = json!({"model": "gpt-4o-mini", "stream": true,
            "messages": [{"role": "user", "content": "hi"}]});
        if include {
            body["stream_options"] = json!({"include_usage": true});
        }
        let (status, _, text) = raw(
            &g,
            "POST",
            "/v1/chat/completions",
            "sk-free-0000001",
            &body.to_string(),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        let has_usage_chunk = text.contains("\"usage\": {");
        assert_eq!(
            has_usage_chunk, include,
            "usage chunk shown only when asked: {text}"
        );
        assert!(text.contains("Hello") && text.contains("there"), "{text}");
        assert!(text.contains("data: [DONE]"), "{text}");
        assert!(!text.contains("stream_interrupted"), "{text}");
    }
    g.shutdown().await;
}

#[tokio::test]
async fn responses_streams_pass_event_by_event_and_end_at_their_terminal_event() {
    let (url, _seen) = upstream().await;
    let g = gateway(&url, "sk-upstream-good-0001", "").await;
    let body = json!({"model": "gpt-4o-mini", "input": "hi", "stream": true}).to_string();
    let (status, _, text) = raw(&g, "POST", "/v1/responses", "sk-free-0000001", &body).await;
    assert_eq!(status, 200, "{text}");
    for want in [
        "event: response.created\nid: 0\ndata: {",
        "event: response.output_text.delta\nid: 1\n",
        "event: response.completed\nid: 2\n",
    ] {
        assert!(text.contains(want), "{want:?} in {text}");
    }
    assert!(!text.contains("[DONE]"), "no [DONE] is added: {text}");
    assert!(
        text.contains(": a comment the upstream sends\n"),
        "comment lines pass: {text}"
    );
    assert!(
        !text.contains("error"),
        "the stream is not reported cut short: {text}"
    );
    g.shutdown().await;
}

#[tokio::test]
async fn headers_and_bodies_of_any_type_pass_through_both_ways() {
    let (url, _seen, got) = recording_upstream().await;
    let g = gateway(&url, "sk-upstream-good-0001", "").await;
    let client = reqwest::Client::new();
    // A multipart upload, as `files.create` sends it, with the headers SDKs and apps add.
    let boundary = "----sluice-test-boundary";
    let body = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\ncontent-type: application/jsonl\r\n\r\n{{\"custom_id\":\"a\"}}\n\r\n--{boundary}--\r\n"
    );
    let r = client
        .post(format!("{}/files", g.base_url()))
        .bearer_auth("sk-free-0000001")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header("OpenAI-Beta", "assistants=v2")
        .header("x-custom-trace", "abc123")
        .header("x-sluice-internal", "nope")
        .header("accept-encoding", "gzip")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Back to the caller: the upstream's rate-limit and OpenAI headers.
    let h = r.headers();
    assert_eq!(h["x-ratelimit-remaining-requests"], "99");
    assert_eq!(h["openai-organization"], "org-upstream");
    assert_eq!(h["openai-version"], "2020-10-01");
    assert_eq!(h["openai-processing-ms"], "12");
    assert_eq!(h["x-request-id"], "req_upstream_1");
    let (sent, sent_body) = got.lock().unwrap().last().cloned().unwrap();
    assert_eq!(sent_body, body.as_bytes(), "the body byte for byte");
    assert_eq!(
        sent["content-type"],
        format!("multipart/form-data; boundary={boundary}").as_str()
    );
    assert_eq!(sent["openai-beta"], "assistants=v2");
    assert_eq!(sent["x-custom-trace"], "abc123");
    assert_eq!(
        sent["authorization"], "Bearer sk-upstream-good-0001",
        "the gateway's key"
    );
    assert!(sent.get("x-sluice-internal").is_none());
    assert!(sent
        .get("accept-encoding")
        .is_none_or(|v| !v.to_str().unwrap().contains("gzip")));
    // Streams: the upstream's headers arrive before the first event.
    let r = client
        .post(format!("{}/responses", g.base_url()))
        .bearer_auth("sk-free-0000001")
        .header("OpenAI-Beta", "responses=v1")
        .json(&json!({"model": "gpt-4o-mini", "input": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "99");
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let _ = r.text().await.unwrap();
    let (sent, _) = got.lock().unwrap().last().cloned().unwrap();
    assert_eq!(sent["openai-beta"], "responses=v1");
    g.shutdown().await;
}

#[tokio::test]
async fn named_event_streams_pass_through_until_the_body_ends() {
    let (url, _seen) = upstream().await;
    let g = gateway(&url, "sk-upstream-good-0001", "").await;
    let body =
        json!({"model": "gpt-image-1", "prompt": "a crab", "stream": true, "partial_images": 1})
            .to_string();
    let (status, head, text) = raw(
        &g,
        "POST",
        "/v1/images/generations",
        "sk-free-0000001",
        &body,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(
        text.contains("event: image_generation.partial_image\ndata: {"),
        "{text}"
    );
    assert!(
        text.contains("event: image_generation.completed\ndata: {"),
        "{text}"
    );
    assert!(
        !text.contains("[DONE]") && !text.contains("error"),
        "{text}"
    );
    g.shutdown().await;
}

#[tokio::test]
async fn large_uploads_stream_through_byte_for_byte() {
    let (url, seen, got) = recording_upstream().await;
    let g = gateway_with(
        &url,
        "sk-upstream-good-0001",
        "max_body_bytes = 20000000\n",
        "",
    )
    .await;
    let boundary = "----sluice-large";
    let mut body = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\n\r\n"
    )
    .into_bytes();
    // 9 MiB of lines, above the size from which uploads are streamed.
    let line =
        b"{\"custom_id\":\"x\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{}}\n";
    while body.len() < 9 * 1024 * 1024 {
        body.extend_from_slice(line);
    }
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/files", g.base_url()))
        .bearer_auth("sk-free-0000001")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, sent) = got.lock().unwrap().last().cloned().unwrap();
    assert_eq!(sent.len(), body.len());
    assert!(sent == body, "the upload arrives byte for byte");
    // Over the limit by its declared length: refused before anything is sent.
    let before = seen.lock().unwrap().len();
    let g2 = gateway_with(
        &url,
        "sk-upstream-good-0001",
        "max_body_bytes = 1000000\n",
        "",
    )
    .await;
    let r = client
        .post(format!("{}/files", g2.base_url()))
        .bearer_auth("sk-free-0000001")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(seen.lock().unwrap().len(), before);
    g.shutdown().await;
    g2.shutdown().await;
}

/// Every operation of the route table that sluice cannot price, and every one that names a
/// model, tried with a restricted key: each refused, none reaching the upstream.
#[tokio::test]
async fn a_restricted_key_is_refused_on_every_unpriced_or_foreign_model_route_of_the_table() {
    use sluice::routes::{Billing, Body as BodyKind, ModelAt, RouteTable};
    let (url, seen) = upstream().await;
    let g = gateway(&url, "sk-upstream-good-0001", "").await;
    let mut tried = 0;
    for op in RouteTable::builtin().ops() {
        let names_model = op.model != ModelAt::None;
        if op.billing != Billing::Other && !names_model {
            continue;
        }
        let path: String = op
            .path
            .split('/')
            .map(|s| if s.starts_with('{') { "gpt-4o" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let body = match op.body {
            BodyKind::None => String::new(),
            _ => json!({"model": "gpt-4o", "input": "x"}).to_string(),
        };
        let (status, _, text) = raw(
            &g,
            op.method.as_str(),
            &format!("/v1{path}"),
            "sk-team-a-000001",
            &body,
        )
        .await;
        assert!(
            status == 403 || (status == 404 && op.model == ModelAt::Path),
            "{} {path}: {status} {text}",
            op.method
        );
        tried += 1;
    }
    assert!(tried > 200, "tried {tried} operations");
    assert!(
        seen.lock().unwrap().is_empty(),
        "reached the upstream: {:?}",
        seen.lock().unwrap()
    );
    g.shutdown().await;
}
