//! A string that never shows itself: API keys live in [`SecretString`], whose `Debug` prints
//! `***` and which has no `Display`, so a key cannot reach a log line, a metric label or an error
//! message by accident. The only way in is [`SecretString::expose`], used where the header is set.

use std::fmt;

/// An API key or other secret. Shared, not copied: the pool hands the key to every attempt,
/// and a clone is a reference count.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(std::sync::Arc<str>);

impl SecretString {
    pub fn new(s: impl Into<String>) -> Self {
        SecretString(std::sync::Arc::from(s.into()))
    }

    /// The secret itself. Call only where it is sent, never to log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A short, non-reversible tag that tells keys apart in logs: `sk-…a1b2`.
    pub fn fingerprint(&self) -> String {
        let tail: String = self
            .0
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if self.0.chars().count() <= 12 {
            return "***".to_string();
        }
        format!("…{tail}")
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(***)")
    }
}

impl From<&str> for SecretString {
    fn from(s: &str) -> Self {
        SecretString::new(s)
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        SecretString::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_secret() {
        let s = SecretString::new("sk-proj-very-secret-123456");
        assert_eq!(format!("{s:?}"), "SecretString(***)");
        assert_eq!(s.fingerprint(), "…3456");
        assert_eq!(SecretString::new("short").fingerprint(), "***");
    }
}
