//! `/v1/batches`: create from an uploaded `batch` file (each line checked as the real service
//! checks it: a JSON object with `custom_id`, `method` POST, the batch's `url` and a `body`; ids
//! unique), retrieve, list and cancel. A batch moves through `validating → in_progress →
//! finalizing → completed` on a compressed clock (`[batches] complete_after`, default 2 s), or
//! `failed` (lines that do not validate), `expired` (`expire_after`), `cancelling → cancelled`.
//! Its lines run against the mock itself when it finalizes — outside the rate limits, faults and
//! latency, since the Batch API has its own quota — and their answers go to an output file and
//! an error file in OpenAI's formats, readable with `GET /v1/files/{id}/content`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::api::{list_page, unix_now, Call, INTERNAL_BATCH};
use crate::errors::BadField;
use crate::generate::hash64;
use crate::server::ConnKill;
use crate::AppState;

const ENDPOINTS: [&str; 4] = [
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/responses",
];

/// What a batch ended with.
#[derive(Debug, Clone)]
struct Finished {
    output_file_id: Option<String>,
    error_file_id: Option<String>,
    completed: u64,
    failed: u64,
    usage: BatchUsage,
}

/// The token counts of a batch's answered lines, as OpenAI's Batch object carries them (on
/// batches created after 2025-09-07): counts only. The Batch discount is a price — half the
/// synchronous rate, applied on the bill — so it shows in what these tokens cost, never in
/// the counts.
#[derive(Debug, Clone, Copy, Default)]
struct BatchUsage {
    input: u64,
    cached: u64,
    output: u64,
    reasoning: u64,
}

impl BatchUsage {
    /// Add one answer's `usage`, whichever endpoint's names it uses (chat and completions:
    /// prompt/completion; Responses: input/output; embeddings: prompt only).
    fn add(&mut self, answer: &Value) {
        let u = &answer["usage"];
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        let first = |a: &str, b: &str| if u[a].is_null() { n(&u[b]) } else { n(&u[a]) };
        self.input = self
            .input
            .saturating_add(first("input_tokens", "prompt_tokens"));
        self.output = self
            .output
            .saturating_add(first("output_tokens", "completion_tokens"));
        let details = |a: &str, b: &str| if u[a].is_null() { &u[b] } else { &u[a] };
        self.cached = self
            .cached
            .saturating_add(n(
                &details("input_tokens_details", "prompt_tokens_details")["cached_tokens"]
            ));
        self.reasoning = self.reasoning.saturating_add(n(&details(
            "output_tokens_details",
            "completion_tokens_details",
        )["reasoning_tokens"]));
    }

    fn to_json(self) -> Value {
        json!({
            "input_tokens": self.input,
            "input_tokens_details": {"cached_tokens": self.cached},
            "output_tokens": self.output,
            "output_tokens_details": {"reasoning_tokens": self.reasoning},
            "total_tokens": self.input.saturating_add(self.output),
        })
    }
}

/// One batch.
#[derive(Debug, Clone)]
pub struct Job {
    id: String,
    endpoint: String,
    input_file_id: String,
    completion_window: String,
    metadata: Value,
    created_at: u64,
    created: Instant,
    /// The key that created it: its lines run as that caller.
    api_key: String,
    total: u64,
    /// Validation errors: the batch failed before it ran.
    errors: Vec<Value>,
    cancelled: Option<Instant>,
    finished: Option<Finished>,
}

impl Job {
    fn status(&self, complete_after: Duration, expire_after: Option<Duration>) -> &'static str {
        let elapsed = self.created.elapsed();
        if !self.errors.is_empty() {
            return "failed";
        }
        if let Some(c) = self.cancelled {
            return if c.elapsed() >= complete_after / 10 {
                "cancelled"
            } else {
                "cancelling"
            };
        }
        if self.finished.is_some() {
            return "completed";
        }
        if expire_after.is_some_and(|e| elapsed >= e) {
            return "expired";
        }
        if elapsed < complete_after / 10 {
            "validating"
        } else if elapsed < complete_after.mul_f64(0.8) {
            "in_progress"
        } else if elapsed < complete_after {
            "finalizing"
        } else {
            // Done waiting: the next look runs the lines.
            "finalizing"
        }
    }

    fn object(&self, complete_after: Duration, expire_after: Option<Duration>) -> Value {
        let status = self.status(complete_after, expire_after);
        let at = |frac: f64| self.created_at + complete_after.mul_f64(frac).as_secs();
        let reached = |s: &[&str]| s.contains(&status);
        let (completed, failed) = self
            .finished
            .as_ref()
            .map_or((0, 0), |f| (f.completed, f.failed));
        json!({
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": if self.errors.is_empty() { Value::Null } else { json!({"object": "list", "data": self.errors}) },
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": status,
            "output_file_id": self.finished.as_ref().and_then(|f| f.output_file_id.clone()),
            "error_file_id": self.finished.as_ref().and_then(|f| f.error_file_id.clone()),
            "created_at": self.created_at,
            "in_progress_at": reached(&["in_progress", "finalizing", "completed"]).then(|| at(0.1)),
            "expires_at": self.created_at + 86_400,
            "finalizing_at": reached(&["finalizing", "completed"]).then(|| at(0.8)),
            "completed_at": reached(&["completed"]).then(|| at(1.0)),
            "failed_at": reached(&["failed"]).then_some(self.created_at),
            "expired_at": reached(&["expired"]).then(unix_now),
            "cancelling_at": self.cancelled.map(|_| unix_now()),
            "cancelled_at": reached(&["cancelled"]).then(unix_now),
            "request_counts": {"total": self.total, "completed": completed, "failed": failed},
            "usage": self.finished.as_ref().map(|f| f.usage).unwrap_or_default().to_json(),
            "metadata": self.metadata,
        })
    }
}

fn batch_not_found(call: &mut Call, id: &str) -> Response {
    call.fail(
        StatusCode::NOT_FOUND,
        format!("No batch found with id '{id}'."),
        "invalid_request_error",
        Some("batch_id"),
        None,
    )
}

/// The compressed clock of the scenario in force: completion after, expiry after.
fn clock(call: &Call) -> (Duration, Option<Duration>) {
    let s = &call.live.scenario;
    (s.batch_complete_after, s.batch_expire_after)
}

/// The reasons a batch file's lines would be refused, as the validating step reports them.
fn validate(text: &str, endpoint: &str) -> (u64, Vec<Value>) {
    let mut errors = Vec::new();
    let mut ids = std::collections::HashSet::new();
    let mut total = 0;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        total += 1;
        let n = i + 1;
        let mut err = |code: &str, message: String| {
            errors.push(json!({"code": code, "message": message, "param": null, "line": n}));
        };
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            err("invalid_json_line", format!("Line {n} is not valid JSON."));
            continue;
        };
        match v.get("custom_id").and_then(Value::as_str) {
            None => err("missing_custom_id", format!("Line {n} has no custom_id.")),
            Some(id) if !ids.insert(id.to_string()) => err(
                "duplicate_custom_id",
                format!(
                    "The custom_id for request {n} ('{id}') is a duplicate of another request."
                ),
            ),
            Some(_) => {}
        }
        if v.get("method").and_then(Value::as_str) != Some("POST") {
            err("invalid_method", format!("Line {n}: method must be POST."));
        }
        if v.get("url").and_then(Value::as_str) != Some(endpoint) {
            err(
                "mismatched_endpoint",
                format!("Line {n}: the url does not match the batch's endpoint {endpoint}."),
            );
        }
        if !v.get("body").is_some_and(Value::is_object) {
            err("missing_body", format!("Line {n} has no body object."));
        }
    }
    if total == 0 {
        errors.push(json!({"code": "empty_file", "message": "The input file has no requests.", "param": null, "line": null}));
    }
    (total, errors)
}

pub async fn create(
    State(app): State<Arc<AppState>>,
    kill: Option<Extension<ConnKill>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut call = match Call::begin_with(&app, &headers, kill).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let body: Map<String, Value> = match call.json_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(input_file_id) = body.get("input_file_id").and_then(Value::as_str) else {
        return call.bad(BadField::missing("input_file_id"));
    };
    let Some(endpoint) = body.get("endpoint").and_then(Value::as_str) else {
        return call.bad(BadField::missing("endpoint"));
    };
    if !ENDPOINTS.contains(&endpoint) {
        return call.bad(BadField::invalid(
            "endpoint",
            format!(
                "Invalid value for 'endpoint': '{endpoint}'. Supported values are: {}.",
                ENDPOINTS.join(", ")
            ),
        ));
    }
    let window = body
        .get("completion_window")
        .and_then(Value::as_str)
        .unwrap_or("");
    if window != "24h" {
        return call.bad(BadField::invalid(
            "completion_window",
            "Invalid value for 'completion_window'. Supported values are: '24h'.",
        ));
    }
    let file = app
        .files
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(input_file_id)
        .cloned();
    let Some(file) = file else {
        return call.fail(
            StatusCode::NOT_FOUND,
            format!("No such File object: {input_file_id}"),
            "invalid_request_error",
            Some("input_file_id"),
            None,
        );
    };
    if file.purpose != "batch" {
        return call.bad(BadField::invalid(
            "input_file_id",
            "The input file must have purpose 'batch'.",
        ));
    }
    let (total, errors) = validate(&String::from_utf8_lossy(&file.bytes), endpoint);
    let job = Job {
        id: call.object_id("batch_"),
        endpoint: endpoint.to_string(),
        input_file_id: input_file_id.to_string(),
        completion_window: window.to_string(),
        metadata: body.get("metadata").cloned().unwrap_or(Value::Null),
        created_at: unix_now(),
        created: Instant::now(),
        api_key: call.api_key.clone(),
        total,
        errors,
        cancelled: None,
        finished: None,
    };
    let s = &call.live.scenario;
    let v = job.object(s.batch_complete_after, s.batch_expire_after);
    app.batches
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(job.id.clone(), job);
    call.json(&v)
}

/// Run a batch's lines against the mock itself and write its output and error files.
async fn run_lines(app: &Arc<AppState>, job: &Job) -> Finished {
    let text = app
        .files
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&job.input_file_id)
        .map(|f| f.bytes.clone())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).into_owned();
    let mut out = Vec::new();
    let mut errs = Vec::new();
    let (mut completed, mut failed) = (0u64, 0u64);
    let mut usage = BatchUsage::default();
    // Built once: each line is one request through it.
    let router = crate::router(app.clone());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let custom_id = v.get("custom_id").cloned().unwrap_or(Value::Null);
        let body = v.get("body").cloned().unwrap_or(Value::Null);
        let req = http::Request::builder()
            .method(http::Method::POST)
            .uri(job.endpoint.as_str())
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", job.api_key),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(INTERNAL_BATCH, format!("{:016x}", app.salt))
            .body(Body::from(body.to_string()));
        let Ok(req) = req else {
            continue;
        };
        let resp = match router.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = resp.status().as_u16();
        let request_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let id = format!(
            "batch_req_{:016x}",
            hash64(&[job.id.as_bytes(), line.as_bytes()])
        );
        let record = json!({
            "id": id,
            "custom_id": custom_id,
            "response": {"status_code": status, "request_id": request_id, "body": answer},
            "error": null,
        });
        if (200..300).contains(&status) {
            completed += 1;
            usage.add(&record["response"]["body"]);
            out.push(record.to_string());
        } else {
            failed += 1;
            errs.push(record.to_string());
        }
    }
    let file = |lines: Vec<String>, kind: &str| {
        (!lines.is_empty()).then(|| {
            let id = format!(
                "file-{:024x}",
                u128::from(hash64(&[job.id.as_bytes(), kind.as_bytes()]))
            );
            let mut bytes = lines.join("\n");
            bytes.push('\n');
            crate::files::store(
                app,
                id.clone(),
                format!("{}_{kind}.jsonl", job.id),
                "batch_output",
                Bytes::from(bytes),
            );
            id
        })
    };
    Finished {
        output_file_id: file(out, "output"),
        error_file_id: file(errs, "error"),
        completed,
        failed,
        usage,
    }
}

/// The batch as it stands now, running its lines first if its time has come.
async fn current(
    app: &Arc<AppState>,
    id: &str,
    complete_after: Duration,
    expire_after: Option<Duration>,
) -> Option<Job> {
    let job = app
        .batches
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(id)
        .cloned()?;
    let due = job.errors.is_empty()
        && job.cancelled.is_none()
        && job.finished.is_none()
        && job.created.elapsed() >= complete_after
        && expire_after.is_none_or(|e| complete_after < e);
    if !due {
        return Some(job);
    }
    let finished = run_lines(app, &job).await;
    let mut jobs = app.batches.lock().unwrap_or_else(|p| p.into_inner());
    let j = jobs.get_mut(id)?;
    if j.finished.is_none() {
        j.finished = Some(finished);
    }
    Some(j.clone())
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
    let (after, expire) = clock(&call);
    match current(&app, &id, after, expire).await {
        Some(job) => call.json(&job.object(after, expire)),
        None => batch_not_found(&mut call, &id),
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct ListQuery {
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
    let (after, expire) = clock(&call);
    let ids: Vec<String> = app
        .batches
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .cloned()
        .collect();
    let mut jobs = Vec::new();
    for id in ids {
        if let Some(j) = current(&app, &id, after, expire).await {
            jobs.push(j);
        }
    }
    jobs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let v = list_page(
        &jobs,
        |j| &j.id,
        |j| j.object(after, expire),
        q.after.as_deref(),
        limit,
    );
    call.json(&v)
}

pub async fn cancel(
    State(app): State<Arc<AppState>>,
    kill: Option<Extension<ConnKill>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut call = match Call::begin_with(&app, &headers, kill).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (after, expire) = clock(&call);
    let job = {
        let mut jobs = app.batches.lock().unwrap_or_else(|p| p.into_inner());
        jobs.get_mut(&id).map(|j| {
            let st = j.status(after, expire);
            if matches!(st, "validating" | "in_progress" | "finalizing") {
                j.cancelled = Some(Instant::now());
                Ok(j.clone())
            } else {
                Err(st)
            }
        })
    };
    match job {
        Some(Ok(j)) => call.json(&j.object(after, expire)),
        Some(Err(st)) => call.fail(
            StatusCode::CONFLICT,
            format!("Cannot cancel a batch with status '{st}'."),
            "invalid_request_error",
            None,
            None,
        ),
        None => batch_not_found(&mut call, &id),
    }
}
