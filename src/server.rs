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
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
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

/// Connections served at once; more are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 4096;

/// How long requests in flight may take to finish at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let server = Arc::new(Server {
        gw,
        builder,
        graceful: GracefulShutdown::new(),
        slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
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
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    let Ok(server) = Arc::try_unwrap(server) else {
        return;
    };
    tokio::select! {
        () = server.graceful.shutdown() => tracing::info!("all connections closed"),
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
    /// Tracks open connections so that shutdown can drain them.
    graceful: GracefulShutdown,
    /// One permit per open connection: the connection cap.
    slots: Arc<Semaphore>,
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
            tokio::spawn(reject(stream, peer));
            return;
        };
        let gw = self.gw.clone();
        let service = service_fn(move |req| {
            let gw = gw.clone();
            async move { crate::http::handle(&gw, &peer, req).await }
        });
        let conn = self.builder.serve_connection(TokioIo::new(stream), service);
        let conn = self.graceful.watch(conn);
        let open = self.gw.metrics.open_connections.clone();
        open.inc();
        let span = tracing::debug_span!("conn", %peer);
        tokio::spawn(
            async move {
                if let Err(e) = conn.await {
                    tracing::debug!("connection ended: {e}");
                }
                open.dec();
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// Answers a connection over the cap with a 503, then closes it.
async fn reject<IO: AsyncWrite + Unpin>(mut stream: IO, peer: Peer) {
    tracing::warn!("connection cap of {MAX_CONNECTIONS} reached; answering 503 to {peer}");
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
