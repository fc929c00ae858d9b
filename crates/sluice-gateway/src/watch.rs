//! Reloading the configuration file when it changes (checked every 2 s) or on SIGHUP, and when
//! the fetched model registry (`sluice models update`) changes. A file that cannot be read or
//! does not parse is reported and the running configuration stays.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::{GatewayConfig, Reloader};

/// How often the files are looked at.
const EVERY: Duration = Duration::from_secs(2);

type Stamp = Option<(Option<SystemTime>, u64)>;

fn stamp(p: &Path) -> Stamp {
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.modified().ok(), m.len()))
}

impl Reloader {
    /// Watch `path` for good (spawn it): reload on a change of it or of the fetched registry,
    /// or on SIGHUP. `listen` is kept (the address cannot change without a restart).
    pub async fn watch_file(self, path: PathBuf, listen: SocketAddr) {
        let fetched = sluice::models::fetched_path();
        let stamps = |p: &Path| (stamp(p), fetched.as_deref().and_then(stamp));
        let mut last = stamps(&path);
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            let forced = tokio::select! {
                _ = hangup => true,
                _ = tokio::time::sleep(EVERY) => false,
            };
            let now = stamps(&path);
            if !forced && now == last {
                continue;
            }
            last = now;
            match self.reload_file(&path, listen) {
                Ok(()) => {
                    tracing::info!(target: "sluice::gateway", file = %path.display(), "configuration reloaded")
                }
                Err(e) => {
                    tracing::warn!(target: "sluice::gateway", error = %e, "reload refused, keeping the running configuration")
                }
            }
        }
    }

    /// Read, parse and apply `path` now.
    pub fn reload_file(&self, path: &Path, listen: SocketAddr) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut cfg = GatewayConfig::from_toml(&path.display().to_string(), &text)
            .map_err(|e| e.to_string())?;
        cfg.listen = listen;
        self.reload(cfg).map_err(|e| e.to_string())
    }
}
