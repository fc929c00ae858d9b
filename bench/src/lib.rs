//! Shared helpers for the benchmark binaries: CPU time, a runtime, and a loopback listener that
//! says where it is. Benchmarks exit with a message instead of panicking when the machine
//! refuses a runtime or an address.

#![forbid(unsafe_code)]

use std::time::Duration;

pub mod hyper_floor;

/// CPU time (user + system) this process has used so far, from `/proc/self/stat`.
/// Resolution is the kernel's clock tick (10 ms): run long enough for it not to matter.
pub fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may contain spaces; fields resume after the closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks_per_sec = 100.0; // CLK_TCK on Linux.
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks_per_sec,
    ))
}

/// A multi-threaded tokio runtime; exits the process if one cannot be built.
pub fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(1);
        }
    }
}

/// Bind `listen` and print `forward listening on http://ADDR/v1` (the scripts wait for that
/// line); exits the process if the address cannot be bound.
pub async fn forward_listener(listen: &str) -> tokio::net::TcpListener {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("listen {listen}: {e}");
            std::process::exit(1);
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!("forward listening on http://{addr}/v1");
    listener
}
