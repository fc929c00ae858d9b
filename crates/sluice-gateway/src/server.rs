//! The gateway's connections: accepted under a cap, each one served by hyper with a timer so
//! that a request head must arrive in time, a connection that moves no byte is closed, and an
//! HTTP/2 connection carries a bounded number of streams. `axum::serve` has none of these
//! limits, and a gateway that faces callers it does not control needs all of them: a few
//! hundred connections that send a header byte a second, or that never send one, would
//! otherwise hold every file descriptor.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::conn_watch::{ConnState, ConnWatch, HeadTimer};

/// Connection limits (`[server]`), with defaults safe for a gateway facing the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Open connections at most; past it new ones wait in the listen backlog until one
    /// closes, and the requests in flight are not touched. `None`: half the process's
    /// open-file limit, at most 4,096 (the rest is for upstream connections and files).
    pub max_connections: Option<usize>,
    /// A request head (line and headers) must arrive whole within this; it also bounds how
    /// long a kept-alive HTTP/1 connection may wait for its next request. Default 30 s.
    pub header_timeout: Duration,
    /// A request body that sluice reads whole must have arrived within this (408 otherwise).
    /// Default 60 s.
    pub body_timeout: Duration,
    /// A connection that moves no byte either way for this long is closed (an idle HTTP/2
    /// connection, a peer gone without a FIN), at the latest when twice this has passed.
    /// Longer than any silence the upstream timeouts allow inside a request. Default 5 min.
    pub idle_timeout: Duration,
    /// Concurrent streams on one HTTP/2 connection. Default 100.
    pub http2_max_streams: u32,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: None,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(300),
            http2_max_streams: 100,
        }
    }
}

impl ServerLimits {
    /// The connection cap in force: the configured one, or what the open-file limit allows.
    pub fn connections(&self) -> usize {
        self.max_connections.unwrap_or_else(|| {
            let files = open_file_limit().unwrap_or(1024);
            usize::try_from(files / 2).unwrap_or(4096).clamp(16, 4096)
        })
    }
}

/// The soft limit on open files, raised to the hard limit first (a service is often started
/// with a soft limit of 1,024 and a hard one far above it).
fn open_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        let raised = rustix::process::Rlimit {
            current: l.maximum,
            maximum: l.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            l = getrlimit(Resource::Nofile);
        }
    }
    l.current
}

/// Serve the gateway `app` on `listener` until `stop` changes, then let the connections finish their
/// requests in flight.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Arc<crate::AppState>,
    limits: ServerLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let cap = limits.connections();
    tracing::info!(target: "sluice::gateway", max_connections = cap, "accepting connections");
    let slots = Arc::new(Semaphore::new(cap));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // HTTP/1's timer is each connection's own (below): hyper's only use of it there is this
    // header timeout.
    builder.http1().header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams);
    // Told to each connection when the accept loop ends: drain (finish the requests in
    // flight); `drain.closed()` completes once every connection's receiver is gone with its
    // task.
    let (drain, draining) = tokio::sync::watch::channel(false);
    let mut full_since: Option<Instant> = None;
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        if slots.available_permits() == 0 && full_since.is_none() {
            full_since = Some(Instant::now());
            metrics::counter!("sluice_gateway_connection_cap_reached_total").increment(1);
            tracing::warn!(target: "sluice::gateway", max_connections = cap, "connection cap reached: new connections wait until one closes");
        } else if slots.available_permits() > 0 {
            full_since = None;
        }
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, a connection reset before it was accepted:
                    // wait a moment instead of spinning, and keep serving.
                    tracing::warn!(target: "sluice::gateway", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        // Small answers and SSE events go out at once, not after Nagle's delay.
        let _ = tcp.set_nodelay(true);
        let state = ConnState::new();
        let io = TokioIo::new(Watched {
            inner: tcp,
            state: state.clone(),
        });
        let app = app.clone();
        let svc = hyper::service::service_fn(move |req| {
            let app = app.clone();
            // Boxed: hyper keeps room for one request's future for as long as the connection
            // lives, and the gateway's (the whole engine call) is kilobytes; a box is made per
            // request and freed with its answer, so idle connections and streams do not hold it
            // (1,000 concurrent streams: 94 MB with the box, 100 MB without).
            sluice::pinned_box(move || async move {
                Ok::<_, std::convert::Infallible>(crate::handle(app, peer, req).await)
            })
        });
        // The connection's own head timer (see `conn_watch`), kept by its watch.
        let mut builder = builder.clone();
        builder.http1().timer(HeadTimer(state.clone()));
        let conn = builder.serve_connection(io, svc).into_owned();
        let idle = limits.idle_timeout;
        let watch = ConnWatch::new(state, limits.header_timeout, idle);
        let draining = draining.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if crate::served::served(conn, draining, watch).await == crate::served::Ended::Idle {
                tracing::debug!(target: "sluice::gateway", peer = %peer, "closing a connection idle for {idle:?}");
            }
        });
    }
    drop(listener);
    drop(draining);
    drain.send_replace(true);
    drain.closed().await;
}

/// A connection that notes that it moved a byte since its watch last looked
/// ([`ConnState::touch`]).
struct Watched {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl Watched {
    fn touch(&self) {
        self.state.touch();
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
