//! The route table: the one description of OpenAI's API that every face uses.
//!
//! A gateway that forwards what it does not understand is a gateway whose limits can be walked
//! around (`/v1/chat/completions/`, `/v1/./chat/completions`, a `TRACE` echoed with the upstream
//! key) and whose other routes are billed without a budget. So every operation of OpenAI's
//! OpenAPI description has an entry here — its path template, method, request body kind,
//! response framing, whether and how it streams, where it names its model and how it is
//! billed — and what the table does not know is refused, never forwarded blind. Paths are
//! canonicalised before lookup ([`canonical`]): a path that is not already canonical is
//! refused rather than repaired, because the upstream might read it differently than we did.
//!
//! Operations the table lacks (an endpoint newer than the spec copy, a compatible server's
//! extension such as `/v1/tokenize`) are added in configuration ([`RouteTable::with`]).

use std::sync::{Arc, OnceLock};

use http::Method;

/// What a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    Json,
    Multipart,
    /// Either, by the request's content type (image edits, video and skill uploads).
    JsonOrMultipart,
    /// Anything (SDP offers for realtime calls).
    Any,
}

/// How a unary answer is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Json,
    /// Audio, file and video content: passed through as bytes.
    Binary,
}

/// Whether a route may stream, and how its stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// `stream: true` is refused before anything is sent.
    Never,
    /// Chat and legacy completions: `data:` chunks ending with `data: [DONE]`.
    Chat,
    /// The Responses API: `event:` + `data:` pairs ending at `response.completed`,
    /// `response.failed`, `response.incomplete` or `error`; no `[DONE]`.
    Responses,
    /// Named events (assistants runs, image and audio streams), passed through as they come.
    Events,
}

/// Where a request names its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelAt {
    None,
    /// The body's `model` field (JSON, or a multipart form field).
    Body,
    /// The last path segment (`/models/{model}`).
    Path,
}

/// How a route costs money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Billing {
    /// Priced from the answer's `usage` (chat, completions, embeddings, responses).
    Tokens,
    /// Costs nothing (moderations, the model list, input token counts).
    Free,
    /// Other units or unknown to sluice (images, audio, files, fine-tuning, batches, ...): a
    /// caller under a budget or a model list may use it only where its key allows the family.
    Other,
}

/// One operation: a method on a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Below `/v1`, with `{param}` segments: `/files/{file_id}/content`.
    pub path: String,
    pub method: Method,
    pub body: Body,
    pub framing: Framing,
    pub stream: Stream,
    pub model: ModelAt,
    pub billing: Billing,
    /// The group a virtual key's `routes` allow-list names: `files`, `batches`,
    /// `fine_tuning`, `images`, ... (`chat_store` and `responses_store` for stored answers).
    pub family: String,
}

impl Op {
    /// The engine's metric label for this operation (a small fixed set).
    pub fn endpoint(&self) -> &'static str {
        match (self.path.as_str(), self.billing) {
            ("/chat/completions", Billing::Tokens) => "chat",
            ("/completions", _) => "completions",
            ("/embeddings", _) => "embeddings",
            ("/responses", Billing::Tokens) => "responses",
            ("/moderations", _) => "moderations",
            ("/models" | "/models/{model}", Billing::Free) => "models",
            _ => "other",
        }
    }
}

/// Why a request has no operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// The path is not canonical: `..`, `.`, an empty segment, a trailing slash, an encoded `/`,
    /// `.`, `\` or `%`, a control character.
    NotCanonical(&'static str),
    /// No template matches the path.
    NotFound,
    /// The path is known, the method is not; the methods it has.
    MethodNotAllowed(Vec<Method>),
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteError::NotCanonical(why) => write!(f, "the path is not canonical: {why}"),
            RouteError::NotFound => f.write_str("no such route"),
            RouteError::MethodNotAllowed(m) => {
                let m: Vec<&str> = m.iter().map(Method::as_str).collect();
                write!(f, "method not allowed here (allowed: {})", m.join(", "))
            }
        }
    }
}

/// Check that `path` (below `/v1`, without its query) is canonical, and return it. Nothing is
/// repaired: a path the upstream might resolve differently is refused.
pub fn canonical(path: &str) -> Result<&str, RouteError> {
    use RouteError::NotCanonical as No;
    if !path.starts_with('/') {
        return Err(No("it does not start with '/'"));
    }
    if path.len() > 1 && path.ends_with('/') {
        return Err(No("a trailing '/'"));
    }
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(No("a '%' that is not an escape"));
                };
                let c = (h * 16 + l) as u8;
                if matches!(c, b'/' | b'.' | b'\\' | b'%') || c < 0x20 || c == 0x7f {
                    return Err(No("an encoded '/', '.', '\\', '%' or control character"));
                }
                i += 3;
                continue;
            }
            b'\\' => return Err(No("a '\\'")),
            0..=0x20 | 0x7f.. => return Err(No("a control, space or non-ASCII character")),
            _ => {}
        }
        i += 1;
    }
    for seg in segments(path) {
        match seg {
            "" if path != "/" => return Err(No("an empty segment ('//')")),
            "." | ".." => return Err(No("a '.' or '..' segment")),
            _ => {}
        }
    }
    Ok(path)
}

/// The table: the built-in operations plus any from configuration.
#[derive(Debug, Clone)]
pub struct RouteTable {
    ops: Arc<Vec<Op>>,
    /// First path segment → the templates under it, each with its segments split once
    /// (`None` for a `{param}`), its literal count and its operations. A lookup on the hot path
    /// compares a handful of segments, nothing more.
    by_first: Arc<rustc_hash::FxHashMap<String, Vec<Template>>>,
}

#[derive(Debug)]
struct Template {
    segments: Vec<Option<String>>,
    literals: usize,
    /// Indices into `ops` of the operations on this template.
    ops: Vec<usize>,
}

/// A path's segments after its leading `/`, as `str::split('/')` gives them. A byte loop: the
/// segments are a few bytes each, shorter than what `split`'s vectorised search pays for its
/// set-up, and every request's path is split twice.
fn segments(path: &str) -> Segments<'_> {
    Segments {
        rest: Some(path.strip_prefix('/').unwrap_or(path)),
    }
}

struct Segments<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let r = self.rest?;
        match r.bytes().position(|b| b == b'/') {
            Some(i) => {
                self.rest = r.get(i + 1..);
                r.get(..i)
            }
            None => {
                self.rest = None;
                Some(r)
            }
        }
    }
}

impl RouteTable {
    fn from_ops(ops: Vec<Op>) -> Self {
        let mut by_first: rustc_hash::FxHashMap<String, Vec<Template>> =
            rustc_hash::FxHashMap::default();
        for (i, op) in ops.iter().enumerate() {
            let segs: Vec<Option<String>> = segments(&op.path)
                .map(|s| (!(s.starts_with('{') && s.ends_with('}'))).then(|| s.to_string()))
                .collect();
            let first = segs.first().cloned().flatten().unwrap_or_default();
            let list = by_first.entry(first).or_default();
            match list.iter_mut().find(|t| t.segments == segs) {
                Some(t) => t.ops.push(i),
                None => list.push(Template {
                    literals: segs.iter().filter(|s| s.is_some()).count(),
                    segments: segs,
                    ops: vec![i],
                }),
            }
        }
        RouteTable {
            ops: Arc::new(ops),
            by_first: Arc::new(by_first),
        }
    }

    /// Every operation of OpenAI's API (the spec copy in `shared/reference`).
    pub fn builtin() -> RouteTable {
        static TABLE: OnceLock<RouteTable> = OnceLock::new();
        TABLE
            .get_or_init(|| {
                RouteTable::from_ops(
                    BUILTIN
                        .iter()
                        .map(|s| Op {
                            path: s.0.to_string(),
                            method: Method::from_bytes(s.1.as_bytes()).unwrap_or(Method::GET),
                            body: s.2,
                            framing: s.3,
                            stream: s.4,
                            model: s.5,
                            billing: s.6,
                            family: s.7.to_string(),
                        })
                        .collect(),
                )
            })
            .clone()
    }

    /// This table with `extra` operations; an extra one with the same path and method
    /// replaces the built-in one.
    pub fn with(&self, extra: Vec<Op>) -> RouteTable {
        if extra.is_empty() {
            return self.clone();
        }
        let mut ops: Vec<Op> = self
            .ops
            .iter()
            .filter(|o| {
                !extra
                    .iter()
                    .any(|e| e.method == o.method && e.path == o.path)
            })
            .cloned()
            .collect();
        ops.extend(extra);
        RouteTable::from_ops(ops)
    }

    /// Every operation.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The operation for `method` on `path` (below `/v1`, without the query). `TRACE` and
    /// `CONNECT` have none, whatever the configuration says.
    pub fn find(&self, method: &Method, path: &str) -> Result<&Op, RouteError> {
        let path = canonical(path)?;
        let mut parts: [&str; 12] = [""; 12];
        let mut n = 0;
        for seg in segments(path) {
            if n == parts.len() {
                return Err(RouteError::NotFound);
            }
            parts[n] = seg;
            n += 1;
        }
        let parts = &parts[..n];
        let candidates = self
            .by_first
            .get(parts[0])
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let fitting = || {
            candidates.iter().filter(|t| {
                t.segments.len() == n
                    && t.segments
                        .iter()
                        .zip(parts)
                        .all(|(s, p)| s.as_deref().map_or(!p.is_empty(), |lit| lit == *p))
            })
        };
        let refused = *method == Method::TRACE || *method == Method::CONNECT;
        // A literal segment beats a parameter (`/responses/compact` over `/responses/{id}`).
        let mut best: Option<(&Op, usize)> = None;
        if !refused {
            for t in fitting() {
                for &i in &t.ops {
                    let op = &self.ops[i];
                    if op.method == *method && best.is_none_or(|(_, l)| t.literals > l) {
                        best = Some((op, t.literals));
                    }
                }
            }
        }
        if let Some((op, _)) = best {
            return Ok(op);
        }
        // Only for a refusal: the methods the path does take.
        let mut allowed: Vec<Method> = fitting()
            .flat_map(|t| t.ops.iter().map(|&i| &self.ops[i].method))
            .filter(|m| *m != method)
            .cloned()
            .collect();
        if refused {
            return Err(RouteError::MethodNotAllowed(allowed));
        }
        if allowed.is_empty() {
            return Err(RouteError::NotFound);
        }
        allowed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        allowed.dedup();
        Err(RouteError::MethodNotAllowed(allowed))
    }
}

type Spec = (
    &'static str,
    &'static str,
    Body,
    Framing,
    Stream,
    ModelAt,
    Billing,
    &'static str,
);

#[allow(clippy::too_many_arguments)]
const fn op(
    path: &'static str,
    method: &'static str,
    body: Body,
    framing: Framing,
    stream: Stream,
    model: ModelAt,
    billing: Billing,
    family: &'static str,
) -> Spec {
    (path, method, body, framing, stream, model, billing, family)
}

/// Generated from `openapi.yaml` (281 operations once the `?beta=true` duplicates of the
/// Responses routes are folded), then annotated: streaming, model and billing by hand.
#[rustfmt::skip]
const BUILTIN: &[Spec] = &[
    op("/assistants", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "assistants"),
    op("/assistants", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::Body, Billing::Other, "assistants"),
    op("/assistants/{assistant_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "assistants"),
    op("/assistants/{assistant_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "assistants"),
    op("/assistants/{assistant_id}", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::Body, Billing::Other, "assistants"),
    op("/audio/speech", "POST", Body::Json, Framing::Binary, Stream::Events, ModelAt::Body, Billing::Other, "audio"),
    op("/audio/transcriptions", "POST", Body::Multipart, Framing::Json, Stream::Events, ModelAt::Body, Billing::Other, "audio"),
    op("/audio/translations", "POST", Body::Multipart, Framing::Json, Stream::Never, ModelAt::Body, Billing::Other, "audio"),
    op("/audio/voice_consents", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "audio"),
    op("/audio/voice_consents", "POST", Body::Multipart, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "audio"),
    op("/audio/voice_consents/{consent_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "audio"),
    op("/audio/voice_consents/{consent_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "audio"),
    op("/audio/voice_consents/{consent_id}", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "audio"),
    op("/audio/voices", "POST", Body::Multipart, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "audio"),
    op("/batches", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "batches"),
    op("/batches", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "batches"),
    op("/batches/{batch_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "batches"),
    op("/batches/{batch_id}/cancel", "POST", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "batches"),
    op("/chat/completions", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "chat_store"),
    op("/chat/completions", "POST", Body::Json, Framing::Json, Stream::Chat, ModelAt::Body, Billing::Tokens, "chat"),
    op("/chat/completions/{completion_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "chat_store"),
    op("/chat/completions/{completion_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "chat_store"),
    op("/chat/completions/{completion_id}", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "chat_store"),
    op("/chat/completions/{completion_id}/messages", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "chat_store"),
    op("/chatkit/sessions", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "chatkit"),
    op("/chatkit/sessions/{session_id}/cancel", "POST", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "chatkit"),
    op("/chatkit/threads", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "chatkit"),
    op("/chatkit/threads/{thread_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "chatkit"),
    op("/chatkit/threads/{thread_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "chatkit"),
    op("/chatkit/threads/{thread_id}/items", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "chatkit"),
    op("/completions", "POST", Body::Json, Framing::Json, Stream::Chat, ModelAt::Body, Billing::Tokens, "completions"),
    op("/containers", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "containers"),
    op("/containers", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "containers"),
    op("/containers/{container_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "containers"),
    op("/containers/{container_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "containers"),
    op("/containers/{container_id}/files", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "containers"),
    op("/containers/{container_id}/files", "POST", Body::JsonOrMultipart, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "containers"),
    op("/containers/{container_id}/files/{file_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "containers"),
    op("/containers/{container_id}/files/{file_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "containers"),
    op("/containers/{container_id}/files/{file_id}/content", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "containers"),
    op("/content_provenance_checks", "POST", Body::Multipart, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "content_provenance_checks"),
    op("/conversations", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "conversations"),
    op("/conversations/{conversation_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "conversations"),
    op("/conversations/{conversation_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "conversations"),
    op("/conversations/{conversation_id}", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "conversations"),
    op("/conversations/{conversation_id}/items", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "conversations"),
    op("/conversations/{conversation_id}/items", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "conversations"),
    op("/conversations/{conversation_id}/items/{item_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "conversations"),
    op("/conversations/{conversation_id}/items/{item_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "conversations"),
    op("/embeddings", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::Body, Billing::Tokens, "embeddings"),
    op("/evals", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "evals"),
    op("/evals", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "evals"),
    op("/evals/{eval_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "evals"),
    op("/evals/{eval_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "evals"),
    op("/evals/{eval_id}", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "evals"),
    op("/evals/{eval_id}/runs", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "evals"),
    op("/evals/{eval_id}/runs", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "evals"),
    op("/evals/{eval_id}/runs/{run_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "evals"),
    op("/evals/{eval_id}/runs/{run_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "evals"),
    op("/evals/{eval_id}/runs/{run_id}", "POST", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "evals"),
    op("/evals/{eval_id}/runs/{run_id}/output_items", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "evals"),
    op("/evals/{eval_id}/runs/{run_id}/output_items/{output_item_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "evals"),
    op("/files", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "files"),
    op("/files", "POST", Body::Multipart, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "files"),
    op("/files/{file_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "files"),
    op("/files/{file_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "files"),
    op("/files/{file_id}/content", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "files"),
    op("/fine_tuning/alpha/graders/run", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "fine_tuning"),
    op("/fine_tuning/alpha/graders/validate", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "fine_tuning"),
    op("/fine_tuning/checkpoints/{fine_tuned_model_checkpoint}/permissions", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "fine_tuning"),
    op("/fine_tuning/checkpoints/{fine_tuned_model_checkpoint}/permissions", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "fine_tuning"),
    op("/fine_tuning/checkpoints/{fine_tuned_model_checkpoint}/permissions/{permission_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "fine_tuning"),
    op("/fine_tuning/jobs", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "fine_tuning"),
    op("/fine_tuning/jobs", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::Body, Billing::Other, "fine_tuning"),
    op("/fine_tuning/jobs/{fine_tuning_job_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "fine_tuning"),
    op("/fine_tuning/jobs/{fine_tuning_job_id}/cancel", "POST", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "fine_tuning"),
    op("/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "fine_tuning"),
    op("/fine_tuning/jobs/{fine_tuning_job_id}/events", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "fine_tuning"),
    op("/fine_tuning/jobs/{fine_tuning_job_id}/pause", "POST", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "fine_tuning"),
    op("/fine_tuning/jobs/{fine_tuning_job_id}/resume", "POST", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "fine_tuning"),
    op("/images/edits", "POST", Body::JsonOrMultipart, Framing::Json, Stream::Events, ModelAt::Body, Billing::Other, "images"),
    op("/images/generations", "POST", Body::Json, Framing::Json, Stream::Events, ModelAt::Body, Billing::Other, "images"),
    op("/images/variations", "POST", Body::Multipart, Framing::Json, Stream::Never, ModelAt::Body, Billing::Other, "images"),
    op("/models", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Free, "models"),
    op("/models/{model}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::Path, Billing::Other, "fine_tuning"),
    op("/models/{model}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::Path, Billing::Free, "models"),
    op("/moderations", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::Body, Billing::Free, "moderations"),
    op("/organization/admin_api_keys", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/admin_api_keys", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/admin_api_keys/{key_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/admin_api_keys/{key_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/audit_logs", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/certificates", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/certificates", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/certificates/activate", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/certificates/deactivate", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/certificates/{certificate_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/certificates/{certificate_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/certificates/{certificate_id}", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/costs", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/data_retention", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/data_retention", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/groups", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/groups", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/groups/{group_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/groups/{group_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/groups/{group_id}", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/groups/{group_id}/roles", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/groups/{group_id}/roles", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/groups/{group_id}/roles/{role_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/groups/{group_id}/roles/{role_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/groups/{group_id}/users", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/groups/{group_id}/users", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/groups/{group_id}/users/{user_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/groups/{group_id}/users/{user_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/invites", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/invites", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/invites/{invite_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/invites/{invite_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/api_keys", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/api_keys/{api_key_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/api_keys/{api_key_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/archive", "POST", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/certificates", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/certificates/activate", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/certificates/deactivate", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/data_retention", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/data_retention", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/groups", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/groups", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/groups/{group_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/groups/{group_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/hosted_tool_permissions", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/hosted_tool_permissions", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/model_permissions", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/model_permissions", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/model_permissions", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/rate_limits", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/rate_limits/{rate_limit_id}", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/service_accounts", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/service_accounts", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/service_accounts/{service_account_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/service_accounts/{service_account_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/service_accounts/{service_account_id}", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/service_accounts/{service_account_id}/api_keys", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/spend_alerts", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/spend_alerts", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/spend_alerts/{alert_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/spend_alerts/{alert_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/spend_alerts/{alert_id}", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/spend_limit", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/spend_limit", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/spend_limit", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/users", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/users", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/users/{user_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/users/{user_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/projects/{project_id}/users/{user_id}", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/roles", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/roles", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/roles/{role_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/roles/{role_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/roles/{role_id}", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/spend_alerts", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/spend_alerts", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/spend_alerts/{alert_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/spend_alerts/{alert_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/spend_alerts/{alert_id}", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/spend_limit", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/spend_limit", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/spend_limit", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/usage/audio_speeches", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/usage/audio_transcriptions", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/usage/code_interpreter_sessions", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/usage/completions", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/usage/embeddings", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/usage/file_search_calls", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/usage/images", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/usage/moderations", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/usage/vector_stores", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/usage/web_search_calls", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/users", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/users/{user_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/users/{user_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/users/{user_id}", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/users/{user_id}/roles", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/users/{user_id}/roles", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/users/{user_id}/roles/{role_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/organization/users/{user_id}/roles/{role_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "organization"),
    op("/projects/{project_id}/groups/{group_id}/roles", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "projects"),
    op("/projects/{project_id}/groups/{group_id}/roles", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "projects"),
    op("/projects/{project_id}/groups/{group_id}/roles/{role_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "projects"),
    op("/projects/{project_id}/groups/{group_id}/roles/{role_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "projects"),
    op("/projects/{project_id}/roles", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "projects"),
    op("/projects/{project_id}/roles", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "projects"),
    op("/projects/{project_id}/roles/{role_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "projects"),
    op("/projects/{project_id}/roles/{role_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "projects"),
    op("/projects/{project_id}/roles/{role_id}", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "projects"),
    op("/projects/{project_id}/users/{user_id}/roles", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "projects"),
    op("/projects/{project_id}/users/{user_id}/roles", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "projects"),
    op("/projects/{project_id}/users/{user_id}/roles/{role_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "projects"),
    op("/projects/{project_id}/users/{user_id}/roles/{role_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "projects"),
    op("/realtime/calls", "POST", Body::Any, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "realtime"),
    op("/realtime/calls/{call_id}/accept", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "realtime"),
    op("/realtime/calls/{call_id}/hangup", "POST", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "realtime"),
    op("/realtime/calls/{call_id}/refer", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "realtime"),
    op("/realtime/calls/{call_id}/reject", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "realtime"),
    op("/realtime/client_secrets", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::Body, Billing::Other, "realtime"),
    op("/realtime/sessions", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::Body, Billing::Other, "realtime"),
    op("/realtime/transcription_sessions", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::Body, Billing::Other, "realtime"),
    op("/realtime/translations/client_secrets", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "realtime"),
    op("/responses", "POST", Body::Json, Framing::Json, Stream::Responses, ModelAt::Body, Billing::Tokens, "responses"),
    op("/responses/compact", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::Body, Billing::Tokens, "responses"),
    op("/responses/input_tokens", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::Body, Billing::Free, "responses"),
    op("/responses/{response_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "responses_store"),
    op("/responses/{response_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "responses_store"),
    op("/responses/{response_id}/cancel", "POST", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "responses_store"),
    op("/responses/{response_id}/input_items", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "responses_store"),
    op("/skills", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "skills"),
    op("/skills", "POST", Body::JsonOrMultipart, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "skills"),
    op("/skills/{skill_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "skills"),
    op("/skills/{skill_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "skills"),
    op("/skills/{skill_id}", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "skills"),
    op("/skills/{skill_id}/content", "GET", Body::None, Framing::Binary, Stream::Never, ModelAt::None, Billing::Other, "skills"),
    op("/skills/{skill_id}/versions", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "skills"),
    op("/skills/{skill_id}/versions", "POST", Body::JsonOrMultipart, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "skills"),
    op("/skills/{skill_id}/versions/{version}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "skills"),
    op("/skills/{skill_id}/versions/{version}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "skills"),
    op("/skills/{skill_id}/versions/{version}/content", "GET", Body::None, Framing::Binary, Stream::Never, ModelAt::None, Billing::Other, "skills"),
    op("/threads", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "threads"),
    op("/threads/runs", "POST", Body::Json, Framing::Json, Stream::Events, ModelAt::Body, Billing::Other, "threads"),
    op("/threads/{thread_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "threads"),
    op("/threads/{thread_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "threads"),
    op("/threads/{thread_id}", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "threads"),
    op("/threads/{thread_id}/messages", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "threads"),
    op("/threads/{thread_id}/messages", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "threads"),
    op("/threads/{thread_id}/messages/{message_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "threads"),
    op("/threads/{thread_id}/messages/{message_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "threads"),
    op("/threads/{thread_id}/messages/{message_id}", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "threads"),
    op("/threads/{thread_id}/runs", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "threads"),
    op("/threads/{thread_id}/runs", "POST", Body::Json, Framing::Json, Stream::Events, ModelAt::Body, Billing::Other, "threads"),
    op("/threads/{thread_id}/runs/{run_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "threads"),
    op("/threads/{thread_id}/runs/{run_id}", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "threads"),
    op("/threads/{thread_id}/runs/{run_id}/cancel", "POST", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "threads"),
    op("/threads/{thread_id}/runs/{run_id}/steps", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "threads"),
    op("/threads/{thread_id}/runs/{run_id}/steps/{step_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "threads"),
    op("/threads/{thread_id}/runs/{run_id}/submit_tool_outputs", "POST", Body::Json, Framing::Json, Stream::Events, ModelAt::None, Billing::Other, "threads"),
    op("/uploads", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "uploads"),
    op("/uploads/{upload_id}/cancel", "POST", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "uploads"),
    op("/uploads/{upload_id}/complete", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "uploads"),
    op("/uploads/{upload_id}/parts", "POST", Body::Multipart, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "uploads"),
    op("/vector_stores", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "vector_stores"),
    op("/vector_stores", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "vector_stores"),
    op("/vector_stores/{vector_store_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "vector_stores"),
    op("/vector_stores/{vector_store_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "vector_stores"),
    op("/vector_stores/{vector_store_id}", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "vector_stores"),
    op("/vector_stores/{vector_store_id}/file_batches", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "vector_stores"),
    op("/vector_stores/{vector_store_id}/file_batches/{batch_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "vector_stores"),
    op("/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel", "POST", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "vector_stores"),
    op("/vector_stores/{vector_store_id}/file_batches/{batch_id}/files", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "vector_stores"),
    op("/vector_stores/{vector_store_id}/files", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "vector_stores"),
    op("/vector_stores/{vector_store_id}/files", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "vector_stores"),
    op("/vector_stores/{vector_store_id}/files/{file_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "vector_stores"),
    op("/vector_stores/{vector_store_id}/files/{file_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "vector_stores"),
    op("/vector_stores/{vector_store_id}/files/{file_id}", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "vector_stores"),
    op("/vector_stores/{vector_store_id}/files/{file_id}/content", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "vector_stores"),
    op("/vector_stores/{vector_store_id}/search", "POST", Body::Json, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "vector_stores"),
    op("/videos", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "videos"),
    op("/videos", "POST", Body::JsonOrMultipart, Framing::Json, Stream::Never, ModelAt::Body, Billing::Other, "videos"),
    op("/videos/characters", "POST", Body::Multipart, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "videos"),
    op("/videos/characters/{character_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "videos"),
    op("/videos/edits", "POST", Body::JsonOrMultipart, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "videos"),
    op("/videos/extensions", "POST", Body::JsonOrMultipart, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "videos"),
    op("/videos/{video_id}", "DELETE", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "videos"),
    op("/videos/{video_id}", "GET", Body::None, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "videos"),
    op("/videos/{video_id}/content", "GET", Body::None, Framing::Binary, Stream::Never, ModelAt::None, Billing::Other, "videos"),
    op("/videos/{video_id}/remix", "POST", Body::JsonOrMultipart, Framing::Json, Stream::Never, ModelAt::None, Billing::Other, "videos"),
];

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn segments_are_what_split_gives(path in "/?[a-zé/]{0,10}") {
            let want: Vec<&str> = path.strip_prefix('/').unwrap_or(&path).split('/').collect();
            proptest::prop_assert_eq!(segments(&path).collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn canonical_paths_pass_and_tricks_do_not() {
        for ok in [
            "/chat/completions",
            "/models/ft:gpt-4o-mini:acme::abc",
            "/models/ft%3Agpt-4o-mini%3Aacme%3A%3Aabc",
            "/files/file-abc/content",
        ] {
            assert_eq!(canonical(ok), Ok(ok), "{ok}");
        }
        for bad in [
            "/chat/completions/",
            "//chat/completions",
            "/chat//completions",
            "/./chat/completions",
            "/chat/../completions",
            "/chat/%2e%2e/completions",
            "/chat%2fcompletions",
            "/chat%2Fcompletions",
            "/chat/%2E/completions",
            "/chat\\completions",
            "/chat/completions%00",
            "/chat/completions%",
            "/chat/completions%zz",
            "/chat/%25completions",
            "/chat/complétions",
            "chat/completions",
        ] {
            assert!(
                matches!(canonical(bad), Err(RouteError::NotCanonical(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn lookup_by_template_method_and_literal_first() {
        let t = RouteTable::builtin();
        let chat = t.find(&Method::POST, "/chat/completions").unwrap();
        assert_eq!(chat.billing, Billing::Tokens);
        assert_eq!(chat.stream, Stream::Chat);
        assert_eq!(chat.endpoint(), "chat");
        let stored = t
            .find(&Method::GET, "/chat/completions/chatcmpl-1")
            .unwrap();
        assert_eq!(stored.family, "chat_store");
        assert_eq!(
            t.find(&Method::POST, "/responses/compact").unwrap().path,
            "/responses/compact"
        );
        assert_eq!(
            t.find(&Method::GET, "/responses/resp_1").unwrap().path,
            "/responses/{response_id}"
        );
        assert_eq!(
            t.find(&Method::POST, "/embeddings").unwrap().stream,
            Stream::Never
        );
        assert_eq!(t.find(&Method::GET, "/nope"), Err(RouteError::NotFound));
        assert_eq!(
            t.find(&Method::PUT, "/chat/completions"),
            Err(RouteError::MethodNotAllowed(vec![
                Method::GET,
                Method::POST
            ]))
        );
        assert!(matches!(
            t.find(&Method::TRACE, "/chat/completions"),
            Err(RouteError::MethodNotAllowed(_))
        ));
        assert!(matches!(
            t.find(&Method::POST, "/chat/completions/"),
            Err(RouteError::NotCanonical(_))
        ));
        let m = t.find(&Method::DELETE, "/models/ft:gpt-4o:x::y").unwrap();
        assert_eq!((m.model, m.billing), (ModelAt::Path, Billing::Other));
        // A configured extension, and TRACE refused even when configured.
        let ext = t.with(vec![
            Op {
                path: "/tokenize".into(),
                method: Method::POST,
                body: Body::Json,
                framing: Framing::Json,
                stream: Stream::Never,
                model: ModelAt::Body,
                billing: Billing::Free,
                family: "tokenize".into(),
            },
            Op {
                path: "/echo".into(),
                method: Method::TRACE,
                body: Body::None,
                framing: Framing::Json,
                stream: Stream::Never,
                model: ModelAt::None,
                billing: Billing::Free,
                family: "echo".into(),
            },
        ]);
        assert_eq!(
            ext.find(&Method::POST, "/tokenize").unwrap().family,
            "tokenize"
        );
        assert!(ext.find(&Method::TRACE, "/echo").is_err());
        assert!(
            t.find(&Method::POST, "/tokenize").is_err(),
            "the built-in table is unchanged"
        );
    }

    /// Every operation of the OpenAPI description has an entry (and nothing else is in the
    /// table): the spec's `paths:` read line by line, as its layout is regular.
    #[test]
    fn every_operation_of_the_spec_has_an_entry() {
        let spec = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/reference/openai-openapi/openapi.yaml"
        );
        let Ok(text) = std::fs::read_to_string(spec) else {
            panic!("the OpenAPI description is not at {spec}");
        };
        let mut in_paths = false;
        let mut path = String::new();
        let mut ops = std::collections::BTreeSet::new();
        for line in text.lines() {
            if line == "paths:" {
                in_paths = true;
                continue;
            }
            if in_paths && !line.starts_with(' ') && !line.is_empty() {
                break;
            }
            if !in_paths {
                continue;
            }
            if let Some(p) = line.strip_prefix("  /") {
                let p = p.trim_end_matches(':').trim_matches('\'').trim_matches('"');
                path = format!("/{}", p.split('?').next().unwrap_or(p));
            } else if let Some(m) = line.strip_prefix("    ") {
                let m = m.trim_end_matches(':');
                if ["get", "post", "put", "delete", "patch"].contains(&m) {
                    ops.insert((path.clone(), m.to_ascii_uppercase()));
                }
            }
        }
        assert!(ops.len() > 250, "read {} operations", ops.len());
        let t = RouteTable::builtin();
        let table: std::collections::BTreeSet<(String, String)> = t
            .ops()
            .iter()
            .map(|o| (o.path.clone(), o.method.to_string()))
            .collect();
        let missing: Vec<_> = ops.difference(&table).collect();
        assert!(
            missing.is_empty(),
            "operations without a route entry: {missing:?}"
        );
        let extra: Vec<_> = table.difference(&ops).collect();
        assert!(
            extra.is_empty(),
            "route entries the spec does not have: {extra:?}"
        );
    }
}
