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

/// Start `sluice ARGS…` (a `mock` or `serve` that prints "… listening on URL" first) with no
/// ledger in the home directory; returns the process and the URL.
pub fn start(args: &[&str]) -> (Proc, String) {
    let mut child = Command::new(BIN)
        .env("SLUICE_LEDGER", "off")
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
