//! What the CLI tests share: the `sluice` binary as a child process that is killed when dropped,
//! started with a listener on a free port whose base URL is read from its first line of stdout.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// A running `sluice` subcommand, killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A data directory that does not exist: no fetched model registry of the machine's user
/// leaks into a test.
pub fn no_data_dir() -> std::path::PathBuf {
    std::env::temp_dir().join("sluice-tests-no-data-dir")
}

/// Start `sluice ARGS…` (a `mock` or `serve` that prints "… listening on URL" first) with no
/// ledger in the home directory; returns the process and the URL.
pub fn start(args: &[&str]) -> (Proc, String) {
    let mut child = Command::new(BIN)
        .env("SLUICE_LEDGER", "off")
        .env("SLUICE_DATA_DIR", no_data_dir())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    (Proc(child), url)
}

/// POST a small chat request to `base` (`http://ADDR/v1`) on a new connection, with a bearer
/// `key` when given; the HTTP status.
pub fn chat_status(base: &str, key: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://").trim_end_matches("/v1");
    let body =
        r#"{"model":"gpt-4o-mini","max_tokens":3,"messages":[{"role":"user","content":"x"}]}"#;
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Days since 1970-01-01 → YYYY-MM-DD (the civil-from-days algorithm).
pub fn civil(days: u64) -> String {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
