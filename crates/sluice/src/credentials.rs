//! Where API keys come from: a static value, an environment variable, or a file that is re-read
//! whenever it changes (a mounted secret rotated in place). The key is looked up for every
//! attempt, so a rotation takes effect on the next request with no new client, while requests
//! already sent keep the key they were sent with. The key pool (with quarantine and cooldown)
//! builds on this provider.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::error::{Error, ErrorKind};
use crate::secret::SecretString;

/// One source of an API key (or of a bearer token: [`KeySource::token_file`]).
#[derive(Debug)]
pub struct KeySource {
    kind: SourceKind,
    /// What the source holds, as its messages name it: "API key" or "token".
    what: &'static str,
}

#[derive(Debug)]
enum SourceKind {
    Static(SecretString),
    Env(String),
    File {
        path: PathBuf,
        cache: Mutex<Option<FileKey>>,
    },
}

#[derive(Debug, Clone)]
struct FileKey {
    modified: Option<SystemTime>,
    len: u64,
    key: SecretString,
}

impl KeySource {
    /// A fixed key.
    pub fn fixed(key: impl Into<SecretString>) -> Self {
        KeySource {
            kind: SourceKind::Static(key.into()),
            what: "API key",
        }
    }

    /// The value of an environment variable, read at each request.
    pub fn env(var: impl Into<String>) -> Self {
        KeySource {
            kind: SourceKind::Env(var.into()),
            what: "API key",
        }
    }

    /// The contents of a file (whitespace trimmed), re-read when its modification time or size
    /// changes.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        KeySource {
            kind: SourceKind::File {
                path: path.into(),
                cache: Mutex::new(None),
            },
            what: "API key",
        }
    }

    /// A bearer token in a file (an Azure Entra ID token that another process refreshes),
    /// re-read as [`KeySource::file`]; its messages say "token file".
    pub fn token_file(path: impl Into<PathBuf>) -> Self {
        KeySource {
            what: "token",
            ..KeySource::file(path)
        }
    }

    /// Where the key comes from, for messages (never the key itself).
    pub fn describe(&self) -> String {
        match &self.kind {
            SourceKind::Static(_) => "a fixed key".to_string(),
            SourceKind::Env(v) => format!("environment variable {v}"),
            SourceKind::File { path, .. } => format!("file {}", path.display()),
        }
    }

    /// The key in force now.
    pub fn current(&self) -> Result<SecretString, Error> {
        match &self.kind {
            SourceKind::Static(k) => Ok(k.clone()),
            SourceKind::Env(var) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(SecretString::new(v.trim())),
                _ => Err(Error::new(
                    ErrorKind::Authentication,
                    format!("no {}: environment variable {var} is not set", self.what),
                )
                .with_retryable(false)),
            },
            SourceKind::File { path, cache } => {
                let meta = std::fs::metadata(path).map_err(|e| {
                    Error::new(
                        ErrorKind::Authentication,
                        format!("cannot read {} file {}: {e}", self.what, path.display()),
                    )
                })?;
                let modified = meta.modified().ok();
                let len = meta.len();
                let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(c) = cache.as_ref() {
                    if c.modified == modified && c.len == len {
                        return Ok(c.key.clone());
                    }
                }
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::new(
                        ErrorKind::Authentication,
                        format!("cannot read {} file {}: {e}", self.what, path.display()),
                    )
                })?;
                let key = text.trim();
                let lines = key.lines().filter(|l| !l.trim().is_empty()).count();
                if lines > 1 {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!(
                            "{} file {} holds {lines} keys; a key source takes one (spreading a job over several keys needs the key pool)",
                            self.what,
                            path.display()
                        ),
                    )
                    .with_retryable(false));
                }
                if key.is_empty() {
                    return Err(Error::new(
                        ErrorKind::Authentication,
                        format!("{} file {} is empty", self.what, path.display()),
                    ));
                }
                let key = SecretString::new(key);
                if cache.is_some() {
                    tracing::info!(source = %path.display(), key = %key.fingerprint(), what = self.what, "key file changed; using the new key");
                }
                *cache = Some(FileKey {
                    modified,
                    len,
                    key: key.clone(),
                });
                Ok(key)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_key_is_reread_when_it_changes() {
        let dir = std::env::temp_dir().join(format!("sluice-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "sk-first-key-000001\n").unwrap();
        let src = KeySource::file(&path);
        assert_eq!(src.current().unwrap().expose(), "sk-first-key-000001");
        std::fs::write(&path, "sk-second-key-0000002\n").unwrap();
        assert_eq!(src.current().unwrap().expose(), "sk-second-key-0000002");
        std::fs::write(&path, "sk-a-key-000000001\nsk-b-key-000000002\n").unwrap();
        let err = src.current().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("holds 2 keys"), "{err}");
        std::fs::write(&path, "  \n").unwrap();
        let err = src.current().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Authentication);
        assert!(!err.to_string().contains("sk-"), "{err}");
        assert!(err.to_string().contains("API key file"), "{err}");
        // A token file's messages name a token, not an API key.
        let tokens = KeySource::token_file(&path);
        let err = tokens.current().unwrap_err();
        assert!(err.to_string().contains("token file"), "{err}");
        assert!(!err.to_string().contains("API key"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_env_is_a_clear_error() {
        let err = KeySource::env("SLUICE_TEST_SURELY_UNSET_VAR")
            .current()
            .unwrap_err();
        assert!(err.to_string().contains("SLUICE_TEST_SURELY_UNSET_VAR"));
        assert!(!err.is_retryable());
    }
}
