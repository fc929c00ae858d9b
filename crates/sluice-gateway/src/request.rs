//! A request's path through the gateway, as named phases: parse (the `/v1` path and the body)
//! → route ([`crate::route::route`]) → authorize ([`crate::auth`], [`crate::route::authorize`])
//! → admit (the caller's own limits) → forward through the engine (unary or stream,
//! [`crate::forward`]) → log ([`crate::log`]).

use super::*;

/// `Idempotency-Key`, named once (a lookup by a string parses the name each time).
const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");

/// Uploads larger than this (or of unknown length) are streamed upstream, not held in memory.
pub(crate) const STREAM_UPLOADS_ABOVE: u64 = 8 * 1024 * 1024;

/// The endpoint label of an operation whose body is a model request (estimated for admission,
/// model required and checked, sent through the model policy); `None` for the others.
pub(crate) fn model_endpoint(op: &sluice::routes::Op) -> Option<&'static str> {
    if op.method != Method::POST {
        return None;
    }
    match (op.endpoint(), op.billing) {
        ("other" | "models", sluice::routes::Billing::Tokens) => Some("other"),
        ("other" | "models", _) => None,
        (e, _) => Some(e),
    }
}

/// A body read whole (trailers skipped). One that arrives in one piece — a request's JSON,
/// nearly always — is returned as it came: no list of pieces (`BodyExt::collect` makes one for
/// every body) and no copy.
async fn whole<B>(body: B) -> Result<Bytes, B::Error>
where
    B: http_body::Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut pieces = sluice::Pieces::default();
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        if let Ok(data) = frame?.into_data() {
            pieces.push(data);
        }
    }
    Ok(pieces.whole())
}

/// Every `/v1/*` request.
pub(crate) async fn api(
    app: Arc<AppState>,
    peer: SocketAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: hyper::body::Incoming,
) -> Response {
    let started = Instant::now();
    let st = app.live();
    let Some(path) = uri
        .path()
        .strip_prefix("/v1")
        .filter(|p| p.starts_with('/'))
    else {
        return openai_error(
            StatusCode::NOT_FOUND,
            &format!("Invalid URL ({method} {})", uri.path()),
            "invalid_request_error",
            None,
            None,
        );
    };
    let caller = match authenticate(&st.cfg, &headers, peer) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let op = match route::route(&st.cfg.routes, &method, path, uri.path()) {
        Ok(op) => op,
        Err(r) => return r,
    };
    let multipart = route::is_multipart(
        headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let too_large = || {
        openai_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "Request body too large: the limit is {} bytes.",
                st.cfg.max_body_bytes
            ),
            "invalid_request_error",
            None,
            None,
        )
    };
    let length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|n| n > st.cfg.max_body_bytes as u64) {
        return too_large();
    }
    // A large upload (multipart, or a body sluice never reads) goes upstream as it arrives
    // instead of being held in memory: sent once, not retried.
    let upload = (multipart || op.body == sluice::routes::Body::Any)
        && length.is_none_or(|n| n > STREAM_UPLOADS_ABOVE);
    let mut streamed = None;
    let limited = http_body_util::Limited::new(body, st.cfg.max_body_bytes);
    let body = if upload {
        streamed = Some(sluice::SharedUpload::new(
            http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_err(
                limited,
                |e| -> sluice::BoxError { e },
            )),
        ));
        None
    } else {
        Some(limited)
    };
    // A body that never ends (or trickles) is not waited on for good.
    let read = async {
        match body {
            Some(b) => whole(b).await,
            None => Ok(Bytes::new()),
        }
    };
    let bytes = match sluice::within(read, || st.cfg.server.body_timeout).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return too_large(),
        Err(_) => {
            return openai_error(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "The request body did not arrive within {}s.",
                    st.cfg.server.body_timeout.as_secs_f64()
                ),
                "invalid_request_error",
                Some("body_timeout"),
                None,
            )
        }
    };
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut call = Call {
        method: method.clone(),
        path: path_and_query,
        body: (!bytes.is_empty()).then(|| bytes.clone()),
        endpoint: "other",
        model: None,
        estimate: None,
        options: RequestOptions {
            idempotency_key: headers
                .get(IDEMPOTENCY_KEY)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            // As they came: the engine leaves out hop-by-hop headers, credentials and the
            // like as it builds each attempt's (no copy of the map here).
            headers,
            max_attempts: streamed.is_some().then_some(1),
            upload: streamed,
            ..RequestOptions::default()
        },
    };
    let mut strip_usage = false;
    let json_body = !multipart
        && !bytes.is_empty()
        && matches!(
            op.body,
            sluice::routes::Body::Json | sluice::routes::Body::JsonOrMultipart
        );
    // Read in place: the few fields looked at below borrow from `bytes`, which go upstream
    // as they came.
    let mut value: Option<JsonView> = None;
    if json_body || model_endpoint(op).is_some() {
        value = Some(match JsonView::parse(&bytes) {
            Ok(v @ JsonView::Object(_)) => v,
            Ok(_) => {
                return openai_error(
                    StatusCode::BAD_REQUEST,
                    "Invalid body: expected a JSON object.",
                    "invalid_request_error",
                    None,
                    None,
                )
            }
            Err(e) => {
                return openai_error(
                    StatusCode::BAD_REQUEST,
                    &format!("We could not parse the JSON body of your request: {e}"),
                    "invalid_request_error",
                    None,
                    None,
                )
            }
        });
    }
    let named = route::named(op, value.as_ref(), path);
    let policy = st.engine.models().clone();
    if let Err(r) = route::authorize(&st.cfg, caller.as_ref(), op, &named, multipart, &|m| {
        policy.resolve_alias(m).to_string()
    }) {
        return r;
    }
    // Every route that can stream is streamed when asked (named-event routes too: images,
    // assistants runs), not buffered into one answer.
    let stream = named.stream && op.stream != sluice::routes::Stream::Never;
    let list_models = op.method == Method::GET && op.path == "/models";
    if let (Some(endpoint), Some(value)) = (model_endpoint(op), value.take()) {
        let model = match value.get("model") {
            Some(JsonView::String(m)) => Some(m.to_string()),
            None if endpoint == "moderations" => None,
            None => {
                return openai_error(
                    StatusCode::BAD_REQUEST,
                    "Missing required parameter: 'model'.",
                    "invalid_request_error",
                    Some("missing_required_parameter"),
                    Some("model"),
                )
            }
            Some(_) => {
                return openai_error(
                    StatusCode::BAD_REQUEST,
                    "Invalid type for 'model': expected a string.",
                    "invalid_request_error",
                    Some("invalid_type"),
                    Some("model"),
                )
            }
        };
        if stream && matches!(endpoint, "chat" | "completions") {
            // Ask for usage so the gateway can account tokens; hide it again if the caller
            // did not ask.
            let asked = value
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(JsonView::as_bool)
                == Some(true);
            if !asked {
                strip_usage = true;
                // The one rewrite of a body: through a `Value`, as the body is read again.
                if let Ok(mut whole) = serde_json::from_slice::<Value>(&bytes) {
                    if let Some(obj) = whole.as_object_mut() {
                        obj.insert("stream_options".into(), json!({"include_usage": true}));
                    }
                    call.body = serde_json::to_vec(&whole).ok().map(Bytes::from);
                }
            }
        }
        call.endpoint = endpoint;
        call.estimate = Some(estimate::estimate(path, &value));
        call.model = model;
    }
    call.options.spend = SpendTags {
        key: caller.as_ref().map(|c| c.name.clone()),
        job: None,
    };
    let mut log = RequestLog::new(
        caller.as_ref().map_or("loopback", |c| c.name.as_str()),
        call.model.as_deref(),
        started,
    );
    // The caller's own limits, before anything goes upstream.
    let mut caller_ticket = None;
    if let Some(vk) = caller
        .as_ref()
        .filter(|v| v.rpm.is_some() || v.tpm.is_some())
    {
        let est = call.estimate.unwrap_or_default();
        let deadline = tokio::time::Instant::now() + st.cfg.timeouts.total;
        match st.callers.admit(&vk.name, &vk.name, est, deadline).await {
            Ok(t) => caller_ticket = Some(t),
            Err(e) => {
                log.status = 429;
                log.failed(&e);
                return caller_limited(vk, &e);
            }
        }
    }
    // The engine's future is held inline: it boxes the large part of itself (see
    // `Engine::send`), so what is left is a few hundred bytes.
    if stream {
        return match st.engine.send_stream(call).await {
            Ok(reply) => {
                log.answered(&reply.meta);
                stream_response(reply, strip_usage, log, caller_ticket)
            }
            Err(e) => log.failed(&e),
        };
    }
    match st.engine.send(call).await {
        Ok(reply) => {
            log.answered(&reply.meta);
            if let Some(u) = reply.facts.usage.as_ref() {
                if let Some(mut t) = caller_ticket.take() {
                    t.settle_usage(u);
                }
                log.usage(u);
            }
            log.cost = reply.meta.cost_nanos;
            log.emit(None);
            let body = match &caller {
                Some(vk) if list_models && !vk.models.is_empty() => {
                    visible_models(&reply.body, vk, &st.cfg, &policy)
                }
                _ => reply.body,
            };
            let mut resp = Response::new(Body::from(body));
            *resp.status_mut() = StatusCode::from_u16(reply.meta.status).unwrap_or(StatusCode::OK);
            *resp.headers_mut() = passed_response_headers(reply.headers);
            let h = resp.headers_mut();
            sluice_headers(h, &reply.meta);
            if let Some(c) = reply.meta.cost_nanos {
                if let Ok(v) = HeaderValue::try_from(dollars_exact(c)) {
                    h.insert(X_SLUICE_COST_USD, v);
                }
            }
            resp
        }
        Err(e) => log.failed(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of these frames, with trailers between them.
    fn body(
        parts: &[&'static str],
    ) -> impl http_body::Body<Data = Bytes, Error = std::convert::Infallible> {
        let mut frames = Vec::new();
        for p in parts {
            frames.push(Ok(http_body::Frame::data(Bytes::from_static(p.as_bytes()))));
            frames.push(Ok(http_body::Frame::trailers(HeaderMap::new())));
        }
        http_body_util::StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_body_is_read_whole_in_one_piece_or_many() {
        for parts in [
            &[][..],
            &[""],
            &["{\"model\":\"m\"}"],
            &["{\"mo", "del\":", "\"m\"}"],
            &["", "{}", ""],
        ] {
            let got = whole(body(parts)).await.unwrap();
            assert_eq!(got, parts.concat().as_bytes(), "{parts:?}");
        }
        // One piece comes back as it came, not copied.
        let one = Bytes::from_static(b"{\"model\":\"m\"}");
        let got = whole(http_body_util::Full::new(one.clone())).await.unwrap();
        assert_eq!(got.as_ptr(), one.as_ptr());
    }
}
