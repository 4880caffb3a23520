//! Connections: the accept loop, each connection's deadlines, and the
//! bounded stop. Nothing a client holds outlives its deadline:
//!
//! - **Headers** (`Timeouts::header`): hyper's header read timeout. It runs
//!   from the moment a connection waits for a request head, so it also
//!   closes a keep-alive connection idle that long. A client that sends a
//!   head one byte a second is closed when it runs out (hyper closes the
//!   connection; there is no request yet to answer).
//! - **Body** (`Timeouts::body`, in `body.rs`) and **the whole request**
//!   (`Timeouts::request`, in `deadline.rs`): 408 `request_timeout`.
//! - **Writing the answer** (`Timeouts::write`): a response write that makes
//!   no progress that long (a client that never reads) closes the
//!   connection (`tokio-io-timeout`, the usual wrapper for this).
//! - **The stop**: on shutdown the listener closes at once, idle
//!   connections close, requests in flight get up to `Timeouts::drain` to
//!   finish, then every connection left is closed and `serve` returns.
//!
//! Built on hyper directly, not `axum::serve`, because `axum::serve` sets
//! neither a header timeout nor a deadline on its graceful stop: one
//! unfinished request head kept a stopping server alive indefinitely.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_io_timeout::TimeoutStream;
use tower_service::Service;

/// How long each part of a request may take. The defaults are met by a
/// phone on a bad network (16 KiB, the largest body, in 10 s is 13 kbit/s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// The request head; also how long a keep-alive connection may idle.
    pub header: Duration,
    /// The request body, from the handler's first read to its last byte.
    pub body: Duration,
    /// The whole request, from its head to its answer.
    pub request: Duration,
    /// A write of the answer that makes no progress.
    pub write: Duration,
    /// How long a stop waits for requests in flight before closing them.
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            header: Duration::from_secs(10),
            body: Duration::from_secs(10),
            request: Duration::from_secs(30),
            write: Duration::from_secs(10),
            drain: Duration::from_secs(10),
        }
    }
}

/// A pause after a failed accept (out of file descriptors, say), so the
/// loop does not spin while connections close and free them.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` until `shutdown` resolves, then stops as
/// the module doc says.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(timeouts.header).keep_alive(true);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let mut stream = TimeoutStream::new(stream);
                    stream.set_write_timeout(Some(timeouts.write));
                    let io = TokioIo::new(Box::pin(stream));
                    // The peer's address goes in as axum's `ConnectInfo`: the per-IP limits read it.
                    let router = router.clone();
                    let service = service_fn(move |mut request: hyper::Request<Incoming>| {
                        request.extensions_mut().insert(ConnectInfo(peer));
                        router.clone().call(request.map(Body::new))
                    });
                    let connection = graceful.watch(builder.serve_connection(io, service));
                    connections.spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%peer, %error, "connection closed");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(timeouts.drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "requests still in flight after the drain deadline of {} ms; closing them",
            timeouts.drain.as_millis()
        );
    }
    connections.shutdown().await;
    Ok(())
}
