//! The listener and per-connection plumbing.
//!
//! We run our own accept loop (hyper-util's auto builder: HTTP/1.1 keep-alive and h2c) instead of
//! `axum::serve` for one reason: faults. To reset a connection before any byte, or to cut a stream
//! in the middle with a TCP RST, a handler must be able to reach the socket of the connection it
//! is answering on. Each connection's IO is wrapped in [`KillableIo`], and a [`ConnKill`] handle to
//! it rides along in every request's extensions.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

/// A handle that makes the connection it belongs to fail with a TCP reset at its next read or
/// write. Cloned into each request's extensions.
#[derive(Clone, Debug, Default)]
pub struct ConnKill(Arc<AtomicBool>);

impl ConnKill {
    /// Reset the connection: nothing more is written, the peer sees ECONNRESET.
    pub fn kill(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_killed(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A TCP stream that turns into a reset once its [`ConnKill`] fires.
#[derive(Debug)]
struct KillableIo {
    inner: TcpStream,
    kill: ConnKill,
}

impl KillableIo {
    fn check(&self) -> io::Result<()> {
        if self.kill.is_killed() {
            // Linger 0 makes the close that follows send RST instead of FIN, so the client sees a
            // reset, not a clean end of stream.
            let _ = socket2::SockRef::from(&self.inner).set_linger(Some(Duration::ZERO));
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "mock fault: reset",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for KillableIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Accept connections until `shutdown` flips, serving each with `router`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    router: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let (tcp, _peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly instead of spinning.
                tracing::warn!(error = %e, "mock: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let kill = ConnKill::default();
        let io = TokioIo::new(KillableIo {
            inner: tcp,
            kill: kill.clone(),
        });
        let svc =
            router
                .clone()
                .map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(kill.clone());
                    req
                });
        let svc = TowerToHyperService::new(svc);
        let builder = builder.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let conn = builder.serve_connection_with_upgrades(io, svc);
            tokio::select! {
                _ = conn => {}
                _ = conn_shutdown.changed() => {}
            }
        });
    }
}

/// Bind a loopback (or given) address; port 0 picks any free port.
pub(crate) async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
