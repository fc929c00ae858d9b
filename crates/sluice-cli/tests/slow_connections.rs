//! `sluice serve` against connections that trickle their headers or never speak: they are
//! closed after the header timeout, and normal requests are served all the while; past the
//! connection cap new connections wait, and are served once a slot frees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::start;

/// A chat request to the gateway at `addr`; the HTTP status.
fn chat(addr: &str) -> u16 {
    common::chat_status(&format!("http://{addr}/v1"), None)
}

/// Closed by the server: a read sees the end (or a reset) before `wait`.
fn closed(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut sink = Vec::new();
    match s.read_to_end(&mut sink) {
        Ok(_) => true,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

fn gateway(dir: &Path, upstream: &str, server: &str) -> (common::Proc, String) {
    let cfg = dir.join("gateway.toml");
    std::fs::write(
        &cfg,
        format!("listen = \"127.0.0.1:0\"\n[server]\n{server}\n[upstream]\nbase_url = \"{upstream}\"\nkeys = [{{ value = \"sk-upstream-0000001\" }}]\n"),
    )
    .unwrap();
    let (gw, base) = start(&["serve", "--config", cfg.to_str().unwrap()]);
    let addr = base
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_string();
    (gw, addr)
}

/// A mock upstream and a gateway in front of it with these `[server]` settings, its files in
/// a directory of the test's own (removed when this is dropped).
struct Setup {
    addr: String,
    _gw: common::Proc,
    _mock: common::Proc,
    dir: std::path::PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn setup(tag: &str, server: &str) -> Setup {
    let dir = std::env::temp_dir().join(format!("sluice-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mock, upstream) = start(&["mock", "--listen", "127.0.0.1:0"]);
    let (gw, addr) = gateway(&dir, &upstream, server);
    Setup {
        addr,
        _gw: gw,
        _mock: mock,
        dir,
    }
}

#[test]
fn trickling_and_silent_connections_are_closed_while_requests_are_served() {
    let served = setup("slow", "header_timeout = \"2s\"");
    let addr = served.addr.clone();
    assert_eq!(chat(&addr), 200);

    // 200 connections that send a request line, then a header byte every 250 ms; 100 that
    // never send a byte.
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    let mut silent: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let t0 = Instant::now();
    let mut served = 0;
    while t0.elapsed() < Duration::from_millis(3500) {
        for s in &mut slow {
            let _ = s.write_all(b"a");
        }
        assert_eq!(chat(&addr), 200, "a normal request while slow ones hang on");
        served += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(served >= 5);
    let open_slow = slow
        .iter_mut()
        .map(|s| closed(s, Duration::from_secs(3)))
        .filter(|c| !c)
        .count();
    let open_silent = silent
        .iter_mut()
        .map(|s| closed(s, Duration::from_secs(3)))
        .filter(|c| !c)
        .count();
    assert_eq!(
        (open_slow, open_silent),
        (0, 0),
        "connections still open past the header timeout"
    );
    assert_eq!(chat(&addr), 200);
}

/// One kept-alive chat request on `s`; the HTTP status, once the whole answer is read.
fn chat_on(s: &mut TcpStream, addr: &str) -> u16 {
    let body =
        r#"{"model":"gpt-4o-mini","max_tokens":3,"messages":[{"role":"user","content":"x"}]}"#;
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("a unary answer has a length");
    let mut rest = vec![0u8; length];
    s.read_exact(&mut rest).unwrap();
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_kept_alive_connection_waits_for_its_next_head_no_longer_than_the_header_timeout() {
    let served = setup("keep", "header_timeout = \"1500ms\"");
    let addr = served.addr.clone();

    // Three requests on one connection, each head well within the timeout of the answer
    // before it: all served on it.
    let mut kept = TcpStream::connect(&addr).unwrap();
    for _ in 0..3 {
        assert_eq!(chat_on(&mut kept, &addr), 200);
        std::thread::sleep(Duration::from_millis(900));
    }
    // Then silence: closed once a header timeout has passed since the last answer (here
    // 900 ms of it already), not at once and not after the idle timeout (5 min).
    let t0 = Instant::now();
    assert!(
        !closed(&mut kept, Duration::from_millis(300)),
        "closed early"
    );
    assert!(
        closed(&mut kept, Duration::from_secs(5)),
        "kept open past the header timeout"
    );
    assert!(t0.elapsed() < Duration::from_secs(3));

    // A second connection answered once, then trickling its next head a byte at a time.
    let mut slow = TcpStream::connect(&addr).unwrap();
    assert_eq!(chat_on(&mut slow, &addr), 200);
    let t0 = Instant::now();
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let mut gone = false;
    while t0.elapsed() < Duration::from_secs(4) {
        if slow.write_all(b"a").is_err() {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        gone || closed(&mut slow, Duration::from_secs(2)),
        "a trickled head was waited on"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(1400),
        "closed before its header timeout"
    );
    assert_eq!(chat(&addr), 200);
}

#[test]
fn past_the_connection_cap_a_new_connection_waits_and_is_served() {
    let served = setup("cap", "header_timeout = \"1500ms\"\nmax_connections = 8");
    let addr = served.addr.clone();
    assert_eq!(chat(&addr), 200);
    // Every slot taken by a silent connection...
    let _silent: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    // ...a new caller waits (in the listen backlog) instead of being refused, and is served
    // once the silent ones are closed.
    let t0 = Instant::now();
    assert_eq!(chat(&addr), 200);
    assert!(
        t0.elapsed() >= Duration::from_millis(800),
        "served before a slot was free: the cap did not hold"
    );
}

#[test]
fn a_body_that_never_ends_is_answered_408() {
    let served = setup("body", "body_timeout = \"1s\"");
    let addr = served.addr.clone();
    let mut s = TcpStream::connect(&addr).unwrap();
    // Says 1,000 bytes, sends 20, and then nothing.
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\":\"gpt-4o-mi"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 408");
}
