//! The types of one request and its answer, as every face hands them to the engine and gets
//! them back: [`Call`] in; [`Reply`] or [`StreamReply`] out, each with its [`Meta`].

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};

use crate::admission::estimate::Estimate;
use crate::error::Error;
use crate::event_stream::EventStream;
use crate::headers::RateLimits;
use crate::model_policy::{rewrite_model, Notice};
use crate::pricing::Nanos;
use crate::spend::SpendTags;

/// One logical request, as the engine sees it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    /// Path below the base URL, with its leading slash: `/chat/completions`.
    pub path: String,
    pub body: Option<Bytes>,
    /// Metric label: `chat`, `embeddings`, `completions`, `models`, `other`.
    pub endpoint: &'static str,
    pub model: Option<String>,
    /// Tokens the upstream will charge for this request (see `admission::estimate`).
    pub estimate: Option<Estimate>,
    pub options: RequestOptions,
}

/// Per-request settings that override the client's.
#[derive(Clone, Default)]
pub struct RequestOptions {
    /// Sent as `Idempotency-Key` on every attempt. Default: a fresh random key per request.
    pub idempotency_key: Option<String>,
    /// Total deadline for this request, instead of the client's.
    pub timeout: Option<Duration>,
    /// Attempts for this request, instead of the client's.
    pub max_attempts: Option<u32>,
    /// Whose spend this is (budgets and the ledger's scope).
    pub spend: SpendTags,
    /// Sent with this request: a gateway caller's headers (content type, `OpenAI-Beta`, custom
    /// ones). Headers the engine sets from its configuration (organization, project, custom)
    /// win; `Authorization` and `Idempotency-Key` are always the engine's; hop-by-hop headers
    /// (RFC 9110 §7.6.1, and those `Connection` names), `api-key`, `Host`, `Accept-Encoding`
    /// and sluice's own `x-sluice-*` are never sent on.
    pub headers: HeaderMap,
    /// A body sent as it arrives instead of `Call::body` (a large upload): it can be sent
    /// once, so the request is not retried after it has gone.
    pub upload: Option<SharedUpload>,
}

/// Header names only, never values: a gateway hands the engine its caller's headers as they
/// came, credentials among them.
impl std::fmt::Debug for RequestOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestOptions")
            .field("idempotency_key", &self.idempotency_key)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("spend", &self.spend)
            .field("headers", &header_names(&self.headers))
            .field("upload", &self.upload)
            .finish()
    }
}

fn header_names(h: &HeaderMap) -> Vec<&str> {
    h.keys().map(http::HeaderName::as_str).collect()
}

/// A one-shot request body shared by the clones of a [`Call`]: the first attempt takes it.
#[derive(Clone, Default)]
pub struct SharedUpload(Arc<std::sync::Mutex<Option<crate::transport::Upload>>>);

impl SharedUpload {
    pub fn new(body: crate::transport::Upload) -> Self {
        SharedUpload(Arc::new(std::sync::Mutex::new(Some(body))))
    }

    pub(crate) fn take(&self) -> Option<crate::transport::Upload> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl std::fmt::Debug for SharedUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedUpload")
    }
}

/// What is known about a request once it has an answer.
#[derive(Debug, Clone)]
pub struct Meta {
    pub status: u16,
    /// The upstream `x-request-id`.
    pub request_id: Option<String>,
    pub rate_limits: RateLimits,
    pub attempts: u32,
    /// From the start of the logical request to the full answer (for streams: to the first
    /// event; the stream reports its total at the end).
    pub latency: Duration,
    /// Time to first streamed event (streams only).
    pub ttft: Option<Duration>,
    pub idempotency_key: String,
    /// The model sent (after alias, substitution or fallback).
    pub model: Option<String>,
    /// The model the caller named, when a different one was sent.
    pub requested_model: Option<String>,
    /// A retired model's replacement was sent instead (policy `substitute`).
    pub substituted: bool,
    /// The model that answered `model_not_found` before a fallback answered.
    pub fallback_from: Option<String>,
    /// The named model is deprecated or retired.
    pub deprecation: Option<Notice>,
    /// What the answer cost (unary answers with usage and a known price; a stream reports
    /// its cost when it ends).
    pub cost_nanos: Option<Nanos>,
    /// The pool position of the upstream key that answered (`key-2`), never the key; the
    /// labels of a pool's first keys are written out once, not made per answer.
    pub upstream_key: Option<Cow<'static, str>>,
    /// The name of the upstream that answered (`default` when one is configured): borrowed
    /// from the name interned for the upstream's metric label, copied only for a process
    /// that has seen more distinct upstream names than that label keeps.
    pub upstream: Option<Cow<'static, str>>,
}

impl Meta {
    /// What an attempt's response headers say; attempts and latency are filled in later.
    pub(crate) fn answered(
        status: u16,
        request_id: Option<String>,
        rate_limits: RateLimits,
        idempotency_key: &str,
        model: Option<String>,
    ) -> Self {
        Meta {
            status,
            request_id,
            rate_limits,
            attempts: 0,
            latency: Duration::ZERO,
            ttft: None,
            idempotency_key: idempotency_key.to_string(),
            model,
            requested_model: None,
            substituted: false,
            fallback_from: None,
            deprecation: None,
            cost_nanos: None,
            upstream_key: None,
            upstream: None,
        }
    }

    pub(crate) fn routed(&mut self, r: Routed) {
        self.attempts = r.attempts;
        if let Some(route) = r.route {
            if route.requested != route.model || r.fallback_from.is_some() {
                self.requested_model = Some(route.requested);
            }
            self.substituted = route.substituted;
            self.deprecation = route.notice;
        }
        self.fallback_from = r.fallback_from;
    }
}

/// How the model policy routed a request that got an answer.
pub(crate) struct Routed {
    pub(crate) attempts: u32,
    pub(crate) route: Option<crate::model_policy::Route>,
    pub(crate) fallback_from: Option<String>,
}

impl Call {
    /// The same request for another model.
    pub(crate) fn with_model(&self, model: &str) -> Result<Call, Error> {
        let mut c = self.clone();
        if let Some(b) = &self.body {
            c.body = Some(rewrite_model(b, model)?);
        }
        c.model = Some(model.to_string());
        Ok(c)
    }
}

/// A complete answer.
#[derive(Debug)]
pub struct Reply {
    pub body: Bytes,
    pub headers: HeaderMap,
    pub meta: Meta,
    /// Usage and finish reasons read from the body (once, for admission and for callers).
    pub facts: BodyFacts,
}

/// What the engine reads from a JSON answer: the rest is passed through untouched.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct BodyFacts {
    /// The counts only (`extra` maps left empty); the body has every field.
    #[serde(default, deserialize_with = "crate::wire::usage_counts")]
    pub usage: Option<crate::wire::Usage>,
    #[serde(default)]
    pub choices: Vec<ChoiceFacts>,
}

impl BodyFacts {
    /// Read from an answer's body by key, without parsing the rest of it (an answer can be
    /// long; its usage and finish reasons are a few bytes): the last `usage` object's counts
    /// and every `finish_reason` string.
    pub(crate) fn read(body: &[u8]) -> BodyFacts {
        BodyFacts {
            usage: crate::wire::last_usage(body),
            choices: crate::wire::finish_reasons(body)
                .map(|r| ChoiceFacts {
                    finish_reason: Some(crate::wire::FinishReason::text(r)),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ChoiceFacts {
    /// A documented reason (`stop`, `length`, …) is a static text, not a copy of the answer's.
    #[serde(default)]
    pub finish_reason: Option<Cow<'static, str>>,
}

/// A streaming answer whose first event has arrived.
#[derive(Debug)]
pub struct StreamReply {
    /// The events; the stream owns the request's end (metrics, settlement, log) and runs it
    /// at the last event or when dropped.
    pub events: EventStream,
    pub headers: HeaderMap,
    pub meta: Meta,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_show_header_names_never_their_values() {
        let mut o = RequestOptions::default();
        o.headers.insert(
            http::header::AUTHORIZATION,
            "Bearer sk-caller-secret".parse().unwrap(),
        );
        let shown = format!("{o:?}");
        assert!(shown.contains("authorization"), "{shown}");
        assert!(!shown.contains("sk-caller-secret"), "{shown}");
    }

    #[test]
    fn body_facts_are_read_by_key_whatever_the_layout() {
        let compact = br#"{"choices":[{"index":0,"message":{"content":"say \"usage\":{\"prompt_tokens\":99} and \"finish_reason\":\"x\""},"finish_reason":"stop"},{"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12,"completion_tokens_details":{"reasoning_tokens":2}}}"#;
        let f = BodyFacts::read(compact);
        let u = f.usage.expect("usage");
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (5, 7, 12)
        );
        assert_eq!(u.reasoning_tokens(), 2);
        let reasons: Vec<_> = f
            .choices
            .iter()
            .filter_map(|c| c.finish_reason.as_deref())
            .collect();
        assert_eq!(
            reasons,
            ["stop", "length"],
            "text inside a string is not a key"
        );
        let spaced = b"{\n  \"choices\": [ { \"finish_reason\" : null } ],\n  \"usage\" : { \"input_tokens\": 3, \"output_tokens\": 4 }\n}";
        let f = BodyFacts::read(spaced);
        assert!(f.choices.is_empty());
        assert_eq!(
            f.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((3, 4))
        );
        assert!(BodyFacts::read(b"not json \xff").usage.is_none());
        assert!(BodyFacts::read(br#"{"usage":null}"#).usage.is_none());
    }
}
