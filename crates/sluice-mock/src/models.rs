//! `GET /v1/models` and `GET /v1/models/{id}`. Retired models are absent, as they are upstream.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::api::Call;
use crate::config::ModelSpec;
use crate::{errors, AppState};

/// A fixed creation time: model objects do not change between calls.
const CREATED: u64 = 1_715_367_049;

fn object(m: &ModelSpec) -> Value {
    json!({"id": m.id, "object": "model", "created": CREATED, "owned_by": "system"})
}

pub async fn list(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let mut call = match Call::begin(&app, &headers, None).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = call.server_faults() {
        return r;
    }
    let data: Vec<Value> = call
        .live
        .scenario
        .models
        .values()
        .filter(|m| !m.retired)
        .map(object)
        .collect();
    call.rec.completed = true;
    let resp = axum::Json(json!({"object": "list", "data": data})).into_response();
    call.respond(resp)
}

pub async fn get(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut call = match Call::begin(&app, &headers, None).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = call.server_faults() {
        return r;
    }
    let found = call
        .live
        .scenario
        .models
        .get(&id)
        .filter(|m| !m.retired)
        .map(object);
    match found {
        Some(v) => {
            call.rec.completed = true;
            let resp = axum::Json(v).into_response();
            call.respond(resp)
        }
        None => {
            let r = errors::model_not_found(&id);
            call.respond(r)
        }
    }
}
