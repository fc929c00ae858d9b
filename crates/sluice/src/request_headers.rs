//! The headers of one attempt: the engine's configured headers, the caller's (less those that
//! describe one hop, credentials and the like), the key, the idempotency key, and the content
//! type and accept a body or a stream need.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::error::{Error, ErrorKind};
use crate::secret::SecretString;

const API_KEY: HeaderName = HeaderName::from_static("api-key");
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// What an attempt sends besides its body.
pub(crate) struct AttemptHeaders<'a> {
    /// The engine's configuration (organization, project, custom headers): these win.
    pub(crate) configured: &'a HeaderMap,
    /// The caller's (a gateway caller's content type, `OpenAI-Beta`, custom ones), of which
    /// those no attempt sends on are left out here ([`crate::hop_by_hop::not_sent_upstream`]).
    pub(crate) caller: &'a HeaderMap,
    pub(crate) idempotency_key: &'a str,
    pub(crate) has_body: bool,
    pub(crate) stream: bool,
    /// The key goes in `api-key` (Azure OpenAI) instead of `Authorization: Bearer`.
    pub(crate) api_key_header: bool,
}

impl AttemptHeaders<'_> {
    /// The header map for an attempt with `key`; `key_source` names where the key came from
    /// when it cannot be a header value (never the key itself).
    pub(crate) fn build(
        &self,
        key: &SecretString,
        key_source: impl FnOnce() -> String,
    ) -> Result<HeaderMap, Error> {
        // Sized for everything below at once, so that inserting never grows the map.
        let mut h = HeaderMap::with_capacity(self.configured.len() + self.caller.len() + 4);
        for (name, value) in self.configured {
            h.append(name.clone(), value.clone());
        }
        // A few configured names are compared in turn: cheaper than hashing each caller's.
        let configured = |name: &HeaderName| match self.configured.keys_len() {
            0 => false,
            1..=8 => self.configured.keys().any(|k| k == name),
            _ => self.configured.contains_key(name),
        };
        let listed = crate::hop_by_hop::connection_listed(self.caller);
        for (name, value) in self.caller {
            if crate::hop_by_hop::not_sent_upstream(name, &listed) || configured(name) {
                continue;
            }
            // Not in the map yet (configured names are skipped), and a name's values come
            // together: appended, each of them.
            h.append(name.clone(), value.clone());
        }
        // Made once per key and shared (see `SecretString`), marked sensitive.
        let value = if self.api_key_header {
            key.bare_header()
        } else {
            key.bearer_header()
        };
        let auth = value.ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "the API key from {} has characters a header cannot carry",
                    key_source()
                ),
            )
        })?;
        if self.api_key_header {
            h.insert(API_KEY, auth);
        } else {
            h.insert(http::header::AUTHORIZATION, auth);
        }
        if let Ok(v) = HeaderValue::from_str(self.idempotency_key) {
            h.insert(IDEMPOTENCY_KEY, v);
        }
        if self.has_body && !h.contains_key(http::header::CONTENT_TYPE) {
            h.append(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        if self.stream && !h.contains_key(http::header::ACCEPT) {
            h.append(
                http::header::ACCEPT,
                HeaderValue::from_static("text/event-stream"),
            );
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    fn values<'a>(h: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    #[test]
    fn a_callers_hop_by_hop_headers_credentials_and_own_names_stay_behind() {
        let caller = map(&[
            ("connection", "keep-alive, X-Hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
            ("host", "gateway.example"),
            ("content-length", "12"),
            ("accept-encoding", "gzip"),
            ("api-key", "callers-own"),
            ("x-sluice-internal", "1"),
            ("openai-beta", "assistants=v2"),
            ("x-trace", "7"),
        ]);
        let h = AttemptHeaders {
            configured: &HeaderMap::new(),
            caller: &caller,
            idempotency_key: "k",
            has_body: false,
            stream: false,
            api_key_header: false,
        }
        .build(&SecretString::from("sk-upstream"), || "test".into())
        .unwrap();
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["authorization", "idempotency-key", "openai-beta", "x-trace"]
        );
    }

    #[test]
    fn configured_headers_win_and_the_callers_others_pass_whole() {
        let configured = map(&[
            ("openai-project", "proj_cfg"),
            ("x-team", "a"),
            ("x-team", "b"),
        ]);
        let caller = map(&[
            ("openai-project", "proj_caller"),
            ("x-team", "c"),
            ("openai-beta", "assistants=v2"),
            ("x-trace", "1"),
            ("x-trace", "2"),
            ("authorization", "Bearer caller"),
            ("idempotency-key", "theirs"),
        ]);
        let h = AttemptHeaders {
            configured: &configured,
            caller: &caller,
            idempotency_key: "ours",
            has_body: true,
            stream: true,
            api_key_header: false,
        }
        .build(&SecretString::from("sk-upstream"), || "test".into())
        .unwrap();
        assert_eq!(values(&h, "openai-project"), ["proj_cfg"]);
        assert_eq!(values(&h, "x-team"), ["a", "b"]);
        assert_eq!(values(&h, "openai-beta"), ["assistants=v2"]);
        assert_eq!(values(&h, "x-trace"), ["1", "2"]);
        assert_eq!(values(&h, "authorization"), ["Bearer sk-upstream"]);
        assert!(h.get("authorization").unwrap().is_sensitive());
        assert_eq!(values(&h, "idempotency-key"), ["ours"]);
        assert_eq!(values(&h, "content-type"), ["application/json"]);
        assert_eq!(values(&h, "accept"), ["text/event-stream"]);

        // Azure's header; the caller's own content type and accept are kept.
        let caller = map(&[
            ("content-type", "multipart/form-data; boundary=x"),
            ("accept", "*/*"),
        ]);
        let h = AttemptHeaders {
            configured: &HeaderMap::new(),
            caller: &caller,
            idempotency_key: "k",
            has_body: true,
            stream: true,
            api_key_header: true,
        }
        .build(&SecretString::from("azure-key"), || "test".into())
        .unwrap();
        assert_eq!(values(&h, "api-key"), ["azure-key"]);
        assert!(h.get("authorization").is_none());
        assert_eq!(
            values(&h, "content-type"),
            ["multipart/form-data; boundary=x"]
        );
        assert_eq!(values(&h, "accept"), ["*/*"]);
    }
}
