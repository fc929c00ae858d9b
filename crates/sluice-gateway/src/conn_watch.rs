//! What watches one served connection: whether it moved a byte (the idle watch), and the
//! deadline of the HTTP/1 request head it waits for (the header timeout), kept by one timer
//! per connection instead of one per request.
//!
//! Why: hyper's header timeout makes a timer for every request head — a boxed tokio sleep,
//! registered in the runtime's timer wheel on its first poll and taken out again when the head
//! has arrived, each under the wheel's lock, with a handle to the runtime cloned and dropped:
//! ~760 instructions and two trips through state both workers share, for a timer that fires
//! once in a connection's life if ever. Here hyper is given a timer of the connection's own
//! ([`HeadTimer`]): arming it writes the deadline down, and the connection's watch
//! ([`ConnWatch`], already there for the idle timeout) sleeps until the nearest deadline it
//! knows of and, when it wakes, fires the head's sleep if its deadline has passed. The head
//! timeout fires when it did (hyper still raises it, and closes the connection, itself); what
//! changes is that the watch's one timer moves at most once per header timeout instead of
//! twice per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::time::Instant;

/// What a connection's task, its I/O, its head timer and its watch share.
#[derive(Debug)]
pub(crate) struct ConnState {
    /// The connection moved a byte since the watch last looked.
    moved: AtomicBool,
    /// The armed head deadline, as nanoseconds after `epoch` plus one; 0: none armed.
    head: AtomicU64,
    /// Which arming the armed deadline is (a sleep dropped after a newer one was armed does
    /// not disarm it).
    generation: AtomicU64,
    /// The armed head deadline has passed: its sleep is ready.
    fired: AtomicBool,
    /// The head's sleep, woken when it fires.
    head_waker: AtomicWaker,
    /// When the watch will next wake (as `head`); an armed deadline before it wakes the watch.
    watch_until: AtomicU64,
    /// The watch, woken to look again at a deadline nearer than its own.
    watch_waker: AtomicWaker,
    epoch: Instant,
}

impl ConnState {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(ConnState {
            moved: AtomicBool::new(false),
            head: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            fired: AtomicBool::new(false),
            head_waker: AtomicWaker::new(),
            watch_until: AtomicU64::new(u64::MAX),
            watch_waker: AtomicWaker::new(),
            epoch: Instant::now(),
        })
    }

    /// Note that the connection moved a byte: a flag, not a time, because every read and
    /// write of every request passes here and the watch looks once an idle timeout.
    pub(crate) fn touch(&self) {
        if !self.moved.load(Ordering::Relaxed) {
            self.moved.store(true, Ordering::Relaxed);
        }
    }

    /// `at` as a stamp: nanoseconds after the epoch plus one (0 stands for "none").
    fn stamp(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos)
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn instant(&self, stamp: u64) -> Instant {
        self.epoch + Duration::from_nanos(stamp.saturating_sub(1))
    }

    /// Arm the head deadline; returns the arming's generation.
    fn arm(&self, deadline: Instant) -> u64 {
        let stamp = self.stamp(deadline);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.fired.store(false, Ordering::Relaxed);
        self.head.store(stamp, Ordering::Release);
        if stamp < self.watch_until.load(Ordering::Acquire) {
            // The watch sleeps past this deadline (it had none nearer): it looks again.
            self.watch_waker.wake();
        }
        generation
    }

    fn disarm(&self, generation: u64) {
        if self.generation.load(Ordering::Relaxed) == generation {
            self.head.store(0, Ordering::Release);
            self.fired.store(false, Ordering::Relaxed);
        }
    }
}

/// The timer hyper's HTTP/1 side is given for the connection: its only use there is the
/// header timeout, one sleep at a time.
#[derive(Debug, Clone)]
pub(crate) struct HeadTimer(pub(crate) Arc<ConnState>);

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(std::time::Instant::from(Instant::now() + duration))
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let generation = self.0.arm(Instant::from_std(deadline));
        Box::pin(HeadSleep {
            state: self.0.clone(),
            generation,
        })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: std::time::Instant) {
        // A new sleep in its place: armed before the old one is dropped, which then leaves
        // the newer arming alone.
        *sleep = self.sleep_until(new_deadline);
    }

    fn now(&self) -> std::time::Instant {
        // The runtime's clock, as hyper's own tokio timer reads it (a paused test clock too).
        Instant::now().into_std()
    }
}

/// A head deadline being waited for; ready once the watch has seen it pass.
struct HeadSleep {
    state: Arc<ConnState>,
    generation: u64,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let s = &self.state;
        if s.fired.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        s.head_waker.register(cx.waker());
        if s.fired.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl hyper::rt::Sleep for HeadSleep {}

impl Drop for HeadSleep {
    fn drop(&mut self) {
        self.state.disarm(self.generation);
    }
}

/// Completes when the connection is to be dropped for silence; fires head deadlines on the way.
pub(crate) struct ConnWatch {
    state: Arc<ConnState>,
    idle: Duration,
    /// When the next check that the connection moved a byte is due: first, the header timeout
    /// after it opened (it must have spoken by then: it is still choosing HTTP/1 or HTTP/2, and
    /// no head is armed yet); then, each idle timeout (closed after a whole one without a
    /// byte: silent for at least that long, at most twice that).
    due: Instant,
    /// What `sleep` is set to.
    set: Instant,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl ConnWatch {
    /// The watch of a connection that must speak within `first` and may then stay silent for
    /// `idle`.
    pub(crate) fn new(state: Arc<ConnState>, first: Duration, idle: Duration) -> Self {
        let due = Instant::now() + first;
        state.watch_until.store(state.stamp(due), Ordering::Release);
        ConnWatch {
            state,
            idle,
            due,
            set: due,
            sleep: Box::pin(tokio::time::sleep_until(due)),
        }
    }
}

impl Future for ConnWatch {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        this.state.watch_waker.register(cx.waker());
        loop {
            let now = Instant::now();
            if now >= this.due {
                if !this.state.moved.swap(false, Ordering::Relaxed) {
                    return Poll::Ready(());
                }
                this.due = now + this.idle;
            }
            let head = this.state.head.load(Ordering::Acquire);
            let mut until = this.due;
            if head != 0 && !this.state.fired.load(Ordering::Acquire) {
                let at = this.state.instant(head);
                if at <= now {
                    this.state.fired.store(true, Ordering::Release);
                    this.state.head_waker.wake();
                } else {
                    until = until.min(at);
                }
            }
            this.state
                .watch_until
                .store(this.state.stamp(until), Ordering::Release);
            if until != this.set {
                this.set = until;
                this.sleep.as_mut().reset(until);
            }
            if this.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;

    /// Polls `f` once, with a waker that counts its wakes.
    fn poll_once<F: Future + ?Sized>(f: Pin<&mut F>, wakes: &Arc<Wakes>) -> Poll<F::Output> {
        let waker = std::task::Waker::from(wakes.clone());
        f.poll(&mut Context::from_waker(&waker))
    }

    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    impl Wakes {
        fn count(&self) -> usize {
            self.0.load(Ordering::Relaxed)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_dropped_silent_at_first_or_after_a_whole_idle_timeout() {
        // (spoke in the first 2 s, when the watch is dropped)
        for (spoke, dropped_after) in [(false, 2), (true, 62)] {
            let state = ConnState::new();
            if spoke {
                state.touch();
            }
            let t0 = Instant::now();
            ConnWatch::new(state, Duration::from_secs(2), Duration::from_secs(60)).await;
            assert_eq!(
                t0.elapsed(),
                Duration::from_secs(dropped_after),
                "spoke: {spoke}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_fires_at_its_deadline_and_not_once_it_has_arrived() {
        let state = ConnState::new();
        state.touch();
        let mut watch = Box::pin(ConnWatch::new(
            state.clone(),
            Duration::from_secs(1),
            Duration::from_secs(300),
        ));
        let watch_wakes = Arc::new(Wakes::default());
        let head_wakes = Arc::new(Wakes::default());
        assert!(poll_once(watch.as_mut(), &watch_wakes).is_pending());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(poll_once(watch.as_mut(), &watch_wakes).is_pending());

        // A head armed for 30 s from now, nearer than the watch's idle check: the watch is
        // woken to move its timer.
        let timer = HeadTimer(state.clone());
        let t0 = Instant::now();
        let mut head = timer.sleep(Duration::from_secs(30));
        assert!(
            watch_wakes.count() >= 1,
            "the watch was not told of a nearer deadline"
        );
        assert!(poll_once(watch.as_mut(), &watch_wakes).is_pending());
        assert!(poll_once(head.as_mut(), &head_wakes).is_pending());

        // The head arrives in time (its sleep dropped), the next is armed: the first deadline
        // passing fires nothing.
        tokio::time::sleep(Duration::from_secs(20)).await;
        drop(head);
        let mut next = timer.sleep(Duration::from_secs(30));
        tokio::time::sleep(Duration::from_secs(15)).await;
        state.touch();
        assert!(poll_once(watch.as_mut(), &watch_wakes).is_pending());
        assert!(poll_once(next.as_mut(), &head_wakes).is_pending());
        assert_eq!(head_wakes.count(), 0);

        // The second head never comes: its sleep is woken and ready at its deadline, 50 s
        // after the first was armed, whatever the watch's own timer said.
        tokio::time::sleep_until(t0 + Duration::from_secs(50)).await;
        assert!(poll_once(watch.as_mut(), &watch_wakes).is_pending());
        assert_eq!(head_wakes.count(), 1);
        assert!(poll_once(next.as_mut(), &head_wakes).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_head_keeps_its_new_deadline() {
        let state = ConnState::new();
        let timer = HeadTimer(state.clone());
        let mut head = timer.sleep(Duration::from_secs(5));
        timer.reset(
            &mut head,
            std::time::Instant::from(Instant::now() + Duration::from_secs(9)),
        );
        let stamp = state.head.load(Ordering::Acquire);
        assert_eq!(state.instant(stamp) - state.epoch, Duration::from_secs(9));
        drop(head);
        assert_eq!(state.head.load(Ordering::Acquire), 0);
    }
}
