//! The server: accepting connections within limits, one task per
//! connection, and a graceful stop.
//!
//! Limits protect the process from clients, not the other way round: a slow
//! or greedy client is cut off by the header read and write timeouts and the
//! header limits, and the connection cap answers a polite 503 instead of
//! letting the process run out of file descriptors.

mod conn;
mod listen;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gateway::Gateway;
pub use conn::{HEADER_READ_TIMEOUT, MAX_HEADERS, MAX_HEAD_BYTES, WRITE_TIMEOUT};
pub use listen::{ListenAddr, Listener, SocketFile};

/// Connections served at once by default (`--max-connections`); more are
/// answered 503 and closed. The header read timeout closes idle ones.
pub const MAX_CONNECTIONS: usize = 16384;

/// How long requests in flight may take to finish at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed accept (e.g. out of file descriptors), so that the
/// loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `gw` on `listener`, at most `max_connections` at once, until
/// `shutdown` completes; then stops accepting, lets requests in flight
/// finish (at most [`DRAIN_TIMEOUT`]) and returns `Ok`.
///
/// Returns an error, at once, only when the listener fails in a way that
/// waiting cannot mend: the caller exits non-zero so that systemd or
/// Kubernetes restart the process.
pub async fn serve(
    gw: Arc<Gateway>,
    listener: Listener,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let server = Arc::new(conn::Server::new(gw, max_connections));
    // Every connection's task, so that shutdown can wait for them.
    let tasks = TaskTracker::new();
    // Tells every connection that shutdown has begun.
    let stop = CancellationToken::new();
    // Connections served so far (within the cap), for the shutdown line.
    let mut accepted: u64 = 0;
    // Connections answered 503 at the cap, logged once per interval.
    let mut cap_warnings = conn::CapWarnings::new(max_connections);
    tokio::pin!(shutdown);
    let result = loop {
        let warning_due = cap_warnings.due();
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            () = tokio::time::sleep_until(warning_due.unwrap_or_else(tokio::time::Instant::now)),
                if warning_due.is_some() =>
            {
                if let Some(line) = cap_warnings.report(tokio::time::Instant::now()) {
                    tracing::warn!("{line}");
                }
            }
            next = listener.accept() => match next {
                Ok((stream, peer)) => {
                    match server.slots.clone().try_acquire_owned() {
                        Ok(permit) => {
                            accepted += 1;
                            tasks.spawn(server.clone().serve(stream, peer, permit, stop.clone()));
                        }
                        Err(_) => {
                            if let Some(line) = cap_warnings.rejected(tokio::time::Instant::now()) {
                                tracing::warn!("{line}");
                            }
                            tasks.spawn(conn::reject(stream, peer));
                        }
                    }
                }
                Err(e) if is_transient(&e) => {
                    tracing::warn!("accept failed: {e}; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                Err(e) => {
                    tracing::error!("accept failed: {e}; stopping");
                    break Err(e);
                }
            },
        }
    };
    // No new connections from here on; a unix socket's file goes with it.
    drop(listener);
    // Rejections not yet logged are not lost at exit.
    if let Some(line) = cap_warnings.report(tokio::time::Instant::now()) {
        tracing::warn!("{line}");
    }
    let open = max_connections - server.slots.available_permits();
    // The totals let a test (or an operator) match answers to connections.
    tracing::info!(
        "shutting down: no new connections ({accepted} accepted in all, {open} open); \
         finishing requests in flight"
    );
    stop.cancel();
    tasks.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait())
        .await
        .is_ok()
    {
        tracing::info!("all connections closed");
    } else {
        tracing::warn!("gave up waiting for connections after {DRAIN_TIMEOUT:?}");
    }
    result
}

/// Accept errors that pass: a connection that died before we took it, or
/// a shortage (descriptors, memory) that closing connections will end.
fn is_transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | OutOfMemory
    ) || matches!(
        e.raw_os_error(),
        // EMFILE, ENFILE, ENOBUFS, ENOMEM, EPROTO, EPERM (a firewall's verdict)
        Some(24 | 23 | 105 | 12 | 71 | 1)
    )
}
