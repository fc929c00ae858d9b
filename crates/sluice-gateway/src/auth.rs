//! The authorize phase, first half: who is calling. Virtual keys are compared in constant
//! time over SHA-256 digests; with none configured, only loopback callers are let in.

use super::*;

/// Who is calling: a virtual key's name, or `loopback` when none are configured.
pub(crate) fn authenticate(
    cfg: &GatewayConfig,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Option<VirtualKey>, Response> {
    if cfg.virtual_keys.is_empty() {
        if peer.ip().is_loopback() {
            return Ok(None);
        }
        return Err(openai_error(
            StatusCode::UNAUTHORIZED,
            "This gateway has no virtual keys configured and accepts callers on loopback only.",
            "invalid_request_error",
            Some("invalid_api_key"),
            None,
        ));
    }
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .unwrap_or("");
    let d = config::digest(presented);
    // Compare against every key, without stopping early: the time taken says nothing about
    // which key (or how much of one) matched.
    let mut found: Option<&VirtualKey> = None;
    for vk in &cfg.virtual_keys {
        let diff = vk
            .digest
            .iter()
            .zip(d.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 && !presented.is_empty() {
            found = Some(vk);
        }
    }
    match found {
        Some(vk) => Ok(Some(vk.clone())),
        None => Err(openai_error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided.",
            "invalid_request_error",
            Some("invalid_api_key"),
            None,
        )),
    }
}
