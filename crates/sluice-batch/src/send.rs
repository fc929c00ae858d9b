//! Pass 2 of a job, one line at a time: a request line becomes a [`Call`] on the engine, sent in
//! its own task under the job's window, and its answer or error goes to the writer as a record.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice::admission::estimate;
use sluice::{Call, Engine, ErrorKind, RequestOptions};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinSet;

use crate::progress::Progress;
use crate::summary::Tally;
use crate::writer::Record;
use crate::{line_record, record_id, At, Stops};

/// What every line's task shares: the engine, the writer, the counts, and the flags that stop
/// the job.
pub(crate) struct Sender {
    pub engine: Engine,
    pub tx: mpsc::Sender<Record>,
    pub tally: Arc<Tally>,
    pub progress: Progress,
    /// The reason the upstream refused the whole job, once known.
    pub fatal: Arc<Mutex<Option<String>>>,
    /// Set when nothing more should be sent.
    pub fatal_flag: Arc<AtomicBool>,
    /// A spending budget of the engine refused a line.
    pub engine_budget: Arc<AtomicBool>,
    /// The input's content hash: records' ids and idempotency keys are made from it.
    pub content_hash: u128,
    pub job: String,
    pub max_attempts: u32,
}

impl Sender {
    /// The engine call for request line `line`: `body` as it is in the file, `value` parsed
    /// from it, `url` as the line names it.
    pub fn call(&self, line: u32, url: &str, body: &str, value: &serde_json::Value) -> Call {
        let model = value.get("model").and_then(|m| m.as_str()).unwrap_or("");
        let path = url.trim_start_matches("/v1");
        Call {
            method: http::Method::POST,
            path: path.to_string(),
            body: Some(Bytes::copy_from_slice(body.as_bytes())),
            endpoint: endpoint_label(path),
            model: Some(model.to_string()),
            estimate: Some(estimate::estimate(path, value)),
            options: RequestOptions {
                // The same line of the same input is the same request on every run.
                idempotency_key: Some(format!(
                    "sluice-batch-{:016x}-{line}",
                    self.content_hash as u64
                )),
                timeout: None,
                max_attempts: Some(self.max_attempts),
                spend: sluice::spend::SpendTags {
                    key: None,
                    job: Some(self.job.clone()),
                },
                ..RequestOptions::default()
            },
        }
    }

    /// Send `call` in its own task, holding `permit` (a place in the job's window) until the
    /// line's record is handed to the writer.
    pub fn spawn(
        &self,
        tasks: &mut JoinSet<()>,
        permit: OwnedSemaphorePermit,
        call: Call,
        at: At,
        custom_id: String,
    ) {
        let engine = self.engine.clone();
        let tx = self.tx.clone();
        let tally = self.tally.clone();
        let fatal = self.fatal.clone();
        let fatal_flag = self.fatal_flag.clone();
        let engine_budget = self.engine_budget.clone();
        let progress = self.progress.clone();
        let rid = record_id(self.content_hash, at.line);
        tasks.spawn(async move {
            let _permit = permit;
            let t0 = Instant::now();
            let result = send_patiently(&engine, call, &fatal_flag).await;
            let stops = Stops {
                fatal: &fatal,
                fatal_flag: &fatal_flag,
                engine_budget: &engine_budget,
            };
            let msg = line_record(result, at, &rid, &custom_id, t0.elapsed(), &tally, &stops);
            progress.tick();
            if let Some(m) = msg {
                let _ = tx.send(m).await;
            }
        });
        // Reap finished tasks as we go, so the set stays the size of the window.
        while tasks.try_join_next().is_some() {}
    }
}

/// Let the requests in flight finish — within `grace` once the job is `stopping` (those still
/// running then are abandoned: their lines stay pending and are sent again on resume).
pub(crate) async fn drain(tasks: &mut JoinSet<()>, stopping: bool, grace: Duration) {
    if !stopping {
        while tasks.join_next().await.is_some() {}
        return;
    }
    let abandoned = tokio::select! {
        _ = async { while tasks.join_next().await.is_some() {} } => false,
        _ = tokio::time::sleep(grace) => true,
    };
    if abandoned {
        tracing::warn!(
            "grace period over: abandoning requests still in flight (they are resent on resume)"
        );
        tasks.abort_all();
    }
}

/// Send, waiting out admission's "not now" (`Overloaded`) instead of failing the line: in a
/// batch, waiting is always better than losing work.
async fn send_patiently(
    engine: &Engine,
    call: Call,
    fatal: &AtomicBool,
) -> Result<sluice::Reply, sluice::Error> {
    loop {
        match engine.send(call.clone()).await {
            // sluice's own queue is full, or the upstream's breaker is open: the line waits
            // (the breaker's probe decides when the upstream is back), it does not fail.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Overloaded | ErrorKind::UpstreamUnavailable
                ) && !fatal.load(Ordering::Acquire) =>
            {
                let wait = e
                    .retry_after()
                    .unwrap_or(Duration::from_secs(1))
                    .min(Duration::from_secs(30));
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/chat/completions" => "chat",
        "/embeddings" => "embeddings",
        "/completions" => "completions",
        "/responses" => "responses",
        "/moderations" => "moderations",
        _ => "other",
    }
}
