//! Server-sent-event bodies for chat and legacy completions, in OpenAI's chunk order: the role
//! delta, one token per content chunk (tool-call arguments in fragments), a finish chunk per
//! choice, the usage chunk with `choices: []` when asked for, then `data: [DONE]`.
//!
//! Chunks are produced only when hyper polls for the next one, so a slow reader is never buffered
//! ahead of, and a reader that goes away drops the stream (counted as a client disconnect).
//! Mid-stream faults strike at a content chunk chosen by the request's draw.

use std::io;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::api::{usage_json, Call, Pacer};
use crate::server::ConnKill;
use crate::stats::Record;

/// What one choice will produce.
#[derive(Debug, Clone)]
pub enum Output {
    /// Text, one token per element (words, or the pieces of a JSON answer).
    Text(Vec<std::borrow::Cow<'static, str>>),
    /// A function call whose JSON arguments stream in fragments.
    Tool {
        id: String,
        name: String,
        fragments: Vec<String>,
        tokens: u64,
    },
}

/// One choice: its output and why it ends.
#[derive(Debug, Clone)]
pub struct Plan {
    pub output: Output,
    pub finish: &'static str,
}

impl Plan {
    pub fn tokens(&self) -> u64 {
        match &self.output {
            Output::Text(w) => w.len() as u64,
            Output::Tool { tokens, .. } => *tokens,
        }
    }

    /// Number of content chunks this choice streams (drives latency).
    pub fn steps(&self) -> usize {
        match &self.output {
            Output::Text(w) => w.len(),
            Output::Tool { fragments, .. } => fragments.len() + 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Chat,
    Completion,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Stall,
    Drop,
    SseError,
}

#[derive(Debug, Clone, Copy)]
enum Ev {
    Role(usize),
    Text(usize, usize),
    ToolHead(usize),
    ToolArg(usize, usize),
    Finish(usize),
    Usage,
    Done,
}

impl Ev {
    fn is_content(self) -> bool {
        matches!(self, Ev::Text(..) | Ev::ToolHead(_) | Ev::ToolArg(..))
    }
}

/// Everything a stream needs; built by the endpoint, consumed by [`body`].
#[derive(Debug)]
pub struct StreamSpec {
    pub format: Format,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub plans: Vec<Plan>,
    pub include_usage: bool,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub pacer: Pacer,
    /// A mid-stream fault and where it strikes, as a fraction of the content chunks.
    pub fault: Option<(Fault, f64)>,
    pub no_done: bool,
    pub stall_for: Duration,
    pub kill: Option<ConnKill>,
    pub rec: Record,
    pub style: crate::config::JsonStyle,
}

#[derive(Debug)]
struct State {
    spec: StreamSpec,
    events: Vec<Ev>,
    pos: usize,
    fault_at: Option<(usize, Fault)>,
    content_started: bool,
    finished: bool,
}

fn events(format: Format, plans: &[Plan], include_usage: bool) -> Vec<Ev> {
    let mut ev = Vec::new();
    if format == Format::Chat {
        ev.extend((0..plans.len()).map(Ev::Role));
    }
    let steps = plans.iter().map(Plan::steps).max().unwrap_or(0);
    for t in 0..steps {
        for (c, p) in plans.iter().enumerate() {
            match &p.output {
                Output::Text(w) if t < w.len() => ev.push(Ev::Text(c, t)),
                Output::Tool { fragments, .. } if t == 0 => {
                    ev.push(Ev::ToolHead(c));
                    let _ = fragments;
                }
                Output::Tool { fragments, .. } if t <= fragments.len() => {
                    ev.push(Ev::ToolArg(c, t - 1))
                }
                _ => {}
            }
        }
    }
    ev.extend((0..plans.len()).map(Ev::Finish));
    if include_usage {
        ev.push(Ev::Usage);
    }
    ev.push(Ev::Done);
    ev
}

/// The streaming response body.
pub fn body(mut spec: StreamSpec) -> Body {
    spec.rec.stream = true;
    let events = events(spec.format, &spec.plans, spec.include_usage);
    let content: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.is_content())
        .map(|(i, _)| i)
        .collect();
    let fault_at = spec.fault.map(|(f, frac)| {
        let at = if content.is_empty() {
            events.len().saturating_sub(1)
        } else {
            let k = ((frac * content.len() as f64) as usize).min(content.len() - 1);
            content[k]
        };
        (at, f)
    });
    let state = State {
        spec,
        events,
        pos: 0,
        fault_at,
        content_started: false,
        finished: false,
    };
    let s = futures_util::stream::unfold(state, |mut st| async move {
        let item = st.next().await?;
        Some((item, st))
    });
    Body::from_stream(s)
}

impl State {
    async fn next(&mut self) -> Option<Result<Bytes, io::Error>> {
        if self.finished {
            return None;
        }
        self.spec.rec.stream_body_started = true;
        if let Some((at, fault)) = self.fault_at {
            if at == self.pos {
                self.fault_at = None;
                match fault {
                    Fault::Stall => {
                        self.spec.rec.faults.push("stall_stream");
                        tokio::time::sleep(self.spec.stall_for).await;
                    }
                    Fault::Drop => {
                        self.spec.rec.faults.push("drop_stream");
                        self.spec.rec.fault_ended_stream = true;
                        self.finished = true;
                        if let Some(k) = self.spec.kill.as_ref() {
                            k.kill();
                        }
                        return Some(Err(io::Error::new(
                            io::ErrorKind::ConnectionReset,
                            "mock fault: stream dropped",
                        )));
                    }
                    Fault::SseError => {
                        self.spec.rec.faults.push("sse_error");
                        self.spec.rec.fault_ended_stream = true;
                        self.finished = true;
                        let err = json!({"error": {
                            "message": "The server had an error while processing your request. Sorry about that!",
                            "type": "server_error",
                            "param": null,
                            "code": null,
                        }});
                        return Some(Ok(sse(&err, self.spec.style)));
                    }
                }
            }
        }
        let ev = *self.events.get(self.pos)?;
        self.pos += 1;
        if ev.is_content() {
            if self.content_started && !self.spec.pacer.is_off() {
                let d = self.spec.pacer.next_delay();
                tokio::time::sleep(d).await;
            }
            self.content_started = true;
        }
        let bytes = match ev {
            Ev::Done => {
                self.finished = true;
                if self.spec.no_done {
                    self.spec.rec.faults.push("no_done");
                    self.spec.rec.fault_ended_stream = true;
                    return None;
                }
                self.spec.rec.completed = true;
                Bytes::from_static(b"data: [DONE]\n\n")
            }
            Ev::Usage => {
                let usage = usage_json(
                    self.spec.prompt_tokens,
                    self.spec.rec.completion_tokens,
                    self.spec.cached_tokens,
                );
                let mut chunk = self.envelope(Vec::new());
                chunk["usage"] = usage;
                sse(&chunk, self.spec.style)
            }
            other => {
                let choice = self.choice(other);
                let chunk = self.envelope(vec![choice]);
                sse(&chunk, self.spec.style)
            }
        };
        Some(Ok(bytes))
    }

    fn envelope(&self, choices: Vec<Value>) -> Value {
        let s = &self.spec;
        let object = match s.format {
            Format::Chat => "chat.completion.chunk",
            Format::Completion => "text_completion",
        };
        let mut v = json!({
            "id": s.id,
            "object": object,
            "created": s.created,
            "model": s.model,
            "system_fingerprint": "fp_sluicemock",
            "choices": choices,
        });
        if s.include_usage {
            v["usage"] = Value::Null;
        }
        v
    }

    fn choice(&mut self, ev: Ev) -> Value {
        let chat = self.spec.format == Format::Chat;
        let (index, delta, finish): (usize, Value, Value) = match ev {
            Ev::Role(c) => {
                let content = match self.spec.plans[c].output {
                    Output::Text(_) => json!(""),
                    Output::Tool { .. } => Value::Null,
                };
                (
                    c,
                    json!({"role": "assistant", "content": content, "refusal": null}),
                    Value::Null,
                )
            }
            Ev::Text(c, t) => {
                self.spec.rec.completion_tokens += 1;
                let word = match &self.spec.plans[c].output {
                    Output::Text(w) => w.get(t).map_or("", |p| p.as_ref()),
                    Output::Tool { .. } => "",
                };
                (c, json!({"content": word}), Value::Null)
            }
            Ev::ToolHead(c) => {
                let (id, name, tokens) = match &self.spec.plans[c].output {
                    Output::Tool {
                        id, name, tokens, ..
                    } => (id.clone(), name.clone(), *tokens),
                    Output::Text(_) => (String::new(), String::new(), 0),
                };
                self.spec.rec.completion_tokens += tokens;
                (
                    c,
                    json!({"tool_calls": [{"index": 0, "id": id, "type": "function",
                        "function": {"name": name, "arguments": ""}}]}),
                    Value::Null,
                )
            }
            Ev::ToolArg(c, k) => {
                let frag = match &self.spec.plans[c].output {
                    Output::Tool { fragments, .. } => fragments.get(k).cloned().unwrap_or_default(),
                    Output::Text(_) => String::new(),
                };
                (
                    c,
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": frag}}]}),
                    Value::Null,
                )
            }
            Ev::Finish(c) => (c, json!({}), json!(self.spec.plans[c].finish)),
            Ev::Usage | Ev::Done => (0, json!({}), Value::Null),
        };
        if chat {
            json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": finish})
        } else {
            let text = delta.get("content").cloned().unwrap_or(json!(""));
            json!({"text": text, "index": index, "logprobs": null, "finish_reason": finish})
        }
    }
}

fn sse(v: &Value, style: crate::config::JsonStyle) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    out.extend(crate::json_style::to_vec(v, style));
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Split tool-call arguments into small fragments at character boundaries, as the API streams them.
pub fn fragments(args: &str, size: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for ch in args.chars() {
        cur.push(ch);
        if cur.len() >= size {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Turn a call into a streaming response: SSE headers now, chunks as the client reads.
pub fn respond(
    mut call: Call,
    format: Format,
    id: String,
    model: String,
    plans: Vec<Plan>,
    include_usage: bool,
    cached_tokens: u64,
) -> axum::response::Response {
    let r = &call.rolls;
    let fault = if r.drop_stream {
        Some((Fault::Drop, r.cut))
    } else if r.sse_error {
        Some((Fault::SseError, r.cut))
    } else if r.stall_stream {
        Some((Fault::Stall, r.cut))
    } else {
        None
    };
    let no_done = r.no_done;
    let stall_for = call.live.scenario.faults.stall_for;
    let pacer = call.pacer();
    let mut resp = call.respond(event_stream_head());
    let prompt_tokens = call.rec.prompt_tokens;
    let style = call.live.scenario.json_style;
    let Call { rec, kill, .. } = call;
    *resp.body_mut() = body(StreamSpec {
        format,
        id,
        created: crate::api::unix_now(),
        model,
        plans,
        include_usage,
        prompt_tokens,
        cached_tokens,
        pacer,
        fault,
        no_done,
        stall_for,
        kill,
        rec,
        style,
    });
    resp
}

/// An empty `text/event-stream` answer whose body a stream fills in (chat and Responses alike).
pub fn event_stream_head() -> axum::response::Response {
    let mut resp = axum::response::Response::new(Body::empty());
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    resp
}

/// Wait as long as generating the longest choice would take (non-streaming responses).
pub async fn pace_whole(call: &Call, plans: &[Plan]) {
    let mut pacer = call.pacer();
    if pacer.is_off() {
        return;
    }
    let steps = plans.iter().map(Plan::steps).max().unwrap_or(0);
    let total: Duration = (1..steps).map(|_| pacer.next_delay()).sum();
    tokio::time::sleep(total).await;
}
