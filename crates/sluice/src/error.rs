//! One error type for the engine, with a low-cardinality [`ErrorKind`] that is also a metric
//! label. Retryability is decided here, where the failure is classified (from the status, the
//! body's `type`/`code`, and `x-should-retry`), never by matching message text later, and it
//! defaults to not retryable.

use std::fmt;
use std::time::Duration;

use http::HeaderMap;
use serde::Deserialize;

use crate::headers::RateLimits;
use crate::wire::ChatCompletion;

/// What went wrong, in as few kinds as the handling needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 429 on the requests budget.
    RateLimitedRequests,
    /// 429 on the tokens budget.
    RateLimitedTokens,
    /// 429 `insufficient_quota`: billing, not load. Never retried.
    QuotaExhausted,
    /// TCP/TLS connect did not finish in time.
    TimeoutConnect,
    /// Response headers did not arrive in time.
    TimeoutFirstByte,
    /// No bytes arrived between two chunks of a body for too long.
    TimeoutIdle,
    /// The request's total deadline (across retries) passed.
    TimeoutTotal,
    /// Connection refused, reset or closed before a response.
    Connection,
    /// 401.
    Authentication,
    /// 403.
    PermissionDenied,
    /// 404 `model_not_found`.
    ModelNotFound,
    /// The model is past its shutdown date (model registry) and the policy is to reject.
    ModelRetired,
    /// Any other 404.
    NotFound,
    /// 400 and other client errors that a retry cannot fix.
    BadRequest,
    /// 400 `context_length_exceeded`.
    ContextTooLong,
    /// The request or its answer was blocked by the content filter.
    ContentFiltered,
    /// 409: a conflicting operation upstream (retryable).
    Conflict,
    /// 5xx and 408.
    ServerError,
    /// A stream ended early: cut, closed without `[DONE]`, or an error event.
    StreamInterrupted,
    /// A body that does not decode as the expected JSON.
    Decode,
    /// A spending budget refused the request.
    BudgetExceeded,
    /// A budget applies and no price is known for the model, so it cannot be held: a setting
    /// to fix (a registry entry, an upstream's `prices`), not a budget that has run out.
    Unpriced,
    /// sluice's own capacity (admission queue) is full.
    Overloaded,
    /// The upstream is failing and its circuit breaker is open: not sent; retry after the
    /// time given.
    UpstreamUnavailable,
    /// The client was configured wrongly, or a request could not be built.
    Config,
}

impl ErrorKind {
    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::RateLimitedRequests => "rate_limited_requests",
            ErrorKind::RateLimitedTokens => "rate_limited_tokens",
            ErrorKind::QuotaExhausted => "quota_exhausted",
            ErrorKind::TimeoutConnect => "timeout_connect",
            ErrorKind::TimeoutFirstByte => "timeout_first_byte",
            ErrorKind::TimeoutIdle => "timeout_idle",
            ErrorKind::TimeoutTotal => "timeout_total",
            ErrorKind::Connection => "connection",
            ErrorKind::Authentication => "authentication",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::ModelNotFound => "model_not_found",
            ErrorKind::ModelRetired => "model_retired",
            ErrorKind::NotFound => "not_found",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::ContextTooLong => "context_too_long",
            ErrorKind::ContentFiltered => "content_filtered",
            ErrorKind::Conflict => "conflict",
            ErrorKind::ServerError => "server_error",
            ErrorKind::StreamInterrupted => "stream_interrupted",
            ErrorKind::Decode => "decode",
            ErrorKind::BudgetExceeded => "budget_exceeded",
            ErrorKind::Unpriced => "unpriced_model",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::UpstreamUnavailable => "upstream_unavailable",
            ErrorKind::Config => "config",
        }
    }

    /// Whether this kind of failure is worth another attempt, absent other information.
    fn default_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimitedRequests
                | ErrorKind::RateLimitedTokens
                | ErrorKind::TimeoutConnect
                | ErrorKind::TimeoutFirstByte
                | ErrorKind::TimeoutIdle
                | ErrorKind::Connection
                | ErrorKind::Conflict
                | ErrorKind::ServerError
                | ErrorKind::StreamInterrupted
        )
    }

    pub fn is_rate_limited(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimitedRequests | ErrorKind::RateLimitedTokens
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error body OpenAI-compatible servers send.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct ApiError {
    #[serde(default)]
    pub message: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub param: Option<String>,
    #[serde(default, deserialize_with = "code_string")]
    pub code: Option<String>,
}

impl ApiError {
    pub fn new(message: &str, kind: &str, code: Option<&str>, param: Option<&str>) -> Self {
        ApiError {
            message: message.to_string(),
            kind: Some(kind.to_string()),
            param: param.map(str::to_string),
            code: code.map(str::to_string),
        }
    }

    /// The whole error answer, `{"error": {"message","type","param","code"}}` — the one shape
    /// every face writes (a gateway's answers and mid-stream events, a batch runner's error
    /// records), so the caller's SDK raises the right exception class.
    pub fn to_body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"message": self.message, "type": self.kind,
            "param": self.param, "code": self.code}})
    }

    /// The same error as a Responses API stream writes it (`event: error`'s data).
    pub fn to_responses_event(&self) -> serde_json::Value {
        serde_json::json!({"type": "error", "code": self.code, "message": self.message,
            "param": self.param})
    }
}

/// Some servers send numeric codes; keep them as text.
fn code_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

#[derive(Deserialize)]
struct ApiErrorEnvelope {
    error: ApiError,
}

/// An engine error. Carries what the server said (never the key that was used). Boxed inside,
/// so a `Result` stays one pointer wide on the success path.
pub struct Error(Box<Inner>);

/// What a person reads when a program's `main` returns this error (Rust prints its `Debug`):
/// the kind, the message, the status, the request id to quote to the provider, the attempts
/// and the wait asked for — not the internals.
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = &self.0;
        let mut d = f.debug_struct("Error");
        d.field("kind", &format_args!("{}", i.kind.as_str()))
            .field("message", &i.message);
        if let Some(s) = i.status {
            d.field("status", &s);
        }
        if let Some(r) = &i.request_id {
            d.field("request_id", r);
        }
        if i.attempts > 0 {
            d.field("attempts", &i.attempts);
        }
        if let Some(w) = i.retry_after {
            d.field("retry_after", &w);
        }
        d.field("retryable", &i.retryable);
        if let Some(src) = &i.source {
            d.field("source", &format_args!("{src}"));
        }
        d.finish()
    }
}

#[derive(Debug)]
struct Inner {
    kind: ErrorKind,
    message: String,
    retryable: bool,
    status: Option<u16>,
    api: Option<ApiError>,
    request_id: Option<String>,
    retry_after: Option<Duration>,
    rate_limits: Option<RateLimits>,
    attempts: u32,
    partial: Option<Box<ChatCompletion>>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// The next attempt can go at once (another key is available): no backoff, whatever the
    /// server asked of the key that failed.
    retry_now: bool,
    /// The next attempt goes to another upstream (see [`Error::set_failover`]).
    failover: bool,
}

impl Error {
    /// A new error of `kind`, retryable as that kind is by default.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error(Box::new(Inner {
            kind,
            message: message.into(),
            retryable: kind.default_retryable(),
            status: None,
            api: None,
            request_id: None,
            retry_after: None,
            rate_limits: None,
            attempts: 0,
            partial: None,
            source: None,
            retry_now: false,
            failover: false,
        }))
    }

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.0.source = Some(source.into());
        self
    }

    /// Mark the error as worth an immediate retry elsewhere (another key), keeping what the
    /// server said (its wait still applies to the key that failed).
    /// Retry at once (on another key), whatever the backoff would say.
    pub(crate) fn set_retry_now(&mut self) {
        self.0.retryable = true;
        self.0.retry_now = true;
    }

    pub(crate) fn retry_now(&self) -> bool {
        self.0.retry_now
    }

    /// Retry at once on another upstream. Such an attempt does not draw on the retry budget:
    /// the budget keeps retries from piling onto a struggling upstream, and this one goes
    /// elsewhere; the attempt cap and the deadline still bound it.
    pub(crate) fn set_failover(&mut self) {
        self.set_retry_now();
        self.0.failover = true;
    }

    pub(crate) fn is_failover(&self) -> bool {
        self.0.failover
    }

    pub(crate) fn with_retryable(mut self, retryable: bool) -> Self {
        self.0.retryable = retryable;
        self
    }

    pub fn with_retry_after(mut self, wait: Option<Duration>) -> Self {
        self.0.retry_after = wait;
        self
    }

    pub(crate) fn with_request_id(mut self, id: Option<String>) -> Self {
        if self.0.request_id.is_none() {
            self.0.request_id = id;
        }
        self
    }

    pub(crate) fn set_attempts(&mut self, n: u32) {
        self.0.attempts = n;
    }

    pub(crate) fn with_partial(mut self, partial: ChatCompletion) -> Self {
        self.0.partial = Some(Box::new(partial));
        self
    }

    /// Classify an HTTP error response from its status, headers and body.
    pub fn from_response(status: u16, headers: &HeaderMap, body: &[u8]) -> Self {
        let limits = RateLimits::from_headers(headers);
        let api = serde_json::from_slice::<ApiErrorEnvelope>(body)
            .ok()
            .map(|e| e.error);
        let code = api.as_ref().and_then(|a| a.code.as_deref());
        let ty = api.as_ref().and_then(|a| a.kind.as_deref());
        let is = |s: &str| code == Some(s) || ty == Some(s);
        let kind = match status {
            429 if is("insufficient_quota") => ErrorKind::QuotaExhausted,
            429 if ty == Some("tokens") => ErrorKind::RateLimitedTokens,
            429 if ty == Some("requests") => ErrorKind::RateLimitedRequests,
            // No type: the budget that is empty tells which limit was hit.
            429 if limits.tokens.remaining == Some(0) && limits.requests.remaining != Some(0) => {
                ErrorKind::RateLimitedTokens
            }
            429 => ErrorKind::RateLimitedRequests,
            400 if is("context_length_exceeded") => ErrorKind::ContextTooLong,
            400 if is("content_filter") || is("content_policy_violation") => {
                ErrorKind::ContentFiltered
            }
            401 => ErrorKind::Authentication,
            403 => ErrorKind::PermissionDenied,
            404 if is("model_not_found") => ErrorKind::ModelNotFound,
            404 => ErrorKind::NotFound,
            408 => ErrorKind::ServerError,
            409 => ErrorKind::Conflict,
            500..=599 => ErrorKind::ServerError,
            _ => ErrorKind::BadRequest,
        };
        let message = match &api {
            Some(a) if !a.message.is_empty() => a.message.clone(),
            _ => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let snippet: String = text.chars().take(200).collect();
                if snippet.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {snippet}")
                }
            }
        };
        // The server's own wait; on a 429 without one, the reset of the budget that ran out.
        let retry_after = limits.retry_after.or(match kind {
            ErrorKind::RateLimitedTokens => limits.tokens.reset,
            ErrorKind::RateLimitedRequests => limits.requests.reset,
            _ => None,
        });
        let retryable = match limits.should_retry {
            Some(s) if kind != ErrorKind::QuotaExhausted => s,
            _ => kind.default_retryable(),
        };
        Error(Box::new(Inner {
            kind,
            message,
            retryable,
            status: Some(status),
            api,
            request_id: crate::headers::request_id(headers),
            retry_after,
            rate_limits: (!limits.is_empty()).then_some(limits),
            attempts: 0,
            partial: None,
            source: None,
            retry_now: false,
            failover: false,
        }))
    }

    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// Whether another attempt may succeed. Decided when the error was classified.
    pub fn is_retryable(&self) -> bool {
        self.0.retryable
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        self.0.status
    }

    /// The server's error body, when it sent one.
    pub fn api_error(&self) -> Option<&ApiError> {
        self.0.api.as_ref()
    }

    /// The upstream `x-request-id`, for support tickets.
    pub fn request_id(&self) -> Option<&str> {
        self.0.request_id.as_deref()
    }

    /// How long the server asked us to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        self.0.retry_after
    }

    /// The rate-limit headers of the failed response.
    pub fn rate_limits(&self) -> Option<&RateLimits> {
        self.0.rate_limits.as_ref()
    }

    /// Attempts made for the logical request that failed (0 if it never got to send).
    pub fn attempts(&self) -> u32 {
        self.0.attempts
    }

    /// For [`ErrorKind::StreamInterrupted`]: everything received before the cut.
    pub fn partial(&self) -> Option<&ChatCompletion> {
        self.0.partial.as_deref()
    }

    pub fn message(&self) -> &str {
        &self.0.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.kind, self.0.message)?;
        if let Some(s) = self.0.status {
            write!(f, " (HTTP {s}")?;
            if let Some(id) = &self.0.request_id {
                write!(f, ", request {id}")?;
            }
            write!(f, ")")?;
        }
        if let Some(w) = self.0.retry_after {
            write!(f, "; retry after {:.3}s", w.as_secs_f64())?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {

    #[test]
    fn one_error_shape_for_answers_and_stream_events() {
        let a = ApiError::new(
            "no",
            "invalid_request_error",
            Some("model_not_allowed"),
            Some("model"),
        );
        assert_eq!(
            a.to_body(),
            serde_json::json!({"error": {"message": "no", "type": "invalid_request_error",
                "param": "model", "code": "model_not_allowed"}})
        );
        assert_eq!(a.to_responses_event()["type"], "error");
        assert_eq!(a.to_responses_event()["code"], "model_not_allowed");
        // What the SDKs parse back is what was written.
        let back: ApiError =
            serde_json::from_value(a.to_body()["error"].clone()).unwrap_or_default();
        assert_eq!(back, a);
    }

    use super::*;
    use proptest::prelude::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    fn body(ty: &str, code: &str) -> Vec<u8> {
        format!(r#"{{"error":{{"message":"m","type":"{ty}","param":null,"code":"{code}"}}}}"#)
            .into_bytes()
    }

    #[test]
    fn rate_limits_and_quota() {
        let e = Error::from_response(
            429,
            &h(&[("retry-after-ms", "1500")]),
            &body("tokens", "rate_limit_exceeded"),
        );
        assert_eq!(e.kind(), ErrorKind::RateLimitedTokens);
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_millis(1500)));

        let e = Error::from_response(
            429,
            &h(&[("x-ratelimit-reset-requests", "2s")]),
            &body("requests", "rate_limit_exceeded"),
        );
        assert_eq!(e.kind(), ErrorKind::RateLimitedRequests);
        assert_eq!(
            e.retry_after(),
            Some(Duration::from_secs(2)),
            "reset header as the wait"
        );

        let e = Error::from_response(
            429,
            &h(&[("x-should-retry", "true")]),
            &body("insufficient_quota", "insufficient_quota"),
        );
        assert_eq!(e.kind(), ErrorKind::QuotaExhausted);
        assert!(
            !e.is_retryable(),
            "quota is never retried, whatever the header says"
        );
    }

    #[test]
    fn status_mapping() {
        let cases = [
            (
                400,
                body("invalid_request_error", "context_length_exceeded"),
                ErrorKind::ContextTooLong,
                false,
            ),
            (
                400,
                body("invalid_request_error", "invalid_value"),
                ErrorKind::BadRequest,
                false,
            ),
            (
                401,
                body("invalid_request_error", "invalid_api_key"),
                ErrorKind::Authentication,
                false,
            ),
            (403, b"{}".to_vec(), ErrorKind::PermissionDenied, false),
            (
                404,
                body("invalid_request_error", "model_not_found"),
                ErrorKind::ModelNotFound,
                false,
            ),
            (404, b"".to_vec(), ErrorKind::NotFound, false),
            (408, b"".to_vec(), ErrorKind::ServerError, true),
            (409, b"".to_vec(), ErrorKind::Conflict, true),
            (500, body("server_error", ""), ErrorKind::ServerError, true),
            (
                502,
                b"<html>502 Bad Gateway</html>".to_vec(),
                ErrorKind::ServerError,
                true,
            ),
            (
                503,
                body("server_error", "overloaded"),
                ErrorKind::ServerError,
                true,
            ),
        ];
        for (status, b, kind, retry) in cases {
            let e = Error::from_response(status, &HeaderMap::new(), &b);
            assert_eq!(e.kind(), kind, "{status}");
            assert_eq!(e.is_retryable(), retry, "{status}");
        }
        let e = Error::from_response(502, &HeaderMap::new(), b"<html>bad gateway</html>");
        assert!(
            e.message().contains("bad gateway"),
            "non-JSON body kept as text"
        );
    }

    #[test]
    fn should_retry_header_overrides() {
        let e = Error::from_response(500, &h(&[("x-should-retry", "false")]), b"");
        assert!(!e.is_retryable());
        let e = Error::from_response(400, &h(&[("x-should-retry", "true")]), b"");
        assert!(e.is_retryable());
    }

    #[test]
    fn display_has_no_surprises() {
        let e = Error::from_response(
            429,
            &h(&[("x-request-id", "req_1"), ("retry-after", "2")]),
            &body("requests", "rate_limit_exceeded"),
        );
        assert_eq!(
            e.to_string(),
            "rate_limited_requests: m (HTTP 429, request req_1); retry after 2.000s"
        );
    }

    #[test]
    fn debug_reads_as_a_report_not_internals() {
        let e = Error::from_response(
            429,
            &HeaderMap::new(),
            br#"{"error":{"message":"Rate limit reached","type":"tokens","code":"rate_limit_exceeded"}}"#,
        );
        let d = format!("{e:?}");
        assert!(d.starts_with("Error { kind: rate_limited_"), "{d}");
        assert!(
            d.contains("message: \"Rate limit reached") && d.contains("status: 429"),
            "{d}"
        );
        assert!(!d.contains("Inner") && !d.contains("retry_now"), "{d}");
    }

    proptest! {
        #[test]
        fn mapper_never_panics(status in 0u16..1000, b in proptest::collection::vec(any::<u8>(), 0..200),
                               ra in "\\PC{0,20}") {
            let mut m = HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_str(&ra) {
                m.insert("retry-after", v.clone());
                m.insert("x-ratelimit-reset-tokens", v);
            }
            let e = Error::from_response(status, &m, &b);
            let _ = e.to_string();
        }

        #[test]
        fn mapper_never_panics_on_json_shapes(msg in "\\PC{0,30}", ty in "\\PC{0,12}", code in "\\PC{0,12}") {
            let b = serde_json::json!({"error": {"message": msg, "type": ty, "code": code}}).to_string();
            for status in [400u16, 401, 404, 429, 500] {
                let _ = Error::from_response(status, &HeaderMap::new(), b.as_bytes());
            }
        }
    }
}
