//! Azure OpenAI's URL shape and auth, in front of the same endpoints:
//! `POST /openai/deployments/{deployment}/{chat/completions|completions|embeddings}?api-version=…`,
//! `POST /openai/responses?api-version=…`, or the v1 surface `POST /openai/v1/{operation}` —
//! the last two with the deployment in the body's `model` (a Responses answer echoes it there,
//! unless `[azure] responses_model = "model"`),
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
    let (version, auth) = match versioned(query.as_deref(), &mut headers) {
        Ok(v) => v,
        Err(r) => return r,
    };
    app.stats.azure(format!(
        "{deployment} {operation} api-version={version} auth={auth}"
    ));
    let live = app.live();
    let Some(model) = live.scenario.azure_deployments.get(&deployment).cloned() else {
        return deployment_not_found();
    };
    drop(live);
    // The deployment decides the model: whatever the body says is replaced.
    let body = match with_model(body, &mut headers, |_| Some(model.clone())).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    operate(State(app), kill, &operation, headers, body, None).await
}

/// Run `operation`; `named` is the deployment the body named (the Responses API echoes it as
/// the answer's `model`, unless the scenario says it names the model).
async fn operate(
    state: State<Arc<AppState>>,
    kill: Option<Extension<ConnKill>>,
    operation: &str,
    headers: HeaderMap,
    body: Body,
    named: Option<String>,
) -> Response {
    match (operation, named) {
        ("chat/completions", _) => crate::chat::handle(state, kill, headers, body).await,
        ("completions", _) => crate::completions::handle(state, kill, headers, body).await,
        ("embeddings", _) => crate::embeddings::handle(state, kill, headers, body).await,
        ("responses", Some(named)) => {
            let echo = state.live().scenario.azure_responses_deployment;
            crate::responses::answer_as(state, kill, headers, body, echo.then_some(named)).await
        }
        _ => azure_error(StatusCode::NOT_FOUND, "404", "Resource not found"),
    }
}

/// `POST /openai/responses?api-version=…`: Azure's Responses API outside the v1 surface; the
/// body's `model` names the deployment, as on the v1 surface.
pub async fn responses(
    State(app): State<Arc<AppState>>,
    kill: Option<Extension<ConnKill>>,
    RawQuery(query): RawQuery,
    mut headers: HeaderMap,
    body: Body,
) -> Response {
    let (version, auth) = match versioned(query.as_deref(), &mut headers) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (body, named) = match by_body_model(&app, body, &mut headers).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    app.stats.azure(format!(
        "{named} responses api-version={version} auth={auth}"
    ));
    operate(State(app), kill, "responses", headers, body, Some(named)).await
}

/// The body with its deployment (`model`) replaced by the model it runs, and the deployment.
async fn by_body_model(
    app: &Arc<AppState>,
    body: Body,
    headers: &mut HeaderMap,
) -> Result<(Body, String), Response> {
    let deployments = app.live().scenario.azure_deployments.clone();
    let mut named = String::new();
    let body = with_model(body, headers, |m| {
        named = m.unwrap_or("").to_string();
        deployments.get(m?).cloned()
    })
    .await?;
    Ok((body, named))
}

/// The `api-version` and the credential of a request to Azure's versioned routes; without
/// either, Azure's 404 or 401.
fn versioned(
    query: Option<&str>,
    headers: &mut HeaderMap,
) -> Result<(String, &'static str), Response> {
    let Some(version) = api_version(query).filter(|v| !v.is_empty()) else {
        return Err(azure_error(
            StatusCode::NOT_FOUND,
            "404",
            "Resource not found",
        ));
    };
    Ok((version, credential(headers)?))
}

/// The query's `api-version`, if it has one.
fn api_version(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("api-version="))
        .map(str::to_string)
}

const ACCESS_DENIED: &str = "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.";

/// Which credential the request carries: `api-key` (handed on as a bearer key to the endpoints
/// behind, which read that form) or an Entra ID bearer token; neither is a 401.
fn credential(headers: &mut HeaderMap) -> Result<&'static str, Response> {
    match headers.get("api-key").cloned() {
        Some(k) => {
            let v = HeaderValue::from_str(&format!("Bearer {}", k.to_str().unwrap_or("")))
                .map_err(|_| azure_error(StatusCode::UNAUTHORIZED, "401", ACCESS_DENIED))?;
            headers.insert(http::header::AUTHORIZATION, v);
            Ok("api-key")
        }
        None if headers.contains_key(http::header::AUTHORIZATION) => Ok("bearer"),
        None => Err(azure_error(StatusCode::UNAUTHORIZED, "401", ACCESS_DENIED)),
    }
}

fn deployment_not_found() -> Response {
    azure_error(
        StatusCode::NOT_FOUND,
        "DeploymentNotFound",
        "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.",
    )
}

/// The JSON body with its `model` replaced by what `model_for` says of the one it names
/// (`None`: that deployment does not exist).
async fn with_model(
    body: Body,
    headers: &mut HeaderMap,
    model_for: impl FnOnce(Option<&str>) -> Option<String>,
) -> Result<Body, Response> {
    let bytes = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .map_err(|_| azure_error(StatusCode::PAYLOAD_TOO_LARGE, "413", "Request too large"))?;
    let mut value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        azure_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("The request body is not valid JSON: {e}"),
        )
    })?;
    let named = value
        .get("model")
        .and_then(|m| m.as_str())
        .map(str::to_string);
    let Some(model) = model_for(named.as_deref()) else {
        return Err(deployment_not_found());
    };
    if let Some(o) = value.as_object_mut() {
        o.insert("model".into(), serde_json::Value::String(model));
    }
    headers.remove(http::header::CONTENT_LENGTH);
    Ok(Body::from(serde_json::to_vec(&value).unwrap_or_default()))
}

/// `POST /openai/v1/{*operation}`: Azure's OpenAI-shaped surface. The body's `model` names the
/// deployment; no `api-version` is needed (`preview` and `latest` are accepted, a dated one is
/// refused, as the v1 surface does not take them).
pub async fn v1(
    State(app): State<Arc<AppState>>,
    kill: Option<Extension<ConnKill>>,
    Path(operation): Path<String>,
    RawQuery(query): RawQuery,
    mut headers: HeaderMap,
    body: Body,
) -> Response {
    let version = query.as_deref().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("api-version="))
            .map(str::to_string)
    });
    if let Some(v) = version
        .as_deref()
        .filter(|v| !matches!(*v, "preview" | "latest"))
    {
        return azure_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("API version not supported: {v} (the v1 API takes no dated api-version)"),
        );
    }
    let auth = match credential(&mut headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let (body, named) = match by_body_model(&app, body, &mut headers).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    app.stats
        .azure(format!("v1 {named} {operation} auth={auth}"));
    operate(State(app), kill, &operation, headers, body, Some(named)).await
}
