//! Several upstreams behind one gateway (`[[upstreams]]`): failover when one is down or failing,
//! weights, per-model routing, and streams that move only before their first event.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use futures_util::StreamExt;
use serde_json::{json, Value};
use sluice_gateway::{Gateway, GatewayConfig, LedgerSetting};
use sluice_mock::{MockServer, Scenario};

async fn mock(toml: &str) -> MockServer {
    MockServer::start(Scenario::from_toml(toml).unwrap())
        .await
        .unwrap()
}

/// A gateway over `upstreams` (TOML of `[[upstreams]]` entries), shared settings in `[upstream]`.
async fn gateway(upstream: &str, upstreams: &str) -> Gateway {
    let mut cfg = GatewayConfig::from_toml(
        "test.toml",
        &format!("listen = \"127.0.0.1:0\"\n[upstream]\n{upstream}\n{upstreams}"),
    )
    .unwrap();
    cfg.spend.ledger = LedgerSetting::Off;
    cfg.models.check_upstream_every = None;
    Gateway::start(cfg).await.unwrap()
}

fn entry(name: &str, base: &str, extra: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"{name}\"\nbase_url = \"{base}\"\nkeys = [{{ value = \"sk-{name}-upstream-01\" }}]\n{extra}\n"
    )
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "max_tokens": 8,
           "messages": [{"role": "user", "content": "hello"}]})
}

/// POST; the status and the `x-sluice-upstream` that answered.
async fn post(g: &Gateway, path: &str, body: &Value) -> (u16, String, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", g.base_url()))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let up = r
        .headers()
        .get("x-sluice-upstream")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let v = r.json().await.unwrap_or(Value::Null);
    (status, up, v)
}

/// A port nothing listens on.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/v1")
}

#[tokio::test]
async fn a_dead_primary_loses_no_request_and_a_failing_one_opens_its_breaker() {
    let backup = mock("").await;
    let g = gateway(
        "max_attempts = 3\nbreaker = { failures = 3, failing_for = \"0s\", cooldown = \"30s\" }",
        &(entry("primary", &closed_port(), "priority = 0")
            + &entry("backup", &backup.base_url(), "priority = 1")),
    )
    .await;
    for i in 0..40 {
        let (status, up, v) = post(&g, "/chat/completions", &chat("gpt-4o-mini", false)).await;
        assert_eq!(status, 200, "request {i}: {v}");
        assert_eq!(up, "backup");
    }
    assert_eq!(backup.stats().requests, 40);
    g.shutdown().await;

    // The same with a primary that answers 503: its breaker opens, and then it is not even
    // tried (its request count stops).
    let failing = mock("[faults]\nerror_503 = 1.0\n").await;
    let backup = mock("").await;
    let g = gateway(
        "max_attempts = 3\nbreaker = { failures = 3, failing_for = \"0s\", cooldown = \"30s\" }",
        &(entry("primary", &failing.base_url(), "priority = 0")
            + &entry("backup", &backup.base_url(), "priority = 1")),
    )
    .await;
    for _ in 0..20 {
        let (status, up, _) = post(&g, "/chat/completions", &chat("gpt-4o-mini", false)).await;
        assert_eq!((status, up.as_str()), (200, "backup"));
    }
    assert_eq!(
        failing.stats().requests,
        3,
        "tried until its breaker opened"
    );
    g.shutdown().await;
}

#[tokio::test]
async fn weights_share_the_requests_of_one_priority() {
    // Limits far above the burst: capacity never decides here, the weights do.
    let roomy = "[limits]\nrpm = 10000000\ntpm = 10000000000\n";
    let a = mock(roomy).await;
    let b = mock(roomy).await;
    let g = gateway(
        "",
        &(entry("a", &a.base_url(), "weight = 3") + &entry("b", &b.base_url(), "weight = 1")),
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/chat/completions", g.base_url());
    let mut seen: HashMap<String, usize> = HashMap::new();
    let results = futures_util::stream::iter(0..1000)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let r = client
                    .post(url)
                    .json(&chat("gpt-4o-mini", false))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.headers()["x-sluice-upstream"]
                    .to_str()
                    .unwrap()
                    .to_string()
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    for up in results {
        *seen.entry(up).or_default() += 1;
    }
    let share = seen["a"] as f64 / 1000.0;
    assert!(
        (0.675..=0.825).contains(&share),
        "a took {share} of 3:1 ({seen:?})"
    );
    assert_eq!(a.stats().requests + b.stats().requests, 1000);
    g.shutdown().await;
}

#[tokio::test]
async fn each_model_goes_where_it_is_served() {
    let chats = mock("").await;
    let embeds = mock("").await;
    let g = gateway(
        "",
        &(entry("chats", &chats.base_url(), "models = [\"gpt-4o*\"]")
            + &entry(
                "embeds",
                &embeds.base_url(),
                "models = [\"text-embedding-*\"]",
            )),
    )
    .await;
    let (s, up, _) = post(&g, "/chat/completions", &chat("gpt-4o-mini", false)).await;
    assert_eq!((s, up.as_str()), (200, "chats"));
    let (s, up, _) = post(
        &g,
        "/embeddings",
        &json!({"model": "text-embedding-3-small", "input": "x"}),
    )
    .await;
    assert_eq!((s, up.as_str()), (200, "embeds"));
    let (s, _, v) = post(&g, "/chat/completions", &chat("gpt-4.1", false)).await;
    assert_eq!(s, 404, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no upstream serves"));
    assert_eq!((chats.stats().requests, embeds.stats().requests), (1, 1));
    g.shutdown().await;
}

/// A gateway over a primary mock playing `scenario` and a healthy backup after it.
async fn primary_and_backup(scenario: &str) -> (Gateway, MockServer, MockServer) {
    let primary = mock(scenario).await;
    let backup = mock("").await;
    let g = gateway(
        "max_attempts = 3",
        &(entry("primary", &primary.base_url(), "priority = 0")
            + &entry("backup", &backup.base_url(), "priority = 1")),
    )
    .await;
    (g, primary, backup)
}

/// A streamed chat request through `g`.
async fn stream(g: &Gateway) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/chat/completions", g.base_url()))
        .json(&chat("gpt-4o-mini", true))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_stream_moves_before_its_first_event_and_never_after() {
    // Before: the primary refuses streams with 503s; the stream is served by the backup.
    let (g, _failing, _backup) = primary_and_backup("[faults]\nerror_503 = 1.0\n").await;
    let r = stream(&g).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-sluice-upstream"], "backup");
    let text = r.text().await.unwrap();
    assert!(text.contains("[DONE]"), "{text}");
    g.shutdown().await;

    // After: the primary fails the stream (an error event) once it has begun; it is not sent
    // again elsewhere.
    let (g, _cutting, backup) = primary_and_backup(
        "[faults]\nsse_error = 1.0\n[output]\nmin_tokens = 30\nmax_tokens = 30\n",
    )
    .await;
    let r = stream(&g).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-sluice-upstream"], "primary");
    let text = r.text().await.unwrap_or_default();
    assert!(
        text.contains("data: {") && !text.contains("[DONE]"),
        "cut: {text}"
    );
    assert_eq!(
        backup.stats().requests,
        0,
        "a stream that has begun is never sent again: {text}"
    );
    g.shutdown().await;
}

#[tokio::test]
async fn a_burst_survives_the_primary_dying_and_returns_to_it_after_the_probe() {
    let primary = mock("").await;
    let addr = primary.addr();
    let backup = mock("").await;
    let g = gateway(
        "breaker = { failures = 3, failing_for = \"100ms\", cooldown = \"1s\" }",
        &(entry("primary", &primary.base_url(), "priority = 0")
            + &entry("backup", &backup.base_url(), "priority = 1")),
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/chat/completions", g.base_url());
    let send = |n: usize| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            futures_util::stream::iter(0..n)
                .map(|_| {
                    let (client, url) = (client.clone(), url.clone());
                    async move {
                        let r = client
                            .post(url)
                            .json(&chat("gpt-4o-mini", false))
                            .send()
                            .await
                            .unwrap();
                        let up = r
                            .headers()
                            .get("x-sluice-upstream")
                            .map(|v| v.to_str().unwrap().to_string());
                        (r.status().as_u16(), up.unwrap_or_default())
                    }
                })
                .buffer_unordered(8)
                .collect::<Vec<_>>()
                .await
        }
    };
    let first = send(50).await;
    assert!(first.iter().all(|(s, u)| *s == 200 && u == "primary"));
    // The primary process dies mid-burst.
    let burst = tokio::spawn(send(200));
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    primary.stop().await;
    let during = burst.await.unwrap();
    let failed: Vec<_> = during.iter().filter(|(s, _)| *s != 200).collect();
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    assert!(during.iter().any(|(_, u)| u == "backup"));
    // It comes back on the same address; after the cooldown one probe finds it, and the
    // traffic returns to it.
    let primary = MockServer::bind(addr, Scenario::default()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1400)).await;
    // (While the one probe is out, the others go to the backup.)
    let after = send(30).await;
    assert!(after.iter().all(|(s, _)| *s == 200));
    let back = after.iter().filter(|(_, u)| u == "primary").count();
    assert!(back >= 15, "{after:?}");
    assert_eq!(primary.stats().requests as usize, back);
    let last = send(10).await;
    assert!(
        last.iter().all(|(s, u)| *s == 200 && u == "primary"),
        "{last:?}"
    );
    g.shutdown().await;
}

/// The simulator playing Azure with two deployments, and a gateway whose one upstream, `name`,
/// is that Azure resource with these settings (`api_version = ...` or `api = "v1"`).
async fn azure(name: &str, dialect: &str) -> (MockServer, String, Gateway) {
    let azure = mock(
        "[azure]\ndeployments = { \"prod-4o-mini\" = \"gpt-4o-mini\", \"prod-embed\" = \"text-embedding-3-small\" }\n",
    )
    .await;
    let endpoint = azure.base_url().trim_end_matches("/v1").to_string();
    let g = gateway(
        "",
        &format!(
            "[[upstreams]]\nname = \"{name}\"\nkind = \"azure\"\n{dialect}\nendpoint = \"{endpoint}\"\ndeployments = {{ \"gpt-4o-mini\" = \"prod-4o-mini\", \"text-embedding-3-small\" = \"prod-embed\" }}\nkeys = [{{ value = \"azure-key-0000000001\" }}]\n"
        ),
    )
    .await;
    (azure, endpoint, g)
}

/// A chat answer, a stream and an embedding through `g`, answered by `name`; the chat answer.
async fn chat_stream_and_embed(g: &Gateway, name: &str) -> Value {
    let (s, up, answer) = post(g, "/chat/completions", &chat("gpt-4o-mini", false)).await;
    assert_eq!((s, up.as_str()), (200, name), "{answer}");
    let r = reqwest::Client::new()
        .post(format!("{}/chat/completions", g.base_url()))
        .json(&chat("gpt-4o-mini", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("[DONE]"));
    let (s, _, v) = post(
        g,
        "/embeddings",
        &json!({"model": "text-embedding-3-small", "input": "x"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    answer
}

/// A Responses API answer and stream through `g` for `gpt-4o-mini`: both name the model the
/// caller asked for, whatever name the upstream was sent (an Azure deployment).
async fn responses_name_the_callers_model(g: &Gateway) {
    let body = json!({"model": "gpt-4o-mini", "input": "hello", "max_output_tokens": 16});
    let (s, _, v) = post(g, "/responses", &body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "response");
    assert_eq!(
        v["model"], "gpt-4o-mini",
        "the caller's model in the answer: {v}"
    );
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = reqwest::Client::new()
        .post(format!("{}/responses", g.base_url()))
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("response.completed") || text.contains("response.incomplete"),
        "{text}"
    );
    assert!(
        !text.contains("prod-4o-mini") && text.contains("\"model\":\"gpt-4o-mini\""),
        "every event names the caller's model: {text}"
    );
}

#[tokio::test]
async fn an_azure_upstream_gets_its_urls_query_and_key_header() {
    let (azure, endpoint, g) = azure("azure-east", "api_version = \"2024-10-21\"").await;
    let v = chat_stream_and_embed(&g, "azure-east").await;
    assert_eq!(v["object"], "chat.completion");
    // Azure's Responses API is not under a deployment's URL: the body names the deployment,
    // and the answer's echo of it is mapped back.
    responses_name_the_callers_model(&g).await;
    let seen = azure.stats().azure;
    assert_eq!(
        seen.get("prod-4o-mini responses api-version=2024-10-21 auth=api-key"),
        Some(&2),
        "{seen:?}"
    );
    assert_eq!(
        seen.get("prod-4o-mini chat/completions api-version=2024-10-21 auth=api-key"),
        Some(&2),
        "{seen:?}"
    );
    assert_eq!(
        seen.get("prod-embed embeddings api-version=2024-10-21 auth=api-key"),
        Some(&1),
        "{seen:?}"
    );
    // The mock is as strict as Azure: no api-version, no key, an unknown deployment.
    let c = reqwest::Client::new();
    let url = format!("{endpoint}/openai/deployments/prod-4o-mini/chat/completions");
    let r = c
        .post(&url)
        .header("api-key", "k")
        .json(&chat("x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .post(format!("{url}?api-version=2024-10-21"))
        .json(&chat("x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(format!(
            "{endpoint}/openai/deployments/nope/chat/completions?api-version=2024-10-21"
        ))
        .header("api-key", "k")
        .json(&chat("x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "DeploymentNotFound"
    );
    g.shutdown().await;
}

#[tokio::test]
async fn a_429_with_a_long_wait_moves_to_another_upstream() {
    // The primary allows one request a minute and says nothing of its limits until it
    // refuses (a compatible server): the second request meets a 429 with a long wait, and goes
    // to the backup at once instead of waiting for the primary's window.
    let primary = mock("headers = \"none\"\n[limits]\nrpm = 1\n").await;
    let backup = mock("").await;
    let g = gateway(
        "max_attempts = 3",
        &(entry("primary", &primary.base_url(), "priority = 0")
            + &entry("backup", &backup.base_url(), "priority = 1")),
    )
    .await;
    let (s, up, _) = post(&g, "/chat/completions", &chat("gpt-4o-mini", false)).await;
    assert_eq!((s, up.as_str()), (200, "primary"));
    let t0 = std::time::Instant::now();
    let (s, up, v) = post(&g, "/chat/completions", &chat("gpt-4o-mini", false)).await;
    assert_eq!((s, up.as_str()), (200, "backup"), "{v}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(primary.stats().by_status.get("429"), Some(&1));
    g.shutdown().await;
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// Whether Redis answers (a test that needs it is skipped without, unless it is required).
async fn redis_available() -> bool {
    let url = redis_url();
    let addr = url
        .trim_start_matches("redis://")
        .rsplit('@')
        .next()
        .unwrap_or("")
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    let up = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    if !up {
        assert!(
            std::env::var("SLUICE_REQUIRE_REDIS").as_deref() != Ok("1"),
            "Redis at {url} is unreachable and SLUICE_REQUIRE_REDIS=1"
        );
        eprintln!("\n*** SKIPPED: Redis at {url} is unreachable ***\n");
    }
    up
}

fn shared_state(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "[state]\nredis_url = \"{}\"\nprefix = \"sluice-test:{name}:{nanos}\"\n",
        redis_url()
    )
}

#[tokio::test]
async fn replicas_sharing_state_share_open_breakers_and_rejected_keys() {
    if !redis_available().await {
        return;
    }
    // A breaker one replica opens is open on the other, which then never tries the upstream.
    let failing = mock("[faults]\nerror_503 = 1.0\n").await;
    let backup = mock("").await;
    let upstream =
        "max_attempts = 3\nbreaker = { failures = 3, failing_for = \"0s\", cooldown = \"30s\" }";
    let ups = entry("primary", &failing.base_url(), "priority = 0")
        + &entry("backup", &backup.base_url(), "priority = 1")
        + &shared_state("breaker");
    let g1 = gateway(upstream, &ups).await;
    let g2 = gateway(upstream, &ups).await;
    for _ in 0..5 {
        let (status, up, _) = post(&g1, "/chat/completions", &chat("gpt-4o-mini", false)).await;
        assert_eq!((status, up.as_str()), (200, "backup"));
    }
    assert_eq!(
        failing.stats().requests,
        3,
        "tried until its breaker opened"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    for _ in 0..10 {
        let (status, up, _) = post(&g2, "/chat/completions", &chat("gpt-4o-mini", false)).await;
        assert_eq!((status, up.as_str()), (200, "backup"));
    }
    assert_eq!(
        failing.stats().requests,
        3,
        "the second replica knew the breaker was open"
    );
    g1.shutdown().await;
    g2.shutdown().await;

    // A key one replica saw rejected (401) is not tried by the other.
    let keyed = mock(
        "auth = \"listed\"\n\
         [[keys]]\nkey = \"sk-revoked-upstream-01\"\nname = \"revoked\"\nrevoked = true\n\
         [[keys]]\nkey = \"sk-good-upstream-0001\"\nname = \"good\"\n",
    )
    .await;
    let ups = format!(
        "[[upstreams]]\nname = \"only\"\nbase_url = \"{}\"\nkeys = [{{ value = \"sk-revoked-upstream-01\" }}, {{ value = \"sk-good-upstream-0001\" }}]\n{}",
        keyed.base_url(),
        shared_state("keys")
    );
    let g1 = gateway("max_attempts = 3", &ups).await;
    let g2 = gateway("max_attempts = 3", &ups).await;
    for _ in 0..3 {
        let (status, _, v) = post(&g1, "/chat/completions", &chat("gpt-4o-mini", false)).await;
        assert_eq!(status, 200, "{v}");
    }
    assert_eq!(keyed.stats().by_key.get("revoked"), Some(&1));
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    for _ in 0..6 {
        let (status, _, v) = post(&g2, "/chat/completions", &chat("gpt-4o-mini", false)).await;
        assert_eq!(status, 200, "{v}");
    }
    assert_eq!(
        keyed.stats().by_key.get("revoked"),
        Some(&1),
        "the second replica knew the key was rejected: {:?}",
        keyed.stats().by_key
    );
    g1.shutdown().await;
    g2.shutdown().await;
}

#[tokio::test]
async fn an_upstream_without_room_now_is_passed_over_before_anything_waits() {
    // `a` allows 60 requests a minute of its own (about one now, then one a second); `b` has
    // room for the whole burst. Of 20 requests at once, `a` takes what it has room for and the
    // rest go to `b` — none waits for `a`'s budget to refill.
    let a = mock("").await;
    let b = mock("").await;
    let g = gateway(
        "",
        &(entry("a", &a.base_url(), "rpm = 60") + &entry("b", &b.base_url(), "rpm = 100000")),
    )
    .await;
    let body = chat("gpt-4o-mini", false);
    let burst = (0..20).map(|_| post(&g, "/chat/completions", &body));
    for (status, _, v) in futures_util::future::join_all(burst).await {
        assert_eq!(status, 200, "{v}");
    }
    let (on_a, on_b) = (a.stats().requests, b.stats().requests);
    assert_eq!(on_a + on_b, 20);
    assert!(
        on_a <= 3,
        "a took only what it had room for: a {on_a}, b {on_b}"
    );
    g.shutdown().await;
}

#[tokio::test]
async fn an_azure_v1_upstream_gets_openai_paths_and_the_deployment_in_the_body() {
    let (azure, endpoint, g) = azure("azure-v1", "api = \"v1\"").await;
    let v = chat_stream_and_embed(&g, "azure-v1").await;
    assert_eq!(
        v["model"], "gpt-4o-mini-2024-07-18",
        "the model's name in a chat answer, not the deployment's"
    );
    responses_name_the_callers_model(&g).await;
    let seen = azure.stats().azure;
    assert_eq!(
        seen.get("v1 prod-4o-mini chat/completions auth=api-key"),
        Some(&2),
        "{seen:?}"
    );
    assert_eq!(
        seen.get("v1 prod-4o-mini responses auth=api-key"),
        Some(&2),
        "{seen:?}"
    );
    assert_eq!(
        seen.get("v1 prod-embed embeddings auth=api-key"),
        Some(&1),
        "{seen:?}"
    );
    // Asked directly, the simulated Responses API answers with the deployment's name (the
    // harsher reading of Azure's documentation) — what the gateway mapped back above.
    let c = reqwest::Client::new();
    let direct: Value = c
        .post(format!("{endpoint}/openai/v1/responses"))
        .header("api-key", "k")
        .json(&json!({"model": "prod-4o-mini", "input": "hello"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(direct["model"], "prod-4o-mini", "{direct}");
    // The simulated v1 surface refuses a dated api-version and an unknown deployment.
    let url = format!("{endpoint}/openai/v1/chat/completions");
    let r = c
        .post(format!("{url}?api-version=2024-10-21"))
        .header("api-key", "k")
        .json(&chat("prod-4o-mini", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .post(&url)
        .header("api-key", "k")
        .json(&chat("nope", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    g.shutdown().await;
}

#[tokio::test]
async fn an_entra_token_file_is_sent_as_a_bearer_token_and_reread_when_it_changes() {
    let azure = mock("[azure]\ndeployments = { \"prod-4o-mini\" = \"gpt-4o-mini\" }\n").await;
    let endpoint = azure.base_url().trim_end_matches("/v1").to_string();
    let dir = std::env::temp_dir().join(format!(
        "sluice-entra-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "eyJ0eXAiOiJKV1QiLCJhbGciOi.first-one\n").unwrap();
    let g = gateway(
        "",
        &format!(
            "[[upstreams]]\nname = \"azure-entra\"\nkind = \"azure\"\nendpoint = \"{endpoint}\"\napi_version = \"2024-10-21\"\ndeployments = {{ \"gpt-4o-mini\" = \"prod-4o-mini\" }}\nkeys = [{{ token_file = \"{}\" }}]\n",
            token.display()
        ),
    )
    .await;
    let (s, _, v) = post(&g, "/chat/completions", &chat("gpt-4o-mini", false)).await;
    assert_eq!(s, 200, "{v}");
    // Whatever refreshes the token rewrites the file; the next request carries the new one.
    std::fs::write(&token, "eyJ0eXAiOiJKV1QiLCJhbGciOi.refreshed-two\n").unwrap();
    let (s, _, v) = post(&g, "/chat/completions", &chat("gpt-4o-mini", false)).await;
    assert_eq!(s, 200, "{v}");
    let stats = azure.stats();
    assert_eq!(
        stats
            .azure
            .get("prod-4o-mini chat/completions api-version=2024-10-21 auth=bearer"),
        Some(&2),
        "sent as Authorization: Bearer, not api-key: {:?}",
        stats.azure
    );
    assert_eq!(stats.by_key.len(), 2, "two tokens seen: {:?}", stats.by_key);
    g.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_compatible_server_without_rate_limit_headers_serves_its_own_models_unpriced() {
    // A self-hosted server (vLLM-like): no rate-limit headers, a model no price table knows.
    let local = mock(
        "headers = \"none\"\n[latency]\nttft = \"50ms\"\n[[models]]\nid = \"llama-3.1-8b-instruct\"\nkind = \"chat\"\n",
    )
    .await;
    let openai = mock("").await;
    let g = gateway(
        "",
        &(entry(
            "local",
            &local.base_url(),
            "kind = \"compatible\"\nmodels = [\"llama-*\"]",
        ) + &entry("openai", &openai.base_url(), "models = [\"gpt-*\"]")),
    )
    .await;
    let body = chat("llama-3.1-8b-instruct", false);
    let first = reqwest::Client::new()
        .post(format!("{}/chat/completions", g.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = first.status();
    let headers = first.headers().clone();
    assert_eq!(status, 200, "{}", first.text().await.unwrap());
    assert_eq!(headers["x-sluice-upstream"], "local");
    assert!(
        headers.get("x-sluice-cost-usd").is_none(),
        "an unknown model is not priced: {headers:?}"
    );
    // With no headers to learn from, admission runs on adaptive concurrency alone: after the
    // first answer, requests go side by side (not one at a time, waiting for limits).
    let burst = (0..12).map(|_| post(&g, "/chat/completions", &body));
    for (status, up, v) in futures_util::future::join_all(burst).await {
        assert_eq!((status, up.as_str()), (200, "local"), "{v}");
    }
    assert!(
        local.stats().peak_in_flight > 1,
        "peak {}",
        local.stats().peak_in_flight
    );
    assert_eq!(openai.stats().requests, 0);
    g.shutdown().await;
}

#[tokio::test]
async fn an_upstream_with_its_own_prices_charges_them() {
    // A self-hosted server priced in its entry (the registry knows no price for its model),
    // and an OpenAI upstream whose contract bills gpt-4o-mini above the registry's price.
    let local = mock("[[models]]\nid = \"llama-3.1-8b-instruct\"\nkind = \"chat\"\n").await;
    let openai = mock("").await;
    let g = gateway(
        "",
        &(entry(
            "local",
            &local.base_url(),
            "kind = \"compatible\"\nmodels = [\"llama-*\"]\nprices = { \"llama-*\" = { input_per_mtok = 1, output_per_mtok = 2 } }",
        ) + &entry(
            "openai",
            &openai.base_url(),
            "models = [\"gpt-*\"]\n[upstreams.prices.\"gpt-4o-mini\"]\ninput_per_mtok = 10\noutput_per_mtok = 20\ncached_input_per_mtok = 5",
        )),
    )
    .await;
    for (model, input, output) in [
        ("llama-3.1-8b-instruct", 1_000_000, 2_000_000),
        ("gpt-4o-mini", 10_000_000, 20_000_000),
    ] {
        let r = reqwest::Client::new()
            .post(format!("{}/chat/completions", g.base_url()))
            .json(&chat(model, false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let cost = r.headers()["x-sluice-cost-usd"]
            .to_str()
            .unwrap()
            .to_string();
        let v: Value = r.json().await.unwrap();
        let (p, c) = (
            v["usage"]["prompt_tokens"].as_u64().unwrap(),
            v["usage"]["completion_tokens"].as_u64().unwrap(),
        );
        // Nano-dollars: tokens × micro-dollars per million tokens ÷ 1,000.
        let nanos = (p * input + c * output) / 1000;
        assert_eq!(
            cost,
            format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000),
            "{model}: {p} prompt and {c} completion tokens at the upstream's own price"
        );
    }
    g.shutdown().await;
}
