//! A connection being served, with what may end it early: the gateway's stop (drain: finish the
//! requests in flight, take no new ones) and the connection's watch (`conn_watch`: close a
//! connection that moved no byte for an `idle_timeout`, and fire its request head's timeout).
//!
//! Why not `tokio::select!` over the three, or hyper-util's `GracefulShutdown` wrapper: both poll
//! every watcher at every wake of the connection — a request wakes its connection three or four
//! times — and the timer and the shutdown signal are far from free to poll (a timer checks the
//! clock and the coop budget, a `select!` draws a random number): ~800 instructions a request,
//! for watchers that fire once in a connection's life if ever. Here the watchers are polled
//! with a waker of their own, and only after that waker was called.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use hyper_util::server::graceful::GracefulConnection;

/// How a served connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The connection's own end: the peer closed it, an error, or a drain completed.
    Closed,
    /// The idle watch fired; the connection was dropped.
    Idle,
}

/// What the watchers share with the connection's task.
#[derive(Debug)]
struct Signals {
    /// A watcher asked to be polled (its waker was called) and has not been since.
    woken: AtomicBool,
    /// The gateway is stopping: drain this connection.
    drain: AtomicBool,
    /// The connection's task, woken when a watcher is.
    task: AtomicWaker,
}

impl Wake for Signals {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// `conn` served until it ends, drained once `stop` says so (or its sender is gone), dropped
/// when `idle` completes.
pub(crate) fn served<C>(
    conn: C,
    mut stop: tokio::sync::watch::Receiver<bool>,
    idle: impl Future<Output = ()> + Send + 'static,
) -> Served<C>
where
    C: GracefulConnection,
{
    let signals = Arc::new(Signals {
        // Polled once at the start, so that each watcher registers its own waker.
        woken: AtomicBool::new(true),
        drain: AtomicBool::new(false),
        task: AtomicWaker::new(),
    });
    let flag = signals.clone();
    let watch = async move {
        let stopping = async {
            if !*stop.borrow_and_update() {
                // A closed channel means the gateway is gone: drain as well.
                let _ = stop.changed().await;
            }
            flag.drain.store(true, Ordering::Release);
            std::future::pending::<()>().await
        };
        tokio::select! {
            biased;
            () = stopping => {}
            () = idle => {}
        }
    };
    Served {
        conn: Box::pin(conn),
        watch: Box::pin(watch),
        waker: Waker::from(signals.clone()),
        signals,
        draining: false,
    }
}

/// The future [`served`] returns.
pub(crate) struct Served<C> {
    conn: Pin<Box<C>>,
    /// Completes when the idle watch fires; sets `signals.drain` when the gateway stops.
    watch: Pin<Box<dyn Future<Output = ()> + Send>>,
    signals: Arc<Signals>,
    /// `signals` as a waker, made once.
    waker: Waker,
    draining: bool,
}

impl<C> std::fmt::Debug for Served<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served")
            .field("draining", &self.draining)
            .finish_non_exhaustive()
    }
}

impl<C: GracefulConnection> Future for Served<C> {
    type Output = Ended;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended> {
        let this = &mut *self;
        this.signals.task.register(cx.waker());
        if this.signals.woken.load(Ordering::Acquire)
            && this.signals.woken.swap(false, Ordering::AcqRel)
        {
            let mut watch_cx = Context::from_waker(&this.waker);
            if this.watch.as_mut().poll(&mut watch_cx).is_ready() {
                return Poll::Ready(Ended::Idle);
            }
            if !this.draining && this.signals.drain.load(Ordering::Acquire) {
                this.draining = true;
                this.conn.as_mut().graceful_shutdown();
            }
        }
        this.conn.as_mut().poll(cx).map(|_| Ended::Closed)
    }
}
