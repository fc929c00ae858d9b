//! The simulator's own control surface, under `/_mock/`: swap the scenario at run time, read or
//! reset the stats. Not part of the OpenAI API, and not authenticated (loopback test tool).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::header_str;
use crate::errors::openai_error;
use crate::{AppState, Scenario};

/// `POST /_mock/scenario` with a TOML or JSON scenario (JSON when the content type says so or
/// the body starts with `{`).
pub async fn set_scenario(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match axum::body::to_bytes(body, 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => return bad(format!("could not read the scenario: {e}")),
    };
    let text = match std::str::from_utf8(&bytes) {
        Ok(t) => t,
        Err(_) => return bad("the scenario is not UTF-8".to_string()),
    };
    let is_json = header_str(&headers, "content-type").is_some_and(|c| c.contains("json"))
        || text.trim_start().starts_with('{');
    let parsed = if is_json {
        Scenario::from_json(text)
    } else {
        Scenario::from_toml(text)
    };
    match parsed {
        Ok(s) => {
            tracing::info!("mock: scenario replaced");
            app.set_scenario(s);
            axum::Json(json!({"ok": true})).into_response()
        }
        Err(e) => bad(e.to_string()),
    }
}

fn bad(message: String) -> Response {
    openai_error(
        StatusCode::BAD_REQUEST,
        message,
        "invalid_request_error",
        None,
        None,
    )
}

pub async fn stats(State(app): State<Arc<AppState>>) -> Response {
    axum::Json(app.stats.snapshot()).into_response()
}

/// Liveness, and the benchmark's baseline: the cheapest request this server can answer.
pub async fn health() -> &'static str {
    "ok"
}

pub async fn reset(State(app): State<Arc<AppState>>) -> Response {
    app.stats.reset();
    axum::Json(json!({"ok": true})).into_response()
}

/// Anything else: the real API's 404 for an unknown URL.
pub async fn not_found(method: Method, uri: Uri) -> Response {
    openai_error(
        StatusCode::NOT_FOUND,
        format!("Invalid URL ({method} {})", uri.path()),
        "invalid_request_error",
        None,
        None,
    )
}
