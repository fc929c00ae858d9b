//! Reloading the configuration file when it changes (checked every 2 s) or on SIGHUP, and when
//! the fetched model registry (`sluice models update`) changes. A file that cannot be read,
//! does not parse, names a key source that gives no key, or would widen access (see
//! `widens`) is refused whole: logged, counted, alerted, and the running configuration stays.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::{GatewayConfig, Reloader};

/// How often the files are looked at.
const EVERY: Duration = Duration::from_secs(2);
/// How long a changed file must stay unchanged before it is read.
const SETTLE: Duration = Duration::from_millis(200);

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
            // A file being written in place changes over several looks: wait until two looks
            // a moment apart agree (an atomic rename is seen whole at once).
            let mut settled = now;
            for _ in 0..20 {
                tokio::time::sleep(SETTLE).await;
                let again = stamps(&path);
                if again == settled {
                    break;
                }
                settled = again;
            }
            last = settled;
            // The outcome is logged, counted and (when refused) alerted by `reload_file`.
            let _ = self.reload_file(&path, listen);
        }
    }

    /// Read, parse, check and apply `path` now, whole or not at all; the outcome is logged, counted
    /// (`sluice_config_reloads_total{outcome}`) and, when refused, alerted.
    pub fn reload_file(&self, path: &Path, listen: SocketAddr) -> Result<(), String> {
        let r = self.try_reload_file(path, listen);
        let outcome = if r.is_ok() { "applied" } else { "refused" };
        metrics::counter!("sluice_config_reloads_total", "outcome" => outcome).increment(1);
        match &r {
            Ok(()) => {
                tracing::info!(target: "sluice::gateway", file = %path.display(), "configuration reloaded")
            }
            Err(e) => {
                tracing::warn!(target: "sluice::gateway", error = %e, "reload refused, keeping the running configuration");
                self.state.live().engine.alerts().reload_refused(e);
            }
        }
        r
    }

    fn try_reload_file(&self, path: &Path, listen: SocketAddr) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if text.trim().is_empty() {
            return Err(format!("{} is empty", path.display()));
        }
        let mut cfg = GatewayConfig::from_toml(&path.display().to_string(), &text)
            .map_err(|e| e.to_string())?;
        cfg.listen = listen;
        self.reload(cfg).map_err(|e| e.to_string())
    }
}
