//! `POST /v1/responses`: the Responses API's shape — `input` as a string or message items,
//! `instructions`, `max_output_tokens` (an answer cut by it is `status: "incomplete"` with
//! `incomplete_details.reason = "max_output_tokens"`), usage with `input_tokens_details` and
//! `output_tokens_details`; streamed as the real service streams it: named events (`event:`
//! lines) from `response.created` to `response.completed` (or `response.incomplete`), each with
//! its `sequence_number`, and no `[DONE]`. Answers are deterministic from the input, as chat's
//! are, and charged against the same token budget.
//!
//! Not simulated yet: tools and function calls, `store` with `previous_response_id` and
//! `GET /v1/responses/{id}`, reasoning items.

use std::io;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::api::{fields, unix_now, Call, Pacer};
use crate::config::{JsonStyle, ModelKind};
use crate::errors::BadField;
use crate::generate::{hash64, words, SplitMix};
use crate::server::ConnKill;
use crate::stats::Record;
use crate::{tokens, AppState};

pub async fn handle(
    State(app): State<Arc<AppState>>,
    kill: Option<Extension<ConnKill>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer_as(State(app), kill, headers, body, None).await
}

/// [`handle`], the answer's `model` saying `answer_model` when given (Azure's routes: the
/// deployment the body named).
pub async fn answer_as(
    State(app): State<Arc<AppState>>,
    kill: Option<Extension<ConnKill>>,
    headers: HeaderMap,
    body: Body,
    answer_model: Option<String>,
) -> Response {
    let mut call = match Call::begin(&app, &headers, kill.map(|Extension(k)| k)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    call.answer_model = answer_model;
    match run(call, body).await {
        Ok(r) | Err(r) => r,
    }
}

/// `input` and `instructions` as chat messages, for counting and seeding.
fn messages(body: &Map<String, Value>) -> Result<Vec<Value>, BadField> {
    let mut out = Vec::new();
    match body.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => out.push(json!({"role": "system", "content": s})),
        Some(v) => return Err(BadField::wrong_type("instructions", "a string", v)),
    }
    match body.get("input") {
        None => return Err(BadField::missing("input")),
        Some(Value::String(s)) => out.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(BadField::invalid("input", "Invalid 'input': empty array."))
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
                let text = match item.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    _ => {
                        return Err(BadField::missing(&format!("input[{i}].content")));
                    }
                };
                out.push(json!({"role": role, "content": text}));
            }
        }
        Some(v) => return Err(BadField::wrong_type("input", "a string or an array", v)),
    }
    Ok(out)
}

/// What one answer is: its text pieces (one token each) and whether `max_output_tokens` cut it.
struct Answer {
    pieces: Vec<&'static str>,
    cut: bool,
}

async fn run(mut call: Call, body: Body) -> Result<Response, Response> {
    let body = call.json_body(body).await?;
    let model = call.model(&body, ModelKind::Chat)?;
    let msgs = messages(&body).map_err(|b| call.bad(b))?;
    let max_out = fields::opt_u64(&body, "max_output_tokens", 16, model.max_output)
        .map_err(|b| call.bad(b))?;
    let (stream, _) = fields::stream_flags(&body).map_err(|b| call.bad(b))?;
    let prompt = tokens::chat_prompt(model.encoding, &msgs, None).map_err(|(param, why)| {
        call.bad(BadField::invalid(
            &param,
            format!("Invalid '{param}': {why}."),
        ))
    })?;
    let prompt_tokens = prompt.len() as u64;
    call.server_faults()?;
    let reserve = max_out.unwrap_or(call.live.scenario.default_max_tokens);
    let charged_prompt = call.limiter_prompt(
        prompt_tokens,
        &[body.get("input"), body.get("instructions")],
    );
    call.admit(&model.id, charged_prompt.saturating_add(reserve))?;
    let cached = call.cached_prefix(&prompt);
    call.rec.prompt_tokens = prompt_tokens;
    call.rec.cached_tokens = cached;

    let s = &call.live.scenario;
    let seed = hash64(&[
        model.id.as_bytes(),
        Value::Array(msgs.clone()).to_string().as_bytes(),
    ]);
    let mut rng = SplitMix::new(seed);
    let natural = rng.range(s.output_min_tokens, s.output_max_tokens);
    let mut pieces = words(rng.next_u64(), natural);
    let mut cut = false;
    if let Some(max) = max_out {
        if pieces.len() as u64 > max {
            pieces.truncate(max as usize);
            cut = true;
        }
    }
    let answer = Answer { pieces, cut };
    let ids = Ids {
        response: call.object_id("resp"),
        message: call.object_id("msg"),
        created: unix_now(),
        model: call
            .answer_model
            .clone()
            .unwrap_or_else(|| model.id.clone()),
    };
    let echo = Echo {
        instructions: body.get("instructions").cloned().unwrap_or(Value::Null),
        max_output_tokens: max_out,
        metadata: body.get("metadata").cloned().unwrap_or_else(|| json!({})),
    };
    let ttft = call.rolls.ttft;
    if !ttft.is_zero() {
        tokio::time::sleep(ttft).await;
    }
    if stream {
        return Ok(streamed(call, ids, echo, answer, prompt_tokens, cached));
    }
    let mut pacer = call.pacer();
    if !pacer.is_off() {
        let total: std::time::Duration = (1..answer.pieces.len()).map(|_| pacer.next_delay()).sum();
        tokio::time::sleep(total).await;
    }
    let out = answer.pieces.len() as u64;
    call.rec.completion_tokens = out;
    let v = response_object(
        &ids,
        &echo,
        &answer,
        Some((prompt_tokens, cached, out)),
        true,
    );
    Ok(call.json(&v))
}

struct Ids {
    response: String,
    message: String,
    created: u64,
    model: String,
}

/// Request fields the response object repeats.
struct Echo {
    instructions: Value,
    max_output_tokens: Option<u64>,
    metadata: Value,
}

fn usage(prompt: u64, cached: u64, output: u64) -> Value {
    json!({
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + output,
    })
}

fn message_item(ids: &Ids, text: &str, done: bool) -> Value {
    let status = if done { "completed" } else { "in_progress" };
    let content = if done {
        json!([{"type": "output_text", "text": text, "annotations": []}])
    } else {
        json!([])
    };
    json!({"type": "message", "id": ids.message, "status": status, "role": "assistant", "content": content})
}

/// The response object; `finished` false for the in-progress copies a stream starts with.
fn response_object(
    ids: &Ids,
    echo: &Echo,
    answer: &Answer,
    counts: Option<(u64, u64, u64)>,
    finished: bool,
) -> Value {
    let (status, incomplete) = match (finished, answer.cut) {
        (false, _) => ("in_progress", Value::Null),
        (true, true) => ("incomplete", json!({"reason": "max_output_tokens"})),
        (true, false) => ("completed", Value::Null),
    };
    let output = if finished {
        json!([message_item(ids, &answer.pieces.concat(), true)])
    } else {
        json!([])
    };
    json!({
        "id": ids.response,
        "object": "response",
        "created_at": ids.created,
        "status": status,
        "error": null,
        "incomplete_details": incomplete,
        "instructions": echo.instructions,
        "max_output_tokens": echo.max_output_tokens,
        "model": ids.model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "store": true,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": counts.map_or(Value::Null, |(p, c, o)| usage(p, c, o)),
        "metadata": echo.metadata,
    })
}

/// One named event, as the real stream writes it.
fn event(kind: &str, seq: u64, mut data: Value, style: JsonStyle) -> Bytes {
    if let Some(o) = data.as_object_mut() {
        o.insert("type".into(), json!(kind));
        o.insert("sequence_number".into(), json!(seq));
    }
    let mut out = format!("event: {kind}\ndata: ").into_bytes();
    out.extend(crate::json_style::to_vec(&data, style));
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

struct Streaming {
    ids: Ids,
    echo: Echo,
    answer: Answer,
    prompt: u64,
    cached: u64,
    pacer: Pacer,
    rec: Record,
    style: JsonStyle,
    /// The next event to send: 0 created, 1 in_progress, 2 item added, 3 part added,
    /// 4.. deltas, then text done, part done, item done, completed.
    step: usize,
    seq: u64,
}

impl Streaming {
    async fn next(&mut self) -> Option<Result<Bytes, io::Error>> {
        self.rec.stream_body_started = true;
        let n = self.answer.pieces.len();
        let step = self.step;
        self.step += 1;
        let seq = self.seq;
        self.seq += 1;
        let text = || self.answer.pieces.concat();
        let part = |t: String| json!({"type": "output_text", "text": t, "annotations": []});
        let item_id = self.ids.message.clone();
        let ev = match step {
            0 => event(
                "response.created",
                seq,
                json!({"response": response_object(&self.ids, &self.echo, &self.answer, None, false)}),
                self.style,
            ),
            1 => event(
                "response.in_progress",
                seq,
                json!({"response": response_object(&self.ids, &self.echo, &self.answer, None, false)}),
                self.style,
            ),
            2 => event(
                "response.output_item.added",
                seq,
                json!({"output_index": 0, "item": message_item(&self.ids, "", false)}),
                self.style,
            ),
            3 => event(
                "response.content_part.added",
                seq,
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": part(String::new())}),
                self.style,
            ),
            s if s < 4 + n => {
                if s > 4 && !self.pacer.is_off() {
                    tokio::time::sleep(self.pacer.next_delay()).await;
                }
                self.rec.completion_tokens += 1;
                event(
                    "response.output_text.delta",
                    seq,
                    json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": self.answer.pieces[s - 4], "logprobs": []}),
                    self.style,
                )
            }
            s if s == 4 + n => event(
                "response.output_text.done",
                seq,
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": text(), "logprobs": []}),
                self.style,
            ),
            s if s == 5 + n => event(
                "response.content_part.done",
                seq,
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": part(text())}),
                self.style,
            ),
            s if s == 6 + n => event(
                "response.output_item.done",
                seq,
                json!({"output_index": 0, "item": message_item(&self.ids, &text(), true)}),
                self.style,
            ),
            s if s == 7 + n => {
                self.rec.completed = true;
                let counts = (self.prompt, self.cached, n as u64);
                let kind = if self.answer.cut {
                    "response.incomplete"
                } else {
                    "response.completed"
                };
                event(
                    kind,
                    seq,
                    json!({"response": response_object(&self.ids, &self.echo, &self.answer, Some(counts), true)}),
                    self.style,
                )
            }
            _ => return None,
        };
        Some(Ok(ev))
    }
}

fn streamed(
    mut call: Call,
    ids: Ids,
    echo: Echo,
    answer: Answer,
    prompt: u64,
    cached: u64,
) -> Response {
    let pacer = call.pacer();
    let style = call.live.scenario.json_style;
    let mut resp = call.respond(crate::stream::event_stream_head());
    let Call { mut rec, .. } = call;
    rec.stream = true;
    let state = Streaming {
        ids,
        echo,
        answer,
        prompt,
        cached,
        pacer,
        rec,
        style,
        step: 0,
        seq: 0,
    };
    let s = futures_util::stream::unfold(state, |mut st| async move {
        let item = st.next().await?;
        Some((item, st))
    });
    *resp.body_mut() = Body::from_stream(s);
    resp
}
