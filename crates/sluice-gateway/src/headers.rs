//! Header pass-through: everything sluice does not need to understand crosses the gateway
//! untouched, both ways, except what describes one hop, the credentials (the gateway sends its
//! own) and sluice's own `x-sluice-*` headers.

use super::*;

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), and the framing ones the
/// server side writes itself. (A `match`, not a list searched in turn: every header of every
/// request and answer is checked.)
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
pub(crate) fn connection_listed(all: &HeaderMap) -> Vec<String> {
    all.get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether a header is hop-by-hop: listed above, or named by the message's `Connection`.
pub(crate) fn hop_by_hop(name: &HeaderName, listed: &[String]) -> bool {
    always_hop_by_hop(name.as_str()) || listed.iter().any(|t| t == name.as_str())
}

/// The caller's headers that go upstream: all but hop-by-hop ones, its credentials
/// (`Authorization`, `api-key`: the gateway sends its own), `Host`, `Idempotency-Key` (the
/// engine sends the caller's, the same on every attempt), `Accept-Encoding` (the gateway reads
/// usage from the answer, so the upstream hop stays uncompressed) and sluice's own
/// `x-sluice-*`. `OpenAI-Organization` and `OpenAI-Project` pass unless the upstream config
/// sets its own. (Copied into a new map: taking the few out of the request's own map costs
/// more, a removal being dearer than an insertion.)
pub(crate) fn passed_request_headers(h: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(h.len());
    let listed = connection_listed(h);
    for (name, value) in h {
        let n = name.as_str();
        if hop_by_hop(name, &listed)
            || matches!(
                n,
                "authorization" | "api-key" | "host" | "idempotency-key" | "accept-encoding"
            )
            || n.starts_with("x-sluice-")
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The upstream's answer headers that go back to the caller: all but hop-by-hop ones and
/// `x-sluice-*`. The upstream's map is kept and those few are taken out of it, instead of
/// copying every other header into a new map (an answer carries a dozen or more).
pub(crate) fn passed_response_headers(mut h: HeaderMap) -> HeaderMap {
    // The one nearly every answer has, by its constant name: what is left to drop is then
    // usually nothing, and the list below stays empty (no allocation).
    h.remove(http::header::CONTENT_LENGTH);
    let listed = connection_listed(&h);
    let dropped: Vec<HeaderName> = h
        .keys()
        .filter(|n| hop_by_hop(n, &listed) || n.as_str().starts_with("x-sluice-"))
        .cloned()
        .collect();
    for n in &dropped {
        h.remove(n);
    }
    h
}

/// What the model policy did, for the caller to see: `x-sluice-model-deprecated` (model;
/// shutdown; replacement), `x-sluice-model-substituted` and `x-sluice-model-fallback`
/// (requested -> sent), and `x-sluice-upstream` (the name of the upstream that answered).
pub(crate) fn sluice_headers(h: &mut HeaderMap, meta: &Meta) {
    if let Some(n) = &meta.deprecation {
        set(h, "x-sluice-model-deprecated", &n.header_value());
    }
    let sent = meta.model.as_deref().unwrap_or("");
    if meta.substituted {
        let from = meta.requested_model.as_deref().unwrap_or("");
        set(
            h,
            "x-sluice-model-substituted",
            &format!("{from} -> {sent}"),
        );
    }
    if let Some(from) = &meta.fallback_from {
        set(h, "x-sluice-model-fallback", &format!("{from} -> {sent}"));
    }
    if let Some(u) = &meta.upstream {
        if let Ok(v) = HeaderValue::from_str(u) {
            h.insert(X_SLUICE_UPSTREAM, v);
        }
    }
}

/// The two headers of every answer, named once (a name made from a string at run time is
/// checked and copied on each use).
const X_SLUICE_UPSTREAM: HeaderName = HeaderName::from_static("x-sluice-upstream");
pub(crate) const X_SLUICE_COST_USD: HeaderName = HeaderName::from_static("x-sluice-cost-usd");
