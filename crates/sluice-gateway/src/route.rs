//! The route and authorize phases: which operation a request is, and whether this caller may
//! make it — decided before a byte goes upstream.
//!
//! Deny by default: a path that is not canonical is a 400, a path the route table does not
//! know a 404, a method it does not list a 405 (`TRACE` and `CONNECT` always). A caller whose
//! key has a model list or a budget (its own or the gateway's) may use a route that names a
//! model only for its models, and a route sluice cannot price only when its key names the
//! route's family (`routes = ["files", "batches"]`); a caller without limits may use any route
//! in the table. `stream: true` on a route that cannot stream is a 400.

use std::borrow::Cow;

use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;
use sluice::routes::{Billing, Body, ModelAt, Op, RouteError, RouteTable, Stream};
use sluice::wire::JsonView;

use crate::config::{GatewayConfig, VirtualKey};
use crate::openai_error;

/// The operation for `method` on `path` (below `/v1`), or the answer that refuses it.
pub(crate) fn route<'t>(
    table: &'t RouteTable,
    method: &Method,
    path: &str,
    full: &str,
) -> Result<&'t Op, Response> {
    table.find(method, path).map_err(|e| match e {
        RouteError::NotCanonical(why) => openai_error(
            StatusCode::BAD_REQUEST,
            &format!("Invalid URL ({method} {full}): the path is not canonical ({why})."),
            "invalid_request_error",
            Some("invalid_path"),
            None,
        ),
        RouteError::NotFound => openai_error(
            StatusCode::NOT_FOUND,
            &format!("Invalid URL ({method} {full})"),
            "invalid_request_error",
            Some("unknown_url"),
            None,
        ),
        RouteError::MethodNotAllowed(allowed) => {
            let list: Vec<&str> = allowed.iter().map(Method::as_str).collect();
            let mut r = openai_error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!(
                    "Method {method} is not allowed on {full} (allowed: {}).",
                    if list.is_empty() {
                        "none".to_string()
                    } else {
                        list.join(", ")
                    }
                ),
                "invalid_request_error",
                Some("method_not_allowed"),
                None,
            );
            if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                r.headers_mut().insert(http::header::ALLOW, v);
            }
            r
        }
    })
}

/// Whether a caller is limited: a model list or a budget (its own or the gateway's).
fn limited(cfg: &GatewayConfig, caller: Option<&VirtualKey>) -> bool {
    !cfg.spend.budgets.is_empty()
        || caller.is_some_and(|vk| !vk.models.is_empty() || !vk.budgets.is_empty())
}

/// What the request says of itself, read once: its model (borrowed from the body where it is
/// written there) and whether it asks to stream.
#[derive(Debug, Default)]
pub(crate) struct Named<'a> {
    pub model: Option<Cow<'a, str>>,
    pub stream: bool,
}

/// Whether the body is a multipart form (by its content type).
pub(crate) fn is_multipart(content_type: Option<&str>) -> bool {
    // The prefix compared in place, without a lower-case copy of the whole header.
    content_type.is_some_and(|c| {
        c.trim_start()
            .as_bytes()
            .get(..10)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"multipart/"))
    })
}

/// Read `model` and `stream` from a JSON body where the route has one (a parsed value when the
/// caller already has it).
pub(crate) fn named<'a>(op: &Op, body: Option<&'a JsonView<'_>>, path: &str) -> Named<'a> {
    let model = match op.model {
        ModelAt::Body => body
            .and_then(|v| v.get("model"))
            .and_then(JsonView::as_str)
            .map(Cow::Borrowed),
        ModelAt::Path => path
            .rsplit('/')
            .next()
            .map(|s| Cow::Owned(percent_decode(s))),
        ModelAt::None => None,
    };
    let stream = body
        .and_then(|v| v.get("stream"))
        .and_then(JsonView::as_bool)
        == Some(true);
    Named { model, stream }
}

/// A path segment decoded (`ft%3Agpt-4o` → `ft:gpt-4o`); an escape that is not one stays as
/// written.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// May this caller make this request? `resolve` maps an alias to the model it stands for.
pub(crate) fn authorize(
    cfg: &GatewayConfig,
    caller: Option<&VirtualKey>,
    op: &Op,
    named: &Named<'_>,
    multipart: bool,
    resolve: &dyn Fn(&str) -> String,
) -> Result<(), Response> {
    if named.stream && op.stream == Stream::Never {
        return Err(openai_error(
            StatusCode::BAD_REQUEST,
            &format!(
                "This endpoint ({} {}) does not support streaming: `stream` must be false or absent.",
                op.method,
                op.path
            ),
            "invalid_request_error",
            Some("unsupported_parameter"),
            Some("stream"),
        ));
    }
    if !limited(cfg, caller) {
        return Ok(());
    }
    let name = caller.map_or("loopback", |c| c.name.as_str());
    let allowed_family = caller.is_some_and(|vk| vk.routes.contains(&op.family));
    if op.billing == Billing::Other && !allowed_family {
        return Err(openai_error(
            StatusCode::FORBIDDEN,
            &format!(
                "The key '{name}' may not use {} {}: sluice cannot price this route, and the key has a model list or a budget. Allow it with routes = [\"{}\"] in the key's configuration.",
                op.method, op.path, op.family
            ),
            "invalid_request_error",
            Some("route_not_allowed"),
            None,
        ));
    }
    let Some(vk) = caller.filter(|vk| !vk.models.is_empty()) else {
        return Ok(());
    };
    if op.model == ModelAt::None {
        return Ok(());
    }
    let readable = !(multipart && matches!(op.body, Body::Multipart | Body::JsonOrMultipart));
    match (&named.model, readable) {
        (Some(m), _) => {
            let resolved = resolve(m);
            if vk.models.iter().any(|a| a == m || *a == resolved) {
                Ok(())
            } else if op.model == ModelAt::Path && op.method == Method::GET {
                // As the upstream answers for a model the key cannot see.
                Err(openai_error(
                    StatusCode::NOT_FOUND,
                    &format!("The model `{m}` does not exist or you do not have access to it."),
                    "invalid_request_error",
                    Some("model_not_found"),
                    None,
                ))
            } else {
                Err(openai_error(
                    StatusCode::FORBIDDEN,
                    &format!("The key '{}' may not use the model `{m}`.", vk.name),
                    "invalid_request_error",
                    Some("model_not_allowed"),
                    Some("model"),
                ))
            }
        }
        (None, false) => Err(openai_error(
            StatusCode::FORBIDDEN,
            &format!(
                "The key '{}' has a model list, and the model of a multipart request to {} cannot be checked against it.",
                vk.name, op.path
            ),
            "invalid_request_error",
            Some("model_not_allowed"),
            Some("model"),
        )),
        // No model named where one may be: the upstream's default or its error.
        (None, true) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multipart_body_is_told_by_its_content_type_in_any_case() {
        for yes in [
            "multipart/form-data; boundary=x",
            "  Multipart/Form-Data",
            "MULTIPART/mixed",
        ] {
            assert!(is_multipart(Some(yes)), "{yes}");
        }
        for no in ["application/json", "multipart", "multipart-form", "", " é"] {
            assert!(!is_multipart(Some(no)), "{no}");
        }
        assert!(!is_multipart(None));
    }

    #[test]
    fn path_models_are_decoded() {
        assert_eq!(percent_decode("ft%3Agpt-4o%3Ax"), "ft:gpt-4o:x");
        assert_eq!(percent_decode("gpt-4o"), "gpt-4o");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("a%"), "a%");
        assert_eq!(percent_decode("a%zz%41"), "a%zzA");
    }
}
