//! The listener: accepting connections within limits, serving them with
//! hyper, and shutting down gracefully.
//!
//! Limits protect the process from clients, not the other way round: a slow
//! or greedy client is cut off by the header read timeout, the header limits
//! and the connection cap, and the cap answers a polite 503 instead of
//! letting the process run out of file descriptors.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};
use tracing::Instrument;

use crate::forwarded::Peer;
use crate::gateway::Gateway;

/// A client must send its complete request head within this time, on a new
/// connection and between requests on a kept-alive one (slowloris guard).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most header lines a request may have; browsers send about twenty.
pub const MAX_HEADERS: usize = 64;

/// Read buffer per connection, which bounds the request head. hyper answers
/// 431 to heads that do not fit.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Connections served at once by default (`--max-connections`); more are
/// answered 503 and closed. An idle connection costs a few kilobytes (see
/// the README's load figures), and the header read timeout closes idle ones.
pub const MAX_CONNECTIONS: usize = 16384;

/// How long requests in flight may take to finish at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// At shutdown, how long a connection that was accepted but has not yet
/// delivered its first request gets to do so. Its client sent the request
/// right after connecting (it is likely in our socket buffer already);
/// closing such a connection unanswered would fail a request we accepted.
/// Short, because browsers also open connections they never use.
pub const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Pause after a failed accept (e.g. out of file descriptors), so that the
/// loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Bound on writing the 503 to a connection over the cap.
const REJECT_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where to listen: `HOST:PORT` or `unix:/path/to.sock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address, resolved at bind time.
    Tcp(String),
    /// A unix domain socket path.
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(
                    "unix: needs a socket path, like unix:/run/roomgate/roomgate.sock".into(),
                );
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(ListenAddr::Tcp(s.to_owned()))
            }
            _ => Err(format!(
                "`{s}` is neither HOST:PORT (like 127.0.0.1:8080 or [::1]:8080) nor unix:/path"
            )),
        }
    }
}

/// A bound listener.
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A unix socket, removed again when the listener is dropped.
    Unix(UnixListener, SocketFile),
}

/// Removes the socket file when dropped, so that a clean exit leaves no
/// stale socket behind.
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Listener {
    /// Binds `addr`. A unix socket left behind by a process that is gone is
    /// replaced; one that still answers is an error, not a takeover.
    pub async fn bind(addr: &ListenAddr) -> io::Result<Listener> {
        match addr {
            ListenAddr::Tcp(addr) => Ok(Listener::Tcp(TcpListener::bind(addr.as_str()).await?)),
            ListenAddr::Unix(path) => {
                remove_stale_socket(path).await?;
                let listener = UnixListener::bind(path)?;
                Ok(Listener::Unix(listener, SocketFile(path.clone())))
            }
        }
    }

    /// Sets the permission bits of a unix socket (`--socket-mode`); nothing
    /// for TCP. Until this runs the socket has the umask's permissions, which
    /// are stricter, never looser, than the usual modes.
    pub fn set_socket_mode(&self, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        match self {
            Listener::Tcp(_) => Ok(()),
            Listener::Unix(_, file) => {
                std::fs::set_permissions(&file.0, std::fs::Permissions::from_mode(mode))
            }
        }
    }

    /// The bound address, as a URL-ish string for logs and tests.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("http://{a}"),
                Err(_) => "tcp".into(),
            },
            Listener::Unix(_, file) => format!("unix:{}", file.0.display()),
        }
    }
}

async fn remove_stale_socket(path: &Path) -> io::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    if tokio::net::UnixStream::connect(path).await.is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by a running process", path.display()),
        ));
    }
    tracing::info!("removing stale socket {}", path.display());
    std::fs::remove_file(path)
}

/// Serves `gw` on `listener` until `shutdown` completes, then stops
/// accepting, lets requests in flight finish (at most [`DRAIN_TIMEOUT`]) and
/// returns.
pub async fn serve(gw: Arc<Gateway>, listener: Listener, shutdown: impl Future<Output = ()>) {
    serve_with_cap(gw, listener, shutdown, MAX_CONNECTIONS).await
}

/// Like [`serve`], with at most `max_connections` connections at once.
pub async fn serve_with_cap(
    gw: Arc<Gateway>,
    listener: Listener,
    shutdown: impl Future<Output = ()>,
    max_connections: usize,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    // acquire_many at shutdown takes a u32.
    let max_connections = max_connections.clamp(1, u32::MAX as usize);
    let server = Arc::new(Server {
        gw,
        builder,
        stopping: watch::Sender::new(false),
        slots: Arc::new(Semaphore::new(max_connections)),
        max_connections,
        accepted: std::sync::atomic::AtomicU64::new(0),
    });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener) => match accepted {
                Ok(Accepted::Tcp(stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    server.connection(stream, Peer::Tcp(peer));
                }
                Ok(Accepted::Unix(stream)) => server.connection(stream, Peer::Unix),
                Err(e) => {
                    tracing::warn!("accept failed: {e}; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    let accepted = server.accepted.load(std::sync::atomic::Ordering::Relaxed);
    let open = server.max_connections - server.slots.available_permits();
    // The totals let a test (or an operator) match answers to connections.
    tracing::info!(
        "shutting down: no new connections ({accepted} accepted in all, {open} open); \
         finishing requests in flight"
    );
    server.stopping.send_replace(true);
    // Every connection holds a permit until it is closed.
    let all = u32::try_from(server.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = server.slots.acquire_many(all) => tracing::info!("all connections closed"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("gave up waiting for connections after {DRAIN_TIMEOUT:?}")
        }
    }
}

/// What the accept loop shares with connection tasks.
struct Server {
    /// What requests are answered from.
    gw: Arc<Gateway>,
    /// hyper's connection settings: timeouts and limits.
    builder: http1::Builder,
    /// Turns true at shutdown: connections finish what they have and close.
    stopping: watch::Sender<bool>,
    /// One permit per open connection: the connection cap.
    slots: Arc<Semaphore>,
    /// The cap, for the log.
    max_connections: usize,
    /// Connections taken within the cap since the start.
    accepted: std::sync::atomic::AtomicU64,
}

/// A new connection from either kind of listener.
enum Accepted {
    /// A TCP client and its address.
    Tcp(tokio::net::TcpStream, std::net::SocketAddr),
    /// A unix socket client (typically the local nginx).
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, a)| Accepted::Tcp(s, a)),
        Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

impl Server {
    fn connection<IO>(&self, stream: IO, peer: Peer)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            tokio::spawn(reject(stream, peer, self.max_connections));
            return;
        };
        self.accepted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let gw = self.gw.clone();
        // Whether a request has come in on this connection (see
        // `until_drained`); a plain flag, so the request path stays lock-free.
        let served = Arc::new(AtomicBool::new(false));
        let seen = served.clone();
        let service = service_fn(move |req| {
            if !seen.load(Ordering::Relaxed) {
                seen.store(true, Ordering::Relaxed);
            }
            let gw = gw.clone();
            async move { crate::http::handle(&gw, &peer, req).await }
        });
        let conn = self.builder.serve_connection(TokioIo::new(stream), service);
        let stopping = self.stopping.subscribe();
        let open = self.gw.metrics.open_connections.clone();
        open.inc();
        let span = tracing::debug_span!("conn", %peer);
        tokio::spawn(
            async move {
                tokio::pin!(conn);
                let ended = tokio::select! {
                    ended = conn.as_mut() => ended,
                    () = until_drained(stopping, &served) => {
                        // Finishes a request in flight (answered with
                        // `Connection: close`), closes an idle connection.
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = ended {
                    tracing::debug!("connection ended: {e}");
                }
                open.dec();
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// Completes when a connection should wind down: at shutdown, once it has
/// had a request, or [`FIRST_REQUEST_GRACE`] after shutdown if it has not.
async fn until_drained(mut stopping: watch::Receiver<bool>, served: &AtomicBool) {
    // An error means the server is gone, which is a shutdown too.
    let _ = stopping.wait_for(|stop| *stop).await;
    let deadline = tokio::time::Instant::now() + FIRST_REQUEST_GRACE;
    while !served.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Answers a connection over the cap with a 503, then closes it.
async fn reject<IO: AsyncWrite + Unpin>(mut stream: IO, peer: Peer, cap: usize) {
    tracing::warn!("connection cap of {cap} reached; answering 503 to {peer}");
    let answer = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
        Content-Length: 20\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many connections";
    let write = async {
        stream.write_all(answer).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(REJECT_WRITE_TIMEOUT, write).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            "127.0.0.1:8080".parse(),
            Ok(ListenAddr::Tcp("127.0.0.1:8080".into()))
        );
        assert_eq!("[::1]:0".parse(), Ok(ListenAddr::Tcp("[::1]:0".into())));
        assert_eq!(
            "unix:/run/roomgate.sock".parse(),
            Ok(ListenAddr::Unix("/run/roomgate.sock".into()))
        );
        for bad in ["8080", "localhost", "unix:", ":8080", "host:99999"] {
            assert!(bad.parse::<ListenAddr>().is_err(), "{bad}");
        }
    }
}
