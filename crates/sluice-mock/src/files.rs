//! `/v1/files`: multipart uploads with a `purpose`, kept in memory up to a size cap; list (newest
//! first, `limit` / `after` / `purpose`), retrieve, `…/content` and delete, in OpenAI's shapes.
//! An upload for `purpose = "batch"` must be a `.jsonl` file whose every line is a JSON object,
//! as the real endpoint requires.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::api::{list_page, unix_now, Call};
use crate::errors::BadField;
use crate::server::ConnKill;
use crate::AppState;

const PURPOSES: [&str; 6] = [
    "assistants",
    "batch",
    "fine-tune",
    "vision",
    "user_data",
    "evals",
];

/// One uploaded file.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub id: String,
    pub filename: String,
    pub purpose: String,
    pub created_at: u64,
    pub bytes: Bytes,
}

impl StoredFile {
    pub fn object(&self) -> Value {
        json!({
            "id": self.id,
            "object": "file",
            "bytes": self.bytes.len(),
            "created_at": self.created_at,
            "expires_at": null,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": null,
        })
    }
}

/// Store a file the mock wrote itself (a batch's output or errors).
pub fn store(
    app: &AppState,
    id: String,
    filename: String,
    purpose: &str,
    bytes: Bytes,
) -> StoredFile {
    let f = StoredFile {
        id: id.clone(),
        filename,
        purpose: purpose.to_string(),
        created_at: unix_now(),
        bytes,
    };
    app.files
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, f.clone());
    f
}

fn lookup(app: &AppState, id: &str) -> Option<StoredFile> {
    app.files
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(id)
        .cloned()
}

fn not_found(call: &mut Call, id: &str) -> Response {
    call.fail(
        StatusCode::NOT_FOUND,
        format!("No such File object: {id}"),
        "invalid_request_error",
        Some("id"),
        None,
    )
}

pub async fn upload(
    State(app): State<Arc<AppState>>,
    kill: Option<Extension<ConnKill>>,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    let mut call = match Call::begin_with(&app, &headers, kill).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let max = call.live.scenario.files_max_bytes;
    let mut purpose = None;
    let mut file: Option<(String, Bytes)> = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return call.bad(BadField::invalid(
                    "file",
                    format!("Invalid multipart body: {e}"),
                ))
            }
        };
        match field.name() {
            Some("purpose") => purpose = field.text().await.ok(),
            Some("file") => {
                let name = field.file_name().unwrap_or("upload").to_string();
                match field.bytes().await {
                    Ok(b) if b.len() as u64 > max => {
                        return call.fail(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("File is too large: {} bytes, the limit is {max}.", b.len()),
                            "invalid_request_error",
                            Some("file"),
                            None,
                        )
                    }
                    Ok(b) => file = Some((name, b)),
                    Err(e) => {
                        return call.bad(BadField::invalid("file", format!("Invalid upload: {e}")))
                    }
                }
            }
            _ => {}
        }
    }
    let Some(purpose) = purpose else {
        return call.bad(BadField::missing("purpose"));
    };
    if !PURPOSES.contains(&purpose.as_str()) {
        return call.bad(BadField::invalid(
            "purpose",
            format!(
                "Invalid value for 'purpose': '{purpose}'. Supported values are: {}.",
                PURPOSES.join(", ")
            ),
        ));
    }
    let Some((filename, bytes)) = file else {
        return call.bad(BadField::missing("file"));
    };
    if purpose == "batch" {
        if !filename.ends_with(".jsonl") {
            return call.bad(BadField::invalid(
                "file",
                "Invalid file format for Batch API. Must be .jsonl",
            ));
        }
        // The first line that is not a JSON object (line 1 for a file that is not UTF-8).
        let bad = match std::str::from_utf8(&bytes) {
            Err(_) => Some(1),
            Ok(text) => text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .find(|(_, l)| !serde_json::from_str::<Value>(l).is_ok_and(|v| v.is_object()))
                .map(|(i, _)| i + 1),
        };
        if let Some(line) = bad {
            return call.bad(BadField::invalid(
                "file",
                format!("Invalid file format for Batch API: line {line} is not a JSON object."),
            ));
        }
    }
    let id = call.object_id("file-");
    let f = store(&app, id, filename, &purpose, bytes);
    call.json(&f.object())
}

#[derive(Debug, serde::Deserialize)]
pub struct ListQuery {
    purpose: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

pub async fn list(
    State(app): State<Arc<AppState>>,
    kill: Option<Extension<ConnKill>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let mut call = match Call::begin_with(&app, &headers, kill).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut all: Vec<StoredFile> = app
        .files
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .filter(|f| q.purpose.as_deref().is_none_or(|p| p == f.purpose))
        .cloned()
        .collect();
    // Newest first; ids break ties so pages are stable.
    all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    let limit = q.limit.unwrap_or(10_000).clamp(1, 10_000);
    let v = list_page(
        &all,
        |f| &f.id,
        StoredFile::object,
        q.after.as_deref(),
        limit,
    );
    call.json(&v)
}

pub async fn retrieve(
    State(app): State<Arc<AppState>>,
    kill: Option<Extension<ConnKill>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut call = match Call::begin_with(&app, &headers, kill).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let f = lookup(&app, &id);
    match f {
        Some(f) => call.json(&f.object()),
        None => not_found(&mut call, &id),
    }
}

pub async fn content(
    State(app): State<Arc<AppState>>,
    kill: Option<Extension<ConnKill>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut call = match Call::begin_with(&app, &headers, kill).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let f = lookup(&app, &id);
    match f {
        Some(f) => {
            call.rec.completed = true;
            let mut resp = Body::from(f.bytes).into_response();
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/octet-stream"),
            );
            call.respond(resp)
        }
        None => not_found(&mut call, &id),
    }
}

pub async fn delete(
    State(app): State<Arc<AppState>>,
    kill: Option<Extension<ConnKill>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut call = match Call::begin_with(&app, &headers, kill).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let gone = app
        .files
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    match gone {
        Some(_) => call.json(&json!({"id": id, "object": "file", "deleted": true})),
        None => not_found(&mut call, &id),
    }
}
