//! `POST /v1/completions`, the legacy text endpoint: string or array prompts, `n`, streaming.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use serde_json::{json, Value};

use crate::api::{fields, unix_now, usage_json, Call};
use crate::config::ModelKind;
use crate::errors::BadField;
use crate::generate::{hash64, words, SplitMix};
use crate::server::ConnKill;
use crate::stream::{self, Format, Output, Plan};
use crate::{tokens, AppState};

/// The legacy endpoint's default output limit.
const DEFAULT_MAX_TOKENS: u64 = 16;

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

/// Prompts as text (token-array prompts are kept as their count).
enum Prompt {
    Text(String),
    Tokens(usize),
}

fn prompts(v: Option<&Value>) -> Result<Vec<Prompt>, BadField> {
    let bad = |v: &Value| BadField::wrong_type("prompt", "a string or an array", v);
    match v {
        None => Err(BadField::missing("prompt")),
        Some(Value::String(s)) => Ok(vec![Prompt::Text(s.clone())]),
        Some(Value::Array(a)) if a.iter().all(Value::is_u64) && !a.is_empty() => {
            Ok(vec![Prompt::Tokens(a.len())])
        }
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|p| match p {
                Value::String(s) => Ok(Prompt::Text(s.clone())),
                Value::Array(t) if t.iter().all(Value::is_u64) => Ok(Prompt::Tokens(t.len())),
                other => Err(bad(other)),
            })
            .collect(),
        Some(Value::Array(_)) => Err(BadField::invalid(
            "prompt",
            "Invalid 'prompt': empty array.",
        )),
        Some(other) => Err(bad(other)),
    }
}

async fn run(mut call: Call, body: Body) -> Result<Response, Response> {
    let body = call.json_body(body).await?;
    let model = call.model(&body, ModelKind::Completion)?;
    let parsed = (|| {
        let p = prompts(body.get("prompt"))?;
        let n = fields::opt_u64(&body, "n", 1, 128)?.unwrap_or(1);
        let max = fields::opt_u64(&body, "max_tokens", 1, model.max_output)?;
        let (stream, include_usage) = fields::stream_flags(&body)?;
        Ok::<_, BadField>((p, n, max, stream, include_usage))
    })();
    let (prompts, n, max, stream, include_usage) = match parsed {
        Ok(p) => p,
        Err(b) => return Err(call.bad(b)),
    };
    let max = max.unwrap_or(DEFAULT_MAX_TOKENS);
    let counts: Vec<u64> = prompts
        .iter()
        .map(|p| match p {
            Prompt::Text(s) => tokens::count(model.encoding, s),
            Prompt::Tokens(k) => *k as u64,
        })
        .collect();
    let longest = counts.iter().copied().max().unwrap_or(0);
    if longest + max > model.context_window {
        return Err(call.fail(
            http::StatusCode::BAD_REQUEST,
            format!("This model's maximum context length is {} tokens, however you requested {} tokens ({longest} in your prompt; {max} for the completion). Please reduce your prompt; or completion length.", model.context_window, longest + max),
            "invalid_request_error",
            Some("prompt"),
            Some("context_length_exceeded"),
        ));
    }
    let prompt_tokens: u64 = counts.iter().sum();
    call.server_faults()?;
    let charged_prompt = call.limiter_prompt(prompt_tokens, &[body.get("prompt")]);
    call.admit(&model.id, charged_prompt + max * n * prompts.len() as u64)?;
    call.rec.prompt_tokens = prompt_tokens;

    let s = &call.live.scenario;
    let mut plans = Vec::new();
    for (pi, p) in prompts.iter().enumerate() {
        let text = match p {
            Prompt::Text(t) => t.as_str(),
            Prompt::Tokens(_) => "",
        };
        for c in 0..n {
            let seed = hash64(&[
                model.id.as_bytes(),
                text.as_bytes(),
                &(pi as u64).to_le_bytes(),
                &c.to_le_bytes(),
            ]);
            let mut rng = SplitMix::new(seed);
            let natural = rng.range(s.output_min_tokens, s.output_max_tokens);
            let mut w = words(rng.next_u64(), natural);
            let mut finish = "stop";
            if w.len() as u64 > max {
                w.truncate(max as usize);
                finish = "length";
            }
            plans.push(Plan {
                output: Output::Text(w.into_iter().map(std::borrow::Cow::Borrowed).collect()),
                finish,
            });
        }
    }
    let id = call.object_id("cmpl-");
    let created = unix_now();
    if !call.rolls.ttft.is_zero() {
        tokio::time::sleep(call.rolls.ttft).await;
    }
    if stream {
        let model_id = model.answers_as.clone();
        return Ok(stream::respond(
            call,
            Format::Completion,
            id,
            model_id,
            plans,
            include_usage,
            0,
        ));
    }
    stream::pace_whole(&call, &plans).await;
    let completion: u64 = plans.iter().map(Plan::tokens).sum();
    call.rec.completion_tokens = completion;
    let choices: Vec<Value> = plans
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let text = match &p.output {
                Output::Text(w) => w.concat(),
                Output::Tool { .. } => String::new(),
            };
            json!({"text": text, "index": i, "logprobs": null, "finish_reason": p.finish})
        })
        .collect();
    let body = json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model.answers_as,
        "system_fingerprint": "fp_sluicemock",
        "choices": choices,
        "usage": usage_json(prompt_tokens, completion, 0),
    });
    Ok(call.json(&body))
}
