//! `sluice batch run --config FILE` takes its upstreams from the gateway's format: with a
//! primary that is down and a backup, every line succeeds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

mod common;
use common::{start, BIN};

#[test]
fn a_job_fails_over_to_the_backup_upstream() {
    let dir = std::env::temp_dir().join(format!("sluice-batch-ups-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_backup, backup) = start(&["mock", "--listen", "127.0.0.1:0"]);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}/v1", l.local_addr().unwrap().port())
    };
    let cfg = dir.join("upstreams.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[upstreams]]\nname = \"primary\"\nbase_url = \"{closed}\"\nkeys = [{{ value = \"sk-primary-00000001\" }}]\n\
             [[upstreams]]\nname = \"backup\"\nbase_url = \"{backup}\"\nkeys = [{{ value = \"sk-backup-000000001\" }}]\npriority = 1\n"
        ),
    )
    .unwrap();
    let input = dir.join("in.jsonl");
    let lines: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"custom_id":"r{i}","method":"POST","url":"/v1/chat/completions","body":{{"model":"gpt-4o-mini","max_tokens":5,"messages":[{{"role":"user","content":"x"}}]}}}}"#))
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.join("out.jsonl");
    let o = Command::new(BIN)
        .env("SLUICE_LEDGER", "off")
        .env("SLUICE_DATA_DIR", common::no_data_dir())
        .args([
            "batch",
            "run",
            input.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--state-dir",
            dir.join("state").to_str().unwrap(),
            "--progress",
            "off",
            "--models-check-every",
            "0s",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let written = std::fs::read_to_string(&out).unwrap();
    assert_eq!(written.lines().count(), 20, "{err}");
    assert!(written.lines().all(|l| l.contains("\"status_code\":200")));
    std::fs::remove_dir_all(&dir).ok();
}
