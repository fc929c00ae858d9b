//! `POST /v1/responses`: the Responses API's shape — `input` as a string or items (messages,
//! earlier function calls and their outputs), `instructions`, `max_output_tokens` (an answer cut
//! by it is `status: "incomplete"` with `incomplete_details.reason = "max_output_tokens"`),
//! function tools (`tool_choice` `"required"` or naming a function: a `function_call` item with
//! arguments valid against its `parameters`), usage with `input_tokens_details` and
//! `output_tokens_details`; streamed as the real service streams it: named events (`event:`
//! lines) from `response.created` to `response.completed` (or `response.incomplete`), each with
//! its `sequence_number`, and no `[DONE]`. `store` (default true) keeps the answer for
//! `GET /v1/responses/{id}` and for `previous_response_id`, which puts the earlier conversation
//! before this input — and counts it as input tokens, as the real service does
//! ([`crate::response_store`]). Answers are deterministic from the input, as chat's are, and
//! charged against the same token budget.
//!
//! Not simulated: reasoning items, built-in tools (accepted, never called), `background`.

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
use crate::generate::{hash64, tool_arguments, words, SplitMix};
use crate::response_store::Stored;
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
    match run(&app, call, body).await {
        Ok(r) | Err(r) => r,
    }
}

/// The request's input: chat-style messages (for counting and seeding) and the items as the
/// store lists them back (`GET /v1/responses/{id}/input_items`).
struct Input {
    messages: Vec<Value>,
    items: Vec<Value>,
}

/// `input` as messages and items. Message items are `{role, content}` (`type` `"message"` or
/// absent); an earlier turn's `function_call` and the caller's `function_call_output` count as
/// the assistant's and the tool's words; `item_reference` and `reasoning` items add nothing.
fn input(body: &Map<String, Value>, call: &Call) -> Result<Input, BadField> {
    let mut messages = Vec::new();
    let mut items = Vec::new();
    let item_id = |n: usize| format!("{}{n:02}", call.object_id("msg_"));
    match body.get("input") {
        None => return Err(BadField::missing("input")),
        Some(Value::String(s)) => {
            messages.push(json!({"role": "user", "content": s}));
            items.push(
                json!({"id": item_id(0), "type": "message", "role": "user", "status": "completed",
                              "content": [{"type": "input_text", "text": s}]}),
            );
        }
        Some(Value::Array(list)) if list.is_empty() => {
            return Err(BadField::invalid("input", "Invalid 'input': empty array."))
        }
        Some(Value::Array(list)) => {
            for (i, item) in list.iter().enumerate() {
                let at = |f: &str| format!("input[{i}].{f}");
                let text_of = |field: &str| -> Result<String, BadField> {
                    match item.get(field) {
                        Some(Value::String(s)) => Ok(s.clone()),
                        Some(v) => Err(BadField::wrong_type(&at(field), "a string", v)),
                        None => Err(BadField::missing(&at(field))),
                    }
                };
                let kind = item
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("message");
                match kind {
                    "message" => {
                        let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
                        if !matches!(role, "user" | "assistant" | "system" | "developer") {
                            return Err(BadField::invalid(
                                &at("role"),
                                format!("Invalid value: '{role}'. Supported values are: 'user', 'assistant', 'system', and 'developer'."),
                            ));
                        }
                        let (text, parts) = match item.get("content") {
                            Some(Value::String(s)) => (
                                s.clone(),
                                json!([{"type": if role == "assistant" { "output_text" } else { "input_text" }, "text": s}]),
                            ),
                            Some(Value::Array(parts)) => (
                                parts
                                    .iter()
                                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                                    .collect::<Vec<_>>()
                                    .join("\n"),
                                Value::Array(parts.clone()),
                            ),
                            Some(v) => {
                                return Err(BadField::wrong_type(
                                    &at("content"),
                                    "a string or an array",
                                    v,
                                ))
                            }
                            None => return Err(BadField::missing(&at("content"))),
                        };
                        messages.push(json!({"role": role, "content": text}));
                        items.push(json!({"id": item_id(i), "type": "message", "role": role,
                                          "status": "completed", "content": parts}));
                    }
                    "function_call" => {
                        let call_id = text_of("call_id")?;
                        let name = text_of("name")?;
                        let arguments = text_of("arguments")?;
                        messages.push(json!({"role": "assistant", "content": arguments, "name": name}));
                        let mut kept = item.clone();
                        if let Some(o) = kept.as_object_mut() {
                            o.entry("id")
                                .or_insert_with(|| json!(format!("{}{i:02}", call.object_id("fc_"))));
                            o.insert("call_id".into(), json!(call_id));
                            o.entry("status").or_insert_with(|| json!("completed"));
                        }
                        items.push(kept);
                    }
                    "function_call_output" => {
                        let call_id = text_of("call_id")?;
                        let output = text_of("output")?;
                        messages.push(json!({"role": "tool", "content": output}));
                        items.push(json!({"id": format!("{}{i:02}", call.object_id("fco_")), "type": "function_call_output",
                                          "call_id": call_id, "output": output, "status": "completed"}));
                    }
                    "item_reference" | "reasoning" => {}
                    other => {
                        return Err(BadField::invalid(
                            &at("type"),
                            format!("Invalid value: '{other}'. Supported values are: 'message', 'function_call', 'function_call_output', 'item_reference' and 'reasoning'."),
                        ))
                    }
                }
            }
        }
        Some(v) => return Err(BadField::wrong_type("input", "a string or an array", v)),
    }
    Ok(Input { messages, items })
}

/// `instructions` as a system message (not carried into a later turn, as upstream documents).
fn instructions(body: &Map<String, Value>) -> Result<Option<Value>, BadField> {
    match body.get("instructions") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(json!({"role": "system", "content": s}))),
        Some(v) => Err(BadField::wrong_type("instructions", "a string", v)),
    }
}

/// The function the answer calls, by `tool_choice`: `"required"` calls the first function tool,
/// `{"type": "function", "name": ...}` that one; `"auto"` and `"none"` answer in text.
struct Tools {
    /// As given, echoed in the response object.
    given: Value,
    choice: Value,
    call: Option<(String, Option<Value>)>,
}

fn tools(body: &Map<String, Value>) -> Result<Tools, BadField> {
    let given = match body.get("tools") {
        None | Some(Value::Null) => Value::Array(Vec::new()),
        Some(v @ Value::Array(list)) => {
            for (i, t) in list.iter().enumerate() {
                match t.get("type").and_then(Value::as_str) {
                    None => return Err(BadField::missing(&format!("tools[{i}].type"))),
                    Some("function") if t.get("name").and_then(Value::as_str).is_none() => {
                        return Err(BadField::missing(&format!("tools[{i}].name")))
                    }
                    Some(_) => {}
                }
            }
            v.clone()
        }
        Some(v) => return Err(BadField::wrong_type("tools", "an array", v)),
    };
    let functions: Vec<&Value> = given
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
                .collect()
        })
        .unwrap_or_default();
    let spec = |t: &Value| {
        (
            t.get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            t.get("parameters").cloned(),
        )
    };
    let choice = body
        .get("tool_choice")
        .cloned()
        .unwrap_or_else(|| json!("auto"));
    let call = match &choice {
        Value::String(s) if s == "auto" || s == "none" => None,
        Value::String(s) if s == "required" => match functions.first() {
            Some(t) => Some(spec(t)),
            None => {
                return Err(BadField::invalid(
                    "tool_choice",
                    "Tool choice 'required' must be specified with 'tools' parameter.",
                ))
            }
        },
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| BadField::missing("tool_choice.name"))?;
            match functions
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some(name))
            {
                Some(t) => Some(spec(t)),
                None => {
                    return Err(BadField::invalid(
                        "tool_choice",
                        format!("Tool choice 'function' with name '{name}' not found in 'tools' parameter."),
                    ))
                }
            }
        }
        // A built-in tool chosen (`{"type": "web_search_preview"}`): never run here.
        Value::Object(_) => None,
        v => {
            return Err(BadField::invalid(
                "tool_choice",
                format!("Invalid value for 'tool_choice': {v}. Supported values are: 'none', 'auto', 'required', or an object naming a tool."),
            ))
        }
    };
    Ok(Tools {
        given,
        choice,
        call,
    })
}

/// What one answer is: text pieces (one token each) or a function call's arguments, and
/// whether `max_output_tokens` cut it.
enum Output {
    Text(Vec<&'static str>),
    Call {
        name: String,
        call_id: String,
        arguments: String,
        fragments: Vec<String>,
        tokens: u64,
    },
}

struct Answer {
    output: Output,
    cut: bool,
}

impl Answer {
    fn text(&self) -> String {
        match &self.output {
            Output::Text(p) => p.concat(),
            Output::Call { arguments, .. } => arguments.clone(),
        }
    }

    fn tokens(&self) -> u64 {
        match &self.output {
            Output::Text(p) => p.len() as u64,
            Output::Call { tokens, .. } => *tokens,
        }
    }

    /// The answer as the next turn's conversation sees it.
    fn as_message(&self) -> Value {
        match &self.output {
            Output::Text(p) => json!({"role": "assistant", "content": p.concat()}),
            Output::Call {
                name, arguments, ..
            } => json!({"role": "assistant", "content": arguments, "name": name}),
        }
    }
}

async fn run(app: &Arc<AppState>, mut call: Call, body: Body) -> Result<Response, Response> {
    let body = call.json_body(body).await?;
    let model = call.model(&body, ModelKind::Chat)?;
    let system = instructions(&body).map_err(|b| call.bad(b))?;
    let given = input(&body, &call).map_err(|b| call.bad(b))?;
    let tools = tools(&body).map_err(|b| call.bad(b))?;
    let store = match body.get("store") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(v) => return Err(call.bad(BadField::wrong_type("store", "a boolean", v))),
    };
    // An earlier stored turn comes first; it is input again, and counted again.
    let previous = match body.get("previous_response_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => match app.response_store().conversation(id) {
            Some(c) => Some((id.clone(), c)),
            None => {
                return Err(call.fail(
                    axum::http::StatusCode::BAD_REQUEST,
                    format!("Previous response with id '{id}' not found."),
                    "invalid_request_error",
                    Some("previous_response_id"),
                    Some("previous_response_not_found"),
                ))
            }
        },
        Some(v) => {
            return Err(call.bad(BadField::wrong_type("previous_response_id", "a string", v)))
        }
    };
    let mut conversation = previous
        .as_ref()
        .map(|(_, c)| c.as_ref().clone())
        .unwrap_or_default();
    conversation.extend(given.messages.iter().cloned());
    let msgs: Vec<Value> = system
        .iter()
        .cloned()
        .chain(conversation.iter().cloned())
        .collect();
    let max_out = fields::opt_u64(&body, "max_output_tokens", 16, model.max_output)
        .map_err(|b| call.bad(b))?;
    let (stream, _) = fields::stream_flags(&body).map_err(|b| call.bad(b))?;
    let tool_defs = (!tools.given.as_array().is_none_or(Vec::is_empty)).then_some(&tools.given);
    let prompt =
        tokens::chat_prompt(model.encoding, &msgs, tool_defs).map_err(|(param, why)| {
            call.bad(BadField::invalid(
                &param,
                format!("Invalid '{param}': {why}."),
            ))
        })?;
    let prompt_tokens = prompt.len() as u64;
    call.server_faults()?;
    let reserve = max_out.unwrap_or(call.live.scenario.default_max_tokens);
    let earlier = Value::Array(
        previous
            .as_ref()
            .map_or_else(Vec::new, |(_, c)| c.as_ref().clone()),
    );
    let charged_prompt = call.limiter_prompt(
        prompt_tokens,
        &[
            body.get("input"),
            body.get("instructions"),
            body.get("tools"),
            Some(&earlier),
        ],
    );
    call.admit(&model.id, charged_prompt.saturating_add(reserve))?;
    let cached = call.cached_prefix(&prompt);
    call.rec.prompt_tokens = prompt_tokens;
    call.rec.cached_tokens = cached;

    let seed = hash64(&[
        model.id.as_bytes(),
        Value::Array(msgs.clone()).to_string().as_bytes(),
    ]);
    let answer = answer(&call, seed, max_out, &tools, model.encoding);
    let ids = Ids {
        response: call.object_id("resp_"),
        item: match answer.output {
            Output::Text(_) => call.object_id("msg_"),
            Output::Call { .. } => call.object_id("fc_"),
        },
        created: unix_now(),
        model: call
            .answer_model
            .clone()
            .unwrap_or_else(|| model.answers_as.clone()),
    };
    let echo = Echo {
        instructions: body.get("instructions").cloned().unwrap_or(Value::Null),
        max_output_tokens: max_out,
        metadata: body.get("metadata").cloned().unwrap_or_else(|| json!({})),
        tools: tools.given,
        tool_choice: tools.choice,
        store,
        previous_response_id: previous.map(|(id, _)| id),
    };
    conversation.push(answer.as_message());
    let keep = store.then(|| Keep {
        app: app.clone(),
        input_items: given.items,
        conversation,
    });
    let ttft = call.rolls.ttft;
    if !ttft.is_zero() {
        tokio::time::sleep(ttft).await;
    }
    if stream {
        return Ok(streamed(
            call,
            ids,
            echo,
            answer,
            prompt_tokens,
            cached,
            keep,
        ));
    }
    let mut pacer = call.pacer();
    if !pacer.is_off() {
        let total: std::time::Duration = (1..answer.tokens()).map(|_| pacer.next_delay()).sum();
        tokio::time::sleep(total).await;
    }
    let out = answer.tokens();
    call.rec.completion_tokens = out;
    let v = response_object(
        &ids,
        &echo,
        &answer,
        Some((prompt_tokens, cached, out)),
        true,
    );
    if let Some(k) = keep {
        k.store(&v);
    }
    Ok(call.json(&v))
}

/// The answer, deterministic from `seed`: a call of the chosen function (its arguments cut to
/// `max_out` tokens), else words.
fn answer(
    call: &Call,
    seed: u64,
    max_out: Option<u64>,
    tools: &Tools,
    enc: crate::config::Encoding,
) -> Answer {
    let s = &call.live.scenario;
    let mut rng = SplitMix::new(seed);
    if let Some((name, params)) = &tools.call {
        let mut arguments = tool_arguments(seed, params.as_ref()).to_string();
        let mut toks = tokens::encode(enc, &arguments);
        let mut cut = false;
        if let Some(max) = max_out {
            if toks.len() as u64 > max {
                toks.truncate(max as usize);
                arguments = tokens::decode(enc, &toks);
                cut = true;
            }
        }
        let call_id = format!("call_{:016x}{:08x}", rng.next_u64(), rng.next_u64() as u32);
        return Answer {
            output: Output::Call {
                name: name.clone(),
                call_id,
                fragments: crate::stream::fragments(&arguments, 6),
                arguments,
                tokens: toks.len() as u64,
            },
            cut,
        };
    }
    let natural = rng.range(s.output_min_tokens, s.output_max_tokens);
    let mut pieces = words(rng.next_u64(), natural);
    let mut cut = false;
    if let Some(max) = max_out {
        if pieces.len() as u64 > max {
            pieces.truncate(max as usize);
            cut = true;
        }
    }
    Answer {
        output: Output::Text(pieces),
        cut,
    }
}

/// What a stored answer keeps, written once the answer is complete.
struct Keep {
    app: Arc<AppState>,
    input_items: Vec<Value>,
    conversation: Vec<Value>,
}

impl Keep {
    fn store(self, response: &Value) {
        self.app.response_store().put(Stored {
            response: response.clone(),
            input_items: self.input_items,
            conversation: Arc::new(self.conversation),
        });
    }
}

struct Ids {
    response: String,
    /// The output item's id (a message's, or a function call's).
    item: String,
    created: u64,
    model: String,
}

/// Request fields the response object repeats.
struct Echo {
    instructions: Value,
    max_output_tokens: Option<u64>,
    metadata: Value,
    tools: Value,
    tool_choice: Value,
    store: bool,
    previous_response_id: Option<String>,
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

/// The output item: finished (`done`) or as a stream first announces it.
fn output_item(ids: &Ids, answer: &Answer, done: bool) -> Value {
    let status = if done { "completed" } else { "in_progress" };
    match &answer.output {
        Output::Text(_) => {
            let content = if done {
                json!([{"type": "output_text", "text": answer.text(), "annotations": []}])
            } else {
                json!([])
            };
            json!({"type": "message", "id": ids.item, "status": status, "role": "assistant", "content": content})
        }
        Output::Call {
            name,
            call_id,
            arguments,
            ..
        } => json!({
            "type": "function_call", "id": ids.item, "call_id": call_id, "name": name,
            "arguments": if done { arguments.as_str() } else { "" }, "status": status,
        }),
    }
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
        json!([output_item(ids, answer, true)])
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
        "previous_response_id": echo.previous_response_id,
        "reasoning": {"effort": null, "summary": null},
        "store": echo.store,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": echo.tool_choice,
        "tools": echo.tools,
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
    keep: Option<Keep>,
    /// The next event to send: 0 created, 1 in_progress, 2 item added, then for text 3 part
    /// added, deltas, text done, part done; for a function call, argument deltas and their
    /// done; then item done and completed.
    step: usize,
    seq: u64,
}

impl Streaming {
    async fn next(&mut self) -> Option<Result<Bytes, io::Error>> {
        self.rec.stream_body_started = true;
        let step = self.step;
        self.step += 1;
        let seq = self.seq;
        self.seq += 1;
        let (kind, data) = match step {
            0 => (
                "response.created",
                json!({"response": response_object(&self.ids, &self.echo, &self.answer, None, false)}),
            ),
            1 => (
                "response.in_progress",
                json!({"response": response_object(&self.ids, &self.echo, &self.answer, None, false)}),
            ),
            2 => (
                "response.output_item.added",
                json!({"output_index": 0, "item": output_item(&self.ids, &self.answer, false)}),
            ),
            s => {
                let body = match &self.answer.output {
                    Output::Text(pieces) => text_step(&self.ids, pieces, s - 3),
                    Output::Call {
                        fragments,
                        arguments,
                        ..
                    } => call_step(&self.ids, fragments, arguments, s - 3),
                };
                match body {
                    Some(Step::Delta(kind, data)) => {
                        if !self.pacer.is_off() && self.rec.completion_tokens > 0 {
                            tokio::time::sleep(self.pacer.next_delay()).await;
                        }
                        self.rec.completion_tokens =
                            (self.rec.completion_tokens + 1).min(self.answer.tokens().max(1));
                        (kind, data)
                    }
                    Some(Step::Other(kind, data)) => (kind, data),
                    Some(Step::ItemDone) => (
                        "response.output_item.done",
                        json!({"output_index": 0, "item": output_item(&self.ids, &self.answer, true)}),
                    ),
                    Some(Step::Completed) => {
                        self.rec.completed = true;
                        self.rec.completion_tokens = self.answer.tokens();
                        let counts = (self.prompt, self.cached, self.answer.tokens());
                        let kind = if self.answer.cut {
                            "response.incomplete"
                        } else {
                            "response.completed"
                        };
                        let object = response_object(
                            &self.ids,
                            &self.echo,
                            &self.answer,
                            Some(counts),
                            true,
                        );
                        if let Some(k) = self.keep.take() {
                            k.store(&object);
                        }
                        (kind, json!({"response": object}))
                    }
                    None => return None,
                }
            }
        };
        Some(Ok(event(kind, seq, data, self.style)))
    }
}

/// The events after `output_item.added`, by position.
enum Step {
    /// A delta of the answer (paced like a token).
    Delta(&'static str, Value),
    Other(&'static str, Value),
    ItemDone,
    Completed,
}

fn text_step(ids: &Ids, pieces: &[&'static str], i: usize) -> Option<Step> {
    let at = |extra: Value| {
        let mut v = json!({"item_id": ids.item, "output_index": 0, "content_index": 0});
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v
    };
    let part = |t: String| json!({"type": "output_text", "text": t, "annotations": []});
    let n = pieces.len();
    Some(match i {
        0 => Step::Other(
            "response.content_part.added",
            at(json!({"part": part(String::new())})),
        ),
        d if d <= n => Step::Delta(
            "response.output_text.delta",
            at(json!({"delta": pieces[d - 1], "logprobs": []})),
        ),
        d if d == n + 1 => Step::Other(
            "response.output_text.done",
            at(json!({"text": pieces.concat(), "logprobs": []})),
        ),
        d if d == n + 2 => Step::Other(
            "response.content_part.done",
            at(json!({"part": part(pieces.concat())})),
        ),
        d if d == n + 3 => Step::ItemDone,
        d if d == n + 4 => Step::Completed,
        _ => return None,
    })
}

fn call_step(ids: &Ids, fragments: &[String], arguments: &str, i: usize) -> Option<Step> {
    let n = fragments.len();
    Some(match i {
        d if d < n => Step::Delta(
            "response.function_call_arguments.delta",
            json!({"item_id": ids.item, "output_index": 0, "delta": fragments[d]}),
        ),
        d if d == n => Step::Other(
            "response.function_call_arguments.done",
            json!({"item_id": ids.item, "output_index": 0, "arguments": arguments}),
        ),
        d if d == n + 1 => Step::ItemDone,
        d if d == n + 2 => Step::Completed,
        _ => return None,
    })
}

fn streamed(
    mut call: Call,
    ids: Ids,
    echo: Echo,
    answer: Answer,
    prompt: u64,
    cached: u64,
    keep: Option<Keep>,
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
        keep,
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
