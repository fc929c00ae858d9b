//! A string that never shows itself: API keys live in [`SecretString`], whose `Debug` prints
//! `***` and which has no `Display`, so a key cannot reach a log line, a metric label or an error
//! message by accident. The only way in is [`SecretString::expose`], used where the header is set.

use std::fmt;
use std::sync::{Arc, OnceLock};

use http::HeaderValue;

/// An API key or other secret. Shared, not copied: the pool hands the key to every attempt,
/// and a clone is a reference count.
#[derive(Clone)]
pub struct SecretString(Arc<Inner>);

struct Inner {
    text: Box<str>,
    /// A stable identity of the value (FNV-1a of its bytes: the same in every replica, and
    /// never the key), computed once instead of at every choice of a key.
    id: u64,
    /// The key as the `Authorization: Bearer …` and the `api-key` header values, each made at
    /// its first use and then shared by every attempt (a clone is a reference count; making one
    /// is an allocation, a copy and a check of every byte). `None`: the key has bytes a header
    /// cannot carry.
    bearer: OnceLock<Option<HeaderValue>>,
    bare: OnceLock<Option<HeaderValue>>,
}

impl PartialEq for SecretString {
    fn eq(&self, other: &Self) -> bool {
        self.0.text == other.0.text
    }
}

impl Eq for SecretString {}

/// A header value that is marked sensitive (HTTP/2 never indexes it).
fn sensitive(v: Result<HeaderValue, http::header::InvalidHeaderValue>) -> Option<HeaderValue> {
    let mut v = v.ok()?;
    v.set_sensitive(true);
    Some(v)
}

impl SecretString {
    pub fn new(s: impl Into<String>) -> Self {
        let text: Box<str> = s.into().into_boxed_str();
        SecretString(Arc::new(Inner {
            id: crate::fnv::fnv1a(&[text.as_bytes()]),
            text,
            bearer: OnceLock::new(),
            bare: OnceLock::new(),
        }))
    }

    /// The secret itself. Call only where it is sent, never to log or format it.
    pub fn expose(&self) -> &str {
        &self.0.text
    }

    /// A stable identity of the value (a hash, never the key).
    pub(crate) fn id(&self) -> u64 {
        self.0.id
    }

    /// `Bearer <key>`, marked sensitive; `None` when the key cannot be a header value.
    pub(crate) fn bearer_header(&self) -> Option<HeaderValue> {
        self.0
            .bearer
            .get_or_init(|| {
                let mut v = String::with_capacity(7 + self.0.text.len());
                v.push_str("Bearer ");
                v.push_str(&self.0.text);
                sensitive(HeaderValue::try_from(v))
            })
            .clone()
    }

    /// The key alone (an `api-key` header), marked sensitive; `None` when it cannot be a
    /// header value.
    pub(crate) fn bare_header(&self) -> Option<HeaderValue> {
        self.0
            .bare
            .get_or_init(|| sensitive(HeaderValue::from_str(&self.0.text)))
            .clone()
    }

    /// A short, non-reversible tag that tells keys apart in logs: `sk-…a1b2`.
    pub fn fingerprint(&self) -> String {
        let tail: String = self
            .0
            .text
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if self.0.text.chars().count() <= 12 {
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

    #[test]
    fn header_values_are_made_once_and_marked_sensitive() {
        let s = SecretString::new("sk-test-0001");
        let b = s.bearer_header().unwrap();
        assert_eq!(b, "Bearer sk-test-0001");
        assert!(b.is_sensitive());
        assert_eq!(s.clone().bearer_header().unwrap(), b);
        let k = s.bare_header().unwrap();
        assert_eq!(k, "sk-test-0001");
        assert!(k.is_sensitive());
        assert!(SecretString::new("sk-bad\nkey").bearer_header().is_none());
        assert!(SecretString::new("sk-bad\nkey").bare_header().is_none());
        // The id is the value's, whichever copy: two keys with one text are one key.
        assert_eq!(SecretString::new("a").id(), SecretString::new("a").id());
        assert_ne!(SecretString::new("a").id(), SecretString::new("b").id());
        assert_eq!(SecretString::new("a"), SecretString::new("a"));
    }
}
