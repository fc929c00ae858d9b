//! What a new user meets first: `--version` names the commit, completions for three shells, the
//! committed man page matches the command line, no colour codes when stderr is not a terminal,
//! and a run against the built-in simulator raises no alert about its (by design) short window.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

mod common;
use common::BIN;

fn sluice(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .env("SLUICE_LEDGER", "off")
        .env("SLUICE_DATA_DIR", common::no_data_dir())
        .env_remove("NO_COLOR")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn version_names_the_commit() {
    let o = sluice(&["--version"]);
    assert!(o.status.success());
    let v = String::from_utf8(o.stdout).unwrap();
    let want = format!("sluice {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(v.starts_with(&want), "{v}");
    let commit = v.trim().trim_start_matches(&want).trim_end_matches(')');
    let commit = commit.trim_end_matches("-dirty");
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{v}"
    );
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let o = sluice(&["completions", shell]);
        assert!(o.status.success(), "{shell}");
        let text = String::from_utf8(o.stdout).unwrap();
        for sub in ["batch", "serve", "mock", "doctor"] {
            assert!(text.contains(sub), "{shell} completions lack {sub}");
        }
    }
    let o = sluice(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn the_committed_man_page_is_the_command_line_s() {
    let o = sluice(&["manpage"]);
    assert!(o.status.success());
    let committed = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../packaging/wheel-data/data/share/man/man1/sluice.1"
    ))
    .unwrap();
    assert!(
        o.stdout == committed,
        "packaging/wheel-data/data/share/man/man1/sluice.1 is stale: regenerate it with `cargo run --bin sluice -- manpage > packaging/wheel-data/data/share/man/man1/sluice.1`"
    );
}

#[test]
fn no_colour_codes_when_stderr_is_not_a_terminal() {
    let mut child = Command::new(BIN)
        .env("SLUICE_LEDGER", "off")
        .env("SLUICE_DATA_DIR", common::no_data_dir())
        .env_remove("NO_COLOR")
        .args(["serve", "--listen", "127.0.0.1:0", "--upstream", "mock"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening on"), "{line}");
    child.kill().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = child.wait();
    assert!(
        err.contains("INFO") || err.contains("WARN"),
        "some log lines: {err}"
    );
    assert!(!err.contains('\u{1b}'), "escape codes in a pipe: {err:?}");
}

#[test]
fn a_run_on_the_simulator_raises_no_headroom_alert() {
    let dir = std::env::temp_dir().join(format!("sluice-first-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/batch/chat.jsonl"
    );
    let o = sluice(&[
        "batch",
        "run",
        input,
        "--upstream",
        "mock",
        "--output",
        dir.join("out.jsonl").to_str().unwrap(),
        "--state-dir",
        dir.join("state").to_str().unwrap(),
        "--progress",
        "off",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        !err.contains("upstream_remaining_low"),
        "the tier's 10 s window is not low headroom: {err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
