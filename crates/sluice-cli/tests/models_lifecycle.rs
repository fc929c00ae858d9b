//! Model lifecycle data that does not go stale, as a user meets it: `sluice models check` on
//! models retired in 2026, against the upstream's own list (`--base-url`, the simulator listing
//! only its scenario's models) and with `--strict`; `sluice models update` from a loopback HTTP
//! server (a bad file refused, the stored layer kept); the layer order; the freshness line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "sluice-lifecycle-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `sluice ARGS…` with `data` as its data directory.
fn sluice_in(data: &Path, args: &[&str]) -> Output {
    Command::new(common::BIN)
        .args(args)
        .env("SLUICE_LEDGER", "off")
        .env("SLUICE_DATA_DIR", data)
        .env("LIFECYCLE_KEY", "sk-lifecycle-test-0001")
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn jsonl(dir: &Path, name: &str, models: &[&str]) -> PathBuf {
    let p = dir.join(name);
    let text: String = models
        .iter()
        .enumerate()
        .map(|(i, m)| {
            format!("{{\"custom_id\":\"r{i}\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{{\"model\":\"{m}\"}}}}\n")
        })
        .collect();
    std::fs::write(&p, text).unwrap();
    p
}

/// Today in UTC as `YYYY-MM-DD`.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    common::civil(secs / 86_400)
}

#[test]
fn models_retired_in_2026_fail_the_check_with_their_dates_and_replacements() {
    let dir = temp_dir();
    let old = jsonl(&dir, "old.jsonl", &["gpt-3.5-turbo", "gpt-4", "gpt-4-0314"]);
    let o = sluice_in(&dir, &["models", "check", old.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    let t = out(&o);
    for (model, date, rep) in [
        ("gpt-3.5-turbo", "2026-10-23", "gpt-4.1-mini"),
        ("gpt-4 ", "2026-10-23", "gpt-4.1"),
        ("gpt-4-0314", "2026-03-26", "gpt-4.1"),
    ] {
        let line = t
            .lines()
            .find(|l| l.starts_with(model))
            .unwrap_or_else(|| panic!("{model} in {t}"));
        assert!(line.contains("RETIRED"), "{line}");
        assert!(line.contains(date), "{line}");
        assert!(line.contains(rep), "{line}");
        assert!(
            line.contains("days ago"),
            "a past shutdown reads as such: {line}"
        );
        assert!(
            line.contains("old.jsonl:"),
            "names the file and line: {line}"
        );
    }
    assert!(err(&o).contains("3 retired"), "{}", err(&o));
    // Only current models: exit 0.
    let new = jsonl(&dir, "new.jsonl", &["gpt-5.5", "gpt-5.4-mini", "gpt-4.1"]);
    let o = sluice_in(&dir, &["models", "check", new.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    // A replacement that retired too is followed to a live one.
    let chain = jsonl(&dir, "chain.jsonl", &["chatgpt-4o-latest"]);
    let o = sluice_in(&dir, &["models", "check", chain.to_str().unwrap()]);
    assert!(
        out(&o).contains("gpt-5.1-chat-latest -> gpt-5.3-chat-latest -> gpt-5.5"),
        "{}",
        out(&o)
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn unknown_models_warn_and_fail_with_strict() {
    let dir = temp_dir();
    let f = jsonl(&dir, "r.jsonl", &["gpt-4o-mini", "acme-private-llm"]);
    let o = sluice_in(&dir, &["models", "check", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(err(&o).contains("unknown to the registry"), "{}", err(&o));
    assert!(err(&o).contains("acme-private-llm"));
    let o = sluice_in(&dir, &["models", "check", "--strict", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("1 unknown (--strict)"), "{}", err(&o));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_upstream_list_is_ground_truth() {
    let dir = temp_dir();
    // The simulator lists only its scenario's models: here gpt-4.1 is retired upstream,
    // though the registry calls it active.
    let scenario = dir.join("scenario.toml");
    std::fs::write(&scenario, "[[models]]\nid = \"gpt-4.1\"\nretired = true\n").unwrap();
    let (_mock, url) = common::start(&[
        "mock",
        "--listen",
        "127.0.0.1:0",
        "--config",
        scenario.to_str().unwrap(),
    ]);
    let f = jsonl(&dir, "r.jsonl", &["gpt-4o-mini", "gpt-4.1"]);
    let args = [
        "models",
        "check",
        f.to_str().unwrap(),
        "--base-url",
        &url,
        "--api-key-env",
        "LIFECYCLE_KEY",
    ];
    let o = sluice_in(&dir, &args);
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    let line = out(&o)
        .lines()
        .find(|l| l.starts_with("gpt-4.1 "))
        .unwrap()
        .to_string();
    assert!(
        line.contains("NOT LISTED") && line.contains("r.jsonl:2"),
        "{line}"
    );
    assert!(
        err(&o).contains("1 not listed by the upstream"),
        "{}",
        err(&o)
    );
    let ok = jsonl(&dir, "ok.jsonl", &["gpt-4o-mini"]);
    let mut args = args;
    args[2] = ok.to_str().unwrap();
    let o = sluice_in(&dir, &args);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    // An upstream that cannot be asked is not a pass.
    let o = sluice_in(
        &dir,
        &[
            "models",
            "check",
            ok.to_str().unwrap(),
            "--base-url",
            "http://127.0.0.1:9/v1",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(
        err(&o).contains("cannot read the model list"),
        "{}",
        err(&o)
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A loopback HTTP server that answers every request with `body` (200), for `count`
/// connections at most.
fn serve(body: String, count: usize) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/models.toml", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in l.incoming().take(count) {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/toml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn update_fetches_validates_and_layers_the_registry() {
    let dir = temp_dir();
    let data = dir.join("data");
    let today = today();
    // A newer registry: gpt-4o shutting down, a model released after this binary, today's date.
    let newer = format!(
        "[registry]\nas_of = \"{today}\"\nsource = \"test\"\n\n[[model]]\nid = \"gpt-4o\"\ndeprecated = \"{today}\"\nshutdown = \"2099-01-01\"\nreplacement = \"gpt-5.5\"\n\n[[model]]\nid = \"gpt-7\"\ninput_per_mtok = 3\noutput_per_mtok = 9\n"
    );
    let url = serve(newer, 4);
    let o = sluice_in(&data, &["models", "update", "--from", &url]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("stored 2 model entries"), "{}", out(&o));
    assert!(
        out(&o).contains("gpt-4o: shutdown - -> 2099-01-01"),
        "{}",
        out(&o)
    );
    assert!(data.join("models.toml").exists());
    // `sluice models` now has it, with its date, and no staleness warning.
    let o = sluice_in(&data, &["models"]);
    assert!(out(&o).contains("gpt-7"), "{}", out(&o));
    assert!(out(&o).contains(&format!("lifecycle data as of {today}, 0 days old")));
    assert!(out(&o).contains("shipped (") && out(&o).contains("< fetched"));
    assert!(!err(&o).contains("warning"), "{}", err(&o));
    // Your own file stays on top of the fetched layer.
    let mine = dir.join("mine.toml");
    std::fs::write(
        &mine,
        "[[model]]\nid = \"gpt-4o\"\nshutdown = \"2098-06-01\"\n",
    )
    .unwrap();
    let o = sluice_in(
        &data,
        &["models", "--registry", mine.to_str().unwrap(), "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let g = v
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "gpt-4o")
        .unwrap();
    assert_eq!(g["shutdown"], "2098-06-01", "yours over fetched");
    assert_eq!(g["replacement"], "gpt-5.5", "fetched over shipped");

    // A bad file is refused, naming the entry, and the stored layer is kept.
    let bad = serve(
        format!(
            "[registry]\nas_of = \"{today}\"\n[[model]]\nid = \"gpt-4o\"\nshutdown = \"soon\"\n"
        ),
        2,
    );
    let before = std::fs::read_to_string(data.join("models.toml")).unwrap();
    let o = sluice_in(&data, &["models", "update", "--from", &bad]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("model[0] (id \"gpt-4o\"): shutdown"),
        "{}",
        err(&o)
    );
    assert!(err(&o).contains("the stored registry is unchanged"));
    assert_eq!(
        std::fs::read_to_string(data.join("models.toml")).unwrap(),
        before
    );
    // So is one without a date, and a file path that does not exist.
    let undated = dir.join("undated.toml");
    std::fs::write(&undated, "[[model]]\nid = \"gpt-8\"\n").unwrap();
    let o = sluice_in(
        &data,
        &["models", "update", "--from", undated.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("as_of"), "{}", err(&o));
    let o = sluice_in(
        &data,
        &["models", "update", "--from", "/no/such/registry.toml"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(data.join("models.toml")).unwrap(),
        before
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn stale_data_is_said_by_models_and_doctor() {
    let dir = temp_dir();
    let data = dir.join("data");
    // The shipped layer alone: its date is printed, and past 90 days a warning says how to
    // refresh it.
    let o = sluice_in(&data, &["models"]);
    let last = out(&o).lines().last().unwrap().to_string();
    assert!(last.contains("lifecycle data as of"), "{last}");
    let age: i64 = last
        .split("days old")
        .next()
        .and_then(|s| s.rsplit(' ').nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("age in {last}"));
    assert_eq!(
        age > 90,
        err(&o).contains("warning: model lifecycle data is from"),
        "{}",
        err(&o)
    );
    if age > 90 {
        assert!(
            err(&o).contains("sluice models update --from"),
            "{}",
            err(&o)
        );
    }
    // An older fetched layer does not make the data older: the newest layer's date counts.
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("models.toml"),
        "[registry]\nas_of = \"2020-01-01\"\n[[model]]\nid = \"gpt-4o\"\n",
    )
    .unwrap();
    let o = sluice_in(&data, &["models"]);
    let last2 = out(&o).lines().last().unwrap().to_string();
    assert!(last2.contains(&format!("{age} days old")), "{last2}");
    assert!(last2.contains("< fetched"), "{last2}");
    // Your own dated file moves the date; a very old one alone would be stale.
    let mine = dir.join("mine.toml");
    std::fs::write(&mine, format!("[registry]\nas_of = \"{}\"\n", today())).unwrap();
    let o = sluice_in(&data, &["models", "--registry", mine.to_str().unwrap()]);
    assert!(!err(&o).contains("warning"), "{}", err(&o));
    assert!(out(&o).contains("0 days old"), "{}", out(&o));
    // The doctor says the date beside its checks.
    let (_mock, url) = common::start(&["mock", "--listen", "127.0.0.1:0"]);
    let o = sluice_in(
        &data,
        &[
            "doctor",
            "--base-url",
            &url,
            "--api-key-env",
            "LIFECYCLE_KEY",
            "--registry",
            mine.to_str().unwrap(),
        ],
    );
    assert!(
        out(&o).contains("registry   model lifecycle data as of"),
        "{}",
        out(&o)
    );
    let o = sluice_in(
        &data,
        &[
            "doctor",
            "--base-url",
            &url,
            "--api-key-env",
            "LIFECYCLE_KEY",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["registry"]["as_of"].is_string(), "{v}");
    assert!(v["registry"]["age_days"].is_i64());
    std::fs::remove_dir_all(dir).ok();
}
