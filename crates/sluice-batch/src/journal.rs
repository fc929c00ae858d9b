//! The job journal: embedded SQLite in WAL mode under the state directory, one database per
//! input (named by the input's content hash). It records which lines are in flight, done or
//! failed, with their cost and attempts. Updates are batched into one transaction per flush, so
//! journaling costs little per request; the output files stay the final word on what is done
//! (a line written there but not yet journaled when a kill came is found by the resume scan).

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

/// A line's state in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    InFlight = 1,
    Done = 2,
    Failed = 3,
}

/// One change to record.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub line: u32,
    pub state: State,
    pub cost_nanos: u64,
    pub attempts: u32,
}

/// Counts by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub in_flight: u64,
    pub done: u64,
    pub failed: u64,
    pub spent_nanos: u64,
}

#[derive(Debug)]
pub struct Journal {
    conn: Connection,
    path: PathBuf,
}

fn db_err(e: rusqlite::Error) -> std::io::Error {
    std::io::Error::other(format!("journal: {e}"))
}

impl Journal {
    /// The journal file for an input with this content hash.
    pub fn path_for(state_dir: &Path, content_hash: u128) -> PathBuf {
        state_dir.join(format!("job-{content_hash:032x}.sqlite"))
    }

    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let conn = Connection::open(path).map_err(db_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS lines (
                 line INTEGER PRIMARY KEY,
                 state INTEGER NOT NULL,
                 cost_nanos INTEGER NOT NULL DEFAULT 0,
                 attempts INTEGER NOT NULL DEFAULT 0
             );",
        )
        .map_err(db_err)?;
        Ok(Journal {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn set_meta(&self, key: &str, value: &str) -> std::io::Result<()> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map_err(db_err)?;
        Ok(())
    }

    pub fn meta(&self, key: &str) -> std::io::Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db_err)
    }

    /// Record a batch of changes in one transaction.
    pub fn record(&mut self, events: &[Event]) -> std::io::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction().map_err(db_err)?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO lines (line, state, cost_nanos, attempts) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(line) DO UPDATE SET state = excluded.state,
                         cost_nanos = excluded.cost_nanos, attempts = excluded.attempts",
                )
                .map_err(db_err)?;
            for e in events {
                st.execute(params![
                    e.line,
                    e.state as i64,
                    e.cost_nanos as i64,
                    e.attempts
                ])
                .map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)
    }

    pub fn counts(&self) -> std::io::Result<Counts> {
        let mut c = Counts::default();
        let mut st = self
            .conn
            .prepare(
                "SELECT state, COUNT(*), COALESCE(SUM(cost_nanos), 0) FROM lines GROUP BY state",
            )
            .map_err(db_err)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(db_err)?;
        for row in rows {
            let (state, n, cost) = row.map_err(db_err)?;
            match state {
                1 => c.in_flight = n as u64,
                2 => c.done = n as u64,
                3 => c.failed = n as u64,
                _ => {}
            }
            c.spent_nanos += cost as u64;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_counts() {
        let dir = std::env::temp_dir().join(format!("sluice-journal-{}", std::process::id()));
        let path = Journal::path_for(&dir, 42);
        let _ = std::fs::remove_file(&path);
        let mut j = Journal::open(&path).unwrap();
        j.set_meta("input", "x.jsonl").unwrap();
        j.record(&[
            Event {
                line: 1,
                state: State::InFlight,
                cost_nanos: 0,
                attempts: 0,
            },
            Event {
                line: 2,
                state: State::InFlight,
                cost_nanos: 0,
                attempts: 0,
            },
        ])
        .unwrap();
        j.record(&[
            Event {
                line: 1,
                state: State::Done,
                cost_nanos: 500,
                attempts: 2,
            },
            Event {
                line: 3,
                state: State::Failed,
                cost_nanos: 0,
                attempts: 1,
            },
        ])
        .unwrap();
        drop(j);
        let j = Journal::open(&path).unwrap();
        assert_eq!(
            j.counts().unwrap(),
            Counts {
                in_flight: 1,
                done: 1,
                failed: 1,
                spent_nanos: 500
            }
        );
        assert_eq!(j.meta("input").unwrap().as_deref(), Some("x.jsonl"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
