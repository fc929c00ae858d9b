//! Which headers describe one hop and not the message (RFC 9110 §7.6.1), and which of a
//! caller's headers an attempt never sends on. The engine filters a caller's headers as it
//! builds each attempt's (so a gateway hands over the request's own map, not a copy), and the
//! gateway filters an answer's headers on the way back by the same rule.

use http::{HeaderMap, HeaderName};

/// Headers that describe one hop, not the message, and the framing ones each side writes
/// itself. (A `match`, not a list searched in turn: every header of every request and answer
/// is checked.)
#[inline]
fn always_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    )
}

/// The header names a message's `Connection` header lists (hop-by-hop by declaration); empty
/// (and free) when it has none, as almost every request and answer.
pub fn connection_listed(all: &HeaderMap) -> Vec<String> {
    let values = all.get_all(http::header::CONNECTION);
    if values.iter().next().is_none() {
        return Vec::new();
    }
    values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether a header is hop-by-hop: one of those above, or named by the message's `Connection`
/// header (`listed`, from [`connection_listed`]).
#[inline]
pub(crate) fn is_hop_by_hop(name: &HeaderName, listed: &[String]) -> bool {
    always_hop_by_hop(name.as_str()) || listed.iter().any(|t| t == name.as_str())
}

/// A header that never crosses sluice, either way: hop-by-hop (RFC 9110 §7.6.1, the framing
/// ones, and those the message's `Connection` header lists — `listed`, from
/// [`connection_listed`]) or in sluice's own `x-sluice-*` namespace. The gateway drops these
/// from an answer (inlined there: it checks every answer header); an attempt drops them, and a
/// caller's credentials and the like, from a caller's request.
#[inline]
pub fn stays_behind(name: &HeaderName, listed: &[String]) -> bool {
    is_hop_by_hop(name, listed) || name.as_str().starts_with("x-sluice-")
}

/// A caller's header that no attempt sends on: those that [`stay_behind`](stays_behind), its
/// credentials (`Authorization`, `api-key`: the engine sends its own key), `Host`,
/// `Idempotency-Key` (the engine sends the request's, the same on every attempt) and
/// `Accept-Encoding` (the engine reads usage from the answer, so the upstream hop stays
/// uncompressed).
pub(crate) fn not_sent_upstream(name: &HeaderName, listed: &[String]) -> bool {
    matches!(
        name.as_str(),
        "authorization" | "api-key" | "host" | "idempotency-key" | "accept-encoding"
    ) || stays_behind(name, listed)
}
