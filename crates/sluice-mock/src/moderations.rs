//! `POST /v1/moderations`: omni-moderation's answer shape, flagged deterministically by the
//! scenario's trigger words (`[moderations] words = { violence = ["attack"] }`); every other
//! score is small and stable for the same text. Free, as upstream: no token budget is charged.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use serde_json::{json, Map, Value};

use crate::api::Call;
use crate::config::MODERATION_CATEGORIES;
use crate::errors::BadField;
use crate::generate::hash64;
use crate::server::ConnKill;
use crate::AppState;

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

/// The texts of `input`: a string, an array of strings, or an array of multimodal parts
/// (`{"type": "text", "text": …}`; image parts are scored as empty text).
fn texts(v: Option<&Value>) -> Result<Vec<String>, BadField> {
    match v {
        None => Err(BadField::missing("input")),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) if a.is_empty() => {
            Err(BadField::invalid("input", "Invalid 'input': empty array."))
        }
        Some(Value::Array(a)) if a.iter().any(Value::is_object) => {
            let text: Vec<&str> = a
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            Ok(vec![text.join("\n")])
        }
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, x)| match x {
                Value::String(s) => Ok(s.clone()),
                other => Err(BadField::wrong_type(
                    &format!("input[{i}]"),
                    "a string",
                    other,
                )),
            })
            .collect(),
        Some(other) => Err(BadField::wrong_type("input", "a string or an array", other)),
    }
}

async fn run(mut call: Call, body: Body) -> Result<Response, Response> {
    let body = call.json_body(body).await?;
    let model = match body.get("model") {
        None | Some(Value::Null) => "omni-moderation-latest".to_string(),
        Some(Value::String(m)) => m.clone(),
        Some(other) => return Err(call.bad(BadField::wrong_type("model", "a string", other))),
    };
    call.rec.model = Some(model.clone());
    if !model.starts_with("omni-moderation") && !model.starts_with("text-moderation") {
        let r = crate::errors::model_not_found(&model);
        return Err(call.respond(r));
    }
    let inputs = texts(body.get("input")).map_err(|b| call.bad(b))?;
    call.server_faults()?;
    let words = &call.live.scenario.moderation_words;
    let results: Vec<Value> = inputs
        .iter()
        .map(|text| {
            let lower = text.to_lowercase();
            let mut categories = Map::new();
            let mut scores = Map::new();
            let mut applied = Map::new();
            let mut flagged = false;
            for c in MODERATION_CATEGORIES {
                let hit = words
                    .get(c)
                    .is_some_and(|ws| ws.iter().any(|w| lower.contains(w.as_str())));
                flagged |= hit;
                // A stable small score for the text and category; a hit scores high.
                let h = hash64(&[text.as_bytes(), c.as_bytes()]);
                let score = if hit {
                    0.9 + (h % 1000) as f64 / 10_000.0
                } else {
                    (h % 1000) as f64 / 100_000.0
                };
                categories.insert(c.into(), json!(hit));
                scores.insert(c.into(), json!(score));
                applied.insert(c.into(), json!(["text"]));
            }
            json!({
                "flagged": flagged,
                "categories": categories,
                "category_scores": scores,
                "category_applied_input_types": applied,
            })
        })
        .collect();
    let answer = json!({
        "id": call.object_id("modr-"),
        "model": model,
        "results": results,
    });
    Ok(call.json(&answer))
}
