//! `sluice models update`: a newer registry file, brought in without a new release.
//!
//! Shutdown dates are announced after a binary ships; waiting for the next release to learn one
//! is how a cron job breaks silently. This fetches a registry file in the shipped format (from
//! a URL or a file), validates it exactly as a user's file is validated, and only then stores
//! it, by atomic rename, as the fetched layer in the data directory (shipped < fetched < your
//! own file). A file that does not validate is refused and the stored layer stays as it was.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::civil::Date;

use crate::error::{Error, ErrorKind};
use crate::models::{Layer, Lifecycle, Registry};

/// The largest registry file accepted (the shipped one is ~30 KB).
pub const MAX_SIZE: usize = 8 * 1024 * 1024;

/// What an update stored.
#[derive(Debug, Clone)]
pub struct Update {
    pub stored: PathBuf,
    /// Entries in the file.
    pub models: usize,
    pub as_of: Date,
    /// The data's date before the update (all layers but yours).
    pub previous_as_of: Option<Date>,
    /// One line per model whose lifecycle the update changes: `gpt-4o: shutdown - -> 2027-03-01`.
    pub changes: Vec<String>,
}

fn config(msg: String) -> Error {
    Error::new(ErrorKind::Config, msg)
}

/// Read `from`: an `http://` or `https://` URL, else a file path.
pub async fn fetch(from: &str) -> Result<String, Error> {
    if from.starts_with("http://") || from.starts_with("https://") {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| config(format!("cannot build an HTTP client: {e}")))?;
        let resp = http
            .get(from)
            .send()
            .await
            .map_err(|e| Error::new(ErrorKind::Connection, format!("{from}: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(config(format!("{from}: answered {status}")));
        }
        if resp.content_length().is_some_and(|n| n > MAX_SIZE as u64) {
            return Err(config(format!("{from}: larger than {MAX_SIZE} bytes")));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| Error::new(ErrorKind::Connection, format!("{from}: {e}")))?;
        if body.len() > MAX_SIZE {
            return Err(config(format!("{from}: larger than {MAX_SIZE} bytes")));
        }
        String::from_utf8(body.to_vec()).map_err(|_| config(format!("{from}: not UTF-8 text")))
    } else {
        let meta = std::fs::metadata(from).map_err(|e| config(format!("{from}: {e}")))?;
        if meta.len() > MAX_SIZE as u64 {
            return Err(config(format!("{from}: larger than {MAX_SIZE} bytes")));
        }
        std::fs::read_to_string(from).map_err(|e| config(format!("{from}: {e}")))
    }
}

/// Validate `text` (read from `origin`) as a fetched layer on `today`: the same errors as a
/// user's file, plus a date of its own (`[registry] as_of`), since a layer that does not say
/// how old it is cannot tell anyone whether it is stale.
pub fn validate(origin: &str, text: &str, today: Date) -> Result<Registry, Error> {
    let file = Registry::from_toml(origin, text)?;
    let as_of = file.as_of().ok_or_else(|| {
        config(format!(
            "model registry {origin}: no [registry] as_of date; a fetched registry must say the date of its data"
        ))
    })?;
    if as_of > today.saturating_add(jiff::Span::new().days(2)) {
        return Err(config(format!(
            "model registry {origin}: registry.as_of {as_of} is in the future"
        )));
    }
    if file.models().is_empty() {
        return Err(config(format!(
            "model registry {origin}: no [[model]] entries"
        )));
    }
    // The layers must also compose (an alias clashing with a shipped id is caught here).
    let mut all = Registry::builtin();
    all.extend_toml(origin, text)?;
    Ok(file)
}

/// Fetch, validate and store `from` as the fetched layer at `dest`.
pub async fn update(from: &str, dest: &Path, today: Date) -> Result<Update, Error> {
    let text = fetch(from).await?;
    let file = validate(from, &text, today)?;
    let before = Registry::load_layers(Some(dest), None)?;
    let mut after = Registry::builtin();
    after.extend_toml(from, &text)?;
    let mut changes = Vec::new();
    for m in file.models() {
        let old = before.lifecycle(&m.id).cloned().unwrap_or_default();
        let new = after.lifecycle(&m.id).cloned().unwrap_or_default();
        if old != new {
            changes.push(format!("{}: {}", m.id, describe(&old, &new)));
        }
    }
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| config(format!("cannot create {}: {e}", dir.display())))?;
    }
    let tmp = dest.with_extension("toml.partial");
    std::fs::write(&tmp, &text)
        .map_err(|e| config(format!("cannot write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, dest)
        .map_err(|e| config(format!("cannot store {}: {e}", dest.display())))?;
    Ok(Update {
        stored: dest.to_path_buf(),
        models: file.models().len(),
        as_of: file.as_of().unwrap_or(today),
        previous_as_of: before.layers().iter().filter_map(|l: &Layer| l.as_of).max(),
        changes,
    })
}

fn describe(old: &Lifecycle, new: &Lifecycle) -> String {
    let d = |d: Option<Date>| d.map_or_else(|| "-".to_string(), |d| d.to_string());
    let mut parts = Vec::new();
    if old.shutdown != new.shutdown {
        parts.push(format!(
            "shutdown {} -> {}",
            d(old.shutdown),
            d(new.shutdown)
        ));
    }
    if old.deprecated != new.deprecated {
        parts.push(format!(
            "deprecated {} -> {}",
            d(old.deprecated),
            d(new.deprecated)
        ));
    }
    if old.replacement != new.replacement {
        parts.push(format!(
            "replacement {} -> {}",
            old.replacement.as_deref().unwrap_or("-"),
            new.replacement.as_deref().unwrap_or("-")
        ));
    }
    parts.join(", ")
}
