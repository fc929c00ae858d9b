//! The log phase: one structured line per request, never a secret — when a unary answer is
//! sent, when a stream ends (or its caller leaves), or when the request fails.

use super::*;

/// One structured log line per request, never a secret: emitted when a unary answer is sent,
/// when a stream ends (or its caller leaves), or when the request fails.
///
/// Filled only when the line will be written (the `sluice::gateway` target enabled at info):
/// otherwise no text of it is copied, on a path every request takes.
#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    /// Whether the line is written; when not, the fields below stay empty.
    on: bool,
    pub(crate) caller: String,
    pub(crate) model: String,
    pub(crate) model_sent: Option<String>,
    pub(crate) status: u16,
    pub(crate) attempts: u32,
    pub(crate) request_id: Option<String>,
    pub(crate) upstream_key: Option<std::borrow::Cow<'static, str>>,
    pub(crate) upstream: Option<std::borrow::Cow<'static, str>>,
    pub(crate) ttft: Option<std::time::Duration>,
    pub(crate) prompt_tokens: Option<u64>,
    pub(crate) cached_tokens: Option<u64>,
    pub(crate) completion_tokens: Option<u64>,
    pub(crate) cost: Option<Nanos>,
    pub(crate) started: Option<Instant>,
}

impl RequestLog {
    pub(crate) fn new(caller: &str, model: Option<&str>, started: Instant) -> Self {
        if !tracing::enabled!(target: "sluice::gateway", tracing::Level::INFO) {
            return RequestLog::default();
        }
        RequestLog {
            on: true,
            caller: caller.to_string(),
            model: model.unwrap_or_default().to_string(),
            started: Some(started),
            ..RequestLog::default()
        }
    }

    pub(crate) fn answered(&mut self, meta: &Meta) {
        if !self.on {
            return;
        }
        self.status = meta.status;
        self.attempts = meta.attempts;
        self.request_id = meta.request_id.clone();
        self.upstream_key = meta.upstream_key.clone();
        self.upstream = meta.upstream.clone();
        self.ttft = meta.ttft;
        self.model_sent = meta.model.clone().filter(|m| *m != self.model);
    }

    pub(crate) fn usage(&mut self, u: &sluice::Usage) {
        if !self.on {
            return;
        }
        self.prompt_tokens = Some(u.prompt_tokens);
        self.cached_tokens = Some(u.cached_tokens());
        self.completion_tokens = Some(u.completion_tokens);
    }

    /// Log the failure and answer it in OpenAI's shape.
    pub(crate) fn failed(&mut self, e: &Error) -> Response {
        let resp = error_response(e);
        // The status the caller got (the gateway's own 502, 429 or 504 included).
        self.status = resp.status().as_u16();
        if self.on {
            self.attempts = e.attempts();
            self.request_id = e.request_id().map(str::to_string);
            self.emit(Some(e));
        }
        resp
    }

    pub(crate) fn emit(&self, err: Option<&Error>) {
        if !self.on {
            return;
        }
        tracing::info!(
            target: "sluice::gateway",
            request_id = self.request_id.as_deref(),
            virtual_key = %self.caller,
            model = %self.model,
            model_sent = self.model_sent.as_deref(),
            status = self.status,
            error_kind = err.map(|e| e.kind().as_str()),
            attempts = self.attempts,
            latency_ms = self.started.map_or(0, |s| s.elapsed().as_millis() as u64),
            ttft_ms = self.ttft.map(|d| d.as_millis() as u64),
            prompt_tokens = self.prompt_tokens,
            cached_tokens = self.cached_tokens,
            completion_tokens = self.completion_tokens,
            cost_usd = self.cost.map(dollars_exact).as_deref(),
            upstream_key = self.upstream_key.as_deref(),
            upstream = self.upstream.as_deref(),
            "request"
        );
    }
}
