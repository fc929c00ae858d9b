//! What a person sees while a job runs: a progress bar on a terminal (done/total, requests/s,
//! tokens/s, dollars, retries, ETA), or a log line every few seconds when there is no terminal.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice::pricing::dollars;
use sluice::Engine;
use tokio::task::JoinHandle;

use crate::summary::Tally;
use crate::ProgressMode;

#[derive(Debug, Clone)]
pub struct Progress {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    bar: Option<ProgressBar>,
    ticker: std::sync::Mutex<Option<JoinHandle<()>>>,
}

/// The bar on screen now, if any: log lines are written around it (see [`suspend`]).
static SHOWN: std::sync::Mutex<Option<ProgressBar>> = std::sync::Mutex::new(None);

fn shown() -> std::sync::MutexGuard<'static, Option<ProgressBar>> {
    SHOWN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Run `f` (a write to the terminal) with the progress bar cleared first and redrawn after, so
/// that a log line is neither cut by the bar's next redraw nor left under a stale frame. With no
/// bar on screen, `f` runs as it is.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    let bar = shown().clone();
    match bar {
        Some(b) => b.suspend(f),
        None => f(),
    }
}

fn line(tally: &Tally, engine: &Engine, started: Instant) -> (u64, String) {
    let done = tally.succeeded.load(Ordering::Relaxed) + tally.failed.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let tokens = tally.prompt_tokens.load(Ordering::Relaxed)
        + tally.completion_tokens.load(Ordering::Relaxed);
    let c = engine.counters();
    let msg = format!(
        "{:.0} req/s, {:.0} tok/s, {} spent, {} failed, {} 429s, {} retries",
        done as f64 / secs,
        tokens as f64 / secs,
        dollars(tally.spent_nanos.load(Ordering::Relaxed)),
        tally.failed.load(Ordering::Relaxed),
        c.rate_limited.load(Ordering::Relaxed),
        c.retries.load(Ordering::Relaxed),
    );
    (done, msg)
}

pub fn start(mode: ProgressMode, total: u64, tally: Arc<Tally>, engine: Engine) -> Progress {
    let terminal = std::io::stderr().is_terminal();
    let use_bar = match mode {
        ProgressMode::Off => return Progress { inner: None },
        ProgressMode::Bar => true,
        ProgressMode::Log => false,
        ProgressMode::Auto => terminal,
    };
    let started = Instant::now();
    let bar = use_bar.then(|| {
        let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ETA {eta} | {msg}",
        ) {
            b.set_style(style);
        }
        *shown() = Some(b.clone());
        b
    });
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            let every = if bar.is_some() {
                Duration::from_millis(250)
            } else {
                Duration::from_secs(5)
            };
            loop {
                tokio::time::sleep(every).await;
                let (done, msg) = line(&tally, &engine, started);
                match &bar {
                    Some(b) => {
                        b.set_position(done);
                        b.set_message(msg);
                    }
                    None => eprintln!("sluice batch: {done}/{total} done; {msg}"),
                }
            }
        })
    };
    Progress {
        inner: Some(Arc::new(Inner {
            bar,
            ticker: std::sync::Mutex::new(Some(ticker)),
        })),
    }
}

impl Progress {
    /// A request finished (the bar reads the tally; nothing to do per request).
    pub fn tick(&self) {}

    pub fn finish(&self) {
        if let Some(i) = &self.inner {
            if let Some(t) = i.ticker.lock().unwrap_or_else(|p| p.into_inner()).take() {
                t.abort();
            }
            if let Some(b) = &i.bar {
                b.finish_and_clear();
                *shown() = None;
            }
        }
    }
}
