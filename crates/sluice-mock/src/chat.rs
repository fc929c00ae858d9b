//! `POST /v1/chat/completions`: streaming and not, `n` choices, token limits, tool calls,
//! structured outputs (`response_format` `json_object` and `json_schema`), content-filter
//! triggers, exact usage with cached prompt tokens.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use serde_json::{json, Map, Value};

use crate::api::{fields, unix_now, usage_json, Call};
use crate::config::{ModelKind, ModelSpec};
use crate::errors::BadField;
use crate::generate::{hash64, json_for_schema, tool_arguments, words, SplitMix};
use crate::server::ConnKill;
use crate::stream::{self, Format, Output, Plan};
use crate::{tokens, AppState};

/// What the caller asked the model to do about tools.
enum ToolChoice {
    Text,
    Call(String, Option<Value>),
}

/// The shape the answer's content must take.
enum ResponseFormat {
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON that validates against this schema.
    JsonSchema(Value),
}

fn response_format(
    body: &Map<String, Value>,
    messages: &[Value],
) -> Result<ResponseFormat, BadField> {
    let Some(rf) = body.get("response_format").filter(|v| !v.is_null()) else {
        return Ok(ResponseFormat::Text);
    };
    let Some(obj) = rf.as_object() else {
        return Err(BadField::wrong_type("response_format", "an object", rf));
    };
    match obj.get("type").and_then(Value::as_str) {
        None => Err(BadField::missing("response_format.type")),
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => {
            // As the real endpoint: JSON mode needs the word "json" somewhere in the messages.
            if !tokens::chat_text(messages).to_lowercase().contains("json") {
                return Err(BadField::invalid(
                    "messages",
                    "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
                ));
            }
            Ok(ResponseFormat::JsonObject)
        }
        Some("json_schema") => {
            let js = obj
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or_else(|| BadField::missing("response_format.json_schema"))?;
            if js.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(BadField::missing("response_format.json_schema.name"));
            }
            let schema = js.get("schema").cloned().unwrap_or_else(|| json!({"type": "object"}));
            Ok(ResponseFormat::JsonSchema(schema))
        }
        Some(other) => Err(BadField::invalid(
            "response_format.type",
            format!("Invalid value: '{other}'. Supported values are: 'text', 'json_object', and 'json_schema'."),
        )),
    }
}

pub async fn handle(
    State(app): State<Arc<AppState>>,
    kill: Option<Extension<ConnKill>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let call = match Call::begin(&app, &headers, kill.map(|Extension(k)| k)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match run(call, body).await {
        Ok(r) | Err(r) => r,
    }
}

async fn run(mut call: Call, body: Body) -> Result<Response, Response> {
    let body = call.json_body(body).await?;
    let model = call.model(&body, ModelKind::Chat)?;
    let req = match parse(&body, &model) {
        Ok(r) => r,
        Err(b) => return Err(call.bad(b)),
    };
    let prompt = match tokens::chat_prompt(model.encoding, req.messages, req.tools) {
        Ok(p) => p,
        Err((param, why)) => {
            let msg = format!("Invalid '{param}': {why}.");
            return Err(call.bad(BadField::invalid(&param, msg)));
        }
    };
    let prompt_tokens = prompt.len() as u64;
    let out_reserve = req.max_out.unwrap_or(call.live.scenario.default_max_tokens);
    if prompt_tokens + req.max_out.unwrap_or(0) > model.context_window {
        let msg = format!(
            "This model's maximum context length is {} tokens. However, your messages resulted in {} tokens{}. Please reduce the length of the messages.",
            model.context_window,
            prompt_tokens + req.max_out.unwrap_or(0),
            if req.max_out.is_some() { " (including the requested completion)" } else { "" },
        );
        return Err(call.fail(
            StatusCode::BAD_REQUEST,
            msg,
            "invalid_request_error",
            Some("messages"),
            Some("context_length_exceeded"),
        ));
    }
    call.server_faults()?;
    let charged_prompt =
        call.limiter_prompt(prompt_tokens, &[body.get("messages"), body.get("tools")]);
    call.admit(&model.id, charged_prompt + out_reserve * req.n)?;
    let cached = call.cached_prefix(&prompt);
    call.rec.prompt_tokens = prompt_tokens;
    call.rec.cached_tokens = cached;

    let plans = plan(&call, &req, &model);
    let id = call.object_id("chatcmpl-");
    let created = unix_now();
    let ttft = call.rolls.ttft;
    if !ttft.is_zero() {
        tokio::time::sleep(ttft).await;
    }
    if req.stream {
        let model_id = model.answers_as.clone();
        return Ok(stream::respond(
            call,
            Format::Chat,
            id,
            model_id,
            plans,
            req.include_usage,
            cached,
        ));
    }
    stream::pace_whole(&call, &plans).await;
    let completion: u64 = plans.iter().map(Plan::tokens).sum();
    call.rec.completion_tokens = completion;
    let choices: Vec<Value> = plans
        .iter()
        .enumerate()
        .map(|(i, p)| choice(i, p))
        .collect();
    let body = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model.answers_as,
        "choices": choices,
        "usage": usage_json(prompt_tokens, completion, cached),
        "service_tier": "default",
        "system_fingerprint": "fp_sluicemock",
    });
    Ok(call.json(&body))
}

fn choice(index: usize, p: &Plan) -> Value {
    let message = match &p.output {
        Output::Text(w) => json!({
            "role": "assistant",
            "content": w.concat(),
            "refusal": null,
            "annotations": [],
        }),
        Output::Tool {
            id,
            name,
            fragments,
            ..
        } => json!({
            "role": "assistant",
            "content": null,
            "refusal": null,
            "annotations": [],
            "tool_calls": [{
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": fragments.concat()},
            }],
        }),
    };
    json!({"index": index, "message": message, "logprobs": null, "finish_reason": p.finish})
}

struct ChatRequest<'a> {
    messages: &'a [Value],
    tools: Option<&'a Value>,
    tool_choice: ToolChoice,
    format: ResponseFormat,
    n: u64,
    max_out: Option<u64>,
    stream: bool,
    include_usage: bool,
}

fn parse<'a>(body: &'a Map<String, Value>, model: &ModelSpec) -> Result<ChatRequest<'a>, BadField> {
    let messages = match body.get("messages") {
        None => return Err(BadField::missing("messages")),
        Some(Value::Array(a)) if a.is_empty() => {
            return Err(BadField {
                param: "messages".into(),
                message: "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.".into(),
                code: "empty_array",
            })
        }
        Some(Value::Array(a)) => a.as_slice(),
        Some(v) => return Err(BadField::wrong_type("messages", "an array", v)),
    };
    let n = fields::opt_u64(body, "n", 1, 128)?.unwrap_or(1);
    let max_tokens = fields::opt_u64(body, "max_tokens", 1, u64::from(u32::MAX))?;
    let max_completion = fields::opt_u64(body, "max_completion_tokens", 1, u64::from(u32::MAX))?;
    let max_out = max_completion.or(max_tokens);
    if let Some(m) = max_out {
        if m > model.max_output {
            let param = if max_completion.is_some() {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            return Err(BadField::invalid(
                param,
                format!("{param} is too large: {m}. This model supports at most {} completion tokens, whereas you provided {m}.", model.max_output),
            ));
        }
    }
    let (stream, include_usage) = fields::stream_flags(body)?;
    let tools = match body.get("tools") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Array(a)) => {
            for (i, t) in a.iter().enumerate() {
                let name = t
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str);
                if name.is_none() {
                    return Err(BadField::missing(&format!("tools[{i}].function.name")));
                }
            }
            Some(v)
        }
        Some(v) => return Err(BadField::wrong_type("tools", "an array", v)),
    };
    let find = |name: &str| -> Option<Option<Value>> {
        tools?.as_array()?.iter().find_map(|t| {
            let f = t.get("function")?;
            (f.get("name")?.as_str()? == name).then(|| f.get("parameters").cloned())
        })
    };
    let tool_choice = match body.get("tool_choice") {
        None | Some(Value::Null) => ToolChoice::Text,
        Some(Value::String(s)) if s == "none" || s == "auto" => ToolChoice::Text,
        Some(Value::String(s)) if s == "required" => {
            let first = tools
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|t| t.get("function"));
            match first {
                Some(f) => ToolChoice::Call(
                    f.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
                    f.get("parameters").cloned(),
                ),
                None => {
                    return Err(BadField::invalid(
                        "tool_choice",
                        "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
                    ))
                }
            }
        }
        Some(v @ Value::Object(_)) => {
            let name = v
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| BadField::missing("tool_choice.function.name"))?;
            match find(name) {
                Some(params) => ToolChoice::Call(name.to_string(), params),
                None => {
                    return Err(BadField::invalid(
                        "tool_choice",
                        format!("Invalid value for 'tool_choice': function '{name}' is not among the provided tools."),
                    ))
                }
            }
        }
        Some(v) => {
            return Err(BadField::invalid(
                "tool_choice",
                format!("Invalid value for 'tool_choice': {v}. Supported values are: 'none', 'auto', 'required', or an object naming a function."),
            ))
        }
    };
    let format = response_format(body, messages)?;
    Ok(ChatRequest {
        messages,
        tools,
        tool_choice,
        format,
        n,
        max_out,
        stream,
        include_usage,
    })
}

/// Decide each choice's output, deterministically from the messages.
fn plan(call: &Call, req: &ChatRequest<'_>, model: &ModelSpec) -> Vec<Plan> {
    let s = &call.live.scenario;
    let text = tokens::chat_text(req.messages);
    let filtered = s
        .faults
        .content_filter_words
        .iter()
        .any(|w| text.contains(w.as_str()));
    let msgs = Value::Array(req.messages.to_vec()).to_string();
    (0..req.n)
        .map(|i| {
            let seed = hash64(&[model.id.as_bytes(), msgs.as_bytes(), &i.to_le_bytes()]);
            if let ToolChoice::Call(name, params) = &req.tool_choice {
                let args = tool_arguments(seed, params.as_ref()).to_string();
                let mut toks = tokens::encode(model.encoding, &args);
                let mut args = args;
                let mut finish = "tool_calls";
                if let Some(max) = req.max_out {
                    if toks.len() as u64 > max {
                        toks.truncate(max as usize);
                        args = tokens::decode(model.encoding, &toks);
                        finish = "length";
                    }
                }
                let mut rng = SplitMix::new(seed);
                let id = format!("call_{:016x}{:08x}", rng.next_u64(), rng.next_u64() as u32);
                return Plan {
                    output: Output::Tool {
                        id,
                        name: name.clone(),
                        fragments: stream::fragments(&args, 6),
                        tokens: toks.len() as u64,
                    },
                    finish,
                };
            }
            let json = match &req.format {
                ResponseFormat::Text => None,
                ResponseFormat::JsonObject => {
                    let w = words(seed, 6).concat();
                    Some(json!({"answer": w.trim()}).to_string())
                }
                ResponseFormat::JsonSchema(schema) => {
                    Some(json_for_schema(seed, schema).to_string())
                }
            };
            if let Some(text) = json {
                // The answer's tokens, each its own piece (and stream chunk).
                let mut toks = tokens::encode(model.encoding, &text);
                let mut finish = "stop";
                if let Some(max) = req.max_out {
                    if toks.len() as u64 > max {
                        toks.truncate(max as usize);
                        finish = "length";
                    }
                }
                let pieces = toks
                    .iter()
                    .map(|t| std::borrow::Cow::Owned(tokens::decode(model.encoding, &[*t])))
                    .collect();
                return Plan {
                    output: Output::Text(pieces),
                    finish,
                };
            }
            let mut rng = SplitMix::new(seed);
            let natural = rng.range(s.output_min_tokens, s.output_max_tokens);
            let mut w = words(rng.next_u64(), natural);
            let mut finish = "stop";
            if filtered {
                w.truncate((w.len() / 2).max(1));
                finish = "content_filter";
            } else if let Some(max) = req.max_out {
                if w.len() as u64 > max {
                    w.truncate(max as usize);
                    finish = "length";
                }
            }
            Plan {
                output: Output::Text(w.into_iter().map(std::borrow::Cow::Borrowed).collect()),
                finish,
            }
        })
        .collect()
}
