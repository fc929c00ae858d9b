//! `sluice serve` reloads its configuration on SIGHUP (and when the file changes): new virtual
//! keys apply to new requests, a broken file is refused and the running configuration stays.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::start;

/// A chat request with a bearer `key`; the HTTP status.
fn chat(base: &str, key: &str) -> u16 {
    common::chat_status(base, Some(key))
}

fn config(path: &Path, upstream: &str, vkey: &str) {
    std::fs::write(
        path,
        format!(
            "listen = \"127.0.0.1:0\"\n[upstream]\nbase_url = \"{upstream}\"\nkeys = [{{ value = \"sk-upstream-0000001\" }}]\n[[virtual_keys]]\nname = \"app\"\nkey = \"{vkey}\"\n"
        ),
    )
    .unwrap();
}

#[test]
fn sighup_reloads_and_a_broken_file_is_refused() {
    let dir = std::env::temp_dir().join(format!("sluice-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_mock, upstream) = start(&["mock", "--listen", "127.0.0.1:0"]);
    let cfg = dir.join("gateway.toml");
    config(&cfg, &upstream, "sk-first-virtual-01");
    let (gw, base) = start(&["serve", "--config", cfg.to_str().unwrap()]);
    assert_eq!(chat(&base, "sk-first-virtual-01"), 200);
    assert_eq!(chat(&base, "sk-second-virtual-2"), 401);

    config(&cfg, &upstream, "sk-second-virtual-2");
    let ok = Command::new("kill")
        .args(["-HUP", &gw.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let t0 = Instant::now();
    while chat(&base, "sk-second-virtual-2") != 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "reload did not apply"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(chat(&base, "sk-first-virtual-01"), 401);

    // A broken file is refused; the running configuration stays.
    std::fs::write(&cfg, "this is = not [valid toml").unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &gw.0.id().to_string()])
        .status();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(chat(&base, "sk-second-virtual-2"), 200);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// GET a path; the status and the body.
fn get(base: &str, path: &str) -> (u16, String) {
    let addr = base.trim_start_matches("http://").trim_end_matches("/v1");
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    (status, text)
}

/// The count of refused reloads on /metrics.
fn refused(base: &str) -> u64 {
    get(base, "/metrics")
        .1
        .lines()
        .find(|l| l.starts_with("sluice_config_reloads_total{outcome=\"refused\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// SIGHUP, then wait until the reload's outcome is counted.
fn hup_and_wait(gw: &common::Proc, until: impl Fn() -> bool) {
    let _ = Command::new("kill")
        .args(["-HUP", &gw.0.id().to_string()])
        .status();
    let t0 = Instant::now();
    while !until() {
        assert!(t0.elapsed() < Duration::from_secs(10), "no reload outcome");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_reload_that_would_open_the_gateway_is_refused() {
    let dir = std::env::temp_dir().join(format!("sluice-serve-open-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_mock, upstream) = start(&["mock", "--listen", "127.0.0.1:0"]);
    let cfg = dir.join("gateway.toml");
    config(&cfg, &upstream, "sk-guarded-virtual-1");
    let (gw, base) = start(&["serve", "--config", cfg.to_str().unwrap()]);
    assert_eq!(chat(&base, "sk-guarded-virtual-1"), 200);
    // With virtual keys configured, a loopback caller without one is refused.
    assert_eq!(chat(&base, "none"), 401);

    let no_keys = format!(
        "listen = \"127.0.0.1:0\"\n[upstream]\nbase_url = \"{upstream}\"\nkeys = [{{ value = \"sk-upstream-0000001\" }}]\n"
    );
    let no_upstream = "listen = \"127.0.0.1:0\"\n[[virtual_keys]]\nname = \"app\"\nkey = \"sk-guarded-virtual-1\"\n";
    let missing_key_file = format!(
        "listen = \"127.0.0.1:0\"\n[upstream]\nbase_url = \"{upstream}\"\nkeys = [{{ file = \"{}\" }}]\n[[virtual_keys]]\nname = \"app\"\nkey = \"sk-guarded-virtual-1\"\n",
        dir.join("absent-key").display()
    );
    // An emptied file, one that drops every virtual key, one that drops [upstream], one whose
    // key source gives no key: each refused whole, counted, and the running config stays.
    for (n, text) in [
        "",
        "\n  \n",
        no_keys.as_str(),
        no_upstream,
        missing_key_file.as_str(),
    ]
    .iter()
    .enumerate()
    {
        // (The file watcher may see the change before the signal does: count, don't match.)
        let before = refused(&base);
        std::fs::write(&cfg, text).unwrap();
        hup_and_wait(&gw, || refused(&base) > before);
        assert_eq!(chat(&base, "none"), 401, "case {n}");
        assert_eq!(chat(&base, "sk-guarded-virtual-1"), 200, "case {n}");
    }

    // Said to be meant: applied (loopback callers now need no key).
    std::fs::write(
        &cfg,
        format!("{no_keys}[reload]\nallow_removing_all_virtual_keys = true\n"),
    )
    .unwrap();
    hup_and_wait(&gw, || chat(&base, "none") == 200);
    assert!(refused(&base) >= 5);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_key_source_that_gives_no_key_stops_the_start_naming_the_setting() {
    let dir = std::env::temp_dir().join(format!("sluice-serve-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_path = dir.join("secret-dir-name");
    std::fs::create_dir_all(&secret_path).unwrap();
    for (keys, field, why) in [
        (
            format!("{{ file = \"{}\" }}", dir.join("missing").display()),
            "upstream.keys[0] (file)",
            "cannot be read",
        ),
        (
            format!(
                "{{ value = \"sk-ok-0001\" }}, {{ file = \"{}\" }}",
                secret_path.display()
            ),
            "upstream.keys[1] (file)",
            "is a directory",
        ),
        (
            "{ env = \"SLUICE_TEST_UNSET_VARIABLE_NAME\" }".to_string(),
            "upstream.keys[0] (env)",
            "not set",
        ),
    ] {
        let cfg = dir.join("gateway.toml");
        std::fs::write(
            &cfg,
            format!("listen = \"127.0.0.1:0\"\n[upstream]\nbase_url = \"http://127.0.0.1:9/v1\"\nkeys = [{keys}]\n"),
        )
        .unwrap();
        let out = Command::new(common::BIN)
            .env("SLUICE_LEDGER", "off")
            .env("SLUICE_DATA_DIR", common::no_data_dir())
            .env_remove("SLUICE_TEST_UNSET_VARIABLE_NAME")
            .args(["serve", "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(field) && err.contains(why), "{err}");
        assert!(
            !err.contains("secret-dir-name") && !err.contains("SLUICE_TEST_UNSET_VARIABLE_NAME"),
            "the message names the setting, not the path or the variable: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_access_log_says_the_status_the_caller_got() {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("sluice-serve-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("gateway.toml");
    // Nothing listens on port 9: the gateway answers its own 502.
    std::fs::write(
        &cfg,
        "listen = \"127.0.0.1:0\"\n[upstream]\nbase_url = \"http://127.0.0.1:9/v1\"\nkeys = [{ value = \"sk-upstream-0000001\" }]\nmax_attempts = 1\n[models]\ncheck_upstream_every = \"0s\"\n",
    )
    .unwrap();
    let mut child = Command::new(common::BIN)
        .env("SLUICE_LEDGER", "off")
        .env("SLUICE_DATA_DIR", common::no_data_dir())
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().rsplit(' ').next().unwrap().to_string();
    assert_eq!(chat(&base, "none"), 502);
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let t0 = Instant::now();
    let mut logged = String::new();
    while !logged.contains("sluice::gateway: request") {
        logged.clear();
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no request log line"
        );
        if err.read_line(&mut logged).unwrap() == 0 {
            break;
        }
    }
    child.kill().unwrap();
    let _ = child.wait();
    assert!(logged.contains("status=502"), "{logged}");
    std::fs::remove_dir_all(&dir).unwrap();
}
