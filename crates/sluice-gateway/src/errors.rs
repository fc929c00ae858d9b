//! One place that writes the gateway's errors in OpenAI's shape
//! (`{"error":{"message","type","param","code"}}`), with the status an SDK maps to the right
//! exception, `x-request-id` (the upstream's, or the gateway's own) and `x-should-retry`: the
//! gateway's own refusals, engine errors, and a caller over its own limits.

use super::*;

/// An error in OpenAI's shape, with the status an SDK maps to the right exception, the
/// gateway's own `x-request-id` (an upstream's replaces it where there is one) and
/// `x-should-retry: false` (the few retryable answers say `true` themselves).
pub(crate) fn openai_error(
    status: StatusCode,
    message: &str,
    ty: &str,
    code: Option<&str>,
    param: Option<&str>,
) -> Response {
    let body = sluice::ApiError::new(message, ty, code, param).to_body();
    let mut r = (status, axum::Json(body)).into_response();
    let h = r.headers_mut();
    set(h, "x-request-id", &format!("req_sluice_{:024x}", rand_id()));
    set(h, "x-should-retry", "false");
    r
}

/// 96 random bits for the gateway's own request ids.
pub(crate) fn rand_id() -> u128 {
    rand::random::<u128>() >> 32
}

pub(crate) fn set(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(HeaderName::from_static(name), v);
    }
}

/// An engine error as the caller's SDK should see it.
pub(crate) fn error_response(e: &Error) -> Response {
    let mut resp = match (e.status(), e.api_error()) {
        // The upstream refused the gateway's own key: the gateway's failure, not the caller's
        // (whose SDK would blame its valid virtual key), and nothing of the key is shown.
        (Some(401), _) => openai_error(
            StatusCode::BAD_GATEWAY,
            "The upstream rejected the gateway's API key. This is the gateway's configuration, not your key; the operator has to fix it.",
            "upstream_auth_error",
            Some("upstream_key_rejected"),
            None,
        ),
        // The upstream answered: its status and error body, as they were.
        (Some(s), Some(api)) => {
            let status = StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, axum::Json(api.to_body())).into_response()
        }
        (Some(s), None) => {
            let status = StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY);
            openai_error(status, e.message(), "upstream_error", None, None)
        }
        (None, _) => {
            let (status, ty) = match e.kind() {
                ErrorKind::Overloaded
                | ErrorKind::RateLimitedRequests
                | ErrorKind::RateLimitedTokens => {
                    (StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded")
                }
                ErrorKind::BudgetExceeded | ErrorKind::QuotaExhausted => {
                    (StatusCode::TOO_MANY_REQUESTS, "insufficient_quota")
                }
                // The upstream's breaker is open: a 503 with Retry-After, as a service that is
                // down for a while answers (the SDKs retry it after that long).
                ErrorKind::UpstreamUnavailable => {
                    (StatusCode::SERVICE_UNAVAILABLE, "upstream_unavailable")
                }
                ErrorKind::TimeoutConnect
                | ErrorKind::TimeoutFirstByte
                | ErrorKind::TimeoutIdle
                | ErrorKind::TimeoutTotal => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
                ErrorKind::Connection | ErrorKind::StreamInterrupted | ErrorKind::Decode => {
                    (StatusCode::BAD_GATEWAY, "upstream_error")
                }
                ErrorKind::Authentication => (StatusCode::BAD_GATEWAY, "upstream_auth_error"),
                // A retired model (model registry): a 404 like the upstream's, so the SDK
                // raises NotFoundError, with the replacement named in the message.
                ErrorKind::ModelRetired => (StatusCode::NOT_FOUND, "invalid_request_error"),
                // No configured upstream serves the model: a 404 as OpenAI answers an unknown one.
                ErrorKind::ModelNotFound => (StatusCode::NOT_FOUND, "invalid_request_error"),
                ErrorKind::BadRequest => (StatusCode::BAD_REQUEST, "invalid_request_error"),
                // A budget applies and the model has no price: the operator's setting to fix,
                // which no retry changes.
                ErrorKind::Unpriced => (StatusCode::BAD_REQUEST, "invalid_request_error"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
            };
            let param = matches!(
                e.kind(),
                ErrorKind::ModelRetired | ErrorKind::ModelNotFound | ErrorKind::Unpriced
            )
            .then_some("model");
            openai_error(status, caller_message(e), ty, Some(e.kind().as_str()), param)
        }
    };
    let h = resp.headers_mut();
    if let Some(w) = e.retry_after() {
        set(
            h,
            "retry-after",
            &w.as_secs_f64().ceil().max(1.0).to_string(),
        );
        set(h, "retry-after-ms", &w.as_millis().to_string());
    }
    let never = matches!(
        e.kind(),
        ErrorKind::BudgetExceeded | ErrorKind::QuotaExhausted | ErrorKind::Unpriced
    );
    // Not retried inside the gateway (it fails fast), but the caller may come back later.
    let later = e.kind() == ErrorKind::UpstreamUnavailable;
    set(
        h,
        "x-should-retry",
        if (e.is_retryable() || later) && !never {
            "true"
        } else {
            "false"
        },
    );
    if let Some(id) = e.request_id() {
        set(h, "x-request-id", id);
    }
    resp
}

/// What a caller is told of an error the gateway found itself. The messages of limits, budgets,
/// timeouts and bad requests are about the request and are shown; the others (a key source
/// that gives no key, a ledger that cannot be written, anything unforeseen) are about the
/// server and may name its files or variables, so the caller gets a fixed sentence and the
/// operator the log line (which names the kind).
pub(crate) fn caller_message(e: &Error) -> &str {
    match e.kind() {
        ErrorKind::Overloaded
        | ErrorKind::RateLimitedRequests
        | ErrorKind::RateLimitedTokens
        | ErrorKind::BudgetExceeded
        | ErrorKind::Unpriced
        | ErrorKind::QuotaExhausted
        | ErrorKind::TimeoutConnect
        | ErrorKind::TimeoutFirstByte
        | ErrorKind::TimeoutIdle
        | ErrorKind::TimeoutTotal
        | ErrorKind::ModelRetired
        | ErrorKind::ModelNotFound
        | ErrorKind::UpstreamUnavailable
        | ErrorKind::BadRequest => e.message(),
        ErrorKind::Authentication => "The gateway has no usable upstream API key. This is the gateway's configuration, not your key; the operator has to fix it.",
        ErrorKind::Connection | ErrorKind::StreamInterrupted | ErrorKind::Decode => {
            "The gateway could not get an answer from its upstream."
        }
        _ => "The gateway failed to handle the request; its operator can find why in its log.",
    }
}

/// A 429 for a caller over its own limits, with the headers an SDK waits on.
pub(crate) fn caller_limited(vk: &VirtualKey, e: &Error) -> Response {
    let wait = e.retry_after().unwrap_or(std::time::Duration::from_secs(1));
    let mut r = openai_error(
        StatusCode::TOO_MANY_REQUESTS,
        &format!(
            "Rate limit reached for the key '{}'. Please try again in {:.3}s.",
            vk.name,
            wait.as_secs_f64()
        ),
        "requests",
        Some("rate_limit_exceeded"),
        None,
    );
    let h = r.headers_mut();
    set(
        h,
        "retry-after",
        &wait.as_secs_f64().ceil().max(1.0).to_string(),
    );
    set(h, "retry-after-ms", &wait.as_millis().max(1).to_string());
    set(h, "x-should-retry", "true");
    if let Some(n) = vk.rpm {
        set(h, "x-ratelimit-limit-requests", &n.to_string());
    }
    if let Some(n) = vk.tpm {
        set(h, "x-ratelimit-limit-tokens", &n.to_string());
    }
    set(
        h,
        "x-ratelimit-reset-requests",
        &format!("{}ms", wait.as_millis().max(1)),
    );
    r
}
