//! The listener: accepting connections within limits, serving them with
//! hyper, and shutting down gracefully.
//!
//! Limits protect the process from clients, not the other way round: a slow
//! or greedy client is cut off by the header read timeout, the header limits
//! and the connection cap, and the cap answers a polite 503 instead of
//! letting the process run out of file descriptors.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ::http::Response;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, UnixListener};
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};
use tracing::Instrument;

use crate::forwarded::Peer;
use crate::gateway::Gateway;
use crate::http::{self, Body, Now};
use crate::steer::{self, Load};

/// A client must send its complete request head within this time, on a new
/// connection and between requests on a kept-alive one (slowloris guard).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most header lines a request may have; browsers send about twenty.
pub const MAX_HEADERS: usize = 64;

/// Read buffer per connection, which bounds the request head. hyper answers
/// 431 to heads that do not fit.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Connections served at once by default (`--max-connections`); more are
/// answered 503 and closed. An idle connection costs about 11 kB (see the
/// README's load figures), and the header read timeout closes idle ones.
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
///
/// Requests are served by one thread per core, each with its own
/// single-threaded runtime and its own socket on the listening address, as
/// nginx's workers do: a connection lives and dies on one thread, with no
/// work stealing, no cross-thread wake-ups and no locks between requests.
/// With one worker per CPU, each is kept on its CPU and takes the TCP
/// connections that arrive there (see `steer`). Probes, signals and reloads
/// stay on the caller's runtime.
pub async fn serve(gw: Arc<Gateway>, listener: Listener, shutdown: impl Future<Output = ()>) {
    serve_with(gw, listener, default_workers(), shutdown).await;
}

/// [`serve`] with `workers` HTTP threads.
pub async fn serve_with(
    gw: Arc<Gateway>,
    listener: Listener,
    workers: usize,
    shutdown: impl Future<Output = ()>,
) {
    serve_with_limits(gw, listener, workers, MAX_CONNECTIONS, shutdown).await;
}

/// [`serve_with`], serving at most `max_connections` connections at once.
pub async fn serve_with_limits(
    gw: Arc<Gateway>,
    listener: Listener,
    workers: usize,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let (sockets, socket_file) = match listener.into_std(workers) {
        Ok(parts) => parts,
        Err(e) => {
            tracing::error!("cannot hand the listening socket to the HTTP workers: {e}");
            return;
        }
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true)
        // A redirect is one small head and a small body: copied into one
        // buffer, it goes out with one plain send, which measured cheaper
        // for the kernel than a two-part writev.
        .writev(false);
    // One CPU per worker, for TCP: see `steer`.
    let cpus = match sockets.first() {
        Some(StdListener::Unix(_)) | None => None,
        Some(_) => steer::plan(sockets.len()),
    };
    if let Some(cpus) = &cpus {
        tracing::info!(
            "{} HTTP workers, each serving the connections that arrive on its CPU ({cpus:?})",
            cpus.len()
        );
    }
    let (handoff, mut handed): (Vec<_>, Vec<_>) =
        sockets.iter().map(|_| mpsc::unbounded_channel()).unzip();
    let server = Arc::new(Server {
        gw,
        builder,
        slots: Arc::new(Semaphore::new(max_connections)),
        max_connections,
        load: Arc::new(Load::new(sockets.len(), cpus.clone().unwrap_or_default())),
        handoff: cpus.is_some().then_some(handoff),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = Vec::new();
    for (i, (socket, handed)) in sockets.into_iter().zip(handed.drain(..)).enumerate() {
        let (done_tx, done_rx) = oneshot::channel();
        let (closed_tx, closed_rx) = oneshot::channel();
        let (server, stop) = (server.clone(), stop_rx.clone());
        let me = Worker {
            index: i,
            cpu: cpus.as_ref().and_then(|cpus| cpus.get(i).copied()),
            handed,
        };
        let spawned = std::thread::Builder::new()
            .name(format!("roomgate-http-{i}"))
            .spawn(move || {
                let drained = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(worker(server, me, socket, stop, closed_tx)),
                    Err(e) => {
                        tracing::error!("cannot start HTTP worker {i}: {e}");
                        true
                    }
                };
                let _ = done_tx.send(drained);
            });
        match spawned {
            Ok(_) => workers.push((closed_rx, done_rx)),
            Err(e) => tracing::error!("cannot start HTTP worker {i}: {e}"),
        }
    }
    if workers.is_empty() {
        return;
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    let mut finishing = Vec::with_capacity(workers.len());
    let (mut accepted, mut by_worker, mut handed_over) = (0, Vec::new(), 0);
    for (closed, done) in workers {
        let taken = closed.await.unwrap_or_default();
        accepted += taken.served;
        by_worker.push(taken.served);
        handed_over += taken.handed_over;
        finishing.push(done);
    }
    let open = server.max_connections - server.slots.available_permits();
    let moved = server.load.moved_count();
    // The totals let a test (or an operator) match answers to connections,
    // and see how evenly the workers were loaded.
    tracing::info!(
        "shutting down: no new connections ({accepted} accepted in all, {open} open; \
         served by worker {by_worker:?}, {handed_over} handed over, {moved} closed to \
         move to their CPU's worker); finishing requests in flight"
    );
    let mut drained = true;
    for done in finishing {
        drained &= done.await.unwrap_or(true);
    }
    if drained {
        tracing::info!("all connections closed");
    } else {
        tracing::warn!("gave up waiting for connections after {DRAIN_TIMEOUT:?}");
    }
    drop(socket_file);
}

/// Binds `addr` so that each worker can listen on it with a socket of its
/// own (`SO_REUSEPORT`: the kernel spreads new connections evenly). A port
/// that another process listens on is refused first by a plain bind, so two
/// roomgates never share a port by accident.
fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    if addr.port() != 0 {
        // Fails when anyone listens there, with SO_REUSEPORT or without.
        drop(std::net::TcpListener::bind(addr)?);
    }
    reuseport_listener(addr)
}

fn reuseport_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    // Answers go out in one write each: no reason to wait for ACKs.
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// One HTTP worker per core (at most 16): what nginx's `worker_processes
/// auto` picks.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(16))
}

/// What one HTTP worker is, besides its socket.
struct Worker {
    /// Its place in [`Server::load`] and [`Server::handoff`].
    index: usize,
    /// The CPU whose connections it takes (see `steer`), if any.
    cpu: Option<usize>,
    /// Connections other workers hand over to it.
    handed: mpsc::UnboundedReceiver<Handed>,
}

/// A TCP connection on its way from one worker to another: detached from
/// the first worker's runtime, not yet read from.
type Handed = (std::net::TcpStream, SocketAddr);

/// Where a worker's newly accepted TCP connection is served.
enum Placed {
    /// By this worker.
    Here(tokio::net::TcpStream),
    /// By the worker it was handed over to.
    There,
    /// Nowhere: the socket could not be moved between runtimes (the system
    /// is out of memory), so it is closed unanswered.
    Lost,
}

impl Placed {
    fn lost(e: io::Error) -> Placed {
        tracing::warn!("cannot move a connection between workers, closing it: {e}");
        Placed::Lost
    }
}

/// A worker's connection counts, reported when it stops accepting.
#[derive(Default)]
struct Taken {
    /// Connections it served (within the cap), its own and handed over.
    served: u64,
    /// Connections it accepted and handed over to another worker.
    handed_over: u64,
}

/// One worker's loop: accept and serve until told to stop, then drain.
/// Sends on `closed`, once it no longer accepts, how many connections it
/// took; returns whether every connection finished within
/// [`DRAIN_TIMEOUT`].
async fn worker(
    server: Arc<Server>,
    mut me: Worker,
    socket: StdListener,
    mut stop: watch::Receiver<bool>,
    closed: oneshot::Sender<Taken>,
) -> bool {
    if let Some(cpu) = me.cpu {
        if let Err(e) = steer::pin_thread(cpu) {
            tracing::warn!("HTTP worker {} cannot stay on CPU {cpu}: {e}", me.index);
        }
    }
    let listener = match socket.register(me.cpu) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("HTTP worker cannot use the listening socket: {e}");
            // Nothing is handed over to it any more (dropping the receiver
            // tells the others). A worker hands over only once it serves
            // several connections, long after this one started: none was.
            return true;
        }
    };
    // Every connection task holds a clone; when all are gone, `recv` below
    // ends: the worker's connections are drained.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    // This worker's own signal to its connections, so that they share no
    // lock with another core's.
    let drain = Arc::new(Drain::default());
    let mut taken = Taken::default();
    let worker = me.index;
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(Accepted::Tcp(stream, peer)) => {
                    // Linux hands accepted sockets the listener's TCP_NODELAY.
                    if cfg!(not(target_os = "linux")) {
                        let _ = stream.set_nodelay(true);
                    }
                    match server.hand_over(worker, stream, peer) {
                        Placed::Here(stream) => {
                            server.load.opened(worker);
                            taken.served += server.connection(
                                worker, &alive, &drain, stream, Peer::Tcp(peer),
                            );
                        }
                        Placed::There => taken.handed_over += 1,
                        Placed::Lost => {}
                    }
                }
                Ok(Accepted::Unix(stream)) => {
                    server.load.opened(worker);
                    taken.served +=
                        server.connection(worker, &alive, &drain, stream, Peer::Unix);
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(handed) = me.handed.recv() => {
                taken.served += server.connection_handed(worker, &alive, &drain, handed);
            }
        }
    }
    drop(listener);
    // Other workers serve what they would hand over from now on; what they
    // have handed over already is served here, like any accepted connection.
    me.handed.close();
    while let Ok(handed) = me.handed.try_recv() {
        taken.served += server.connection_handed(worker, &alive, &drain, handed);
    }
    drain.start();
    let _ = closed.send(taken);
    drop(alive);
    tokio::select! {
        _ = all_closed.recv() => true,
        () = tokio::time::sleep(DRAIN_TIMEOUT) => false,
    }
}

/// What the workers share.
struct Server {
    /// What requests are answered from.
    gw: Arc<Gateway>,
    /// hyper's connection settings: timeouts and limits.
    builder: http1::Builder,
    /// One permit per open connection: the connection cap, across workers.
    slots: Arc<Semaphore>,
    /// The cap, for the log.
    max_connections: usize,
    /// How many connections each worker serves.
    load: Arc<Load>,
    /// Where to hand a TCP connection to each worker, when connections are
    /// steered by CPU (see `steer`); `None` when the kernel's hash spreads
    /// them.
    handoff: Option<Vec<mpsc::UnboundedSender<Handed>>>,
}

/// The listening socket, detached from any runtime so that each worker can
/// register its own copy.
enum StdListener {
    /// The socket bound at start.
    Tcp(std::net::TcpListener),
    /// A further worker's own socket on the same address, made when the
    /// worker starts; a copy of the first socket if that fails.
    TcpAlso(SocketAddr, std::net::TcpListener),
    /// A unix socket is shared by all workers.
    Unix(std::os::unix::net::UnixListener),
}

/// A worker's registered copy of the listening socket.
enum WorkerListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// `n` handles on the listening socket (one socket, shared), and the
    /// socket file guard to hold until serving ends.
    fn into_std(self, n: usize) -> io::Result<(Vec<StdListener>, Option<SocketFile>)> {
        let (first, file) = match self {
            Listener::Tcp(l) => (StdListener::Tcp(l.into_std()?), None),
            Listener::Unix(l, file) => (StdListener::Unix(l.into_std()?), Some(file)),
        };
        let mut all = Vec::with_capacity(n);
        for _ in 1..n.max(1) {
            all.push(match &first {
                StdListener::Tcp(l) | StdListener::TcpAlso(_, l) => {
                    StdListener::TcpAlso(l.local_addr()?, l.try_clone()?)
                }
                StdListener::Unix(l) => StdListener::Unix(l.try_clone()?),
            });
        }
        all.push(first);
        Ok((all, file))
    }
}

impl StdListener {
    /// Registers this handle with the current (worker) runtime; a socket of
    /// the worker's own takes the connections that arrive on `cpu`.
    fn register(self, cpu: Option<usize>) -> io::Result<WorkerListener> {
        let steer = |listener: TcpListener| {
            if let Some(cpu) = cpu {
                if let Err(e) = steer::set_incoming_cpu(&listener, cpu) {
                    tracing::warn!("cannot steer connections from CPU {cpu} to a worker: {e}");
                }
            }
            WorkerListener::Tcp(listener)
        };
        match self {
            StdListener::Tcp(l) => {
                l.set_nonblocking(true)?;
                Ok(steer(TcpListener::from_std(l)?))
            }
            StdListener::TcpAlso(addr, copy) => match reuseport_listener(addr) {
                Ok(own) => Ok(steer(own)),
                Err(e) => {
                    tracing::debug!("worker shares the first socket ({e})");
                    StdListener::Tcp(copy).register(None)
                }
            },
            StdListener::Unix(l) => {
                l.set_nonblocking(true)?;
                Ok(WorkerListener::Unix(UnixListener::from_std(l)?))
            }
        }
    }
}

/// A new connection from either kind of listener.
enum Accepted {
    /// A TCP client and its address.
    Tcp(tokio::net::TcpStream, std::net::SocketAddr),
    /// A unix socket client (typically the local nginx).
    Unix(tokio::net::UnixStream),
}

impl WorkerListener {
    async fn accept(&self) -> io::Result<Accepted> {
        match self {
            WorkerListener::Tcp(l) => l.accept().await.map(|(s, a)| Accepted::Tcp(s, a)),
            WorkerListener::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
        }
    }
}

impl Server {
    /// Hands a connection that `worker` has just accepted to a less busy
    /// worker, if connections are steered and `worker` serves too many more
    /// than another (see `steer`).
    fn hand_over(&self, worker: usize, stream: tokio::net::TcpStream, peer: SocketAddr) -> Placed {
        let (Some(handoff), Some(to)) = (&self.handoff, self.load.destination(worker)) else {
            return Placed::Here(stream);
        };
        let Some(sender) = handoff.get(to) else {
            return Placed::Here(stream);
        };
        let detached = match stream.into_std() {
            Ok(detached) => detached,
            Err(e) => return Placed::lost(e),
        };
        // Counted at once, so that the next decision sees it.
        self.load.opened(to);
        match sender.send((detached, peer)) {
            Ok(()) => Placed::There,
            // That worker has stopped accepting: serve it here.
            Err(mpsc::error::SendError((detached, _))) => {
                self.load.closed(to);
                tokio::net::TcpStream::from_std(detached).map_or_else(Placed::lost, Placed::Here)
            }
        }
    }

    /// Serves a connection that another worker handed over (see
    /// [`Server::hand_over`], which counted it in this worker's load).
    fn connection_handed(
        &self,
        worker: usize,
        alive: &mpsc::Sender<()>,
        drain: &Arc<Drain>,
        (stream, peer): Handed,
    ) -> u64 {
        match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => self.connection(worker, alive, drain, stream, Peer::Tcp(peer)),
            Err(e) => {
                tracing::warn!("cannot take over a connection from another worker: {e}");
                self.load.closed(worker);
                0
            }
        }
    }

    /// Serves one connection of `worker` (already counted in its load) on
    /// its own task; returns how many were taken within the cap (0 or 1).
    fn connection<IO>(
        &self,
        worker: usize,
        alive: &mpsc::Sender<()>,
        drain: &Arc<Drain>,
        stream: IO,
        peer: Peer,
    ) -> u64
    where
        IO: AsyncRead + AsyncWrite + IncomingCpu + Unpin + Send + 'static,
    {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            self.load.closed(worker);
            tokio::spawn(reject(stream, peer, self.max_connections));
            return 0;
        };
        let gw = self.gw.clone();
        let state = Arc::new(ConnState::default());
        let seen = state.clone();
        let service = service_fn(move |req| {
            if !seen.had_request.load(Ordering::Relaxed) {
                seen.had_request.store(true, Ordering::Relaxed);
            }
            match http::handle_now(&gw, &peer, req) {
                Now::Answer(resp) => Reply::Now(Some(seen.finish(resp))),
                Now::Wait(waiting) => {
                    let (gw, seen) = (gw.clone(), seen.clone());
                    Reply::Later(Box::pin(async move {
                        waiting.answer(&gw, &peer).await.map(|r| seen.finish(r))
                    }))
                }
            }
        });
        let steering = self.handoff.is_some().then(|| Steering {
            worker,
            check: steer::Check::default(),
            load: self.load.clone(),
            state: state.clone(),
        });
        let stream = Stream {
            io: stream,
            steering,
        };
        let conn = self.builder.serve_connection(TokioIo::new(stream), service);
        let (alive, drain) = (alive.clone(), drain.clone());
        let open = self.gw.metrics.open_connections.clone();
        let load = self.load.clone();
        open.inc();
        let served = async move {
            tokio::pin!(conn);
            let ended = match drain.or(conn.as_mut()).await {
                Some(ended) => ended,
                None => tokio::select! {
                    ended = conn.as_mut() => ended,
                    () = first_request(&state.had_request) => {
                        // Finishes a request in flight (answered with
                        // `Connection: close`), closes an idle connection.
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                },
            };
            if let Err(e) = ended {
                tracing::debug!("connection ended: {e}");
            }
            open.dec();
            load.closed(worker);
            drop(permit);
            drop(alive);
        };
        // The span names the peer in debug lines; without them, no span.
        if tracing::enabled!(tracing::Level::DEBUG) {
            tokio::spawn(served.instrument(tracing::debug_span!("conn", %peer)));
        } else {
            tokio::spawn(served);
        }
        1
    }
}

/// A worker's signal to its connections that it is shutting down: set once,
/// never cleared.
#[derive(Default)]
struct Drain {
    started: AtomicBool,
    notify: Notify,
}

impl Drain {
    /// Tells every connection of the worker.
    fn start(&self) {
        self.started.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Runs `work` until it ends (`Some` of its output) or the drain starts
    /// (`None`).
    ///
    /// A connection's task is polled once per request, and polling a
    /// `Notified` each time would take its lock. So the signal is polled
    /// once, to register, and then again only once the flag is set.
    async fn or<F: Future + Unpin>(&self, mut work: F) -> Option<F::Output> {
        // Created before the flag is read: a start in between still wakes it.
        let notified = self.notify.notified();
        tokio::pin!(notified);
        let mut registered = false;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = Pin::new(&mut work).poll(cx) {
                return Poll::Ready(Some(out));
            }
            if self.started.load(Ordering::Acquire) {
                return Poll::Ready(None);
            }
            if !registered {
                registered = true;
                if notified.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// What a connection's service and its stream share: plain flags, so the
/// request path stays lock-free.
#[derive(Default)]
struct ConnState {
    /// A request has come in on the connection (see `first_request`).
    had_request: AtomicBool,
    /// The client's packets arrive on another worker's CPU (see `steer`):
    /// the next answer closes the connection, and the client's next one
    /// lands on that worker.
    misplaced: AtomicBool,
}

impl ConnState {
    /// `resp`, with `Connection: close` if the connection is misplaced.
    fn finish(&self, mut resp: Response<Body>) -> Response<Body> {
        if self.misplaced.load(Ordering::Relaxed) {
            resp.headers_mut().insert(
                ::http::header::CONNECTION,
                ::http::HeaderValue::from_static("close"),
            );
        }
        resp
    }
}

/// A socket that knows which CPU its packets arrive on.
trait IncomingCpu {
    fn incoming_cpu(&self) -> Option<usize>;
}

impl IncomingCpu for tokio::net::TcpStream {
    fn incoming_cpu(&self) -> Option<usize> {
        steer::incoming_cpu(self)
    }
}

impl IncomingCpu for tokio::net::UnixStream {
    fn incoming_cpu(&self) -> Option<usize> {
        None
    }
}

/// A connection's stream, as hyper sees it.
///
/// Its shutdown is left to the close when it is dropped: hyper shuts down
/// the write side before it lets go of a connection, and the close right
/// after sends the same FIN. One system call less per connection.
///
/// When connections are steered by CPU, it checks now and then which CPU
/// the client's packets arrive on ([`steer::Check`]).
struct Stream<IO> {
    io: IO,
    steering: Option<Steering>,
}

/// A stream's part in steering (see `steer`).
struct Steering {
    /// The worker that serves the connection.
    worker: usize,
    check: steer::Check,
    load: Arc<Load>,
    state: Arc<ConnState>,
}

impl<IO: AsyncRead + IncomingCpu + Unpin> AsyncRead for Stream<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        // Checked right after a read that returned data: the last packet is
        // then the client's (an ACK of an answer could come from our side).
        if let Some(s) = &mut this.steering {
            if matches!(read, Poll::Ready(Ok(())))
                && buf.filled().len() > before
                && s.check.read(|| this.io.incoming_cpu(), &s.load, s.worker)
                && !s.state.misplaced.swap(true, Ordering::Relaxed)
            {
                s.load.moved();
            }
        }
        read
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Stream<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

/// The future a connection's service gives hyper. hyper keeps one per
/// connection, so it is small: an answer made on the spot (every redirect in
/// steady state), or a boxed future for the few answers that wait.
enum Reply {
    /// Answered already; taken on the first poll.
    Now(Option<Response<Body>>),
    /// Waits for health results.
    Later(Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>),
}

impl Future for Reply {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            // hyper never polls a finished future; if it did, it would wait.
            Reply::Now(resp) => resp.take().map_or(Poll::Pending, |r| Poll::Ready(Ok(r))),
            Reply::Later(later) => later.as_mut().poll(cx),
        }
    }
}

/// Once shutdown has begun: completes at once if the connection has had a
/// request, else after its first one or [`FIRST_REQUEST_GRACE`].
async fn first_request(had_request: &AtomicBool) {
    let deadline = tokio::time::Instant::now() + FIRST_REQUEST_GRACE;
    while !had_request.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
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

    /// The workers skip `set_nodelay` per connection on Linux because the
    /// accepted socket inherits it from the listener; this checks that.
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay() {
        let listener = reuseport_listener("127.0.0.1:0".parse().unwrap()).unwrap();
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
