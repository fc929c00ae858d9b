//! Handles to the metrics recorded on every request, kept per thread instead of registered
//! anew each time.
//!
//! Why: `counter!(name, labels…)` asks the recorder for the metric on every call, and the
//! Prometheus recorder then builds the key, hashes it and looks it up in its registry — about
//! 800 instructions per call, and a request records ten or so. A handle kept from the first call
//! is an atomic add.
//!
//! Handles are kept only for the process's global recorder, and only once the process said it
//! is installed ([`keep_for_global_recorder`]): a handle belongs to the recorder that made it,
//! and a test that records into a local recorder (`metrics::with_local_recorder`) must see its
//! own metrics, not writes into whatever recorder was current when a handle was first made.
//! The global recorder lives for the whole process, so its address names it for good; any other
//! recorder in use on a thread is asked every time, as before.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata};

/// The global recorder's address once kept; 0 before.
static GLOBAL: AtomicUsize = AtomicUsize::new(0);

/// The most handles a thread keeps of each kind; past it the map starts over (label values are
/// bounded already — models are interned, the rest are fixed words — so this only guards).
pub(crate) const MAX_PER_THREAD: usize = 4096;

/// The name and up to three label values (the label names are fixed per metric), by where
/// their text lives and how long it is: every one is a `&'static str` (a literal or an interned
/// model name), so its address names it for good, and hashing four addresses costs less than
/// hashing and comparing the texts. Two copies of one text at two addresses only make two
/// handles to the same metric, which the recorder resolves by text.
type HandleKey = [(usize, usize); 4];
type Handles<H> = HashMap<HandleKey, H, rustc_hash::FxBuildHasher>;

thread_local! {
    static COUNTERS: RefCell<Handles<Counter>> = RefCell::new(Handles::default());
    static HISTOGRAMS: RefCell<Handles<Histogram>> = RefCell::new(Handles::default());
    static GAUGES: RefCell<Handles<Gauge>> = RefCell::new(Handles::default());
}

/// Say that the process's global recorder is installed, so that handles to its metrics may be
/// kept. Call it once, after `metrics::set_global_recorder` (or an exporter's
/// `install_recorder`); until then, and for any other recorder, every metric is registered at
/// each use.
pub fn keep_for_global_recorder() {
    // Read on a thread of its own: no local recorder can be set there, so what it sees is the
    // global one (or the no-op recorder, when none is installed yet — also a static).
    let seen = std::thread::spawn(|| metrics::with_recorder(address)).join();
    if let Ok(a) = seen {
        GLOBAL.store(a, Ordering::Relaxed);
    }
}

fn address(r: &dyn metrics::Recorder) -> usize {
    std::ptr::from_ref(r).cast::<()>() as usize
}

/// Whether the recorder in use on this thread is the global one whose handles may be kept.
pub(crate) fn global_in_use() -> bool {
    let g = GLOBAL.load(Ordering::Relaxed);
    g != 0 && metrics::with_recorder(|r| address(r) == g)
}

fn metadata() -> Metadata<'static> {
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()))
}

fn key<const N: usize>(name: &'static str, labels: &[(&'static str, &'static str); N]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|&(k, v)| Label::from_static_parts(k, v))
        .collect();
    Key::from_parts(name, labels)
}

/// A static text named by where it lives and how long it is (see [`HandleKey`]).
pub(crate) fn where_lives(s: &'static str) -> (usize, usize) {
    (s.as_ptr() as usize, s.len())
}

fn handle_key<const N: usize>(
    name: &'static str,
    labels: &[(&'static str, &'static str); N],
) -> HandleKey {
    let mut k = [(0, 0); 4];
    k[0] = where_lives(name);
    for (slot, (_, v)) in k[1..].iter_mut().zip(labels.iter()) {
        *slot = where_lives(v);
    }
    k
}

/// A thread's handle for `(name, labels)`, made by `make` on first use.
fn kept<H: Clone, const N: usize>(
    handles: &'static std::thread::LocalKey<RefCell<Handles<H>>>,
    name: &'static str,
    labels: &[(&'static str, &'static str); N],
    make: impl FnOnce() -> H,
) -> H {
    const { assert!(N <= 3, "at most three labels are kept") };
    let k = handle_key(name, labels);
    handles.with(|m| {
        if let Some(h) = m.borrow().get(&k) {
            return h.clone();
        }
        let h = make();
        let mut m = m.borrow_mut();
        if m.len() >= MAX_PER_THREAD {
            m.clear();
        }
        m.insert(k, h.clone());
        h
    })
}

/// The counter `name` with these labels (all static), from the kept handles when the global
/// recorder is in use.
pub(crate) fn counter<const N: usize>(
    name: &'static str,
    labels: [(&'static str, &'static str); N],
) -> Counter {
    let make = || metrics::with_recorder(|r| r.register_counter(&key(name, &labels), &metadata()));
    if global_in_use() {
        kept(&COUNTERS, name, &labels, make)
    } else {
        make()
    }
}

/// The histogram `name` with these labels; see [`counter`].
pub(crate) fn histogram<const N: usize>(
    name: &'static str,
    labels: [(&'static str, &'static str); N],
) -> Histogram {
    let make =
        || metrics::with_recorder(|r| r.register_histogram(&key(name, &labels), &metadata()));
    if global_in_use() {
        kept(&HISTOGRAMS, name, &labels, make)
    } else {
        make()
    }
}

/// The gauge `name` with these labels; see [`counter`].
pub(crate) fn gauge<const N: usize>(
    name: &'static str,
    labels: [(&'static str, &'static str); N],
) -> Gauge {
    let make = || metrics::with_recorder(|r| r.register_gauge(&key(name, &labels), &metadata()));
    if global_in_use() {
        kept(&GAUGES, name, &labels, make)
    } else {
        make()
    }
}

/// A handle kept in a long-lived value (an upstream, an admission stage) for metrics recorded
/// on every request, instead of a thread's map: one atomic load to reach it instead of a
/// hash and a probe. Kept, as the thread's handles are, only while the global recorder is
/// in use; under any other recorder `make` is asked every time.
pub(crate) struct Kept<H>(std::sync::OnceLock<H>);

impl<H> Default for Kept<H> {
    fn default() -> Self {
        Kept(std::sync::OnceLock::new())
    }
}

impl<H> Kept<H> {
    /// Run `f` with the handle, made by `make` the first time (or every time, see above).
    pub(crate) fn with(&self, make: impl FnOnce() -> H, f: impl FnOnce(&H)) {
        if global_in_use() {
            f(self.0.get_or_init(make));
        } else {
            f(&make());
        }
    }
}

impl<H> std::fmt::Debug for Kept<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kept")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    fn count_of(
        snap: Vec<(
            metrics_util::CompositeKey,
            Option<metrics::Unit>,
            Option<metrics::SharedString>,
            DebugValue,
        )>,
        name: &str,
    ) -> u64 {
        snap.into_iter()
            .filter(|(k, ..)| k.key().name() == name)
            .map(|(.., v)| match v {
                DebugValue::Counter(n) => n,
                _ => 0,
            })
            .sum()
    }

    #[test]
    fn a_local_recorder_sees_its_own_metrics_even_when_handles_are_kept() {
        // No global recorder in this test binary: the address kept is the no-op recorder's,
        // so handles are kept while nothing local is set — and each local recorder below must
        // still get every increment made under it.
        keep_for_global_recorder();
        for _ in 0..2 {
            let rec = DebuggingRecorder::new();
            let snap = rec.snapshotter();
            metrics::with_local_recorder(&rec, || {
                counter("sluice_test_kept_total", [("a", "x")]).increment(1);
                counter("sluice_test_kept_total", [("a", "x")]).increment(2);
                histogram("sluice_test_kept_seconds", [("a", "x")]).record(1.0);
            });
            assert_eq!(
                count_of(snap.snapshot().into_vec(), "sluice_test_kept_total"),
                3
            );
        }
        // Under the kept (global) recorder, the second call reuses the first handle. (Texts
        // from statics: the key is where a text lives, and two equal literals may live apart.)
        static NAME: &str = "sluice_test_kept_total";
        static Y: &str = "y";
        counter(NAME, [("a", Y)]).increment(1);
        let reused = COUNTERS.with(|m| m.borrow().contains_key(&handle_key(NAME, &[("a", Y)])));
        assert!(reused);
    }

    #[test]
    fn a_kept_handle_serves_the_global_recorder_and_never_a_local_one() {
        keep_for_global_recorder();
        let kept: Kept<Counter> = Kept::default();
        for _ in 0..2 {
            let rec = DebuggingRecorder::new();
            let snap = rec.snapshotter();
            metrics::with_local_recorder(&rec, || {
                kept.with(
                    || counter("sluice_test_kept_cell_total", []),
                    |c| c.increment(2),
                );
            });
            assert_eq!(
                count_of(snap.snapshot().into_vec(), "sluice_test_kept_cell_total"),
                2
            );
        }
        assert!(
            kept.0.get().is_none(),
            "nothing kept under a local recorder"
        );
        kept.with(
            || counter("sluice_test_kept_cell_total", []),
            |c| c.increment(1),
        );
        assert!(kept.0.get().is_some(), "kept under the global recorder");
    }
}
