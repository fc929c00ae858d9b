//! Helpers shared by the simulator's integration tests: start a mock, send JSON, split SSE.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use sluice_mock::{MockServer, Scenario};

pub const KEY: &str = "sk-test-key-000001";

pub async fn start(toml: &str) -> MockServer {
    let scenario = Scenario::from_toml(toml).expect("scenario");
    MockServer::start(scenario).await.expect("mock starts")
}

/// A client with no timers of its own, so paused-time tests are not disturbed by pool expiry.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(None)
        .build()
        .unwrap()
}

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("missing header {name}"))
            .to_str()
            .unwrap()
    }

    pub fn error_code(&self) -> Value {
        self.json()["error"]["code"].clone()
    }

    /// The `data:` payloads of an SSE body, in order.
    pub fn events(&self) -> Vec<String> {
        sse_data(&self.text)
    }
}

pub fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|block| {
            block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(str::to_string)
        })
        .collect()
}

pub async fn post_with(
    c: &reqwest::Client,
    mock: &MockServer,
    path: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: String,
) -> Reply {
    let mut req = c
        .post(format!("http://{}{}", mock.addr(), path))
        .header("content-type", "application/json")
        .body(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body read");
    Reply {
        status,
        headers,
        text,
    }
}

pub async fn post(mock: &MockServer, path: &str, body: Value) -> Reply {
    post_with(&client(), mock, path, Some(KEY), &[], body.to_string()).await
}

pub async fn get(mock: &MockServer, path: &str) -> Reply {
    let resp = client()
        .get(format!("http://{}{}", mock.addr(), path))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body read");
    Reply {
        status,
        headers,
        text,
    }
}

pub fn chat(content: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]})
}
