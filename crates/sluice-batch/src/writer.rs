//! The writer: one blocking thread owns the output and errors files and the journal, so that a
//! record reaches the OS before the journal may say its line is done, and many records share
//! one write per file and one journal transaction.

use std::time::{Duration, Instant};

use sluice::pricing::Nanos;
use tokio::sync::mpsc;

use crate::journal::{Event, Journal, State};
use crate::output::Appender;

/// What the writer task is told: a request went out, or its output or error record.
pub(crate) enum Record {
    /// The request was sent (journal only).
    Sent(u32),
    Output {
        line: u32,
        record: Vec<u8>,
        cost: Nanos,
        attempts: u32,
    },
    Error {
        line: u32,
        record: Vec<u8>,
        attempts: u32,
    },
}

/// Start the writer; it ends (syncing both files) when every sender is dropped.
pub(crate) fn spawn(
    journal: Journal,
    mut out: Appender,
    mut errs: Appender,
) -> (
    mpsc::Sender<Record>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let (tx, mut rx) = mpsc::channel::<Record>(4096);
    let handle = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut journal = journal;
        let mut pending: Vec<Event> = Vec::with_capacity(1024);
        let mut last_flush = Instant::now();
        // Take whatever is queued in one go: one write per file and one journal transaction
        // for many records, instead of a wake-up and a syscall per record.
        let mut batch: Vec<Record> = Vec::with_capacity(1024);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < 4096 {
                match rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            for w in batch.drain(..) {
                match w {
                    Record::Sent(line) => pending.push(Event {
                        line,
                        state: State::InFlight,
                        cost_nanos: 0,
                        attempts: 0,
                    }),
                    Record::Output {
                        line,
                        record,
                        cost,
                        attempts,
                    } => {
                        out.append(&record)?;
                        pending.push(Event {
                            line,
                            state: State::Done,
                            cost_nanos: cost,
                            attempts,
                        });
                    }
                    Record::Error {
                        line,
                        record,
                        attempts,
                    } => {
                        errs.append(&record)?;
                        pending.push(Event {
                            line,
                            state: State::Failed,
                            cost_nanos: 0,
                            attempts,
                        });
                    }
                }
            }
            // The records reach the OS before the journal may say they are done.
            out.flush()?;
            errs.flush()?;
            if pending.len() >= 2000 || last_flush.elapsed() >= Duration::from_millis(200) {
                journal.record(&pending)?;
                pending.clear();
                last_flush = Instant::now();
            }
        }
        journal.record(&pending)?;
        out.sync()?;
        errs.sync()?;
        Ok(())
    });
    (tx, handle)
}
