//! `/metrics` as the Prometheus ecosystem expects it, in a process of its own (the recorder is
//! global): every family has HELP and TYPE, durations are histograms with the documented
//! buckets, every sample line is well formed, the `model` label is bounded however many model
//! names callers make up, and gateway traffic — unary and streamed — records exactly one
//! request each, with its tokens and finish reasons.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt;
use serde_json::json;
use sluice_gateway::{Gateway, GatewayConfig, LedgerSetting};
use sluice_mock::{MockServer, Scenario};

/// A sample: `name{labels} value`, labels as a map.
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let mut m = BTreeMap::new();
                // Label values here never hold `",`; split on it.
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label in {line}"));
                    m.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (n.to_string(), m)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        out.push((name, labels, value));
    }
    out
}

#[tokio::test]
async fn metrics_are_described_histograms_bounded_and_recorded_once_per_request() {
    let m = MockServer::start(Scenario::from_toml("").unwrap())
        .await
        .unwrap();
    let mut cfg = GatewayConfig::from_toml(
        "m.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\n[upstream]\nbase_url = \"{}\"\nkeys = [{{ value = \"sk-upstream-key-0001\" }}]\nmax_attempts = 1\n",
            m.base_url()
        ),
    )
    .unwrap();
    cfg.spend.ledger = LedgerSetting::Off;
    cfg.models.check_upstream_every = None;
    let g = Gateway::start(cfg).await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", g.base_url());
    let chat = |model: &str, stream: bool| {
        json!({"model": model, "max_tokens": 8, "stream": stream,
               "messages": [{"role": "user", "content": "count tokens"}]})
    };
    // One unary and one streamed request for a known model.
    let r = http
        .post(&url)
        .json(&chat("gpt-4o-mini", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.text().await.unwrap();
    let r = http
        .post(&url)
        .json(&chat("gpt-4o-mini", true))
        .send()
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    while let Some(c) = body.next().await {
        c.unwrap();
    }
    // A caller making up model names.
    for i in 0..100 {
        let r = http
            .post(&url)
            .json(&chat(&format!("made-up-model-{i}"), false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let text = reqwest::get(format!("http://{}/metrics", g.addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // HELP and TYPE for every family; no summaries.
    let mut help = BTreeSet::new();
    let mut types = BTreeMap::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# HELP ") {
            help.insert(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = l.strip_prefix("# TYPE ") {
            let (n, t) = rest.split_once(' ').unwrap();
            types.insert(n.to_string(), t.to_string());
        }
    }
    assert!(!types.is_empty());
    for (name, t) in &types {
        assert!(help.contains(name), "{name} has no HELP text");
        assert_ne!(t, "summary", "{name} is a summary");
    }
    assert_eq!(types["sluice_request_duration_seconds"], "histogram");
    let all = samples(&text);
    // Every sample belongs to a described family.
    for (name, ..) in &all {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
            .unwrap_or(name);
        assert!(types.contains_key(family), "{name} has no TYPE");
    }
    assert!(
        all.iter()
            .any(|(n, l, _)| n == "sluice_request_duration_seconds_bucket"
                && l.get("le").map(String::as_str) == Some("0.005")),
        "the documented buckets"
    );

    // The model label: known models and `other`, whatever callers sent.
    let models: BTreeSet<&str> = all
        .iter()
        .filter_map(|(_, l, _)| l.get("model").map(String::as_str))
        .collect();
    assert!(models.contains("other"), "{models:?}");
    assert!(
        models.iter().all(|m| !m.starts_with("made-up")),
        "{models:?}"
    );
    assert!(models.len() <= 4, "bounded: {models:?}");

    // One request each, with tokens and finish reasons, for unary and streamed traffic.
    let count = |name: &str, want: &[(&str, &str)]| -> f64 {
        all.iter()
            .filter(|(n, l, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(.., v)| v)
            .sum()
    };
    let ok = [
        ("endpoint", "chat"),
        ("model", "gpt-4o-mini"),
        ("outcome", "ok"),
    ];
    assert_eq!(count("sluice_requests_total", &ok), 2.0, "{text}");
    assert_eq!(count("sluice_request_duration_seconds_count", &ok), 2.0);
    assert_eq!(
        count(
            "sluice_requests_total",
            &[("model", "other"), ("outcome", "model_not_found")]
        ),
        100.0
    );
    assert!(
        count(
            "sluice_tokens_total",
            &[("model", "gpt-4o-mini"), ("kind", "prompt")]
        ) > 0.0
    );
    assert!(
        count(
            "sluice_tokens_total",
            &[("model", "gpt-4o-mini"), ("kind", "completion")]
        ) > 0.0
    );
    assert!(count("sluice_finish_reasons_total", &[("model", "gpt-4o-mini")]) >= 2.0);
    // Attempts per upstream, by its configured name.
    assert_eq!(
        count(
            "sluice_upstream_attempts_total",
            &[("upstream", "default"), ("result", "answered")]
        ),
        2.0,
        "{text}"
    );
    g.shutdown().await;
}
