//! The forward phase's answers: a unary answer as the upstream gave it (with a restricted
//! key's view of the model list), and a stream passed through event by event, framed as its
//! route frames it, with what is logged when it ends or when the caller leaves.

use super::*;

/// The upstream's model list as a key with a model list sees it: its models (by name or by
/// the model an alias stands for) and the configured aliases that stand for them.
pub(crate) fn visible_models(
    body: &Bytes,
    vk: &VirtualKey,
    cfg: &GatewayConfig,
    policy: &ModelPolicy,
) -> Bytes {
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return Bytes::from_static(br#"{"object":"list","data":[]}"#);
    };
    let allowed = |m: &str| {
        let r = policy.resolve_alias(m);
        vk.models
            .iter()
            .any(|a| a == m || a == r || policy.resolve_alias(a) == r)
    };
    let mut seen = std::collections::HashSet::new();
    if let Some(data) = v.get_mut("data").and_then(Value::as_array_mut) {
        data.retain(|m| {
            m.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| allowed(id) && seen.insert(id.to_string()))
        });
        let mut aliases: Vec<&String> = cfg.models.aliases.keys().collect();
        aliases.sort();
        for a in aliases {
            if allowed(a) && seen.insert(a.clone()) {
                data.push(
                    json!({"id": a, "object": "model", "created": 0, "owned_by": "sluice-alias"}),
                );
            }
        }
    } else {
        return Bytes::from_static(br#"{"object":"list","data":[]}"#);
    }
    serde_json::to_vec(&v).map(Bytes::from).unwrap_or_default()
}

/// A usage-only chunk (`choices: []` with a usage object), which the gateway asked for on the
/// caller's behalf.
pub(crate) fn is_usage_chunk(data: &str) -> bool {
    if !sluice::wire::has_usage_object(data) {
        return false;
    }
    serde_json::from_str::<Value>(data).is_ok_and(|v| {
        v.get("choices")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
            && v.get("usage").is_some_and(Value::is_object)
    })
}

/// A stream being passed through, with what is logged when it ends — or when the caller
/// leaves and the stream is dropped (which drops the upstream request too).
pub(crate) struct PassThrough {
    pub(crate) events: sluice::EventStream,
    pub(crate) log: RequestLog,
    pub(crate) logged: bool,
}

impl PassThrough {
    fn finish(&mut self, err: Option<&Error>) {
        if self.logged {
            return;
        }
        self.logged = true;
        if let Some(u) = self.events.usage().cloned() {
            self.log.usage(&u);
        }
        self.log.cost = self.events.cost_nanos();
        self.log.emit(err);
    }
}

impl Drop for PassThrough {
    fn drop(&mut self) {
        if !self.logged {
            // The caller went away mid-stream; dropping `events` cancels the upstream request
            // and settles its cost from what was seen.
            self.events.abandon();
            self.log.status = 499;
            self.logged = true;
            self.log.cost = self.events.cost_nanos();
            tracing::info!(target: "sluice::gateway", virtual_key = %self.log.caller, model = %self.log.model, "caller disconnected mid-stream");
            self.log.emit(None);
        }
    }
}

/// One event as the upstream sent it: its name, id and retry, then its data line by line.
pub(crate) fn sse_event(meta: &sluice::sse::EventMeta, data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 16 + meta.event.len());
    if !meta.event.is_empty() {
        out.push_str("event: ");
        out.push_str(&meta.event);
        out.push('\n');
    }
    if !meta.id.is_empty() {
        out.push_str("id: ");
        out.push_str(&meta.id);
        out.push('\n');
    }
    if let Some(r) = meta.retry {
        out.push_str(&format!("retry: {}\n", r.as_millis()));
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// Pass a stream through, event by event, with `[DONE]` at the end. An upstream failure
/// mid-stream becomes an SSE error event, which the SDKs raise as an API error.
pub(crate) fn stream_response(
    reply: sluice::StreamReply,
    strip_usage: bool,
    log: RequestLog,
    caller_ticket: Option<sluice::admission::Ticket>,
) -> Response {
    let upstream_headers = reply.headers;
    let meta = reply.meta;
    let mut events = reply.events;
    if let Some(t) = caller_ticket {
        // The caller's virtual-key reservation settles with the stream's usage.
        events.settle_with(t);
    }
    let state = PassThrough {
        events,
        log,
        logged: false,
    };
    let framing = state.events.framing();
    let s = futures_util::stream::unfold((state, false), move |(mut p, done)| async move {
        if done {
            return None;
        }
        loop {
            match p.events.next_frame().await {
                Some(Ok(sluice::sse::Item::Data(data))) => {
                    if strip_usage && is_usage_chunk(&data) {
                        continue;
                    }
                    let chunk = Bytes::from(sse_event(p.events.last_meta(), &data));
                    return Some((Ok::<_, std::convert::Infallible>(chunk), (p, false)));
                }
                // Comment lines (keep-alives) reach the caller as they came, when they came.
                Some(Ok(sluice::sse::Item::Comment(c))) => {
                    let chunk = Bytes::from(format!(":{c}\n\n"));
                    return Some((Ok(chunk), (p, false)));
                }
                Some(Err(e)) => {
                    p.finish(Some(&e));
                    let api = sluice::ApiError::new(
                        caller_message(&e),
                        "server_error",
                        Some(e.kind().as_str()),
                        None,
                    );
                    let event = if framing == sluice::routes::Stream::Responses {
                        // As the Responses API writes its own error events.
                        format!("event: error\ndata: {}\n\n", api.to_responses_event())
                    } else {
                        format!("data: {}\n\n", api.to_body())
                    };
                    return Some((Ok(Bytes::from(event)), (p, true)));
                }
                None => {
                    p.finish(None);
                    if framing == sluice::routes::Stream::Chat {
                        return Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), (p, true)));
                    }
                    // Responses and named-event streams end as the upstream ended them.
                    return None;
                }
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(s));
    // The upstream's headers arrive before the first event, as they came.
    *resp.headers_mut() = passed_response_headers(upstream_headers);
    let h = resp.headers_mut();
    if !h.contains_key(http::header::CONTENT_TYPE) {
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
    }
    if !h.contains_key(http::header::CACHE_CONTROL) {
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
    }
    sluice_headers(h, &meta);
    resp
}
