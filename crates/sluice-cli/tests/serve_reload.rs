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

/// POST a small chat request with a bearer key; the HTTP status.
fn chat(base: &str, key: &str) -> u16 {
    let addr = base.trim_start_matches("http://").trim_end_matches("/v1");
    let body =
        r#"{"model":"gpt-4o-mini","max_tokens":3,"messages":[{"role":"user","content":"x"}]}"#;
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split(' ').nth(1).unwrap().parse().unwrap()
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
