//! Header pass-through: everything sluice does not need to understand crosses the gateway
//! untouched, both ways, except what describes one hop, the credentials (the gateway sends its
//! own) and sluice's own `x-sluice-*` headers. A request's headers go to the engine as they
//! came, in the request's own map, and the engine leaves those out as it builds each attempt
//! (`sluice::stays_behind` and the credentials); an answer's are filtered here by the same
//! rule.

use super::*;

/// The upstream's answer headers that go back to the caller: all but hop-by-hop ones and
/// `x-sluice-*`. The upstream's map is kept and those few are taken out of it, instead of
/// copying every other header into a new map (an answer carries a dozen or more).
pub(crate) fn passed_response_headers(mut h: HeaderMap) -> HeaderMap {
    // The one nearly every answer has, by its constant name: what is left to drop is then
    // usually nothing, and the list below stays empty (no allocation).
    h.remove(http::header::CONTENT_LENGTH);
    let listed = sluice::connection_listed(&h);
    let dropped: Vec<HeaderName> = h
        .keys()
        .filter(|n| sluice::stays_behind(n, &listed))
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
    let upstream = match &meta.upstream {
        // A name held for the process's life (nearly always: see `Meta::upstream`) is not
        // copied into the header.
        Some(std::borrow::Cow::Borrowed(u)) if u.bytes().all(is_header_text) => {
            Some(HeaderValue::from_static(u))
        }
        Some(u) => HeaderValue::from_str(u).ok(),
        None => None,
    };
    if let Some(v) = upstream {
        h.insert(X_SLUICE_UPSTREAM, v);
    }
}

/// A byte `HeaderValue::from_static` takes (visible ASCII, space or tab): checked first,
/// because that function panics on any other.
fn is_header_text(b: u8) -> bool {
    b == b'\t' || (0x20..0x7f).contains(&b)
}

/// The two headers of every answer, named once (a name made from a string at run time is
/// checked and copied on each use).
const X_SLUICE_UPSTREAM: HeaderName = HeaderName::from_static("x-sluice-upstream");
pub(crate) const X_SLUICE_COST_USD: HeaderName = HeaderName::from_static("x-sluice-cost-usd");
