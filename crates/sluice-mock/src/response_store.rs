//! Stored Responses API answers (`store`, the default): `GET /v1/responses/{id}`,
//! `DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`, and the conversation a
//! later request continues with `previous_response_id`. Kept in memory, the most recent
//! [`MAX_STORED`] (the real service keeps them 30 days); an answer with `store: false`, or one
//! deleted, is "not found" to all of these, as upstream.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use serde_json::{json, Value};

use crate::api::{list_page, Call};
use crate::server::ConnKill;
use crate::AppState;

/// How many answers are kept; the oldest goes first.
pub const MAX_STORED: usize = 10_000;

/// One stored answer.
#[derive(Debug)]
pub struct Stored {
    /// The final response object, as it was answered.
    pub response: Value,
    /// Its input items, with ids, for `input_items`.
    pub input_items: Vec<Value>,
    /// Every turn up to and including this answer (without `instructions`), as messages.
    pub conversation: Arc<Vec<Value>>,
}

#[derive(Debug, Default)]
pub struct Store {
    order: VecDeque<String>,
    by_id: HashMap<String, Stored>,
}

impl Store {
    pub fn put(&mut self, s: Stored) {
        let Some(id) = s
            .response
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return;
        };
        if self.by_id.insert(id.clone(), s).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > MAX_STORED {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }

    fn remove(&mut self, id: &str) -> bool {
        let gone = self.by_id.remove(id).is_some();
        if gone {
            self.order.retain(|x| x != id);
        }
        gone
    }
}

impl AppState {
    pub(crate) fn response_store(&self) -> StoreHandle<'_> {
        StoreHandle(&self.responses)
    }
}

/// The store behind its lock (never held across an await).
pub(crate) struct StoreHandle<'a>(&'a std::sync::Mutex<Store>);

impl StoreHandle<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn put(&self, s: Stored) {
        self.lock().put(s);
    }

    /// The conversation `previous_response_id = id` continues.
    pub fn conversation(&self, id: &str) -> Option<Arc<Vec<Value>>> {
        self.lock().by_id.get(id).map(|s| s.conversation.clone())
    }

    fn response(&self, id: &str) -> Option<Value> {
        self.lock().by_id.get(id).map(|s| s.response.clone())
    }

    fn input_items(&self, id: &str) -> Option<Vec<Value>> {
        self.lock().by_id.get(id).map(|s| s.input_items.clone())
    }
}

fn not_found(call: &mut Call, id: &str) -> Response {
    call.fail(
        StatusCode::NOT_FOUND,
        format!("Response with id '{id}' not found."),
        "invalid_request_error",
        None,
        None,
    )
}

/// `GET /v1/responses/{id}`.
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
    match app.response_store().response(&id) {
        Some(v) => call.json(&v),
        None => not_found(&mut call, &id),
    }
}

/// `DELETE /v1/responses/{id}`.
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
    if app.response_store().lock().remove(&id) {
        call.json(&json!({"id": id, "object": "response", "deleted": true}))
    } else {
        not_found(&mut call, &id)
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct ItemsQuery {
    limit: Option<usize>,
    order: Option<String>,
    after: Option<String>,
}

/// `GET /v1/responses/{id}/input_items`: newest first unless `order=asc`, 20 a page (1–100).
pub async fn input_items(
    State(app): State<Arc<AppState>>,
    kill: Option<Extension<ConnKill>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<ItemsQuery>,
) -> Response {
    let mut call = match Call::begin_with(&app, &headers, kill).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return call.bad(crate::errors::BadField::invalid(
            "limit",
            format!("Invalid 'limit': integer below minimum value. Expected a value between 1 and 100, but got {limit} instead."),
        ));
    }
    let Some(mut items) = app.response_store().input_items(&id) else {
        return not_found(&mut call, &id);
    };
    match q.order.as_deref() {
        None | Some("desc") => items.reverse(),
        Some("asc") => {}
        Some(o) => {
            return call.bad(crate::errors::BadField::invalid(
                "order",
                format!(
                    "Invalid value for 'order': '{o}'. Supported values are: 'asc' and 'desc'."
                ),
            ))
        }
    }
    let id_of = |v: &Value| {
        v.get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let ids: Vec<String> = items.iter().map(id_of).collect();
    let paired: Vec<(String, Value)> = ids.into_iter().zip(items).collect();
    let page = list_page(
        &paired,
        |(i, _)| i.as_str(),
        |(_, v)| v.clone(),
        q.after.as_deref(),
        limit,
    );
    call.json(&page)
}
