//! OpenAI's error shape, `{"error":{"message","type","param","code"}}`, and the specific errors
//! the real service returns, worded as it words them.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A 4xx/5xx in OpenAI's JSON shape.
pub fn openai_error(
    status: StatusCode,
    message: impl Into<String>,
    ty: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    let body = json!({"error": {
        "message": message.into(),
        "type": ty,
        "param": param,
        "code": code,
    }});
    (status, axum::Json(body)).into_response()
}

/// A 400 `invalid_request_error` about one field.
#[derive(Debug, Clone)]
pub struct BadField {
    pub param: String,
    pub message: String,
    pub code: &'static str,
}

impl BadField {
    pub fn missing(param: &str) -> Self {
        BadField {
            param: param.to_string(),
            message: format!("Missing required parameter: '{param}'."),
            code: "missing_required_parameter",
        }
    }

    pub fn wrong_type(param: &str, expected: &str, got: &serde_json::Value) -> Self {
        BadField {
            param: param.to_string(),
            message: format!(
                "Invalid type for '{param}': expected {expected}, but got {} instead.",
                json_type(got)
            ),
            code: "invalid_type",
        }
    }

    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        BadField {
            param: param.to_string(),
            message: message.into(),
            code: "invalid_value",
        }
    }

    pub fn into_response(self) -> Response {
        openai_error(
            StatusCode::BAD_REQUEST,
            self.message,
            "invalid_request_error",
            Some(&self.param),
            Some(self.code),
        )
    }
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(n) if n.is_f64() => "a decimal",
        serde_json::Value::Number(_) => "an integer",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

pub fn server_error() -> Response {
    openai_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
        None,
    )
}

/// A 502 as a load balancer sends it: HTML, not JSON.
pub fn bad_gateway() -> Response {
    let mut r = (
        StatusCode::BAD_GATEWAY,
        "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n",
    )
        .into_response();
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html"),
    );
    r
}

pub fn overloaded() -> Response {
    openai_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "The engine is currently overloaded, please try again later.",
        "server_error",
        None,
        Some("overloaded"),
    )
}

pub fn model_not_found(model: &str) -> Response {
    openai_error(
        StatusCode::NOT_FOUND,
        format!("The model `{model}` does not exist or you do not have access to it."),
        "invalid_request_error",
        None,
        Some("model_not_found"),
    )
}
