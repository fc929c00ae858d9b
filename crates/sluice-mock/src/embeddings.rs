//! `POST /v1/embeddings`: deterministic unit vectors per input, `dimensions`, and both
//! `encoding_format`s (the official Python SDK asks for base64 by default).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use base64::Engine;
use serde_json::{json, Value};

use crate::api::Call;
use crate::config::ModelKind;
use crate::errors::BadField;
use crate::generate::{embedding, hash64};
use crate::server::ConnKill;
use crate::{tokens, AppState};

/// Most inputs in one request, and most tokens in one input, as the real endpoint allows.
const MAX_INPUTS: usize = 2048;
const MAX_INPUT_TOKENS: u64 = 8192;

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

/// One input: the bytes that seed its vector and its token count.
struct Input {
    seed: u64,
    tokens: u64,
}

fn inputs(v: Option<&Value>, enc: crate::config::Encoding) -> Result<Vec<Input>, BadField> {
    let text = |s: &str, i: usize| -> Result<Input, BadField> {
        if s.is_empty() {
            return Err(BadField::invalid(
                &format!("input[{i}]"),
                "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
            ));
        }
        Ok(Input {
            seed: hash64(&[s.as_bytes()]),
            tokens: tokens::count(enc, s),
        })
    };
    let ids = |a: &[Value]| Input {
        seed: hash64(&[Value::Array(a.to_vec()).to_string().as_bytes()]),
        tokens: a.len() as u64,
    };
    match v {
        None => Err(BadField::missing("input")),
        Some(Value::String(s)) => Ok(vec![text(s, 0)?]),
        Some(Value::Array(a)) if a.is_empty() => {
            Err(BadField::invalid("input", "Invalid 'input': empty array."))
        }
        Some(Value::Array(a)) if a.len() > MAX_INPUTS => Err(BadField::invalid(
            "input",
            format!(
                "Invalid 'input': maximum {MAX_INPUTS} inputs per request, got {}.",
                a.len()
            ),
        )),
        Some(Value::Array(a)) if a.iter().all(Value::is_u64) => Ok(vec![ids(a)]),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, x)| match x {
                Value::String(s) => text(s, i),
                Value::Array(t) if !t.is_empty() && t.iter().all(Value::is_u64) => Ok(ids(t)),
                other => Err(BadField::wrong_type(
                    &format!("input[{i}]"),
                    "a string or an array of token ids",
                    other,
                )),
            })
            .collect(),
        Some(other) => Err(BadField::wrong_type("input", "a string or an array", other)),
    }
}

async fn run(mut call: Call, body: Body) -> Result<Response, Response> {
    let body = call.json_body(body).await?;
    let model = call.model(&body, ModelKind::Embedding)?;
    let parsed = (|| {
        let inputs = inputs(body.get("input"), model.encoding)?;
        let native = u64::from(model.dimensions.max(1));
        let dims = crate::api::fields::opt_u64(&body, "dimensions", 1, native)?;
        if dims.is_some() && model.id == "text-embedding-ada-002" {
            return Err(BadField::invalid(
                "dimensions",
                "This model does not support specifying dimensions.",
            ));
        }
        let base64 = match body.get("encoding_format") {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) if s == "float" => false,
            Some(Value::String(s)) if s == "base64" => true,
            Some(v) => {
                return Err(BadField::invalid(
                    "encoding_format",
                    format!("Invalid value for 'encoding_format': {v}. Supported values are: 'float' and 'base64'."),
                ))
            }
        };
        Ok((inputs, dims.unwrap_or(native) as usize, base64))
    })();
    let (inputs, dims, base64) = match parsed {
        Ok(p) => p,
        Err(b) => return Err(call.bad(b)),
    };
    if let Some((i, inp)) = inputs
        .iter()
        .enumerate()
        .find(|(_, x)| x.tokens > MAX_INPUT_TOKENS)
    {
        return Err(call.fail(
            StatusCode::BAD_REQUEST,
            format!("This model's maximum context length is {MAX_INPUT_TOKENS} tokens, however you requested {} tokens in input[{i}]. Please reduce your prompt.", inp.tokens),
            "invalid_request_error",
            Some("input"),
            Some("context_length_exceeded"),
        ));
    }
    let prompt_tokens: u64 = inputs.iter().map(|x| x.tokens).sum();
    call.server_faults()?;
    let charged_prompt = call.limiter_prompt(prompt_tokens, &[body.get("input")]);
    call.admit(&model.id, charged_prompt)?;
    call.rec.prompt_tokens = prompt_tokens;
    if !call.rolls.ttft.is_zero() {
        tokio::time::sleep(call.rolls.ttft).await;
    }
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, inp)| {
            let v = embedding(inp.seed, dims);
            let e = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": e})
        })
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": model.answers_as,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    });
    Ok(call.json(&body))
}
