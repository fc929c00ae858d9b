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
//!
//! [`Ledger`] is the face; each store is its own file behind [`LedgerStore`]: `sqlite.rs`
//! (in-process, one file) and `redis.rs` (shared).

mod redis;
mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use jiff::civil::Date;

use crate::error::Error;
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
    /// This row borrowed, as a store takes it.
    fn as_entry(&self) -> Entry<'_> {
        Entry {
            day: &self.day,
            scope: &self.scope,
            model: &self.model,
            requests: self.requests,
            prompt_tokens: self.prompt_tokens,
            cached_tokens: self.cached_tokens,
            completion_tokens: self.completion_tokens,
            reasoning_tokens: self.reasoning_tokens,
            cost_nanos: self.cost_nanos,
        }
    }

    /// Add an entry's counts (saturating: a total never wraps).
    fn add(&mut self, o: &Entry<'_>) {
        self.requests = self.requests.saturating_add(o.requests);
        self.prompt_tokens = self.prompt_tokens.saturating_add(o.prompt_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(o.cached_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(o.completion_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(o.reasoning_tokens);
        self.cost_nanos = self.cost_nanos.saturating_add(o.cost_nanos);
    }
}

/// One request's contribution with its texts borrowed: a store that merges it into a row it
/// already holds (every request but the first of a day, scope and model) copies nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'a> {
    /// `YYYY-MM-DD`.
    pub(crate) day: &'a str,
    pub(crate) scope: &'a str,
    pub(crate) model: &'a str,
    pub(crate) requests: u64,
    pub(crate) prompt_tokens: u64,
    pub(crate) cached_tokens: u64,
    pub(crate) completion_tokens: u64,
    pub(crate) reasoning_tokens: u64,
    pub(crate) cost_nanos: Nanos,
}

impl Entry<'_> {
    /// An owned row with these counts.
    pub(crate) fn to_row(self) -> Row {
        Row {
            day: self.day.to_string(),
            scope: self.scope.to_string(),
            model: self.model.to_string(),
            requests: self.requests,
            prompt_tokens: self.prompt_tokens,
            cached_tokens: self.cached_tokens,
            completion_tokens: self.completion_tokens,
            reasoning_tokens: self.reasoning_tokens,
            cost_nanos: self.cost_nanos,
        }
    }
}

/// A day as `YYYY-MM-DD` without a heap string (years 0 to 9999; any other year is written by
/// `jiff` into `other`).
pub(crate) struct DayText {
    digits: [u8; 10],
    other: Option<String>,
}

impl DayText {
    pub(crate) fn new(d: Date) -> Self {
        let (y, m, day) = (d.year(), d.month(), d.day());
        let Ok(y) = u16::try_from(y) else {
            return DayText {
                digits: [0; 10],
                other: Some(d.to_string()),
            };
        };
        let digit = |n: u16| b'0' + (n % 10) as u8;
        let (m, day) = (m as u16, day as u16);
        DayText {
            digits: [
                digit(y / 1000),
                digit(y / 100),
                digit(y / 10),
                digit(y),
                b'-',
                digit(m / 10),
                digit(m),
                b'-',
                digit(day / 10),
                digit(day),
            ],
            other: None,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match &self.other {
            Some(s) => s,
            // ASCII digits and dashes only.
            None => std::str::from_utf8(&self.digits).unwrap_or_default(),
        }
    }
}

/// `d` as the ledger writes it, for `f`: the text of the day last asked for on this thread is
/// kept, since every request of a day asks for the same one (writing and checking it again
/// cost more than the rest of a request's ledger entry).
pub(crate) fn with_day_text<R>(d: Date, f: impl FnOnce(&str) -> R) -> R {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(Date, std::rc::Rc<str>)>> =
            const { std::cell::RefCell::new(None) };
    }
    // Shared out of the cell before `f` runs, so that `f` may ask again.
    let text = LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((day, text)) if *day == d => text.clone(),
            _ => {
                let text: std::rc::Rc<str> = DayText::new(d).as_str().into();
                *last = Some((d, text.clone()));
                text
            }
        }
    });
    f(&text)
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

/// Where a face's cost ledger goes (the gateway's `[spend] ledger`, the batch runner's
/// `--ledger`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LedgerSetting {
    /// `SLUICE_LEDGER` if set, else `ledger.db` in the data directory ([`default_path`]).
    #[default]
    Default,
    /// No ledger: costs are computed and counted in metrics, not stored.
    Off,
    Path(PathBuf),
}

impl LedgerSetting {
    /// `off`, or a path; empty is an error.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(LedgerSetting::Off),
            "" => Err("empty: give a file path, or \"off\" for no ledger".into()),
            p => Ok(LedgerSetting::Path(PathBuf::from(p))),
        }
    }

    /// The file to open, if any.
    pub fn resolve(&self) -> Option<PathBuf> {
        match self {
            LedgerSetting::Off => None,
            LedgerSetting::Path(p) => Some(p.clone()),
            LedgerSetting::Default => default_path(),
        }
    }

    /// Open the SQLite ledger this setting names, if any.
    pub fn open(&self) -> Result<Option<Ledger>, Error> {
        self.resolve().map(Ledger::sqlite).transpose()
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

/// Where the ledger's rows are kept.
pub(crate) trait LedgerStore: Send + Sync {
    /// What to call it in messages (a path or a key prefix; never a secret).
    fn describe(&self) -> String;
    /// Add one request's counts; never waits on the disk or the network.
    fn record(&self, entry: &Entry<'_>);
    /// Rows matching `filter`, one per day, scope and model.
    fn rows(&self, filter: Filter) -> BoxFuture<'_, Result<Vec<Row>, Error>>;
    /// Total spend of the rows matching `filter`.
    fn sum(&self, filter: Filter) -> BoxFuture<'_, Result<Nanos, Error>>;
    /// Until everything recorded so far is stored.
    fn flush(&self) -> BoxFuture<'_, ()>;
    /// Whether budget counters seed themselves from this store's sums (a shared store's
    /// budgets keep their own shared counters instead).
    fn seeds_budgets(&self) -> bool;
}

/// The ledger; cheap to clone.
#[derive(Clone)]
pub struct Ledger(Arc<dyn LedgerStore>);

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ledger({})", self.0.describe())
    }
}

impl Ledger {
    /// Open (or create) a SQLite ledger file.
    pub fn sqlite(path: impl Into<PathBuf>) -> Result<Self, Error> {
        Ok(Ledger(Arc::new(sqlite::SqliteLedger::open(path.into())?)))
    }

    /// A ledger in Redis under `PREFIX:ledger:DAY` hashes.
    pub async fn redis(url: &str, prefix: &str) -> Result<Self, Error> {
        Ok(Ledger(Arc::new(
            redis::RedisLedger::connect(url, prefix).await?,
        )))
    }

    /// Add one request's row (never waits on the disk or the network).
    pub fn record(&self, row: Row) {
        self.0.record(&row.as_entry());
    }

    /// Add one request's counts, borrowed (the engine's path: nothing is copied for a day,
    /// scope and model already pending).
    pub(crate) fn add(&self, entry: &Entry<'_>) {
        self.0.record(entry);
    }

    /// Rows matching `filter`, one per day, scope and model.
    pub async fn rows(&self, filter: Filter) -> Result<Vec<Row>, Error> {
        self.0.rows(filter).await
    }

    /// Total spend of the rows matching `filter`, for seeding in-process budget counters
    /// (`None` when the store is shared: its budgets keep their own counters).
    pub(crate) async fn seed_sum(&self, filter: Filter) -> Result<Option<Nanos>, Error> {
        if !self.0.seeds_budgets() {
            return Ok(None);
        }
        self.0.sum(filter).await.map(Some)
    }

    /// Wait until everything recorded so far is on disk (SQLite) or sent (Redis).
    pub async fn flush(&self) {
        self.0.flush().await;
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
        e.add(&r.as_entry());
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_is_written_as_jiff_writes_it() {
        for (y, m, d) in [
            (2026, 12, 6),
            (1, 1, 1),
            (0, 1, 1),
            (999, 10, 31),
            (9999, 12, 31),
            (-1, 3, 4),
            (-9999, 1, 1),
        ] {
            let day = Date::new(y, m, d).unwrap();
            assert_eq!(DayText::new(day).as_str(), day.to_string(), "{y}-{m}-{d}");
            assert_eq!(with_day_text(day, str::to_string), day.to_string());
        }
    }

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
        assert_eq!(l.seed_sum(today).await.unwrap(), Some(500));
        let by_key = group(&all, By::Key);
        assert_eq!(by_key[0].scope, "key:a");
        assert_eq!(by_key[0].cost_nanos, 600);
        assert_eq!(by_key[0].requests, 3);
        let by_day = group(&all, By::Day);
        assert_eq!(by_day[1].cost_nanos, 507);
        drop(l);
        // Reopened: the totals were kept.
        let l = Ledger::sqlite(&path).unwrap();
        assert_eq!(l.seed_sum(Filter::default()).await.unwrap(), Some(607));
        std::fs::remove_dir_all(dir).ok();
    }
}
