//! `sluice serve` in front of `sluice mock`: routes, virtual keys, streaming pass-through with
//! the usage chunk hidden unless asked for, OpenAI-shaped errors, caller disconnects.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use sluice_gateway::{Gateway, GatewayConfig, LedgerSetting};
use sluice_mock::{MockServer, Scenario};

/// Start a gateway without the periodic model-list check, whose `GET /models` would count in
/// the upstream's statistics and limits these tests read (its own test turns it on).
async fn start(mut cfg: GatewayConfig) -> Gateway {
    cfg.models.check_upstream_every = None;
    Gateway::start(cfg).await.unwrap()
}

async fn setup(mock_toml: &str, extra: &str) -> (MockServer, Gateway) {
    let m = MockServer::start(Scenario::from_toml(mock_toml).unwrap())
        .await
        .unwrap();
    let mut cfg = GatewayConfig::from_toml(
        "test.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\nmax_body_bytes = 100000\n[upstream]\nbase_url = \"{}\"\nkeys = [{{ value = \"sk-upstream-key-0001\" }}]\n{extra}",
            m.base_url()
        ),
    )
    .unwrap();
    // Tests write no ledger to the home directory unless they name one.
    if cfg.spend.ledger == LedgerSetting::Default {
        cfg.spend.ledger = LedgerSetting::Off;
    }
    let g = start(cfg).await;
    (m, g)
}

const VKEYS: &str = "[[virtual_keys]]\nname = \"team-a\"\nkey = \"sk-team-a-000001\"\nmodels = [\"gpt-4o-mini\", \"text-embedding-3-small\"]\n";

fn chat(stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "stream": stream, "max_tokens": 20,
           "messages": [{"role": "user", "content": "hello gateway"}]})
}

async fn post(g: &Gateway, key: Option<&str>, path: &str, body: String) -> reqwest::Response {
    let mut r = reqwest::Client::new()
        .post(format!("{}{path}", g.base_url()))
        .header("content-type", "application/json")
        .body(body);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn chat_embeddings_models_through_the_gateway() {
    let (m, g) = setup("", "").await;
    let r = post(&g, None, "/chat/completions", chat(false).to_string()).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let r = post(
        &g,
        None,
        "/embeddings",
        json!({"model": "text-embedding-3-small", "input": "x"}).to_string(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let models: Value = reqwest::get(format!("{}/models", g.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(models["data"].as_array().unwrap().len() > 5);
    // The upstream saw the gateway's key, never the caller's.
    assert!(m.stats().by_key.keys().all(|k| !k.contains("team")));
    let health = reqwest::get(format!("http://{}/healthz", g.addr()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");
    let ready = reqwest::get(format!("http://{}/readyz", g.addr()))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    // The gateway's own endpoints answer GET (and HEAD) only; nothing else reaches them.
    let client = reqwest::Client::new();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = client
            .post(format!("http://{}{path}", g.addr()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{path}");
        assert_eq!(r.headers()["allow"], "GET,HEAD", "{path}");
        let r = client
            .head(format!("http://{}{path}", g.addr()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    g.shutdown().await;
}

#[tokio::test]
async fn virtual_keys_and_allowed_models() {
    let (_m, g) = setup("", VKEYS).await;
    let r = post(&g, None, "/chat/completions", chat(false).to_string()).await;
    assert_eq!(r.status(), 401);
    let r = post(
        &g,
        Some("sk-wrong"),
        "/chat/completions",
        chat(false).to_string(),
    )
    .await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let r = post(
        &g,
        Some("sk-team-a-000001"),
        "/chat/completions",
        chat(false).to_string(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let mut other = chat(false);
    other["model"] = json!("gpt-4o");
    let r = post(
        &g,
        Some("sk-team-a-000001"),
        "/chat/completions",
        other.to_string(),
    )
    .await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_allowed");
    g.shutdown().await;
}

/// An allowed model may be asked for by an alias that stands for it; an alias for a model not
/// allowed stays refused.
#[tokio::test]
async fn allowed_models_cover_the_aliases_that_resolve_to_them() {
    let models = "[models]\naliases = { fast = \"gpt-4o-mini\", big = \"gpt-4o\" }\n";
    let (_m, g) = setup("", &format!("{models}{VKEYS}")).await;
    let ask = |model: &str| {
        let mut body = chat(false);
        body["model"] = json!(model);
        body.to_string()
    };
    let r = post(
        &g,
        Some("sk-team-a-000001"),
        "/chat/completions",
        ask("fast"),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["model"].as_str().map(|m| m.starts_with("gpt-4o-mini")),
        Some(true)
    );
    let r = post(
        &g,
        Some("sk-team-a-000001"),
        "/chat/completions",
        ask("big"),
    )
    .await;
    assert_eq!(r.status(), 403);
    g.shutdown().await;
}

fn events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|b| b.strip_prefix("data: ").map(str::to_string))
        .collect()
}

#[tokio::test]
async fn streams_pass_through_and_hide_the_usage_chunk_unless_asked() {
    let (_m, g) = setup("", "").await;
    let r = post(&g, None, "/chat/completions", chat(true).to_string()).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let ev = events(&r.text().await.unwrap());
    assert_eq!(ev.last().unwrap(), "[DONE]");
    for e in &ev[..ev.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert!(
            !v["choices"].as_array().unwrap().is_empty(),
            "no usage-only chunk: {e}"
        );
    }
    let mut asked = chat(true);
    asked["stream_options"] = json!({"include_usage": true});
    let ev = events(
        &post(&g, None, "/chat/completions", asked.to_string())
            .await
            .text()
            .await
            .unwrap(),
    );
    let usage: Value = serde_json::from_str(&ev[ev.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    g.shutdown().await;
}

#[tokio::test]
async fn bad_requests_and_upstream_errors_are_openai_shaped() {
    let (_m, g) = setup("", "").await;
    let r = post(&g, None, "/chat/completions", "{not json".into()).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let r = post(
        &g,
        None,
        "/chat/completions",
        json!({"messages": []}).to_string(),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["param"], "model");
    let r = post(&g, None, "/chat/completions", "x".repeat(200_000)).await;
    assert_eq!(r.status(), 413);
    // The upstream's own error comes through with its status and code.
    let mut unknown = chat(false);
    unknown["model"] = json!("acme-unknown");
    let r = post(&g, None, "/chat/completions", unknown.to_string()).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-should-retry"], "false");
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "model_not_found"
    );
    // A model the registry knows is retired is refused here, naming the replacement.
    let mut retired = chat(false);
    retired["model"] = json!("gpt-4-32k");
    let r = post(&g, None, "/chat/completions", retired.to_string()).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-should-retry"], "false");
    let v = r.json::<Value>().await.unwrap();
    assert_eq!(v["error"]["code"], "model_retired");
    assert_eq!(v["error"]["param"], "model");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("use gpt-4o instead"));
    g.shutdown().await;
}

#[tokio::test]
async fn a_caller_that_disconnects_cancels_the_upstream_request() {
    let (m, g) = setup(
        "[output]\nmin_tokens = 200\nmax_tokens = 200\n[latency]\nper_token = \"20ms\"\n",
        "",
    )
    .await;
    let mut body = chat(true);
    body["max_tokens"] = json!(300);
    let r = post(&g, None, "/chat/completions", body.to_string()).await;
    let mut s = r.bytes_stream();
    s.next().await.unwrap().unwrap();
    drop(s);
    let mut seen = false;
    for _ in 0..100 {
        if m.stats().streams.client_disconnected == 1 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "upstream saw the cancel: {:?}", m.stats().streams);
    g.shutdown().await;
}

#[tokio::test]
async fn rotating_the_upstream_key_file_under_load_loses_nothing() {
    let m = MockServer::start(
        Scenario::from_toml(
            "auth = \"listed\"\n[latency]\nttft = \"20ms\"\n[[keys]]\nkey = \"sk-rotate-old-000001\"\nname = \"old\"\n[[keys]]\nkey = \"sk-rotate-new-000002\"\nname = \"new\"\n",
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("sluice-gw-rot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("openai-key");
    std::fs::write(&key_file, "sk-rotate-old-000001\n").unwrap();
    let cfg = GatewayConfig::from_toml(
        "test.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\n[upstream]\nbase_url = \"{}\"\nkeys = [{{ file = \"{}\" }}]\n",
            m.base_url(),
            key_file.display()
        ),
    )
    .unwrap();
    let g = start(cfg).await;
    let url = format!("{}/chat/completions", g.base_url());
    let client = reqwest::Client::new();
    let load: Vec<_> = (0..200)
        .map(|i| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i * 3)).await;
                client
                    .post(url)
                    .json(&json!({"model": "gpt-4o-mini", "max_tokens": 5,
                                  "messages": [{"role": "user", "content": format!("q{i}")}]}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    // Mid-load: rotate the secret in place, then revoke the old key upstream.
    tokio::time::sleep(Duration::from_millis(250)).await;
    std::fs::write(&key_file, "sk-rotate-new-000002\n").unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    m.set_scenario(
        Scenario::from_toml(
            "auth = \"listed\"\n[latency]\nttft = \"20ms\"\n[[keys]]\nkey = \"sk-rotate-old-000001\"\nname = \"old\"\nrevoked = true\n[[keys]]\nkey = \"sk-rotate-new-000002\"\nname = \"new\"\n",
        )
        .unwrap(),
    );
    let mut statuses = std::collections::BTreeMap::new();
    for t in load {
        *statuses.entry(t.await.unwrap().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(
        statuses.get(&200),
        Some(&200),
        "every request succeeded: {statuses:?}"
    );
    let s = m.stats();
    assert!(s.by_key["old"] > 0 && s.by_key["new"] > 0, "{:?}", s.by_key);
    g.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn reload_applies_to_new_requests_and_in_flight_ones_finish() {
    let (m, g) = setup(
        "[output]\nmin_tokens = 100\nmax_tokens = 100\n[latency]\nper_token = \"3ms\"\n",
        VKEYS,
    )
    .await;
    let mut long = chat(true);
    long["max_tokens"] = json!(150);
    let in_flight = post(
        &g,
        Some("sk-team-a-000001"),
        "/chat/completions",
        long.to_string(),
    )
    .await;
    assert_eq!(in_flight.status(), 200);
    // Replace team-a by team-b.
    let cfg = GatewayConfig::from_toml(
        "reloaded.toml",
        &format!(
            "[upstream]\nbase_url = \"{}\"\nkeys = [{{ value = \"sk-upstream-key-0001\" }}]\n[[virtual_keys]]\nname = \"team-b\"\nkey = \"sk-team-b-000002\"\n",
            m.base_url()
        ),
    )
    .unwrap();
    g.reload(cfg).unwrap();
    // The stream that started before the reload finishes on what it began with.
    let text = in_flight.text().await.unwrap();
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "{}",
        &text[text.len().saturating_sub(80)..]
    );
    // New requests see the new keys.
    let old = post(
        &g,
        Some("sk-team-a-000001"),
        "/chat/completions",
        chat(false).to_string(),
    )
    .await;
    assert_eq!(old.status(), 401);
    let new = post(
        &g,
        Some("sk-team-b-000002"),
        "/chat/completions",
        chat(false).to_string(),
    )
    .await;
    assert_eq!(new.status(), 200);
    // A bad configuration is refused and the running one stays.
    let bad = GatewayConfig {
        base_url: Some("not a url".into()),
        ..GatewayConfig::default()
    };
    assert!(g.reload(bad).is_err());
    let still = post(
        &g,
        Some("sk-team-b-000002"),
        "/chat/completions",
        chat(false).to_string(),
    )
    .await;
    assert_eq!(still.status(), 200);
    g.shutdown().await;
}

#[tokio::test]
async fn concurrent_streams_each_arrive_whole() {
    let (m, g) = setup(
        "[output]\nmin_tokens = 30\nmax_tokens = 30\n[latency]\nper_token = \"2ms\"\n",
        "",
    )
    .await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let url = format!("{}/chat/completions", g.base_url());
            tokio::spawn(async move {
                let mut body = chat(true);
                body["messages"][0]["content"] = json!(format!("stream {i}"));
                let text = reqwest::Client::new()
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                let ev = events(&text);
                assert_eq!(ev.last().map(String::as_str), Some("[DONE]"));
                ev.len()
            })
        })
        .collect();
    for t in tasks {
        // role + 20 tokens (max_tokens) + finish + [DONE]
        assert_eq!(t.await.unwrap(), 23);
    }
    assert_eq!(m.stats().streams.completed, 50);
    g.shutdown().await;
}

#[tokio::test]
async fn a_revoked_upstream_key_is_quarantined_while_traffic_continues() {
    let m = MockServer::start(
        Scenario::from_toml(
            "auth = \"listed\"\n[[keys]]\nkey = \"sk-gw-good-000001\"\nname = \"good\"\n[[keys]]\nkey = \"sk-gw-revoked-0002\"\nname = \"revoked\"\nrevoked = true\n",
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let cfg = GatewayConfig::from_toml(
        "test.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\n[upstream]\nbase_url = \"{}\"\nkeys = [{{ value = \"sk-gw-revoked-0002\" }}, {{ value = \"sk-gw-good-000001\" }}]\n",
            m.base_url()
        ),
    )
    .unwrap();
    let g = start(cfg).await;
    for _ in 0..20 {
        let r = post(&g, None, "/chat/completions", chat(false).to_string()).await;
        assert_eq!(r.status(), 200);
    }
    let s = m.stats();
    assert_eq!(s.by_key.get("revoked").copied().unwrap_or(0), 1);
    assert_eq!(s.by_key["good"], 20);
    g.shutdown().await;
}

#[tokio::test]
async fn a_caller_over_its_own_limit_gets_a_429_the_sdk_can_wait_on() {
    let (m, g) = setup(
        "",
        "[[virtual_keys]]\nname = \"small\"\nkey = \"sk-small-000001\"\nrpm = 2\n[[virtual_keys]]\nname = \"big\"\nkey = \"sk-big-0000002\"\n",
    )
    .await;
    for _ in 0..2 {
        let r = post(
            &g,
            Some("sk-small-000001"),
            "/chat/completions",
            chat(false).to_string(),
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    let r = post(
        &g,
        Some("sk-small-000001"),
        "/chat/completions",
        chat(false).to_string(),
    )
    .await;
    assert_eq!(r.status(), 429);
    let h = r.headers().clone();
    assert_eq!(h["x-ratelimit-limit-requests"], "2");
    assert_eq!(h["x-should-retry"], "true");
    let wait: f64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((25.0..=31.0).contains(&wait), "{wait}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    // The refused request never reached the upstream; another caller is not affected.
    assert_eq!(m.stats().requests, 2);
    let r = post(
        &g,
        Some("sk-big-0000002"),
        "/chat/completions",
        chat(false).to_string(),
    )
    .await;
    assert_eq!(r.status(), 200);
    g.shutdown().await;
}

fn temp_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sluice-gw-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn model_policy_is_visible_in_headers() {
    let dir = temp_dir();
    let registry = dir.join("models.toml");
    std::fs::write(
        &registry,
        "[[model]]\nid = \"gpt-4.1-mini\"\ndeprecated = \"2026-01-01\"\nshutdown = \"2099-01-01\"\nreplacement = \"gpt-4.1\"\n",
    )
    .unwrap();
    let extra = format!(
        "[models]\nregistry = \"{}\"\non_retired = \"substitute\"\naliases = {{ fast = \"gpt-4o-mini\" }}\nfallbacks = {{ \"acme-x\" = [\"acme-y\", \"gpt-4o-mini\"] }}\n",
        registry.display()
    );
    let (m, g) = setup("", &extra).await;
    let with_model = |model: &str, stream: bool| {
        let mut b = chat(stream);
        b["model"] = json!(model);
        b.to_string()
    };
    // Deprecated: answered, with the notice.
    let r = post(
        &g,
        None,
        "/chat/completions",
        with_model("gpt-4.1-mini", false),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-sluice-model-deprecated"],
        "gpt-4.1-mini; shutdown=2099-01-01; replacement=gpt-4.1"
    );
    assert!(r.headers().contains_key("x-sluice-cost-usd"));
    // Retired with policy substitute: sent to the replacement, for streams too.
    for stream in [false, true] {
        let r = post(
            &g,
            None,
            "/chat/completions",
            with_model("gpt-4-32k", stream),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["x-sluice-model-substituted"],
            "gpt-4-32k -> gpt-4o"
        );
        assert!(r.headers()["x-sluice-model-deprecated"]
            .to_str()
            .unwrap()
            .starts_with("gpt-4-32k; shutdown=2025-06-06"));
        let _ = r.bytes().await.unwrap();
    }
    // An alias is resolved before sending.
    let r = post(&g, None, "/chat/completions", with_model("fast", false)).await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["model"],
        "gpt-4o-mini-2024-07-18"
    );
    // model_not_found follows the fallback chain.
    let r = post(&g, None, "/chat/completions", with_model("acme-x", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-sluice-model-fallback"],
        "acme-x -> gpt-4o-mini"
    );
    let st = m.stats();
    assert_eq!(st.by_model.get("gpt-4o"), Some(&2));
    assert_eq!(st.by_model.get("acme-y"), Some(&1));
    assert!(!st.by_model.contains_key("fast"));
    g.shutdown().await;
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_virtual_key_budget_refuses_without_retry_and_the_ledger_records_spend() {
    let dir = temp_dir();
    let ledger = dir.join("ledger.db");
    // gpt-4o-mini at max_tokens 20: worst case ≈ 20 × 600 + prompt × 150 ≈ 14,000 nanos; a
    // $0.00005 day budget holds three or so.
    let extra = format!(
        "[spend]\nledger = \"{}\"\n[[virtual_keys]]\nname = \"team-a\"\nkey = \"sk-team-a-000001\"\nbudget = {{ day = \"0.00005\" }}\n[[virtual_keys]]\nname = \"team-b\"\nkey = \"sk-team-b-000001\"\n",
        ledger.display()
    );
    let (_m, g) = setup("", &extra).await;
    let mut refused = None;
    let mut ok = 0;
    for _ in 0..20 {
        let r = post(
            &g,
            Some("sk-team-a-000001"),
            "/chat/completions",
            chat(false).to_string(),
        )
        .await;
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status(), 200);
        ok += 1;
    }
    let r = refused.expect("the budget refused a request");
    assert!(ok >= 1, "some requests fit the budget");
    assert_eq!(r.headers()["x-should-retry"], "false");
    let v = r.json::<Value>().await.unwrap();
    assert_eq!(v["error"]["type"], "insufficient_quota");
    assert_eq!(v["error"]["code"], "budget_exceeded");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("key:team-a"));
    // Another key has no budget and is not affected; streams are accounted too.
    let r = post(
        &g,
        Some("sk-team-b-000001"),
        "/chat/completions",
        chat(true).to_string(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await.unwrap();
    g.shutdown().await;
    let l = sluice::spend::Ledger::sqlite(&ledger).unwrap();
    let rows = l.rows(sluice::spend::Filter::default()).await.unwrap();
    let a: Vec<_> = rows.iter().filter(|r| r.scope == "key:team-a").collect();
    assert_eq!(a.iter().map(|r| r.requests).sum::<u64>(), ok);
    assert!(a.iter().map(|r| r.cost_nanos).sum::<u64>() <= 50_000);
    let b: Vec<_> = rows.iter().filter(|r| r.scope == "key:team-b").collect();
    assert_eq!(b.len(), 1);
    assert!(b[0].cost_nanos > 0 && b[0].completion_tokens > 0);
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn the_upstream_model_list_is_checked_at_start_and_periodically() {
    let m = MockServer::start(Scenario::from_toml("").unwrap())
        .await
        .unwrap();
    let mut cfg = GatewayConfig::from_toml(
        "test.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\n[upstream]\nbase_url = \"{}\"\nkeys = [{{ value = \"sk-upstream-key-0001\" }}]\n{VKEYS}[models]\ncheck_upstream_every = \"1s\"\n",
            m.base_url()
        ),
    )
    .unwrap();
    cfg.spend.ledger = LedgerSetting::Off;
    assert_eq!(
        cfg.named_models(),
        ["gpt-4o-mini", "text-embedding-3-small"]
    );
    let g = Gateway::start(cfg).await.unwrap();
    let metrics = || async {
        reqwest::get(format!("http://{}/metrics", g.addr()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let unavailable = |text: &str| {
        text.lines().any(|l| {
            l.starts_with("sluice_alerts_total") && l.contains("rule=\"model_unavailable\"")
        })
    };
    // Asked at start: everything configured is listed.
    for _ in 0..100 {
        if m.stats().requests > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        m.stats().requests > 0,
        "the model list was asked for at start"
    );
    assert!(!unavailable(&metrics().await));
    // The upstream stops listing a model a virtual key is configured for; a later check says so
    // (bounded wait: the check runs every second here).
    m.set_scenario(
        Scenario::from_toml("[[models]]\nid = \"text-embedding-3-small\"\nretired = true\n")
            .unwrap(),
    );
    let mut seen = false;
    for _ in 0..100 {
        if unavailable(&metrics().await) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "model_unavailable raised");
    g.shutdown().await;
}

#[tokio::test]
async fn a_key_file_gone_after_start_tells_callers_nothing_of_the_server() {
    let m = MockServer::start(Scenario::default()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("sluice-gw-gone-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("operator-secret-path");
    std::fs::write(&key_file, "sk-present-at-start-01\n").unwrap();
    let mut cfg = GatewayConfig::from_toml(
        "test.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\n[upstream]\nbase_url = \"{}\"\nkeys = [{{ file = \"{}\" }}]\nmax_attempts = 1\n",
            m.base_url(),
            key_file.display()
        ),
    )
    .unwrap();
    cfg.spend.ledger = LedgerSetting::Off;
    let g = start(cfg).await;
    std::fs::remove_file(&key_file).unwrap();
    let r = post(&g, None, "/chat/completions", chat(false).to_string()).await;
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    assert!(text.contains("no usable upstream API key"), "{text}");
    assert!(
        !text.contains("operator-secret-path") && !text.contains(dir.to_str().unwrap()),
        "a caller never sees the server's paths: {text}"
    );
    g.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn an_absurd_max_tokens_is_a_400_before_admission() {
    let (m, g) = setup("", "").await;
    for body in [
        json!({"model": "gpt-4o-mini", "max_tokens": u64::MAX, "messages": [{"role": "user", "content": "x"}]}),
        json!({"model": "gpt-4o-mini", "max_completion_tokens": 1_000_000_000u64, "n": 2, "messages": [{"role": "user", "content": "x"}]}),
    ] {
        let r = post(&g, None, "/chat/completions", body.to_string()).await;
        assert_eq!(r.status(), 400);
        assert_eq!(r.headers()["x-should-retry"], "false");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("output tokens"));
    }
    assert_eq!(m.stats().requests, 0, "nothing reached the upstream");
    g.shutdown().await;
}

#[tokio::test]
async fn a_failing_upstream_opens_the_breaker_and_one_probe_closes_it() {
    let (m, g) = setup(
        "[faults]\nerror_503 = 1.0\n",
        "max_attempts = 1\nbreaker = { failures = 3, failing_for = \"200ms\", cooldown = \"1s\" }\n",
    )
    .await;
    let body = || chat(false).to_string();
    // Failing attempts reach the upstream until the breaker has seen enough of them...
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let r = post(&g, None, "/chat/completions", body()).await;
        let kind = r.headers().get("retry-after").is_some();
        let v: Value = r.json().await.unwrap();
        statuses.push((v["error"]["type"].as_str().unwrap_or("").to_string(), kind));
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let reached = m.stats().requests;
    assert!(
        (3..8).contains(&reached),
        "the upstream saw {reached} requests: {statuses:?}"
    );
    // ...then the gateway answers a 503 itself, with Retry-After, and sends nothing.
    let (last, has_wait) = statuses.last().unwrap();
    assert_eq!(last, "upstream_unavailable", "{statuses:?}");
    assert!(*has_wait);
    let r = post(&g, None, "/chat/completions", body()).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-should-retry"], "true");
    assert_eq!(m.stats().requests, reached, "nothing sent while open");

    // The upstream recovers; after the cooldown one probe goes, is answered, and it closes.
    m.set_scenario(Scenario::default());
    tokio::time::sleep(Duration::from_millis(1400)).await;
    let r = post(&g, None, "/chat/completions", body()).await;
    assert_eq!(r.status(), 200);
    for _ in 0..3 {
        let r = post(&g, None, "/chat/completions", body()).await;
        assert_eq!(r.status(), 200);
    }
    g.shutdown().await;
}

#[tokio::test]
async fn an_open_breaker_stays_open_across_a_reload() {
    let extra =
        "max_attempts = 1\nbreaker = { failures = 2, failing_for = \"0s\", cooldown = \"60s\" }\n";
    let (m, g) = setup("[faults]\nerror_503 = 1.0\n", extra).await;
    for _ in 0..3 {
        let _ = post(&g, None, "/chat/completions", chat(false).to_string()).await;
    }
    let reached = m.stats().requests;
    assert_eq!(reached, 2, "open after two failures");
    // The same file again (as a SIGHUP would apply it): the breaker is still open.
    let mut cfg = GatewayConfig::from_toml(
        "test.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\nmax_body_bytes = 100000\n[upstream]\nbase_url = \"{}\"\nkeys = [{{ value = \"sk-upstream-key-0001\" }}]\n{extra}",
            m.base_url()
        ),
    )
    .unwrap();
    cfg.spend.ledger = LedgerSetting::Off;
    cfg.models.check_upstream_every = None;
    g.reload(cfg).unwrap();
    let r = post(&g, None, "/chat/completions", chat(false).to_string()).await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "upstream_unavailable");
    assert_eq!(m.stats().requests, reached, "nothing sent after the reload");
    g.shutdown().await;
}

#[tokio::test]
async fn stopping_answers_the_requests_in_flight_and_closes_idle_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_m, g) = setup("[latency]\nttft = \"500ms\"\n", "").await;
    let url = format!("{}/chat/completions", g.base_url());
    // A kept-alive connection that has had its answer and now waits for nothing.
    let mut idle = tokio::net::TcpStream::connect(g.addr()).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(chat(false).to_string())
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let stopped = tokio::time::timeout(Duration::from_secs(10), g.shutdown()).await;
    assert!(stopped.is_ok(), "the gateway did not stop");
    let r = in_flight.await.unwrap().unwrap();
    assert_eq!(r.status(), 200, "the request in flight was answered");
    assert_eq!(
        r.json::<Value>().await.unwrap()["object"],
        "chat.completion"
    );
    // The idle connection was closed, not left open.
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("the idle connection is still open")
        .unwrap_or(0);
    assert_eq!(n, 0);
}
