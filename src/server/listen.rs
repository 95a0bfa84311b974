//! Where to listen: parsing `--listen`, binding TCP or a unix socket, and the
//! socket file's life.

use std::io;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokio::net::{TcpListener, TcpSocket, UnixListener, UnixStream};

use crate::forwarded::Peer;

/// Backlog of the listening socket: connections the kernel completes before
/// we accept them.
const BACKLOG: u32 = 1024;

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

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => f.write_str(addr),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
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
/// stale socket behind; but only while the path still holds the socket this
/// process bound (same device and inode, recorded right after `bind`). If
/// another process put its own socket there meanwhile, that one stays.
pub struct SocketFile {
    path: PathBuf,
    /// Device and inode of the file `bind` created.
    id: (u64, u64),
}

impl SocketFile {
    /// Records the file just bound at `path`.
    fn bound(path: &Path) -> io::Result<SocketFile> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_owned(),
            id: (meta.dev(), meta.ino()),
        })
    }

    /// Whether `path` still holds the socket this process bound.
    fn is_ours(&self) -> bool {
        std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id)
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if self.is_ours() {
            let _ = std::fs::remove_file(&self.path);
        } else {
            tracing::warn!(
                "{} is no longer the socket this process bound; leaving it",
                self.path.display()
            );
        }
    }
}

/// A new connection from either kind of listener.
pub(super) enum Accepted {
    /// A TCP client.
    Tcp(tokio::net::TcpStream),
    /// A unix socket client (typically the local nginx).
    Unix(UnixStream),
}

impl Listener {
    /// Binds `addr`. A unix socket left behind by a process that is gone is
    /// replaced; one that still answers is an error, not a takeover.
    pub async fn bind(addr: &ListenAddr) -> io::Result<Listener> {
        match addr {
            ListenAddr::Tcp(addr) => {
                let mut last = None;
                for a in tokio::net::lookup_host(addr.as_str()).await? {
                    match bind_tcp(a) {
                        Ok(listener) => return Ok(Listener::Tcp(listener)),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{addr} resolves to no address"),
                    )
                }))
            }
            ListenAddr::Unix(path) => {
                remove_stale_socket(path).await?;
                let listener = UnixListener::bind(path)?;
                let file = SocketFile::bound(path)?;
                Ok(Listener::Unix(listener, file))
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
                std::fs::set_permissions(&file.path, std::fs::Permissions::from_mode(mode))
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
            Listener::Unix(_, file) => format!("unix:{}", file.path.display()),
        }
    }

    /// The next connection and who is on the other end.
    pub(super) async fn accept(&self) -> io::Result<(Accepted, Peer)> {
        match self {
            Listener::Tcp(l) => {
                let (stream, addr) = l.accept().await?;
                // Linux hands accepted sockets the listener's TCP_NODELAY.
                if cfg!(not(target_os = "linux")) {
                    let _ = stream.set_nodelay(true);
                }
                Ok((Accepted::Tcp(stream), Peer::Tcp(addr)))
            }
            Listener::Unix(l, _) => {
                let (stream, _) = l.accept().await?;
                Ok((Accepted::Unix(stream), Peer::Unix))
            }
        }
    }
}

/// Clears the way for binding a unix socket at `path`: nothing there is
/// fine, and a socket file whose listener is gone (a stream connect is
/// refused, as after a crash) is removed. Anything else is an error that
/// names the path and what is there, and nothing is deleted: a regular file
/// (`--listen unix:routes.yaml` must not delete the config), a directory, a
/// symlink (even to a socket: whose socket it is cannot be told), a socket
/// that accepts connections (another process serves there), or a live
/// socket of another type (a datagram socket such as `/dev/log` answers a
/// stream connect with EPROTOTYPE, not ECONNREFUSED).
async fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let shown = path.display();
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{shown} is {}, not a socket; only a stale socket is replaced, so nothing \
                 was removed",
                describe_file_type(meta.file_type())
            ),
        ));
    }
    match UnixStream::connect(path).await {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{shown} is in use by a running process"),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            // Still the file we looked at, not one bound in the meantime.
            let now = std::fs::symlink_metadata(path)?;
            if (now.dev(), now.ino()) != (meta.dev(), meta.ino()) {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{shown} was replaced while starting; not removing it"),
                ));
            }
            tracing::info!("removing stale socket {shown}");
            std::fs::remove_file(path)
        }
        // EPROTOTYPE: a live socket of another type (datagram, seqpacket).
        Err(e) if e.raw_os_error() == Some(EPROTOTYPE) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{shown} is a live datagram (or other non-stream) socket of another \
                 process; not removing it"
            ),
        )),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("{shown} is a socket that cannot be checked ({e}); not removing it"),
        )),
    }
}

/// EPROTOTYPE ("protocol wrong type for socket"): what a stream connect to
/// a bound datagram or seqpacket socket answers.
#[cfg(target_os = "linux")]
const EPROTOTYPE: i32 = 91;
#[cfg(not(target_os = "linux"))]
const EPROTOTYPE: i32 = 41;

/// What a file type is, for an error message: "a regular file".
fn describe_file_type(t: std::fs::FileType) -> &'static str {
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "something"
    }
}

/// A TCP listener on `addr`. `SO_REUSEADDR` lets a restarted gateway bind
/// while connections of the previous one linger in TIME_WAIT; without
/// `SO_REUSEPORT`, a port that another process listens on is refused.
fn bind_tcp(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    // Answers go out in one write each: no reason to wait for ACKs. Accepted
    // sockets inherit it on Linux.
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `accept` skips `set_nodelay` per connection on Linux because the
    /// accepted socket inherits it from the listener; this checks that.
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay() {
        let listener = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(
            accepted.nodelay().unwrap(),
            "accepted socket without TCP_NODELAY"
        );
        drop(client);
    }

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
