//! `sluice batch`: push a large file of requests (OpenAI Batch format) through an LLM API
//! without losing or duplicating one, even when killed.
//!
//! The guarantee, precisely:
//! - A request is *done* when its line is in the output file (success) or the errors file
//!   (failed for good, or an invalid input line). Each is written as one whole line; a line torn
//!   by a kill is cut off on the next run.
//! - A run first reads both files back and skips every done request, so a request already in
//!   the output is never sent again.
//! - Every other request is sent, with an `Idempotency-Key` derived from the input's content
//!   and the line, the same in every run. A request in flight when the process died is sent
//!   again with that same key (an upstream that honours idempotency keys answers it once).
//! - When a run completes, every custom_id of the input appears exactly once across the output
//!   and errors files.
//!
//! Requests go through the sluice engine (admission, retries, timeouts), so rate limits are
//! respected rather than discovered.

#![forbid(unsafe_code)]

pub mod input;
pub mod journal;
pub mod output;
mod progress;
pub use progress::suspend as suspend_progress;
mod send;
mod setup;
pub mod summary;
mod writer;

use std::collections::HashMap;
use writer::Record;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::pricing::{dollars, Nanos};
use sluice::Engine;
use sluice::ErrorKind;
use tokio::sync::{watch, Semaphore};

use input::{Line, Lines};
use journal::Journal;
pub use setup::EngineSettings;
pub use summary::Summary;
use summary::{Tally, Totals};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A bar on a terminal, log lines otherwise.
    #[default]
    Auto,
    Bar,
    Log,
    Off,
}

/// A job's settings.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    pub input: PathBuf,
    /// Default: `INPUT.out.jsonl` beside the input.
    pub output: Option<PathBuf>,
    /// Default: `INPUT.errors.jsonl` beside the input.
    pub errors: Option<PathBuf>,
    /// Default: `.sluice/` beside the input.
    pub state_dir: Option<PathBuf>,
    /// Requests in flight at most. Default 256.
    pub window: usize,
    /// The job's whole spend, across its runs, stays under this (nano-dollars): a budget of the
    /// engine's spend stage, started from what the output files show was spent before.
    pub budget: Option<Nanos>,
    /// Attempts per request (the engine's retries). Default 10.
    pub max_attempts: u32,
    pub summary_json: Option<PathBuf>,
    pub progress: ProgressMode,
    /// After a stop signal, how long in-flight requests may take to finish.
    pub grace: Duration,
    /// The job's name for the cost ledger and job budgets (`job:NAME`). Default: the input
    /// file's stem.
    pub job: String,
    /// Ask the upstream's `GET /models` at start and this often, and raise `model_unavailable`
    /// for a model of the input it does not list. Default: off here (`sluice batch run` turns
    /// it on, hourly).
    pub models_check_every: Option<Duration>,
}

impl BatchConfig {
    pub fn new(input: impl Into<PathBuf>) -> Self {
        let input: PathBuf = input.into();
        let job = input
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "batch".into());
        BatchConfig {
            job,
            input,
            output: None,
            errors: None,
            state_dir: None,
            window: 256,
            budget: None,
            max_attempts: 10,
            summary_json: None,
            progress: ProgressMode::Auto,
            grace: Duration::from_secs(30),
            models_check_every: None,
        }
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let stem = self
            .input
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "batch".into());
        self.input.with_file_name(format!("{stem}.{suffix}.jsonl"))
    }

    pub fn output_path(&self) -> PathBuf {
        self.output.clone().unwrap_or_else(|| self.sibling("out"))
    }

    pub fn errors_path(&self) -> PathBuf {
        self.errors
            .clone()
            .unwrap_or_else(|| self.sibling("errors"))
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| {
            self.input
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .join(".sluice")
        })
    }
}

/// Why a job could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Duplicates(String),
    #[error("{0}")]
    Config(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BatchError + '_ {
    move |source| BatchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every line is in the output or errors file.
    Completed,
    /// The budget would have been crossed; raise it and run again to continue.
    BudgetReached,
    /// Stopped by a signal; run again to continue.
    Interrupted,
    /// The upstream refused the job (quota, key, permission); fix it and run again.
    Stopped(String),
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::BudgetReached => "budget_reached",
            Outcome::Interrupted => "interrupted",
            Outcome::Stopped(_) => "stopped",
        }
    }
}

/// A finished run.
#[derive(Debug)]
pub struct Report {
    pub outcome: Outcome,
    pub summary: Summary,
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn record_id(content_hash: u128, line: u32) -> String {
    let h = xxhash_rust::xxh3::xxh3_64(
        &[&content_hash.to_le_bytes()[..], &line.to_le_bytes()].concat(),
    );
    format!("batch_req_{h:016x}")
}

/// The output record, with the upstream body spliced in as it came (less raw line breaks,
/// which JSON allows only as whitespace).
fn output_record(
    id: &str,
    custom_id: &str,
    status: u16,
    request_id: Option<&str>,
    body: &[u8],
) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 160);
    let rid = request_id.map_or("null".to_string(), json_str);
    let _ = write!(
        v,
        "{{\"id\":\"{id}\",\"custom_id\":{},\"response\":{{\"status_code\":{status},\"request_id\":{rid},\"body\":",
        json_str(custom_id)
    );
    v.extend(body.iter().filter(|b| **b != b'\n' && **b != b'\r'));
    v.extend_from_slice(b"},\"error\":null}");
    v
}

/// Where a record comes from: its input line and a hash of that line's text. An error record
/// keeps both, so a line that changed since (a torn line completed, a fixed request) is sent
/// on the next run instead of being matched to its old error by number alone.
#[derive(Debug, Clone, Copy)]
struct At {
    line: u32,
    hash: u64,
}

impl At {
    fn of(line: u32, text: &[u8]) -> Self {
        At {
            line,
            hash: xxhash_rust::xxh3::xxh3_64(text),
        }
    }

    fn hash_hex(&self) -> String {
        format!("{:016x}", self.hash)
    }
}

fn error_record(
    id: &str,
    custom_id: Option<&str>,
    at: At,
    code: &str,
    message: &str,
    response: Option<(u16, Option<&str>, serde_json::Value)>,
) -> Vec<u8> {
    let response = response.map(|(status, rid, body)| {
        serde_json::json!({"status_code": status, "request_id": rid, "body": body})
    });
    let v = serde_json::json!({
        "id": id,
        "custom_id": custom_id,
        "line": at.line,
        "line_hash": at.hash_hex(),
        "response": response,
        "error": {"code": code, "message": message},
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// A bitset of line numbers.
/// Errors that mean every other request would fail the same way: stop instead of filling the
/// errors file.
fn job_fatal(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::QuotaExhausted | ErrorKind::Authentication | ErrorKind::PermissionDenied
    )
}

/// The flags that stop a job, shared by every line's task.
struct Stops<'a> {
    /// The reason the upstream refused the whole job, once known.
    fatal: &'a std::sync::Mutex<Option<String>>,
    /// Set when nothing more should be sent.
    fatal_flag: &'a AtomicBool,
    /// A spending budget of the engine refused a line.
    engine_budget: &'a AtomicBool,
}

impl Stops<'_> {
    /// Stop the job for `why` (the first reason given is the one reported).
    fn fatal(&self, why: impl FnOnce() -> String) {
        let mut f = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(why());
        }
        self.fatal_flag.store(true, Ordering::Release);
    }
}

/// What one line's answer or error writes (or `None`: the line stays pending — the job is
/// stopping, or a budget refused it).
fn line_record(
    result: Result<sluice::Reply, sluice::Error>,
    at: At,
    rid: &str,
    custom_id: &str,
    elapsed: Duration,
    tally: &Tally,
    stops: &Stops<'_>,
) -> Option<Record> {
    let Stops {
        fatal_flag,
        engine_budget,
        ..
    } = stops;
    match result {
        Ok(reply) => {
            tally.latency(elapsed);
            // The engine has read usage and finish reasons already; a body it
            // could not read as JSON has neither and is checked here.
            if reply.facts.usage.is_none()
                && serde_json::from_slice::<serde::de::IgnoredAny>(&reply.body).is_err()
            {
                tally.fail("decode");
                let record = error_record(
                    rid,
                    Some(custom_id),
                    at,
                    "decode",
                    "the response body is not JSON",
                    None,
                );
                Some(Record::Error {
                    line: at.line,
                    record,
                    attempts: reply.meta.attempts,
                })
            } else {
                // The engine priced the answer (at the model it sent, after
                // any substitution); the job's total is the sum of those.
                let cost = reply.meta.cost_nanos.unwrap_or(0);
                if let Some(u) = &reply.facts.usage {
                    tally.tokens(u.prompt_tokens, u.cached_tokens(), u.completion_tokens);
                }
                tally.spent_nanos.fetch_add(cost, Ordering::AcqRel);
                for c in &reply.facts.choices {
                    if let Some(r) = &c.finish_reason {
                        tally.finish_reason(r);
                    }
                }
                tally.succeeded.fetch_add(1, Ordering::Relaxed);
                let record = output_record(
                    rid,
                    custom_id,
                    reply.meta.status,
                    reply.meta.request_id.as_deref(),
                    &reply.body,
                );
                Some(Record::Output {
                    line: at.line,
                    record,
                    cost,
                    attempts: reply.meta.attempts,
                })
            }
        }
        Err(e) if job_fatal(e.kind()) => {
            stops.fatal(|| format!("the upstream refused the job: {e}"));
            None
        }
        Err(e) if e.kind() == ErrorKind::Overloaded && fatal_flag.load(Ordering::Acquire) => None,
        // A job budget cannot hold over a model without a price: stop, naming the line (the
        // engine refused it before anything was sent).
        Err(e) if e.kind() == ErrorKind::Unpriced => {
            stops.fatal(|| format!("line {}: {e}", at.line));
            None
        }
        Err(e) if e.kind() == ErrorKind::BudgetExceeded => {
            if !engine_budget.swap(true, Ordering::AcqRel) {
                tracing::warn!(line = at.line, error = %e, "a spending budget is reached: stopping; this line and the rest stay pending for the next run");
            }
            fatal_flag.store(true, Ordering::Release);
            None
        }
        Err(e) => {
            tally.fail(e.kind().as_str());
            let response = e.status().map(|s| {
                // The upstream's error body, or (a proxy's HTML page, an
                // empty answer) the same shape written from the error.
                let body = e.api_error().map_or_else(
                    || {
                        sluice::ApiError::new(
                            e.message(),
                            "upstream_error",
                            Some(e.kind().as_str()),
                            None,
                        )
                        .to_body()
                    },
                    sluice::ApiError::to_body,
                );
                (s, e.request_id(), body)
            });
            let record = error_record(
                rid,
                Some(custom_id),
                at,
                e.kind().as_str(),
                e.message(),
                response,
            );
            Some(Record::Error {
                line: at.line,
                record,
                attempts: e.attempts(),
            })
        }
    }
}

/// What earlier runs finished: the lines in the output and errors files, and what their answers
/// cost.
struct Done {
    /// Lines answered (output file) or failed for good with no line hash (older records).
    lines: Bits,
    /// Lines with an error record: the hash of the line's text when it was written. The line is
    /// done only while its text is still the same.
    errored: HashMap<u32, u64>,
    count: u64,
    spent: Nanos,
}

/// Read back the output and errors files (cutting off a line torn by a kill first).
fn done_so_far(
    paths: &[&PathBuf],
    idx: &input::Index,
    price_of: impl Fn(&str) -> Option<sluice::pricing::Price>,
) -> Result<Done, BatchError> {
    let mut done = Done {
        lines: Bits::new(idx.lines + 1),
        errored: HashMap::new(),
        count: 0,
        spent: 0,
    };
    for path in paths {
        output::repair(path).map_err(io_err(path))?;
        output::scan(path, |rec| {
            let line = rec
                .line
                .or_else(|| rec.custom_id.as_deref().and_then(|c| idx.line_of(c)));
            let hash = rec
                .line_hash
                .as_deref()
                .and_then(|h| u64::from_str_radix(h, 16).ok());
            if let Some(l) = line {
                if !done.lines.get(l) && !done.errored.contains_key(&l) {
                    match hash {
                        Some(h) if rec.error.is_some() => {
                            done.errored.insert(l, h);
                        }
                        _ => done.lines.set(l),
                    }
                    done.count += 1;
                }
            }
            if let Some(body) = rec.response.as_ref().and_then(|r| r.body.as_ref()) {
                if let (Some(model), Some(u)) = (&body.model, &body.usage) {
                    if let Some(p) = price_of(model) {
                        done.spent = done.spent.saturating_add(p.cost(u));
                    }
                }
            }
        })
        .map_err(io_err(path))?;
    }
    Ok(done)
}

struct Bits(Vec<u64>);

impl Bits {
    fn new(n: u32) -> Self {
        Bits(vec![0; n as usize / 64 + 1])
    }
    fn set(&mut self, i: u32) {
        if let Some(w) = self.0.get_mut(i as usize / 64) {
            *w |= 1 << (i % 64);
        }
    }
    fn get(&self, i: u32) -> bool {
        self.0
            .get(i as usize / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

pub async fn run(
    settings: &EngineSettings,
    cfg: BatchConfig,
    stop: watch::Receiver<bool>,
) -> Result<Report, BatchError> {
    let setup::Prepared { engine, ledger, .. } = setup::prepare(settings, &cfg)?;
    let report = run_with(engine, cfg, stop).await;
    if let Some(l) = &ledger {
        l.flush().await;
    }
    report
}

/// [`run`] with its engine built.
/// Why a job whose input repeats `custom_id`s is not started, naming the first twenty and
/// their lines; `None` when every id is unique.
fn duplicates_message(input: &Path, duplicates: &[(String, Vec<u32>)]) -> Option<String> {
    if duplicates.is_empty() {
        return None;
    }
    let mut msg = format!(
        "{}: {} custom_id(s) appear more than once; nothing was sent. Each custom_id must be unique:\n",
        input.display(),
        duplicates.len()
    );
    for (id, lines) in duplicates.iter().take(20) {
        let l: Vec<String> = lines.iter().map(u32::to_string).collect();
        msg.push_str(&format!("  {id:?} on lines {}\n", l.join(", ")));
    }
    if duplicates.len() > 20 {
        msg.push_str(&format!("  … and {} more\n", duplicates.len() - 20));
    }
    Some(msg)
}

/// The job's journal, keyed by the input's content, with the files it belongs to.
fn open_journal(
    cfg: &BatchConfig,
    content_hash: u128,
    input: &Path,
    out_path: &Path,
    err_path: &Path,
) -> Result<Journal, BatchError> {
    let jpath = Journal::path_for(&cfg.state_dir(), content_hash);
    let journal = Journal::open(&jpath).map_err(io_err(&jpath))?;
    for (key, path) in [("input", input), ("output", out_path), ("errors", err_path)] {
        journal
            .set_meta(key, &path.display().to_string())
            .map_err(io_err(&jpath))?;
    }
    Ok(journal)
}

async fn run_with(
    engine: Engine,
    cfg: BatchConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<Report, BatchError> {
    let started = Instant::now();
    let input = cfg.input.clone();
    let out_path = cfg.output_path();
    let err_path = cfg.errors_path();

    // Pass 1: identity, index, duplicates.
    let idx = {
        let path = input.clone();
        tokio::task::spawn_blocking(move || input::index(&path))
            .await
            .map_err(|e| BatchError::Config(format!("indexing failed: {e}")))?
            .map_err(io_err(&input))?
    };
    // The upstream's model list, checked against the models of the input before the first
    // line is sent and then periodically while the job runs. A failed check is logged; the
    // job goes on (the lines themselves will say what the upstream answers).
    let mut _models_watch = None;
    if let Some(every) = cfg.models_check_every {
        let models: Vec<String> = idx.models.iter().cloned().collect();
        if let Err(e) = sluice::catalog::check(&engine, &models).await {
            tracing::warn!(error = %e, "could not read the upstream's model list");
        }
        let engine = engine.clone();
        _models_watch = Some(sluice::catalog::watch_after(
            move || (engine.clone(), models.clone()),
            every,
            every,
        ));
    }
    if let Some(msg) = duplicates_message(&input, &idx.duplicates) {
        return Err(BatchError::Duplicates(msg));
    }

    let journal = open_journal(&cfg, idx.content_hash, &input, &out_path, &err_path)?;

    // What is already done: whatever the output and errors files hold.
    let Done {
        lines: done,
        errored,
        count: already_done,
        spent: prior_spent,
    } = done_so_far(&[&out_path, &err_path], &idx, |m| engine.price(m))?;
    let snapshot_bytes = idx.bytes;
    if idx.bom {
        tracing::info!(file = %input.display(), "the input begins with a UTF-8 byte order mark; skipped");
    }
    let total_lines = u64::from(idx.requests + idx.invalid);
    let content_hash = idx.content_hash;
    drop(idx);

    // The writer: one blocking thread owns the files and the journal.
    let out = output::Appender::open(&out_path).map_err(io_err(&out_path))?;
    let errs = output::Appender::open(&err_path).map_err(io_err(&err_path))?;
    let (tx, writer) = writer::spawn(journal, out, errs);

    // The job budget (`--budget-usd`) continues from what earlier runs spent.
    engine.spend().carry_over(
        &sluice::spend::BudgetScope::Job(cfg.job.clone()),
        sluice::spend::Period::Total,
        prior_spent,
    );
    let tally = Arc::new(Tally::default());
    let fatal: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let fatal_flag = Arc::new(AtomicBool::new(false));
    // A spending budget of the engine (per job, key or global, per day or month) refused a
    // request: stop admitting, leave the line pending, end as BudgetReached.
    let engine_budget = Arc::new(AtomicBool::new(false));
    let progress = progress::start(
        cfg.progress,
        total_lines.saturating_sub(already_done),
        tally.clone(),
        engine.clone(),
    );

    // Pass 2: send what is not done.
    let sender = send::Sender {
        engine: engine.clone(),
        tx: tx.clone(),
        tally: tally.clone(),
        progress: progress.clone(),
        fatal: fatal.clone(),
        fatal_flag: fatal_flag.clone(),
        engine_budget: engine_budget.clone(),
        content_hash,
        job: cfg.job.clone(),
        max_attempts: cfg.max_attempts,
    };
    let permits = Arc::new(Semaphore::new(cfg.window.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut interrupted = false;
    // The snapshot: exactly the bytes the first pass read, whatever is appended meanwhile.
    let mut lines = Lines::new(std::io::Read::take(
        std::fs::File::open(&input).map_err(io_err(&input))?,
        snapshot_bytes,
    ));
    let mut changed = 0u64;
    loop {
        if *stop.borrow() {
            interrupted = true;
            break;
        }
        if fatal_flag.load(Ordering::Acquire) {
            break;
        }
        let (n, text) = match lines.next_line().map_err(io_err(&input))? {
            Some(l) => l,
            None => break,
        };
        if done.get(n) {
            continue;
        }
        let at = At::of(n, text);
        if let Some(h) = errored.get(&n) {
            if *h == at.hash {
                continue;
            }
            // The line changed since its error was written: send it as it is now.
            changed += 1;
        }
        match input::parse_line(n, text) {
            Line::Invalid {
                line,
                custom_id,
                code,
                message,
            } => {
                let rec = error_record(
                    &record_id(content_hash, line),
                    custom_id.as_deref(),
                    at,
                    code,
                    &message,
                    None,
                );
                tally.fail(code);
                progress.tick();
                if tx
                    .send(Record::Error {
                        line,
                        record: rec,
                        attempts: 0,
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Line::Request {
                line,
                custom_id,
                url,
                body,
            } => {
                let value: serde_json::Value = match serde_json::from_str(body.get()) {
                    Ok(v) => v,
                    Err(e) => {
                        // parse_line already checked it is an object; keep the guard anyway.
                        let rec = error_record(
                            &record_id(content_hash, line),
                            Some(&custom_id),
                            at,
                            "invalid_body",
                            &e.to_string(),
                            None,
                        );
                        tally.fail("invalid_body");
                        let _ = tx
                            .send(Record::Error {
                                line,
                                record: rec,
                                attempts: 0,
                            })
                            .await;
                        continue;
                    }
                };
                let call = sender.call(line, url, body.get(), &value);
                let permit = tokio::select! {
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = stop.changed() => {
                        interrupted = true;
                        break;
                    }
                };
                let _ = tx.send(Record::Sent(line)).await;
                sender.spawn(&mut tasks, permit, call, at, custom_id);
            }
        }
    }
    drop(lines);
    // Lines whose error was for other text were counted as done; they were sent again.
    let already_done = already_done.saturating_sub(changed);
    if changed > 0 {
        tracing::info!(
            lines = changed,
            "lines changed since their error was recorded were sent again"
        );
    }
    if let Ok(m) = std::fs::metadata(&input) {
        if m.len() > snapshot_bytes && !interrupted {
            tracing::warn!(
                file = %input.display(),
                appended_bytes = m.len() - snapshot_bytes,
                "the input grew while the job ran: this run sent the input as it was when it started; run the same command again to send what was appended"
            );
        }
    }

    // Let in-flight requests finish (within the grace period once stopping).
    send::drain(&mut tasks, interrupted || *stop.borrow(), cfg.grace).await;
    drop(sender);
    drop(tx);
    match writer.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(io_err(&out_path)(e)),
        Err(e) => return Err(BatchError::Config(format!("writer failed: {e}"))),
    }
    progress.finish();

    let fatal = fatal.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let outcome = if let Some(reason) = fatal {
        Outcome::Stopped(reason)
    } else if engine_budget.load(Ordering::Acquire) {
        Outcome::BudgetReached
    } else if interrupted {
        Outcome::Interrupted
    } else {
        Outcome::Completed
    };
    let finished = tally.succeeded.load(Ordering::Relaxed) + tally.failed.load(Ordering::Relaxed);
    let totals = Totals {
        lines: total_lines,
        already_done,
        not_done: total_lines.saturating_sub(already_done + finished),
        prior_spent,
        output: out_path.display().to_string(),
        errors: err_path.display().to_string(),
    };
    let mut summary = tally.summary(outcome.as_str(), totals, started.elapsed());
    summary.rate_limited = engine.counters().rate_limited.load(Ordering::Relaxed);
    summary.retries = engine.counters().retries.load(Ordering::Relaxed);
    if let Some(p) = &cfg.summary_json {
        let text = serde_json::to_vec_pretty(&summary).unwrap_or_default();
        std::fs::write(p, text).map_err(io_err(p))?;
    }
    if let Some(b) = cfg.budget {
        tracing::info!(budget = %dollars(b), spent = %dollars(summary.job_cost_nanos), "budget");
    }
    Ok(Report { outcome, summary })
}

/// `sluice batch status`: what the journal and the files say about a job.
pub fn status(cfg: &BatchConfig) -> Result<String, BatchError> {
    let idx = input::index(&cfg.input).map_err(io_err(&cfg.input))?;
    let jpath = Journal::path_for(&cfg.state_dir(), idx.content_hash);
    let mut out = String::new();
    let total = idx.requests + idx.invalid;
    let mut succeeded = 0u64;
    let mut failed = 0u64;
    let out_path = cfg.output_path();
    let err_path = cfg.errors_path();
    output::scan(&out_path, |_| succeeded += 1).map_err(io_err(&out_path))?;
    output::scan(&err_path, |_| failed += 1).map_err(io_err(&err_path))?;
    out.push_str(&format!(
        "input      {} ({} lines, {} invalid)\n",
        cfg.input.display(),
        total,
        idx.invalid
    ));
    out.push_str(&format!(
        "output     {} ({} done)\n",
        out_path.display(),
        succeeded
    ));
    out.push_str(&format!(
        "errors     {} ({} failed)\n",
        err_path.display(),
        failed
    ));
    out.push_str(&format!(
        "remaining  {}\n",
        u64::from(total).saturating_sub(succeeded + failed)
    ));
    if jpath.exists() {
        let j = Journal::open(&jpath).map_err(io_err(&jpath))?;
        let c = j.counts().map_err(io_err(&jpath))?;
        out.push_str(&format!(
            "journal    {} (in flight at last stop: {}, spent {})\n",
            jpath.display(),
            c.in_flight,
            dollars(c.spent_nanos)
        ));
    } else {
        out.push_str("journal    none yet (the job has not been run)\n");
    }
    Ok(out)
}
