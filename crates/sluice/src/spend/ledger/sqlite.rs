//! The SQLite ledger: one file, one writer thread (see the module above for why).

use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::oneshot;

use super::{Entry, Filter, LedgerStore, Row};
use crate::error::{Error, ErrorKind};
use crate::pricing::Nanos;

/// Rows recorded since the last write, merged by (day, scope, model) — found by a seeded hash
/// of the three texts (see [`row_key`]), each bucket holding the rows whose texts differ.
/// By row key (a seeded hash, never a caller's text: a fast hash is safe).
type Pending = std::sync::Arc<std::sync::Mutex<rustc_hash::FxHashMap<u64, Vec<Row>>>>;

/// A row's (day, scope, model) as one number, so that merging a request into its row needs no
/// copy of the three texts: a hash seeded per process (callers name models, so the seed keeps
/// them from choosing collisions); a `str` hashes with a terminator, so the texts' borders
/// count.
fn row_key(seed: &foldhash::fast::RandomState, e: &Entry<'_>) -> u64 {
    seed.hash_one((e.day, e.scope, e.model))
}

/// What the writer thread is asked; answers come back on a oneshot, which an async caller
/// awaits without blocking its runtime thread.
enum Cmd {
    Sum(Filter, oneshot::Sender<Result<Nanos, String>>),
    Rows(Filter, oneshot::Sender<Result<Vec<Row>, String>>),
    Flush(oneshot::Sender<()>),
}

pub(super) struct SqliteLedger {
    path: PathBuf,
    tx: mpsc::Sender<Cmd>,
    pending: Pending,
    /// The seed of [`row_key`].
    seed: foldhash::fast::RandomState,
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

impl SqliteLedger {
    pub(super) fn open(path: PathBuf) -> Result<Self, Error> {
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
        Ok(SqliteLedger {
            path,
            tx,
            pending,
            seed: foldhash::fast::RandomState::default(),
        })
    }

    fn ask<T: Send + 'static>(
        &self,
        cmd: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Cmd,
    ) -> BoxFuture<'_, Result<T, Error>> {
        let (rtx, rrx) = oneshot::channel();
        let sent = self.tx.send(cmd(rtx));
        async move {
            sent.map_err(|_| db_err(&self.path, "the ledger worker stopped"))?;
            rrx.await
                .map_err(|_| db_err(&self.path, "the ledger worker stopped"))?
                .map_err(|e| db_err(&self.path, e))
        }
        .boxed()
    }
}

impl LedgerStore for SqliteLedger {
    fn describe(&self) -> String {
        format!("sqlite {}", self.path.display())
    }

    fn record(&self, e: &Entry<'_>) {
        // Merged here, under a short lock: no channel, no wake-up of the writer thread per
        // request, and no copy of the texts unless the row is new.
        let k = row_key(&self.seed, e);
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = p.entry(k).or_default();
        match bucket
            .iter_mut()
            .find(|r| r.day == e.day && r.scope == e.scope && r.model == e.model)
        {
            Some(r) => r.add(e),
            None => bucket.push(e.to_row()),
        }
    }

    fn rows(&self, filter: Filter) -> BoxFuture<'_, Result<Vec<Row>, Error>> {
        self.ask(|tx| Cmd::Rows(filter, tx))
    }

    fn sum(&self, filter: Filter) -> BoxFuture<'_, Result<Nanos, Error>> {
        self.ask(|tx| Cmd::Sum(filter, tx))
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        let (rtx, rrx) = oneshot::channel();
        let sent = self.tx.send(Cmd::Flush(rtx)).is_ok();
        async move {
            if sent {
                let _ = rrx.await;
            }
        }
        .boxed()
    }

    fn seeds_budgets(&self) -> bool {
        true
    }
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
                for r in rows.values().flatten() {
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
            tracing::error!(ledger = %path.display(), error = %e, lost_rows = rows.values().map(Vec::len).sum::<usize>(), "ledger write failed");
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
