//! `sluice batch` killed with SIGKILL at arbitrary moments, again and again, against a faulty
//! upstream in another process: when it finally completes, every custom_id is in the output or
//! errors file exactly once, and the upstream saw no request completed twice except those in
//! flight at a kill. Then SIGINT: a graceful stop and a resume.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{Proc, BIN};

struct Mock {
    _proc: Proc,
    addr: String,
}

fn start_mock(dir: &Path, scenario: &str) -> Mock {
    let cfg = dir.join("scenario.toml");
    std::fs::write(&cfg, scenario).unwrap();
    let cfg = cfg.display().to_string();
    let (proc, url) = common::start(&["mock", "--listen", "127.0.0.1:0", "--config", &cfg]);
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_string();
    Mock { _proc: proc, addr }
}

fn stats(m: &Mock) -> Value {
    let mut s = TcpStream::connect(&m.addr).unwrap();
    write!(
        s,
        "GET /_mock/stats HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        m.addr
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap()
}

fn input(dir: &Path, n: usize) -> PathBuf {
    let p = dir.join("jobs.jsonl");
    let mut text = String::new();
    for i in 0..n {
        let v = serde_json::json!({"custom_id": format!("job-{i:05}"), "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "max_tokens": 30,
                     "messages": [{"role": "user", "content": format!("request number {i}")}]}});
        text.push_str(&v.to_string());
        text.push('\n');
    }
    std::fs::write(&p, text).unwrap();
    p
}

fn batch(m: &Mock, input: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("SLUICE_LEDGER", "off")
        .args(["batch", "run"])
        .arg(input)
        .args([
            "--base-url",
            &format!("http://{}/v1", m.addr),
            "--api-key-env",
            "SLUICE_KILL_TEST_KEY",
            "--concurrency",
            "16",
            "--progress",
            "off",
            // The model-list check sends one GET /models per run with an idempotency key of
            // its own; this test counts the keys of the lines.
            "--models-check-every",
            "0s",
        ])
        .env("SLUICE_KILL_TEST_KEY", "sk-kill-test-000001")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn appearances(input: &Path) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for suffix in ["out", "errors"] {
        let p = input.with_file_name(format!("jobs.{suffix}.jsonl"));
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        for l in text.lines() {
            let v: Value = serde_json::from_str(l).expect("every line is a whole record");
            *seen
                .entry(v["custom_id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    seen
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sluice-kill-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn kill_nine_again_and_again_then_resume() {
    let d = tmp("nine");
    let m = start_mock(
        &d,
        "seed = 5\n[latency]\nttft = \"20ms\"\nper_token = \"1ms\"\n[faults]\nerror_500 = 0.05\nreset = 0.02\ndrop_stream = 0.02\n",
    );
    let n = 500;
    let input = input(&d, n);
    // Deterministic "random" kill moments.
    let waits = [350u64, 170, 520, 260, 410];
    let mut kills = 0;
    for w in waits {
        let mut child = batch(&m, &input).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(w));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
    }
    assert!(
        kills >= 3,
        "the job was killed mid-run several times ({kills})"
    );
    let status = batch(&m, &input).status().unwrap();
    assert!(status.success(), "the final run completes: {status:?}");

    let seen = appearances(&input);
    assert_eq!(seen.len(), n, "every custom_id is there");
    let dup: Vec<_> = seen.iter().filter(|(_, c)| **c != 1).collect();
    assert!(dup.is_empty(), "written more than once: {dup:?}");

    // The upstream completed a request twice only if it was in flight at a kill: at most the
    // window (16) per kill.
    let s = stats(&m);
    let keys = s["idempotency_keys"].as_object().unwrap();
    assert_eq!(
        keys.len(),
        n,
        "one idempotency key per line, stable across runs"
    );
    let twice = keys
        .values()
        .filter(|k| k["completed"].as_u64().unwrap() >= 2)
        .count();
    assert!(
        twice <= kills * 16,
        "{twice} requests completed twice after {kills} kills"
    );
}

#[test]
fn sigint_stops_gracefully_and_resumes() {
    let d = tmp("int");
    let m = start_mock(&d, "[latency]\nttft = \"100ms\"\n");
    let input = input(&d, 200);
    let mut child = batch(&m, &input).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let t0 = Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(4), "interrupted: exit code 4");
    assert!(t0.elapsed() < Duration::from_secs(20));
    // Nothing half-written, nothing duplicated so far, and some work left.
    let seen = appearances(&input);
    assert!(seen.values().all(|c| *c == 1));
    assert!(seen.len() < 200);
    let status = batch(&m, &input).status().unwrap();
    assert!(status.success());
    let seen = appearances(&input);
    assert_eq!(seen.len(), 200);
    assert!(seen.values().all(|c| *c == 1));
}
