//! The accept loop: axum's router on hyper's HTTP/1 connections, with the two
//! limits `axum::serve` does not set, for a service on an open network.
//!
//! - **A deadline for each request's headers.** hyper's header read timeout
//!   needs a timer, which `axum::serve` does not install: without one, a
//!   client that sends its headers a byte at a time (slowloris) holds its
//!   connection, a task and a file descriptor forever. Here each request's
//!   headers must arrive within [`Limits::header_timeout`], or the
//!   connection is closed.
//! - **A cap on open connections.** At [`Limits::max_connections`], the loop
//!   stops accepting: new connections wait in the kernel's listen backlog,
//!   holding no file descriptor of this process, until one closes.
//! - **An idle timeout.** A connection on which nothing is read or written
//!   for [`Limits::idle_timeout`] is closed: a kept-alive connection left
//!   idle after its requests, or a body that stalls, frees its slot. (A body
//!   sent a byte at a time is bounded by the request timeout in `api.rs`.)
//!
//! Shutdown is graceful: the loop stops accepting, each connection finishes
//! its request in flight, then closes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// What one client may hold.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// How long a request's headers may take to arrive, from the connection
    /// (or, on a kept-alive connection, from the request's first byte).
    pub(crate) header_timeout: Duration,
    /// Connections open at once.
    pub(crate) max_connections: usize,
    /// How long a connection may go without reading or writing a byte.
    pub(crate) idle_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves, then waits for
/// the connections to finish their requests in flight.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // A permit first: at the cap, nothing is accepted.
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let mut stopping = stopping.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
            let connection = builder.serve_connection(io, service);
            tokio::pin!(connection);
            let outcome = tokio::select! {
                outcome = connection.as_mut() => outcome,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = outcome {
                tracing::debug!(error = %e, "connection closed");
            }
        });
        // Reap the connections that are over.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
}

/// A stream that fails with `TimedOut` once nothing was read or written on
/// it for a while.
struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<S> IdleTimeout<S> {
    fn new(inner: S, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    /// Progress was made: the idle time starts again.
    fn touched(&mut self) {
        let next = tokio::time::Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }

    /// `Pending` from the stream: an error once the idle time is up.
    fn pending<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<T>> {
        match self.deadline.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection idle for too long",
            ))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for IdleTimeout<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            std::task::Poll::Pending => this.pending(cx),
            ready => {
                this.touched();
                ready
            }
        }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match std::pin::Pin::new(&mut this.inner).poll_write(cx, buf) {
            std::task::Poll::Pending => this.pending(cx),
            ready => {
                this.touched();
                ready
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
