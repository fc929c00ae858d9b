//! The batch runner against an in-process `sluice mock`: bad input loses nothing else,
//! duplicates are refused, budgets stop and resume, a stop signal resumes, a torn line is
//! repaired, and every custom_id ends up exactly once across output and errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use sluice::keypool::KeySpec;
use sluice_batch::{BatchConfig, BatchError, EngineSettings, Outcome, ProgressMode};
use sluice_mock::{MockServer, Scenario};
use tokio::sync::watch;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sluice-batch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn chat_line(id: &str, text: &str) -> String {
    json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": "gpt-4o-mini", "max_tokens": 20,
                    "messages": [{"role": "user", "content": text}]}})
    .to_string()
}

fn write_input(d: &Path, lines: &[String]) -> PathBuf {
    let p = d.join("in.jsonl");
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

async fn mock(toml: &str) -> MockServer {
    MockServer::start(Scenario::from_toml(toml).unwrap())
        .await
        .unwrap()
}

/// The engine settings of a job against `m`: fast retries, no ledger.
fn engine(m: &MockServer) -> EngineSettings {
    EngineSettings {
        base_url: Some(m.base_url()),
        keys: vec![KeySpec::Value("sk-batch-test-00001".into())],
        retry: sluice::RetryPolicy {
            backoff_base: Duration::from_millis(5),
            backoff_cap: Duration::from_millis(50),
            budget_ratio: 1.0,
            ..sluice::RetryPolicy::default()
        },
        ledger: sluice::spend::LedgerSetting::Off,
        ..EngineSettings::default()
    }
}

fn cfg(input: &Path) -> BatchConfig {
    let mut c = BatchConfig::new(input);
    c.progress = ProgressMode::Off;
    c.window = 16;
    c
}

fn never() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    std::mem::forget(tx);
    rx
}

/// custom_id (or `line N`) → how many times it appears across output and errors.
fn appearances(c: &BatchConfig) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for p in [c.output_path(), c.errors_path()] {
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        for l in text.lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            let key = match v["custom_id"].as_str() {
                Some(id) => id.to_string(),
                None => format!("line {}", v["line"]),
            };
            *seen.entry(key).or_default() += 1;
        }
    }
    seen
}

#[tokio::test]
async fn bad_lines_go_to_errors_and_the_rest_run() {
    let d = dir("bad");
    let lines = vec![
        chat_line("a", "one"),
        "{this is not json".to_string(),
        json!({"custom_id": "b", "method": "POST", "url": "/v1/images/generations", "body": {}})
            .to_string(),
        json!({"custom_id": "c", "method": "GET", "url": "/v1/chat/completions", "body": {}})
            .to_string(),
        json!({"method": "POST", "url": "/v1/chat/completions", "body": {}}).to_string(),
        chat_line("d", "two"),
        json!({"custom_id": "e", "method": "POST", "url": "/v1/embeddings",
               "body": {"model": "text-embedding-3-small", "input": "x"}})
        .to_string(),
    ];
    let input = write_input(&d, &lines);
    let m = mock("").await;
    let c = cfg(&input);
    let r = sluice_batch::run(&engine(&m), c.clone(), never())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(r.summary.succeeded, 3);
    assert_eq!(r.summary.failed, 4);
    let errors = std::fs::read_to_string(c.errors_path()).unwrap();
    let by_line: HashMap<u64, Value> = errors
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (v["line"].as_u64().unwrap(), v))
        .collect();
    assert_eq!(by_line[&2]["error"]["code"], "invalid_json");
    assert!(by_line[&2]["custom_id"].is_null());
    assert_eq!(by_line[&3]["error"]["code"], "unsupported_url");
    assert_eq!(by_line[&3]["custom_id"], "b");
    assert!(by_line[&3]["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("line 3:"));
    assert_eq!(by_line[&4]["error"]["code"], "unsupported_method");
    assert_eq!(by_line[&5]["error"]["code"], "missing_custom_id");
    // The output is in the Batch API's format.
    let out = std::fs::read_to_string(c.output_path()).unwrap();
    for l in out.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        assert!(v["id"].as_str().unwrap().starts_with("batch_req_"));
        assert_eq!(v["response"]["status_code"], 200);
        assert!(v["response"]["request_id"]
            .as_str()
            .unwrap()
            .starts_with("req_"));
        assert!(v["response"]["body"]["usage"].is_object());
        assert!(v["error"].is_null());
    }
    let seen = appearances(&c);
    assert_eq!(seen.len(), 7);
    assert!(seen.values().all(|n| *n == 1));
    // Running again sends nothing and writes nothing.
    let before = m.stats().requests;
    let r = sluice_batch::run(&engine(&m), c.clone(), never())
        .await
        .unwrap();
    assert_eq!(r.summary.already_done, 7);
    assert_eq!(m.stats().requests, before);
    assert!(appearances(&c).values().all(|n| *n == 1));
}

#[tokio::test]
async fn duplicate_ids_are_refused_before_sending() {
    let d = dir("dup");
    let input = write_input(
        &d,
        &[
            chat_line("x", "1"),
            chat_line("y", "2"),
            chat_line("x", "3"),
            chat_line("y", "4"),
            chat_line("x", "5"),
        ],
    );
    let m = mock("").await;
    let e = sluice_batch::run(&engine(&m), cfg(&input), never())
        .await
        .unwrap_err();
    let BatchError::Duplicates(msg) = e else {
        panic!("expected duplicates, got {e}");
    };
    assert!(msg.contains("\"x\" on lines 1, 3, 5"), "{msg}");
    assert!(msg.contains("\"y\" on lines 2, 4"), "{msg}");
    assert_eq!(m.stats().requests, 0);
}

#[tokio::test]
async fn budget_stops_and_raising_it_continues() {
    let d = dir("budget");
    let lines: Vec<String> = (0..40)
        .map(|i| chat_line(&format!("r{i}"), &format!("question {i}")))
        .collect();
    let input = write_input(&d, &lines);
    let m = mock("[output]\nmin_tokens = 20\nmax_tokens = 20\n").await;
    // Each request's worst case: ~11 prompt tokens × $0.15/M + 20 × $0.60/M ≈ $0.0000137.
    let mut c = cfg(&input);
    c.window = 4;
    c.budget = Some(150_000); // $0.00015: about ten requests
    let r = sluice_batch::run(&engine(&m), c.clone(), never())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::BudgetReached);
    let first = r.summary.succeeded;
    assert!(first > 0 && first < 40, "{first}");
    assert!(
        r.summary.job_cost_nanos <= 150_000,
        "never over budget: {}",
        r.summary.job_cost_nanos
    );
    // Raise the budget: the job continues where it stopped.
    c.budget = Some(10_000_000);
    let r = sluice_batch::run(&engine(&m), c.clone(), never())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(r.summary.already_done, first);
    assert_eq!(r.summary.succeeded, 40 - first);
    let seen = appearances(&c);
    assert_eq!(seen.len(), 40);
    assert!(seen.values().all(|n| *n == 1));
    assert_eq!(m.stats().requests, 40);
}

#[tokio::test]
async fn a_budget_over_a_model_without_a_price_stops_the_job_naming_the_line() {
    let d = dir("unpriced");
    let mut lines: Vec<String> = (0..3)
        .map(|i| chat_line(&format!("p{i}"), &format!("priced {i}")))
        .collect();
    lines.push(
        json!({"custom_id": "u", "method": "POST", "url": "/v1/chat/completions",
               "body": {"model": "acme-llm", "max_tokens": 20,
                        "messages": [{"role": "user", "content": "unpriced"}]}})
        .to_string(),
    );
    let input = write_input(&d, &lines);
    let m = mock("[[models]]\nid = \"acme-llm\"\nkind = \"chat\"\n").await;
    let mut c = cfg(&input);
    c.budget = Some(1_000_000_000);
    let r = sluice_batch::run(&engine(&m), c.clone(), never())
        .await
        .unwrap();
    let Outcome::Stopped(reason) = &r.outcome else {
        panic!("expected a stop, got {:?}", r.outcome);
    };
    assert!(
        reason.contains("line 4") && reason.contains("no price is known for model \"acme-llm\""),
        "{reason}"
    );
    assert_eq!(r.summary.failed, 0, "the line stays pending, not failed");
    assert_eq!(
        m.stats().by_model.get("acme-llm"),
        None,
        "refused before anything was sent"
    );
}

#[tokio::test]
async fn stop_signal_then_resume() {
    let d = dir("stop");
    let lines: Vec<String> = (0..60)
        .map(|i| chat_line(&format!("s{i}"), &format!("q{i}")))
        .collect();
    let input = write_input(&d, &lines);
    let m = mock("[latency]\nttft = \"50ms\"\n").await;
    let mut c = cfg(&input);
    c.window = 4;
    let (tx, rx) = watch::channel(false);
    let e = engine(&m);
    let c2 = c.clone();
    let job = tokio::spawn(async move { sluice_batch::run(&e, c2, rx).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(true).unwrap();
    let r = job.await.unwrap().unwrap();
    assert_eq!(r.outcome, Outcome::Interrupted);
    assert!(r.summary.not_done > 0);
    // In-flight requests were allowed to finish: nothing half-written, nothing in flight.
    assert_eq!(m.stats().in_flight, 0);
    let r = sluice_batch::run(&engine(&m), c.clone(), never())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    let seen = appearances(&c);
    assert_eq!(seen.len(), 60);
    assert!(seen.values().all(|n| *n == 1));
}

#[tokio::test]
async fn torn_last_line_is_repaired_on_resume() {
    let d = dir("torn");
    let lines: Vec<String> = (0..10)
        .map(|i| chat_line(&format!("t{i}"), &format!("q{i}")))
        .collect();
    let input = write_input(&d, &lines);
    let m = mock("").await;
    let c = cfg(&input);
    sluice_batch::run(&engine(&m), c.clone(), never())
        .await
        .unwrap();
    // Simulate a kill in the middle of writing the last record.
    let out = std::fs::read_to_string(c.output_path()).unwrap();
    let mut kept: Vec<&str> = out.lines().collect();
    let last = kept.pop().unwrap();
    let torn = format!("{}\n{}", kept.join("\n"), &last[..last.len() / 2]);
    std::fs::write(c.output_path(), torn).unwrap();
    let r = sluice_batch::run(&engine(&m), c.clone(), never())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(
        r.summary.succeeded, 1,
        "only the torn request is sent again"
    );
    let seen = appearances(&c);
    assert_eq!(seen.len(), 10);
    assert!(seen.values().all(|n| *n == 1));
    // The resent request carried the same idempotency key as the first time.
    let twice = m
        .stats()
        .idempotency_keys
        .values()
        .filter(|k| k.seen == 2)
        .count();
    assert_eq!(twice, 1);
}

#[tokio::test]
async fn quota_errors_stop_the_job_without_failing_lines() {
    let d = dir("quota");
    let lines: Vec<String> = (0..20)
        .map(|i| chat_line(&format!("q{i}"), &format!("q{i}")))
        .collect();
    let input = write_input(&d, &lines);
    let m = mock("[[keys]]\nkey = \"sk-batch-test-00001\"\nquota_exhausted = true\n").await;
    let c = cfg(&input);
    let r = sluice_batch::run(&engine(&m), c.clone(), never())
        .await
        .unwrap();
    let Outcome::Stopped(reason) = &r.outcome else {
        panic!("expected a stop, got {:?}", r.outcome);
    };
    assert!(reason.contains("quota"), "{reason}");
    assert_eq!(
        r.summary.failed, 0,
        "no line is written off for a billing problem"
    );
    // Fix the billing: the same command completes the job.
    m.set_scenario(Scenario::from_toml("").unwrap());
    let r = sluice_batch::run(&engine(&m), c.clone(), never())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(appearances(&c).len(), 20);
}

#[tokio::test]
async fn faults_are_retried_and_summary_is_written() {
    let d = dir("faults");
    let lines: Vec<String> = (0..50)
        .map(|i| chat_line(&format!("f{i}"), &format!("q{i}")))
        .collect();
    let input = write_input(&d, &lines);
    let m = mock("seed = 9\n[faults]\nerror_500 = 0.2\nerror_503 = 0.1\nreset = 0.05\n").await;
    let mut c = cfg(&input);
    c.summary_json = Some(d.join("summary.json"));
    let r = sluice_batch::run(&engine(&m), c.clone(), never())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(r.summary.succeeded + r.summary.failed, 50);
    assert!(r.summary.retries > 0);
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["outcome"], "completed");
    assert!(s["latency_ms"]["p50"].is_u64());
    assert!(s["tokens"]["prompt"].as_u64().unwrap() > 0);
    assert!(appearances(&c).values().all(|n| *n == 1));
}

#[tokio::test]
async fn one_job_spreads_over_several_keys_and_survives_a_revoked_one() {
    let d = dir("keys");
    let lines: Vec<String> = (0..40)
        .map(|i| chat_line(&format!("k{i}"), &format!("q{i}")))
        .collect();
    let input = write_input(&d, &lines);
    let m = mock(
        "auth = \"listed\"\n[[keys]]\nkey = \"sk-batch-key-one-0001\"\nname = \"one\"\n[[keys]]\nkey = \"sk-batch-key-two-0002\"\nname = \"two\"\n[[keys]]\nkey = \"sk-batch-key-bad-0003\"\nname = \"bad\"\nrevoked = true\n",
    )
    .await;
    let settings = EngineSettings {
        keys: vec![
            KeySpec::Value("sk-batch-key-bad-0003".into()),
            KeySpec::Value("sk-batch-key-one-0001".into()),
            KeySpec::Value("sk-batch-key-two-0002".into()),
        ],
        ..engine(&m)
    };
    let c = cfg(&input);
    let r = sluice_batch::run(&settings, c.clone(), never())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(r.summary.succeeded, 40);
    let s = m.stats();
    assert!(s.by_key["one"] > 0 && s.by_key["two"] > 0);
    // Only requests already on their way when the first 401 came back used the bad key.
    assert!(s.by_key.get("bad").copied().unwrap_or(0) <= c.window as u64);
}

type Snapshot = Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    metrics_util::debugging::DebugValue,
)>;

/// Run `job` on a current-thread runtime with a local metrics recorder; what it recorded.
fn recorded<F: std::future::Future<Output = ()>>(job: impl FnOnce() -> F) -> Snapshot {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(job());
    });
    snap.snapshot().into_vec()
}

/// The sum of a metric's counts (histograms: their samples) over the series with these labels.
fn sum(all: &Snapshot, name: &str, want: &[(&str, &str)]) -> u64 {
    use metrics_util::debugging::DebugValue;
    all.iter()
        .filter(|(k, ..)| {
            k.key().name() == name
                && want
                    .iter()
                    .all(|(n, v)| k.key().labels().any(|l| l.key() == *n && l.value() == *v))
        })
        .map(|(.., v)| match v {
            DebugValue::Counter(n) => *n,
            DebugValue::Histogram(h) => h.len() as u64,
            DebugValue::Gauge(_) => 0,
        })
        .sum()
}

#[test]
fn the_upstream_model_list_is_checked_before_the_first_line() {
    let all = recorded(|| async {
        let d = dir("models-check");
        let input = write_input(&d, &[chat_line("a", "one"), chat_line("b", "two")]);
        // The upstream no longer serves the input's model, though the registry calls it
        // active.
        let m = mock("[[models]]\nid = \"gpt-4o-mini\"\nretired = true\n").await;
        let e = engine(&m);
        let mut c = cfg(&input);
        c.models_check_every = Some(Duration::from_secs(3600));
        let r = sluice_batch::run(&e, c, never()).await.unwrap();
        assert_eq!(r.summary.failed, 2);
    });
    let alerts = sum(
        &all,
        sluice::alerts::ALERTS,
        &[("rule", sluice::catalog::MODEL_UNAVAILABLE)],
    );
    assert_eq!(alerts, 1, "model_unavailable for gpt-4o-mini");
}

#[test]
fn each_batch_line_is_one_request_in_the_metrics() {
    let all = recorded(|| async {
        let d = dir("metrics-once");
        let lines: Vec<String> = (0..3)
            .map(|i| chat_line(&format!("l{i}"), "hello"))
            .collect();
        let input = write_input(&d, &lines);
        let m = mock("[output]\nmin_tokens = 4\nmax_tokens = 4\n").await;
        let r = sluice_batch::run(&engine(&m), cfg(&input), never())
            .await
            .unwrap();
        assert_eq!(r.summary.succeeded, 3);
    });
    let ok = [
        ("endpoint", "chat"),
        ("model", "gpt-4o-mini"),
        ("outcome", "ok"),
    ];
    assert_eq!(sum(&all, "sluice_requests_total", &ok), 3);
    assert_eq!(sum(&all, "sluice_request_duration_seconds", &ok), 3);
    assert_eq!(
        sum(
            &all,
            "sluice_tokens_total",
            &[("model", "gpt-4o-mini"), ("kind", "completion")]
        ),
        12
    );
    assert_eq!(
        sum(
            &all,
            "sluice_finish_reasons_total",
            &[("model", "gpt-4o-mini")]
        ),
        3
    );
}

#[tokio::test]
async fn a_torn_line_completed_later_is_sent_and_a_bom_is_skipped() {
    let d = dir("torn-input");
    let p = d.join("in.jsonl");
    // A BOM before line 1; line 3 still being written (no newline, JSON cut short).
    let whole = chat_line("c", "three");
    let (head, tail) = whole.split_at(30);
    std::fs::write(
        &p,
        format!(
            "\u{feff}{}\n{}\n{head}",
            chat_line("a", "one"),
            chat_line("b", "two")
        ),
    )
    .unwrap();
    let m = mock("").await;
    let c = cfg(&p);
    let r = sluice_batch::run(&engine(&m), c.clone(), never())
        .await
        .unwrap();
    assert_eq!((r.summary.succeeded, r.summary.failed), (2, 1));
    let errors = std::fs::read_to_string(c.errors_path()).unwrap();
    let e: Value = serde_json::from_str(errors.lines().next().unwrap()).unwrap();
    assert_eq!(
        (e["line"].as_u64(), e["error"]["code"].as_str()),
        (Some(3), Some("invalid_json"))
    );
    assert!(e["line_hash"].as_str().is_some_and(|h| h.len() == 16));

    // The writer finishes the line: the next run sends it, since its text is not the text
    // the error was written for; a and b are not sent again.
    let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
    std::io::Write::write_all(&mut f, format!("{tail}\n").as_bytes()).unwrap();
    drop(f);
    let before = m.stats().requests;
    let r = sluice_batch::run(&engine(&m), c.clone(), never())
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(
        m.stats().requests - before,
        1,
        "only the completed line is sent"
    );
    let seen = appearances(&c);
    assert_eq!(seen.get("a"), Some(&1));
    assert_eq!(seen.get("b"), Some(&1));
    assert_eq!(seen.get("c"), Some(&1), "{seen:?}");
}

#[tokio::test]
async fn lines_appended_while_a_job_runs_are_left_for_the_next_run() {
    let d = dir("appended");
    let lines: Vec<String> = (0..40).map(|i| chat_line(&format!("r{i}"), "x")).collect();
    let input = write_input(&d, &lines);
    // Slow answers: the job is still running when lines are appended.
    let m = mock("[latency]\nttft = \"150ms\"\n").await;
    let mut c = cfg(&input);
    c.window = 4;
    let job = tokio::spawn({
        let (s, c) = (engine(&m), c.clone());
        async move { sluice_batch::run(&s, c, never()).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    for i in 40..45 {
        // r0 again: a duplicate the first pass never saw.
        let id = if i == 44 {
            "r0".to_string()
        } else {
            format!("r{i}")
        };
        std::io::Write::write_all(&mut f, format!("{}\n", chat_line(&id, "late")).as_bytes())
            .unwrap();
    }
    drop(f);
    let r = job.await.unwrap().unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(
        r.summary.succeeded, 40,
        "the run sends its snapshot, nothing more"
    );
    let seen = appearances(&c);
    assert_eq!(seen.len(), 40);
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    // The next run reads the grown file: its duplicate is refused before anything is sent.
    let r = sluice_batch::run(&engine(&m), c.clone(), never()).await;
    assert!(matches!(r, Err(BatchError::Duplicates(_))), "{r:?}");
}
