//! Two `sluice serve` processes sharing `[state]` (Redis) in front of one rate-limited upstream:
//! a burst split between them loses nothing and meets (almost) no upstream 429s, because they
//! pace to one quota instead of each to the whole of it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

mod common;
use common::start;

fn redis_up() -> bool {
    let up = TcpStream::connect_timeout(&"127.0.0.1:6379".parse().unwrap(), Duration::from_secs(1))
        .is_ok();
    if !up {
        assert!(
            std::env::var("SLUICE_REQUIRE_REDIS").as_deref() != Ok("1"),
            "Redis at 127.0.0.1:6379 is unreachable and SLUICE_REQUIRE_REDIS=1"
        );
        eprintln!("\n*** SKIPPED: Redis at 127.0.0.1:6379 is unreachable ***\n");
    }
    up
}

#[test]
fn two_replicas_share_one_upstream_quota() {
    if !redis_up() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sluice-replicas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // 1,200 rpm = 20 a second, one-second windows.
    let scenario = dir.join("mock.toml");
    std::fs::write(
        &scenario,
        "[limits]\nrpm = 1200\ntpm = 100000000\nburst = \"1s\"\n",
    )
    .unwrap();
    let (_mock, upstream) = start(&[
        "mock",
        "--listen",
        "127.0.0.1:0",
        "--config",
        scenario.to_str().unwrap(),
    ]);
    let prefix = format!("sluice-replicas-test-{}", std::process::id());
    let cfg = dir.join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\n[upstream]\nbase_url = \"{upstream}\"\nkeys = [{{ value = \"sk-replica-upstream-1\" }}]\nrpm = 1200\n[state]\nredis_url = \"redis://127.0.0.1:6379\"\nprefix = \"{prefix}\"\n[models]\ncheck_upstream_every = \"0s\"\n"
        ),
    )
    .unwrap();
    let (_a, a) = start(&["serve", "--config", cfg.to_str().unwrap()]);
    let (_b, b) = start(&["serve", "--config", cfg.to_str().unwrap()]);
    // 120 requests, half through each replica, 12 at a time each.
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..24)
            .map(|t| {
                let base = if t % 2 == 0 { a.clone() } else { b.clone() };
                s.spawn(move || {
                    (0..5)
                        .map(|_| common::chat_status(&base, None))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(statuses.len(), 120);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let root = upstream.trim_end_matches("/v1");
    let addr = root.trim_start_matches("http://");
    let mut st = TcpStream::connect(addr).unwrap();
    write!(
        st,
        "GET /_mock/stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    st.read_to_string(&mut text).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let too_many = v["by_status"]["429"].as_u64().unwrap_or(0);
    assert!(
        too_many <= 1,
        "{too_many} upstream 429s for 120 requests: the replicas did not share the quota"
    );
    std::fs::remove_dir_all(&dir).ok();
}
