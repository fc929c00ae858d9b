//! A pool of upstream API keys, built on the key sources of `credentials.rs`: each attempt takes
//! the healthy key with the most remaining capacity (as the upstream's rate-limit headers last
//! reported it). A 401 or 403 quarantines a key — until its source yields a different value, so
//! rotating a bad key in its file or variable brings the slot back without a restart. A 429
//! cools a key down until the reset the upstream named, and the request moves to another key.
//!
//! Keys are told apart by a hash of their value, never the value; logs and metrics name a key
//! by its slot (`key-1`, …) or its fingerprint (`…a1b2`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use metrics::counter;
use tokio::time::Instant;

use crate::credentials::KeySource;
use crate::error::{Error, ErrorKind};
use crate::headers::RateLimits;
use crate::secret::SecretString;

/// Where an upstream key comes from, as a face's configuration names it. The one place where
/// such settings become key sources (the gateway's `[upstream] keys`, the batch runner's
/// `--api-key-env` / `--keys-file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// An environment variable holding the key.
    Env(String),
    /// A file holding one key, re-read when it changes.
    File(PathBuf),
    /// A file with one key per line, re-read when it changes.
    KeysFile(PathBuf),
    /// The key itself (written in a config file): never shown by `Debug`.
    Value(SecretString),
    /// A file holding a bearer token (an Entra ID access token for Azure OpenAI), re-read when
    /// it changes — whatever refreshes the token rewrites the file. Always sent as
    /// `Authorization: Bearer`, never as `api-key`.
    TokenFile(PathBuf),
}

impl KeySpec {
    /// The pool sources of these specs; none at all means `OPENAI_API_KEY`.
    pub fn sources(specs: &[KeySpec]) -> Vec<PoolSource> {
        if specs.is_empty() {
            return vec![PoolSource::One(KeySource::env("OPENAI_API_KEY"))];
        }
        specs
            .iter()
            .map(|k| match k {
                KeySpec::Env(v) => PoolSource::One(KeySource::env(v.clone())),
                KeySpec::File(p) => PoolSource::One(KeySource::file(p.clone())),
                KeySpec::KeysFile(p) => PoolSource::lines(p.clone()),
                KeySpec::Value(v) => PoolSource::One(KeySource::fixed(v.clone())),
                KeySpec::TokenFile(p) => PoolSource::Token(KeySource::token_file(p.clone())),
            })
            .collect()
    }

    /// Read this source once, now: how many keys it holds, or why it gives none. The reason
    /// names neither the file nor the variable (the caller of this names the setting), so it
    /// can be shown wherever the setting's name can.
    pub fn check(&self) -> Result<usize, String> {
        self.read().map(|k| k.len())
    }

    /// The first key this source gives now (for a one-off check such as `sluice doctor`).
    pub fn first(&self) -> Result<SecretString, String> {
        self.read()?
            .into_iter()
            .next()
            .map(SecretString::new)
            .ok_or_else(|| "no key".to_string())
    }

    fn read(&self) -> Result<Vec<String>, String> {
        let file = |p: &std::path::Path| -> Result<String, String> {
            match std::fs::metadata(p) {
                Ok(m) if m.is_dir() => Err("is a directory, not a file".into()),
                Ok(_) => std::fs::read_to_string(p).map_err(|e| format!("cannot be read: {e}")),
                Err(e) => Err(format!("cannot be read: {e}")),
            }
        };
        let keys = match self {
            KeySpec::Value(v) => vec![v.expose().to_string()],
            KeySpec::Env(var) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => vec![v.trim().to_string()],
                Ok(_) => return Err("the environment variable is empty".into()),
                Err(std::env::VarError::NotPresent) => {
                    return Err("the environment variable is not set".into())
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err("the environment variable is not valid UTF-8".into())
                }
            },
            KeySpec::File(p) | KeySpec::TokenFile(p) => {
                let text = file(p)?;
                let lines: Vec<&str> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                match lines.len() {
                    0 => return Err("the file is empty".into()),
                    1 => vec![lines[0].to_string()],
                    n => {
                        return Err(format!(
                        "the file holds {n} keys: a `file` holds one (use `keys_file` for a pool)"
                    ))
                    }
                }
            }
            KeySpec::KeysFile(p) => {
                let keys: Vec<String> = keys_in(&file(p)?).map(str::to_string).collect();
                if keys.is_empty() {
                    return Err("the keys file holds no key".into());
                }
                keys
            }
        };
        if keys
            .iter()
            .any(|k| k.bytes().any(|b| !b.is_ascii_graphic()))
        {
            return Err("a key holds a space or a character an HTTP header cannot carry".into());
        }
        Ok(keys)
    }

    /// [`KeySpec::check`] for every spec, by its place in `field` (`upstream.keys`); none at all
    /// means `OPENAI_API_KEY`, checked the same way.
    pub fn check_all(specs: &[KeySpec], field: &str) -> Result<usize, String> {
        if specs.is_empty() {
            return KeySpec::Env("OPENAI_API_KEY".into())
                .check()
                .map_err(|e| format!("{field}: none listed, so OPENAI_API_KEY is used, but {e}"));
        }
        let mut n = 0usize;
        for (i, k) in specs.iter().enumerate() {
            let kind = match k {
                KeySpec::Env(_) => "env",
                KeySpec::File(_) => "file",
                KeySpec::KeysFile(_) => "keys_file",
                KeySpec::Value(_) => "value",
                KeySpec::TokenFile(_) => "token_file",
            };
            n = n.saturating_add(
                k.check()
                    .map_err(|e| format!("{field}[{i}] ({kind}): {e}"))?,
            );
        }
        Ok(n)
    }
}

/// The keys of a keys file's text: one a line, blank lines and `#` comments skipped.
fn keys_in(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// The keys of a keys file as last read: its modification time, its size, its keys.
type FileKeys = (Option<SystemTime>, u64, Vec<SecretString>);

/// Where the pool's keys come from.
#[derive(Debug)]
pub enum PoolSource {
    /// One key (static, environment variable, or single-key file).
    One(KeySource),
    /// A bearer token (a file re-read when it changes), sent as `Authorization: Bearer` even to
    /// an upstream that takes keys as `api-key`.
    Token(KeySource),
    /// A file with one key per line, re-read when it changes.
    Lines {
        path: PathBuf,
        cache: Mutex<Option<FileKeys>>,
    },
}

impl PoolSource {
    pub fn lines(path: impl Into<PathBuf>) -> Self {
        PoolSource::Lines {
            path: path.into(),
            cache: Mutex::new(None),
        }
    }

    fn keys(&self, out: &mut Vec<SecretString>) -> Result<(), Error> {
        match self {
            PoolSource::One(s) | PoolSource::Token(s) => {
                out.push(s.current()?);
                Ok(())
            }
            PoolSource::Lines { path, cache } => {
                let meta = std::fs::metadata(path).map_err(|e| {
                    Error::new(
                        ErrorKind::Authentication,
                        format!("cannot read keys file {}: {e}", path.display()),
                    )
                })?;
                let stamp = (meta.modified().ok(), meta.len());
                let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((m, l, keys)) = c.as_ref() {
                    if (*m, *l) == stamp {
                        out.extend(keys.iter().cloned());
                        return Ok(());
                    }
                }
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::new(
                        ErrorKind::Authentication,
                        format!("cannot read keys file {}: {e}", path.display()),
                    )
                })?;
                let keys: Vec<SecretString> = keys_in(&text).map(SecretString::new).collect();
                if c.is_some() {
                    tracing::info!(file = %path.display(), keys = keys.len(), "keys file changed; using its new keys");
                }
                out.extend(keys.iter().cloned());
                *c = Some((stamp.0, stamp.1, keys));
                Ok(())
            }
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Health {
    quarantined: bool,
    cooldown_until: Option<Instant>,
    /// Remaining fraction of the tightest budget, from the last headers (1.0 when unknown).
    remaining: Option<f64>,
}

/// A key chosen for an attempt.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub key: SecretString,
    /// Stable identity of the key value (a hash, never the key).
    pub id: u64,
    /// `key-N` (its position in the pool) for logs and metrics.
    pub label: KeyLabel,
}

/// What a key's health learns from an attempt.
#[derive(Debug, Clone, Copy)]
enum Report<'a> {
    Answered(&'a RateLimits),
    Rejected, // 401 or 403
    RateLimited(Option<Duration>),
}

/// The pool's answer to "which key now?".
#[derive(Debug)]
pub enum Choice {
    Key(Chosen),
    /// Every usable key is cooling down after 429s; the first is back after this long.
    AllCoolingDown(Duration),
}

/// The pool.
#[derive(Debug)]
pub struct KeyPool {
    sources: Vec<PoolSource>,
    /// By key id (a hash of the key, not a caller's text: a fast hash is safe).
    health: Mutex<rustc_hash::FxHashMap<u64, Health>>,
    next: AtomicUsize,
    /// Where cooldowns and quarantines go for the other replicas (shared health), if anywhere.
    pub(crate) share: crate::shared_health::Share,
}

/// A pool's keys as read for one attempt: one source's key, or the keys of several sources.
enum Keys {
    One(SecretString),
    Many(Vec<SecretString>),
}

impl std::ops::Deref for Keys {
    type Target = [SecretString];

    fn deref(&self) -> &[SecretString] {
        match self {
            Keys::One(k) => std::slice::from_ref(k),
            Keys::Many(ks) => ks,
        }
    }
}

/// A key's label: `key-N`, its position in the pool.
pub type KeyLabel = std::borrow::Cow<'static, str>;

/// The labels of the first keys of a pool, written out: every attempt names its key, and a pool
/// has one key or a few.
const KEY_LABELS: [&str; 16] = [
    "key-1", "key-2", "key-3", "key-4", "key-5", "key-6", "key-7", "key-8", "key-9", "key-10",
    "key-11", "key-12", "key-13", "key-14", "key-15", "key-16",
];

/// `key-N`, the label metrics, logs and headers name a key by (never the key): one of the
/// written-out labels, or made for a larger pool.
fn key_label(n: usize) -> KeyLabel {
    if let Some(l) = n.checked_sub(1).and_then(|i| KEY_LABELS.get(i)) {
        return KeyLabel::Borrowed(l);
    }
    let mut label = String::with_capacity(8);
    label.push_str("key-");
    crate::hex::push_decimal(&mut label, n as u64, 1);
    KeyLabel::Owned(label)
}

impl KeyPool {
    pub fn new(sources: Vec<PoolSource>) -> Self {
        KeyPool {
            sources,
            health: Mutex::new(rustc_hash::FxHashMap::default()),
            next: AtomicUsize::new(0),
            share: crate::shared_health::Share::default(),
        }
    }

    /// A pool of one source.
    pub fn single(source: KeySource) -> Self {
        Self::new(vec![PoolSource::One(source)])
    }

    /// The pool's keys as they are now. A pool of one key source (nearly every pool) gives
    /// its key without gathering a list: this runs for every attempt.
    fn all_keys(&self) -> Result<Keys, Error> {
        if let [PoolSource::One(s) | PoolSource::Token(s)] = self.sources.as_slice() {
            return Ok(Keys::One(s.current()?));
        }
        let mut keys = Vec::new();
        let mut last_err = None;
        for s in &self.sources {
            if let Err(e) = s.keys(&mut keys) {
                last_err = Some(e);
            }
        }
        match (keys.is_empty(), last_err) {
            (true, Some(e)) => Err(e),
            (true, None) => Err(
                Error::new(ErrorKind::Authentication, "no API key configured")
                    .with_retryable(false),
            ),
            (false, _) => Ok(Keys::Many(keys)),
        }
    }

    /// Whether its keys are bearer tokens (`token_file`): sent as `Authorization: Bearer`
    /// whatever the upstream's key header.
    pub fn bearer(&self) -> bool {
        self.sources
            .iter()
            .any(|s| matches!(s, PoolSource::Token(_)))
    }

    /// Whether several keys exist (a failure on one may succeed on another).
    pub fn is_pool(&self) -> bool {
        self.sources.len() > 1 || matches!(self.sources.first(), Some(PoolSource::Lines { .. }))
    }

    /// A key for an attempt; when every usable key is cooling down, wait for the first one
    /// back, within `deadline`.
    pub async fn take(&self, deadline: Instant) -> Result<Chosen, Error> {
        loop {
            match self.choose()? {
                Choice::Key(c) => return Ok(c),
                Choice::AllCoolingDown(wait) => {
                    if wait >= deadline.saturating_duration_since(Instant::now()) {
                        return Err(Error::new(
                            ErrorKind::RateLimitedRequests,
                            format!(
                                "every API key is cooling down after 429s for {:.3}s more",
                                wait.as_secs_f64()
                            ),
                        )
                        .with_retry_after(Some(wait)));
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// What became of an attempt with `chosen`: the answer's rate-limit headers, or its error.
    /// The pool decides what follows — capacity noted, a cooldown after a 429, quarantine (and
    /// its alert) after a 401/403 — and marks the error to be retried at once when another key
    /// can take the request.
    pub fn after_attempt(
        &self,
        chosen: &Chosen,
        outcome: Result<&RateLimits, &mut Error>,
        alerts: &crate::alerts::Alerter,
    ) {
        let err = match outcome {
            Ok(rl) => {
                self.report(chosen, Report::Answered(rl));
                alerts.remaining(&chosen.label, rl);
                return;
            }
            Err(e) => e,
        };
        let kind = err.kind();
        let what = match kind {
            ErrorKind::Authentication | ErrorKind::PermissionDenied | ErrorKind::QuotaExhausted => {
                Report::Rejected
            }
            k if k.is_rate_limited() => Report::RateLimited(err.retry_after()),
            _ => return,
        };
        self.report(chosen, what);
        if matches!(what, Report::Rejected) {
            alerts.key_quarantined(&chosen.label, kind.as_str());
        }
        // Another key may be a second one in the pool, or this source's new value after a
        // rotation that happened while the attempt was on its way.
        if self.another_available(chosen.id) {
            tracing::info!(key = %chosen.label, kind = kind.as_str(), "moving the request to another key");
            err.set_retry_now();
        }
    }

    /// Pick a key: healthy, not cooling down, with the most remaining capacity (round robin
    /// among equals).
    pub fn choose(&self) -> Result<Choice, Error> {
        let keys = self.all_keys()?;
        let now = Instant::now();
        let health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = keys.len();
        let mut best: Option<(usize, u64, f64)> = None;
        let mut soonest: Option<Instant> = None;
        let mut quarantined = 0;
        for off in 0..n {
            let i = (start + off) % n;
            let id = keys[i].id();
            let h = health.get(&id).copied().unwrap_or_default();
            if h.quarantined {
                quarantined += 1;
                continue;
            }
            if let Some(until) = h.cooldown_until.filter(|u| *u > now) {
                soonest = Some(soonest.map_or(until, |s| s.min(until)));
                continue;
            }
            let r = h.remaining.unwrap_or(1.0);
            if best.is_none_or(|(_, _, b)| r > b) {
                best = Some((i, id, r));
            }
        }
        if let Some((i, id, _)) = best {
            let key = keys[i].clone();
            return Ok(Choice::Key(Chosen {
                id,
                key,
                label: key_label(i + 1),
            }));
        }
        if quarantined == n {
            return Err(Error::new(
                ErrorKind::Authentication,
                format!("every API key ({n}) was rejected by the upstream and is quarantined; rotate them"),
            )
            .with_retryable(false));
        }
        Ok(Choice::AllCoolingDown(
            soonest.map_or(Duration::from_millis(100), |s| s - now),
        ))
    }

    /// What other replicas found about keys (by id): cooling down for a time, or rejected.
    /// Ids that are not this pool's are ignored.
    pub(crate) fn adopt(&self, cooling: &[(u64, Duration)], quarantined: &[u64]) {
        if cooling.is_empty() && quarantined.is_empty() {
            return;
        }
        let Ok(keys) = self.all_keys() else {
            return;
        };
        let ids: Vec<u64> = keys.iter().map(SecretString::id).collect();
        let now = Instant::now();
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        for (id, left) in cooling.iter().filter(|(id, _)| ids.contains(id)) {
            let h = health.entry(*id).or_default();
            let until = now + *left;
            h.cooldown_until = Some(h.cooldown_until.map_or(until, |u| u.max(until)));
            h.remaining = Some(0.0);
        }
        for id in quarantined.iter().filter(|id| ids.contains(id)) {
            let h = health.entry(*id).or_default();
            if !h.quarantined {
                h.quarantined = true;
                let label = ids.iter().position(|i| i == id).map_or(0, |p| p + 1);
                tracing::warn!(key = %format!("key-{label}"), "API key quarantined: another replica saw the upstream reject it");
            }
        }
    }

    /// Learn from an attempt's outcome.
    fn report(&self, chosen: &Chosen, what: Report<'_>) {
        match what {
            Report::Rejected => self
                .share
                .tell(crate::shared_health::Fact::KeyQuarantined { key: chosen.id }),
            Report::RateLimited(wait) => self.share.tell(crate::shared_health::Fact::KeyCooling {
                key: chosen.id,
                for_: wait.unwrap_or(Duration::from_secs(1)),
            }),
            Report::Answered(_) => {}
        }
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let h = health.entry(chosen.id).or_default();
        match what {
            Report::Answered(rl) => {
                let fr = [
                    rl.requests.remaining_fraction(),
                    rl.tokens.remaining_fraction(),
                ]
                .into_iter()
                .flatten()
                .fold(None, |acc: Option<f64>, f| {
                    Some(acc.map_or(f, |a| a.min(f)))
                });
                if fr.is_some() {
                    h.remaining = fr;
                }
            }
            Report::Rejected => {
                if !h.quarantined {
                    h.quarantined = true;
                    counter!("sluice_key_quarantined_total", "key" => chosen.label.clone())
                        .increment(1);
                    tracing::error!(key = %chosen.label, fingerprint = %chosen.key.fingerprint(), "API key rejected by the upstream (401/403): quarantined until its source changes");
                }
            }
            Report::RateLimited(wait) => {
                let until = Instant::now() + wait.unwrap_or(Duration::from_secs(1));
                h.cooldown_until = Some(h.cooldown_until.map_or(until, |u| u.max(until)));
                h.remaining = Some(0.0);
                counter!("sluice_key_cooldowns_total", "key" => chosen.label.clone()).increment(1);
            }
        }
    }

    /// Whether a key other than `except` could take a request now.
    pub fn another_available(&self, except: u64) -> bool {
        let Ok(keys) = self.all_keys() else {
            return false;
        };
        let now = Instant::now();
        let health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter().any(|k| {
            let id = k.id();
            let h = health.get(&id).copied().unwrap_or_default();
            id != except && !h.quarantined && h.cooldown_until.is_none_or(|u| u <= now)
        })
    }

    /// A description of the sources, for messages.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .sources
            .iter()
            .map(|s| match s {
                PoolSource::One(k) => k.describe(),
                PoolSource::Token(k) => format!("bearer token from {}", k.describe()),
                PoolSource::Lines { path, .. } => format!("keys file {}", path.display()),
            })
            .collect();
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_labels_count_from_one() {
        assert_eq!(key_label(1), "key-1");
        assert_eq!(key_label(10), "key-10");
        assert_eq!(key_label(16), "key-16");
        assert_eq!(key_label(17), "key-17");
        assert_eq!(key_label(4096), "key-4096");
        for n in 1..=40 {
            assert_eq!(key_label(n), format!("key-{n}"));
        }
    }

    fn pool(keys: &[&str]) -> KeyPool {
        KeyPool::new(
            keys.iter()
                .map(|k| PoolSource::One(KeySource::fixed(*k)))
                .collect(),
        )
    }

    fn take(p: &KeyPool) -> Chosen {
        match p.choose().unwrap() {
            Choice::Key(c) => c,
            Choice::AllCoolingDown(w) => panic!("every key cooling down for {w:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn prefers_capacity_skips_cooling_and_quarantined() {
        let p = pool(&["sk-key-aaaaaaaaaaaa1", "sk-key-bbbbbbbbbbbb2"]);
        let a = take(&p);
        let b = take(&p);
        assert_ne!(a.id, b.id, "round robin among equals");
        let mut low = RateLimits::default();
        low.tokens.limit = Some(100);
        low.tokens.remaining = Some(10);
        p.report(&a, Report::Answered(&low));
        for _ in 0..5 {
            assert_eq!(take(&p).id, b.id, "the key with more capacity");
        }
        p.report(&b, Report::RateLimited(Some(Duration::from_secs(5))));
        assert_eq!(take(&p).id, a.id, "b cools down");
        p.report(&a, Report::Rejected);
        match p.choose().unwrap() {
            Choice::AllCoolingDown(wait) => assert_eq!(wait, Duration::from_secs(5)),
            Choice::Key(c) => panic!("nothing should be available, got {}", c.label),
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(take(&p).id, b.id);
        p.report(&b, Report::Rejected);
        let e = p.choose().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Authentication);
        assert!(!e.to_string().contains("sk-key"));
    }

    #[test]
    fn keys_file_with_many_keys_and_rotation() {
        let dir = std::env::temp_dir().join(format!("sluice-pool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys");
        std::fs::write(
            &path,
            "# team keys\nsk-one-000000000001\n\nsk-two-000000000002\n",
        )
        .unwrap();
        let p = KeyPool::new(vec![PoolSource::lines(&path)]);
        assert!(p.is_pool());
        let a = take(&p);
        p.report(&a, Report::Rejected);
        for _ in 0..4 {
            assert_ne!(take(&p).id, a.id);
        }
        // Rotate the bad key in the file: a fresh value is healthy.
        let bad = a.key.expose().to_string();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace(&bad, "sk-three-0000000003x");
        std::fs::write(&path, text).unwrap();
        let seen: std::collections::HashSet<u64> = (0..4).map(|_| take(&p).id).collect();
        assert_eq!(seen.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
