//! Azure OpenAI's URL shape and auth, in front of the same endpoints:
//! `POST /openai/deployments/{deployment}/{chat/completions|completions|embeddings}?api-version=…`
//! with the key in `api-key` (or an Entra ID bearer token in `Authorization`). The deployment
//! names the model (`[azure] deployments`); a body's `model` is ignored, as Azure ignores it.
//! What Azure answers when these are wrong, by its documentation and its users' reports: no
//! `api-version` is a 404 "Resource not found", an unknown deployment a 404
//! `DeploymentNotFound`, no credential a 401 — each in Azure's error shape, with a string code.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use crate::server::ConnKill;
use crate::AppState;

fn azure_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    (status, axum::Json(body)).into_response()
}

/// `POST /openai/deployments/{deployment}/{*operation}`.
pub async fn deployment(
    State(app): State<Arc<AppState>>,
    kill: Option<Extension<ConnKill>>,
    Path((deployment, operation)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    mut headers: HeaderMap,
    body: Body,
) -> Response {
    let version = query.as_deref().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("api-version="))
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    });
    let Some(version) = version else {
        return azure_error(StatusCode::NOT_FOUND, "404", "Resource not found");
    };
    // `api-key` is the key; a bearer token is an Entra ID token. The endpoints behind read
    // the bearer form, so a key is handed on as one.
    let auth = match headers.get("api-key").cloned() {
        Some(k) => {
            let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", k.to_str().unwrap_or("")))
            else {
                return azure_error(StatusCode::UNAUTHORIZED, "401", "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.");
            };
            headers.insert(http::header::AUTHORIZATION, v);
            "api-key"
        }
        None if headers.contains_key(http::header::AUTHORIZATION) => "bearer",
        None => {
            return azure_error(StatusCode::UNAUTHORIZED, "401", "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.");
        }
    };
    app.stats.azure(format!(
        "{deployment} {operation} api-version={version} auth={auth}"
    ));
    let live = app.live();
    let Some(model) = live.scenario.azure_deployments.get(&deployment).cloned() else {
        return azure_error(
            StatusCode::NOT_FOUND,
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.",
        );
    };
    drop(live);
    // The deployment decides the model: whatever the body says is replaced.
    let bytes = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => return azure_error(StatusCode::PAYLOAD_TOO_LARGE, "413", "Request too large"),
    };
    let mut value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return azure_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("The request body is not valid JSON: {e}"),
            )
        }
    };
    if let Some(o) = value.as_object_mut() {
        o.insert("model".into(), serde_json::Value::String(model));
    }
    let body = Body::from(serde_json::to_vec(&value).unwrap_or_default());
    headers.remove(http::header::CONTENT_LENGTH);
    let state = State(app);
    match operation.as_str() {
        "chat/completions" => crate::chat::handle(state, kill, headers, body).await,
        "completions" => crate::completions::handle(state, kill, headers, body).await,
        "embeddings" => crate::embeddings::handle(state, kill, headers, body).await,
        _ => azure_error(StatusCode::NOT_FOUND, "404", "Resource not found"),
    }
}
