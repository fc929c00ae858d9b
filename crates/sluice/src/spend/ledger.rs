//! The cost ledger: tokens and exact spend per day, scope (`key:NAME`, `job:NAME` or `-`) and
//! model. In embedded SQLite by default (one file, nothing to run); in Redis when several
//! replicas or workers must see one set of totals.
//!
//! SQLite writes belong to one worker thread: a request never waits on the disk, and never wakes
//! the thread either — its row is merged in memory by day, scope and model under a short lock,
//! and the thread writes what has gathered in one transaction every 250 ms (a crash loses at
//! most that much of the ledger; budget checks are held in memory and lose nothing). Queries go
//! to the thread over a channel and first write what is pending, so they see every row recorded
//! before them, which the budget state relies on when it seeds itself from here.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use jiff::civil::Date;
use redis::aio::ConnectionManager;

use crate::error::{Error, ErrorKind};
use crate::pricing::Nanos;

/// One request's contribution, or a row of totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    pub day: String,
    pub scope: String,
    pub model: String,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_nanos: Nanos,
}

impl Row {
    fn add(&mut self, o: &Row) {
        self.requests += o.requests;
        self.prompt_tokens += o.prompt_tokens;
        self.cached_tokens += o.cached_tokens;
        self.completion_tokens += o.completion_tokens;
        self.reasoning_tokens += o.reasoning_tokens;
        self.cost_nanos += o.cost_nanos;
    }
}

/// Where the ledger lives when nothing says otherwise: `SLUICE_LEDGER` (a path, or `off` for
/// none), else `ledger.db` in the data directory ([`crate::models::data_dir`]:
/// `SLUICE_DATA_DIR`, `$XDG_DATA_HOME/sluice` or `~/.local/share/sluice`).
pub fn default_path() -> Option<PathBuf> {
    match std::env::var("SLUICE_LEDGER") {
        Ok(v) if v == "off" => None,
        Ok(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => crate::models::data_dir().map(|d| d.join("ledger.db")),
    }
}

/// How `sluice spend` groups totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Key,
    Model,
    Day,
}

impl std::str::FromStr for By {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "key" | "scope" => Ok(By::Key),
            "model" => Ok(By::Model),
            "day" => Ok(By::Day),
            o => Err(format!("{o:?} is not one of key, model, day")),
        }
    }
}

/// Which rows a sum covers.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this scope (`key:alice`); `None`: every scope.
    pub scope: Option<String>,
    /// Days on or after this one.
    pub since: Option<Date>,
}

/// Rows recorded since the last write, merged by (day, scope, model).
type Pending =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, String, String), Row>>>;

enum Cmd {
    Sum(Filter, mpsc::Sender<Result<Nanos, String>>),
    Rows(Filter, mpsc::Sender<Result<Vec<Row>, String>>),
    Flush(mpsc::Sender<()>),
}

/// The ledger; cheap to clone.
#[derive(Clone)]
pub struct Ledger(Backend);

/// Where the ledger lives.
#[derive(Clone)]
enum Backend {
    Sqlite {
        path: PathBuf,
        tx: mpsc::Sender<Cmd>,
        pending: Pending,
    },
    Redis {
        conn: ConnectionManager,
        prefix: String,
    },
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Backend::Sqlite { path, .. } => write!(f, "Backend::Sqlite({})", path.display()),
            Backend::Redis { prefix, .. } => write!(f, "Backend::Redis({prefix})"),
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS spend (
  day TEXT NOT NULL, scope TEXT NOT NULL, model TEXT NOT NULL,
  requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL,
  cost_nanos INTEGER NOT NULL,
  PRIMARY KEY (day, scope, model)
);";

const UPSERT: &str = "
INSERT INTO spend VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
ON CONFLICT (day, scope, model) DO UPDATE SET
  requests = requests + excluded.requests,
  prompt_tokens = prompt_tokens + excluded.prompt_tokens,
  cached_tokens = cached_tokens + excluded.cached_tokens,
  completion_tokens = completion_tokens + excluded.completion_tokens,
  reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
  cost_nanos = cost_nanos + excluded.cost_nanos";

fn db_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Config, format!("ledger {}: {e}", path.display()))
}

fn redis_err(e: redis::RedisError) -> Error {
    Error::new(
        ErrorKind::Overloaded,
        format!("ledger (Redis) unavailable: {e}"),
    )
    .with_retryable(true)
}

impl Ledger {
    /// Open (or create) a SQLite ledger file.
    pub fn sqlite(path: impl Into<PathBuf>) -> Result<Self, Error> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| db_err(&path, e))?;
        }
        let conn = rusqlite::Connection::open(&path).map_err(|e| db_err(&path, e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| db_err(&path, e))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| db_err(&path, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| db_err(&path, e))?;
        conn.execute_batch(SCHEMA).map_err(|e| db_err(&path, e))?;
        let (tx, rx) = mpsc::channel();
        let p = path.clone();
        let pending = Pending::default();
        let shared = pending.clone();
        std::thread::Builder::new()
            .name("sluice-ledger".into())
            .spawn(move || worker(conn, rx, shared, p))
            .map_err(|e| db_err(&path, e))?;
        Ok(Ledger(Backend::Sqlite { path, tx, pending }))
    }

    /// A ledger in Redis under `PREFIX:ledger:DAY` hashes.
    pub async fn redis(url: &str, prefix: &str) -> Result<Self, Error> {
        let conn = crate::redis_conn::connect(url, redis_err).await?;
        Ok(Ledger(Backend::Redis {
            conn,
            prefix: prefix.to_string(),
        }))
    }

    /// Add one request's row (never waits on the disk or the network).
    pub fn record(&self, row: Row) {
        match &self.0 {
            Backend::Sqlite { pending, .. } => {
                // Merged here, under a short lock: no channel, no wake-up of the writer thread
                // per request.
                let k = (row.day.clone(), row.scope.clone(), row.model.clone());
                let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
                match p.get_mut(&k) {
                    Some(r) => r.add(&row),
                    None => {
                        p.insert(k, row);
                    }
                }
            }
            Backend::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let key = format!("{prefix}:ledger:{}", row.day);
                tokio::spawn(async move {
                    let f = |name: &str| format!("{}\u{1f}{}\u{1f}{name}", row.scope, row.model);
                    let mut p = redis::pipe();
                    p.atomic()
                        .hincr(&key, f("requests"), row.requests)
                        .hincr(&key, f("prompt_tokens"), row.prompt_tokens)
                        .hincr(&key, f("cached_tokens"), row.cached_tokens)
                        .hincr(&key, f("completion_tokens"), row.completion_tokens)
                        .hincr(&key, f("reasoning_tokens"), row.reasoning_tokens)
                        .hincr(&key, f("cost_nanos"), row.cost_nanos)
                        .expire(&key, 400 * 86_400)
                        .ignore();
                    if let Err(e) = p.query_async::<()>(&mut conn).await {
                        tracing::error!(error = %e, "ledger (Redis): a request's spend was not recorded");
                    }
                });
            }
        }
    }

    /// Rows matching `filter`, one per day, scope and model.
    pub async fn rows(&self, filter: Filter) -> Result<Vec<Row>, Error> {
        match &self.0 {
            Backend::Sqlite { tx, path, .. } => {
                let (rtx, rrx) = mpsc::channel();
                tx.send(Cmd::Rows(filter, rtx))
                    .map_err(|_| db_err(path, "the ledger worker stopped"))?;
                let path = path.clone();
                tokio::task::spawn_blocking(move || rrx.recv())
                    .await
                    .map_err(|e| db_err(&path, e))?
                    .map_err(|e| db_err(&path, e))?
                    .map_err(|e| db_err(&path, e))
            }
            Backend::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                // SCAN, not KEYS: KEYS blocks a shared server for the whole keyspace walk.
                // SCAN may return a key twice, so the list is deduplicated before summing.
                let pattern = format!("{prefix}:ledger:*");
                let mut keys: Vec<String> = Vec::new();
                let mut cursor: u64 = 0;
                loop {
                    let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await
                        .map_err(redis_err)?;
                    keys.extend(batch);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
                keys.sort_unstable();
                keys.dedup();
                let mut out: std::collections::BTreeMap<(String, String, String), Row> =
                    Default::default();
                for key in keys {
                    let day = key.rsplit(':').next().unwrap_or("").to_string();
                    if let (Some(since), Some(d)) = (filter.since, crate::models::parse_date(&day))
                    {
                        if d < since {
                            continue;
                        }
                    }
                    let fields: Vec<(String, u64)> = redis::cmd("HGETALL")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .map_err(redis_err)?;
                    for (f, v) in fields {
                        let mut parts = f.split('\u{1f}');
                        let (Some(scope), Some(model), Some(name)) =
                            (parts.next(), parts.next(), parts.next())
                        else {
                            continue;
                        };
                        if filter.scope.as_deref().is_some_and(|s| s != scope) {
                            continue;
                        }
                        let r = out
                            .entry((day.clone(), scope.to_string(), model.to_string()))
                            .or_insert_with(|| Row {
                                day: day.clone(),
                                scope: scope.to_string(),
                                model: model.to_string(),
                                ..Row::default()
                            });
                        match name {
                            "requests" => r.requests = v,
                            "prompt_tokens" => r.prompt_tokens = v,
                            "cached_tokens" => r.cached_tokens = v,
                            "completion_tokens" => r.completion_tokens = v,
                            "reasoning_tokens" => r.reasoning_tokens = v,
                            "cost_nanos" => r.cost_nanos = v,
                            _ => {}
                        }
                    }
                }
                Ok(out.into_values().collect())
            }
        }
    }

    /// Total spend of the rows matching `filter` (SQLite only; Redis budgets keep their own
    /// counters).
    pub(crate) fn sum_blocking(&self, filter: Filter) -> Result<Nanos, Error> {
        match &self.0 {
            Backend::Sqlite { tx, path, .. } => {
                let (rtx, rrx) = mpsc::channel();
                tx.send(Cmd::Sum(filter, rtx))
                    .map_err(|_| db_err(path, "the ledger worker stopped"))?;
                rrx.recv()
                    .map_err(|e| db_err(path, e))?
                    .map_err(|e| db_err(path, e))
            }
            Backend::Redis { .. } => Ok(0),
        }
    }

    /// Wait until everything recorded so far is on disk (SQLite) or sent (Redis).
    pub async fn flush(&self) {
        if let Backend::Sqlite { tx, .. } = &self.0 {
            let (rtx, rrx) = mpsc::channel();
            if tx.send(Cmd::Flush(rtx)).is_ok() {
                let _ = tokio::task::spawn_blocking(move || rrx.recv()).await;
            }
        }
    }
}

/// Group rows for a report; totals come out sorted by their group.
pub fn group(rows: &[Row], by: By) -> Vec<Row> {
    let mut out: std::collections::BTreeMap<String, Row> = Default::default();
    for r in rows {
        let k = match by {
            By::Key => r.scope.clone(),
            By::Model => r.model.clone(),
            By::Day => r.day.clone(),
        };
        let e = out.entry(k.clone()).or_insert_with(|| Row {
            day: if by == By::Day {
                k.clone()
            } else {
                String::new()
            },
            scope: if by == By::Key {
                k.clone()
            } else {
                String::new()
            },
            model: if by == By::Model { k } else { String::new() },
            ..Row::default()
        });
        e.add(r);
    }
    out.into_values().collect()
}

fn where_clause(f: &Filter) -> (String, Vec<String>) {
    let mut conds = Vec::new();
    let mut args = Vec::new();
    if let Some(s) = &f.scope {
        args.push(s.clone());
        conds.push(format!("scope = ?{}", args.len()));
    }
    if let Some(d) = f.since {
        args.push(d.to_string());
        conds.push(format!("day >= ?{}", args.len()));
    }
    if conds.is_empty() {
        (String::new(), args)
    } else {
        (format!(" WHERE {}", conds.join(" AND ")), args)
    }
}

/// How long the worker gathers rows before writing them: one transaction (and one upsert per
/// day, scope and model) per interval instead of one per request.
const WRITE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

fn worker(mut conn: rusqlite::Connection, rx: mpsc::Receiver<Cmd>, shared: Pending, path: PathBuf) {
    let write = |conn: &mut rusqlite::Connection| {
        let rows = std::mem::take(&mut *shared.lock().unwrap_or_else(|e| e.into_inner()));
        if rows.is_empty() {
            return;
        }
        let res = (|| -> rusqlite::Result<()> {
            let t = conn.transaction()?;
            {
                let mut st = t.prepare_cached(UPSERT)?;
                for r in rows.values() {
                    st.execute(rusqlite::params![
                        r.day,
                        r.scope,
                        r.model,
                        r.requests as i64,
                        r.prompt_tokens as i64,
                        r.cached_tokens as i64,
                        r.completion_tokens as i64,
                        r.reasoning_tokens as i64,
                        r.cost_nanos as i64
                    ])?;
                }
            }
            t.commit()
        })();
        if let Err(e) = res {
            tracing::error!(ledger = %path.display(), error = %e, lost_rows = rows.len(), "ledger write failed");
        }
    };
    loop {
        let cmd = match rx.recv_timeout(WRITE_EVERY) {
            Ok(c) => c,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                write(&mut conn);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        // Every query first writes what is pending, so it sees every row recorded before it.
        write(&mut conn);
        match cmd {
            Cmd::Flush(done) => {
                let _ = done.send(());
            }
            Cmd::Sum(f, out) => {
                let (w, args) = where_clause(&f);
                let sql = format!("SELECT COALESCE(SUM(cost_nanos), 0) FROM spend{w}");
                let r = conn
                    .query_row(&sql, rusqlite::params_from_iter(args.iter()), |r| {
                        r.get::<_, i64>(0)
                    })
                    .map(|v| v.max(0) as Nanos)
                    .map_err(|e| e.to_string());
                let _ = out.send(r);
            }
            Cmd::Rows(f, out) => {
                let (w, args) = where_clause(&f);
                let sql = format!(
                    "SELECT day, scope, model, requests, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens, cost_nanos FROM spend{w} ORDER BY day, scope, model"
                );
                let r = (|| -> rusqlite::Result<Vec<Row>> {
                    let mut st = conn.prepare(&sql)?;
                    let rows = st.query_map(rusqlite::params_from_iter(args.iter()), |r| {
                        let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                        Ok(Row {
                            day: r.get(0)?,
                            scope: r.get(1)?,
                            model: r.get(2)?,
                            requests: n(3)?,
                            prompt_tokens: n(4)?,
                            cached_tokens: n(5)?,
                            completion_tokens: n(6)?,
                            reasoning_tokens: n(7)?,
                            cost_nanos: n(8)?,
                        })
                    })?;
                    rows.collect()
                })()
                .map_err(|e| e.to_string());
                let _ = out.send(r);
            }
        }
    }
    write(&mut conn);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(day: &str, scope: &str, model: &str, cost: Nanos) -> Row {
        Row {
            day: day.into(),
            scope: scope.into(),
            model: model.into(),
            requests: 1,
            prompt_tokens: 10,
            completion_tokens: 5,
            cost_nanos: cost,
            ..Row::default()
        }
    }

    #[tokio::test]
    async fn sqlite_ledger_sums_and_groups() {
        let dir = std::env::temp_dir().join(format!("sluice-ledger-{}", rand::random::<u64>()));
        let path = dir.join("ledger.db");
        let l = Ledger::sqlite(&path).unwrap();
        l.record(row("2026-11-27", "key:a", "m1", 100));
        l.record(row("2026-11-28", "key:a", "m1", 200));
        l.record(row("2026-11-28", "key:a", "m1", 300));
        l.record(row("2026-11-28", "key:b", "m2", 7));
        let all = l.rows(Filter::default()).await.unwrap();
        assert_eq!(all.len(), 3);
        let today = Filter {
            scope: Some("key:a".into()),
            since: crate::models::parse_date("2026-11-28"),
        };
        assert_eq!(l.sum_blocking(today).unwrap(), 500);
        let by_key = group(&all, By::Key);
        assert_eq!(by_key[0].scope, "key:a");
        assert_eq!(by_key[0].cost_nanos, 600);
        assert_eq!(by_key[0].requests, 3);
        let by_day = group(&all, By::Day);
        assert_eq!(by_day[1].cost_nanos, 507);
        drop(l);
        // Reopened: the totals were kept.
        let l = Ledger::sqlite(&path).unwrap();
        assert_eq!(l.sum_blocking(Filter::default()).unwrap(), 607);
        std::fs::remove_dir_all(dir).ok();
    }
}
