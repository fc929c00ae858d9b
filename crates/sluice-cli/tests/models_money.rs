//! The `sluice models`, `sluice models check`, `sluice spend` and `sluice doctor` commands as
//! a user runs them: exit codes, tables and JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::{Proc, BIN};

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("sluice-cli-{:016x}", rand_u64()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

fn sluice(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("SLUICE_LEDGER", "off")
        .env("SLUICE_DATA_DIR", common::no_data_dir())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn models_lists_the_registry_and_check_guards_a_pipeline() {
    let o = sluice(&["models"]);
    assert!(o.status.success());
    let t = text(&o);
    assert!(
        t.contains("gpt-4-32k") && t.contains("retired") && t.contains("$0.15"),
        "{t}"
    );
    let o = sluice(&["models", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let g = v
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "gpt-4-32k")
        .unwrap();
    assert_eq!(g["status"], "retired");
    assert_eq!(g["replacement"], "gpt-4o");

    let dir = temp_dir();
    let ok = dir.join("ok.jsonl");
    std::fs::write(&ok, "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"gpt-4o-mini\"}}\n").unwrap();
    let old = dir.join("old.jsonl");
    std::fs::write(&old, "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"gpt-4-32k-0613\"}}\n").unwrap();
    let o = sluice(&["models", "check", ok.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = sluice(&[
        "models",
        "check",
        ok.to_str().unwrap(),
        old.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("RETIRED"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("move to the replacement"));
    // A user registry moves a date: gpt-4o-mini shutting down in 10 days fails a 30-day window
    // and passes a 5-day one.
    let reg = dir.join("mine.toml");
    let soon = (std::time::SystemTime::now() + std::time::Duration::from_secs(10 * 86_400))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let date = common::civil(soon / 86_400);
    std::fs::write(&reg, format!("[[model]]\nid = \"gpt-4o-mini\"\nshutdown = \"{date}\"\nreplacement = \"gpt-4.1-mini\"\n")).unwrap();
    let o = sluice(&[
        "models",
        "--registry",
        reg.to_str().unwrap(),
        "check",
        ok.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = sluice(&[
        "models",
        "--registry",
        reg.to_str().unwrap(),
        "check",
        "--warn-days",
        "5",
        ok.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // A bad registry entry is named.
    std::fs::write(&reg, "[[model]]\nid = \"x\"\nshutdown = \"soon\"\n").unwrap();
    let o = sluice(&["models", "--registry", reg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("model[0] (id \"x\"): shutdown"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_batch_job_is_in_the_ledger_and_spend_reports_it() {
    let dir = temp_dir();
    let input = dir.join("nightly.jsonl");
    let mut lines = String::new();
    for i in 0..6 {
        lines.push_str(&format!("{{\"custom_id\":\"r{i}\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{{\"model\":\"gpt-4o-mini\",\"max_tokens\":8,\"messages\":[{{\"role\":\"user\",\"content\":\"hi {i}\"}}]}}}}\n"));
    }
    lines.push_str("{\"custom_id\":\"old\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"gpt-4-32k\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}}\n");
    std::fs::write(&input, lines).unwrap();
    let ledger = dir.join("ledger.db");
    let o = Command::new(BIN)
        .args([
            "batch",
            "run",
            "--upstream",
            "mock",
            "--progress",
            "off",
            "--ledger",
        ])
        .arg(&ledger)
        .arg(&input)
        .output()
        .unwrap();
    // The retired model's line went to the errors file with the replacement named.
    let errors = std::fs::read_to_string(dir.join("nightly.errors.jsonl")).unwrap();
    assert!(
        errors.contains("\"old\"") && errors.contains("use gpt-4o instead"),
        "{errors}"
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = sluice(&["spend", "--ledger", ledger.to_str().unwrap(), "--by", "key"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = text(&o);
    assert!(t.contains("job:nightly") && t.contains("total"), "{t}");
    let o = sluice(&[
        "spend",
        "--ledger",
        ledger.to_str().unwrap(),
        "--by",
        "model",
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["model"], "gpt-4o-mini");
    assert_eq!(rows[0]["requests"], 6);
    assert!(rows[0]["cost_nanos"].as_u64().unwrap() > 0);
    // No ledger there: a clear error.
    let o = sluice(&["spend", "--ledger", dir.join("none.db").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    std::fs::remove_dir_all(dir).ok();
}

fn mock() -> (Proc, String) {
    common::start(&["mock", "--listen", "127.0.0.1:0"])
}

fn doctor(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("doctor")
        .args(args)
        .env("DOCTOR_KEY", "sk-doctor-cli-000001")
        .output()
        .unwrap()
}

#[test]
fn doctor_exit_codes_tell_healthy_from_broken() {
    let m = mock();
    let o = doctor(&[
        "--base-url",
        &m.1,
        "--api-key-env",
        "DOCTOR_KEY",
        "--model",
        "gpt-4o-mini",
        "--probe",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("verdict: Healthy"));
    let o = doctor(&[
        "--base-url",
        &m.1,
        "--api-key-env",
        "DOCTOR_KEY",
        "--model",
        "gpt-4-32k",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"], "broken");
    let o = doctor(&[
        "--base-url",
        "http://127.0.0.1:1/v1",
        "--api-key-env",
        "DOCTOR_KEY",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("FAIL tcp"), "{}", text(&o));
    let o = doctor(&["--base-url", &m.1, "--api-key-env", "NO_SUCH_VARIABLE_SET"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("no API key found"));
}

#[test]
fn a_job_budget_per_day_stops_the_job_and_holds_across_runs() {
    let dir = temp_dir();
    let input = dir.join("capped.jsonl");
    let mut lines = String::new();
    for i in 0..40 {
        lines.push_str(&format!("{{\"custom_id\":\"r{i}\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{{\"model\":\"gpt-4o-mini\",\"max_tokens\":50,\"messages\":[{{\"role\":\"user\",\"content\":\"hi {i}\"}}]}}}}\n"));
    }
    std::fs::write(&input, lines).unwrap();
    let ledger = dir.join("ledger.db");
    let run = || {
        Command::new(BIN)
            .args([
                "batch",
                "run",
                "--upstream",
                "mock",
                "--progress",
                "off",
                "--concurrency",
                "4",
                "--budget-per-day",
                "0.0002",
                "--ledger",
            ])
            .arg(&ledger)
            .arg(&input)
            .output()
            .unwrap()
    };
    // Worst case per line ≈ 50 × 600 + prompt ≈ 32,000 nanos: $0.0002 holds a handful.
    let o = run();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("per-day/month budget"));
    let done = std::fs::read_to_string(dir.join("capped.out.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(done > 0 && done < 40, "{done}");
    assert!(
        !dir.join("capped.errors.jsonl").exists()
            || std::fs::read_to_string(dir.join("capped.errors.jsonl"))
                .unwrap()
                .is_empty(),
        "refused lines stay pending, they are not failures"
    );
    // The ledger holds the day's spend: a second run the same day admits nothing more.
    let o = run();
    assert_eq!(o.status.code(), Some(3));
    let again = std::fs::read_to_string(dir.join("capped.out.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(again <= done + 1, "{done} then {again}");
    let o = sluice(&[
        "spend",
        "--ledger",
        ledger.to_str().unwrap(),
        "--key",
        "job:capped",
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v[0]["cost_nanos"].as_u64().unwrap() <= 200_000);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn an_unreadable_input_is_a_usage_error_before_anything_starts() {
    let missing = temp_dir().join("no-such-input.jsonl");
    let o = sluice(&[
        "batch",
        "run",
        missing.to_str().unwrap(),
        "--upstream",
        "mock",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no-such-input.jsonl"), "{err}");
    assert!(
        !err.contains("built-in simulator"),
        "the simulator is not started: {err}"
    );
}

#[test]
fn a_limit_of_zero_is_refused_not_read_as_unlimited() {
    for flag in ["--rpm", "--tpm", "--concurrency", "--max-attempts"] {
        let o = sluice(&["batch", "run", "in.jsonl", "--upstream", "mock", flag, "0"]);
        assert_eq!(o.status.code(), Some(2), "{flag}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(flag) && err.contains("not in 1.."), "{err}");
    }
}

#[test]
fn doctor_checks_every_upstream_of_a_config() {
    let m = mock();
    let dir = temp_dir();
    let cfg = dir.join("upstreams.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[upstreams]]\nname = \"good\"\nbase_url = \"{}\"\nkeys = [{{ value = \"sk-doctor-good-0001\" }}]\n\
             [[upstreams]]\nname = \"gone\"\nbase_url = \"http://127.0.0.1:1/v1\"\nkeys = [{{ value = \"sk-doctor-gone-0001\" }}]\n",
            m.1
        ),
    )
    .unwrap();
    let o = doctor(&["--config", cfg.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "the worst of them: {t}");
    assert!(
        t.contains("sluice doctor: good (") && t.contains("sluice doctor: gone ("),
        "{t}"
    );
    assert!(
        t.contains("verdict: Healthy") && t.contains("FAIL tcp"),
        "{t}"
    );
    assert!(
        !t.contains("sk-doctor-good-0001"),
        "no key in the report: {t}"
    );
    let o = doctor(&["--config", cfg.to_str().unwrap(), "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(2));
    std::fs::remove_dir_all(dir).ok();
}
