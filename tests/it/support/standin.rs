//! Local stand-in Jitsi servers: a real hyper server on 127.0.0.1 that
//! behaves like nginx in front of Prosody, with a failure mode the test can
//! switch at runtime.
//!
//! ```ignore
//! let jitsi = StandIn::http(Mode::Healthy).await;
//! // ... point roomgate at jitsi.url() ...
//! jitsi.wait_for_creates(1, Duration::from_secs(2)).await.unwrap();
//! jitsi.set_mode(Mode::BoshDown).await;
//! ```
//!
//! The stand-in uses real sockets and real timers: do not run it under
//! tokio's paused clock (`start_paused`), or its slow modes stop being slow.
//!
//! XMPP domains: by default a stand-in hosts both `localhost` and
//! `127.0.0.1` (like a Prosody with two VirtualHosts), so a roomgate server
//! entry whose `xmpp_domain` defaults to the URL's host works for both
//! `url()` and `ip_url()`. `StandInBuilder::xmpp_domain` replaces that pair
//! with the one given domain.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::tls::Leaf;

const BOSH_NS: &str = "http://jabber.org/protocol/httpbind";

/// The `condition` of [`Mode::ForgedCondition`], as written in the XML:
/// after a newline, what roomgate's log lines look like, starting with the
/// marker `FORGED`. The newline and the carriage return are character
/// references, which survive XML's attribute-value normalization (a raw
/// newline in an attribute reads as a space), so the parsed value holds
/// them raw; the escape character is raw.
pub const FORGED_CONDITION: &str =
    "policy-violation&#10;FORGED 2025-01-01T00:00:00.000000Z  INFO roomgate: primary up&#13;\x1b[1A";

/// The length of the `condition` of [`Mode::HugeCondition`]: 1 MB.
pub const HUGE_CONDITION_LEN: usize = 1_000_000;

/// How long `set_mode` waits for the listener to be closed or re-bound.
const MODE_APPLY_BOUND: Duration = Duration::from_secs(5);
/// Requests kept for `recent_requests`.
const RECORD_LIMIT: usize = 64;
/// Largest request body read; BOSH bodies from a probe are a few hundred bytes.
const BODY_LIMIT: usize = 64 * 1024;

/// What the stand-in pretends is wrong with it. Switch with
/// [`StandIn::set_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// nginx and Prosody up: config.js, pages and BOSH all work.
    Healthy,
    /// nginx up, Prosody down: config.js and pages 200, `/http-bind` 502.
    BoshDown,
    /// Every request answers 500.
    Error500,
    /// The listening socket is closed: connects are refused, open
    /// connections are dropped. Leaving this mode re-binds the same port.
    Refusing,
    /// Connections are accepted and never answered (TLS handshakes never
    /// complete); requests on kept-alive connections hang.
    BlackHole,
    /// `/http-bind` answers every session request as Prosody 0.12 answers
    /// one for a domain it does not host: 200 with an
    /// `improper-addressing` terminate body ([`UNKNOWN_DOMAIN_BODY`]).
    UnknownDomain,
    /// `/http-bind` answers 200 with an HTML maintenance page.
    WrongBody,
    /// `/http-bind` answers 200 with a terminate body whose `condition` is
    /// [`FORGED_CONDITION`]: raw CR, LF and an ANSI escape that, logged as
    /// they are, make a log line of their own.
    ForgedCondition,
    /// `/http-bind` answers 200 with a terminate body whose `condition` is
    /// [`HUGE_CONDITION_LEN`] bytes long (just under the probe's 1 MiB body
    /// limit, so the probe reads it all).
    HugeCondition,
    /// `/http-bind` sends 200 headers at once, then the normal answer one
    /// byte per `slow_interval` (default 200 ms), so short timeouts expire
    /// mid-body. A session is created as in `Healthy`.
    SlowBody,
    /// Reads the request, then sends the status line and headers one byte
    /// per `slow_interval`, so short timeouts expire before the head ends.
    SlowHeaders,
    /// As `Healthy`, but the answer to a session's terminate is trickled
    /// one byte per `slow_interval` after its headers: a server slow to end
    /// sessions.
    SlowTerminate,
    /// BOSH session requests alternate: the first opens a session as in
    /// `Healthy`, the next answers 502 as in `BoshDown`, and so on.
    Flapping,
}

/// Snapshot of the stand-in's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Requests for `config.js` (any method, any mode).
    pub config_js: u64,
    /// BOSH session-create requests seen (POST `/http-bind` whose `<body>`
    /// has no `sid`), in any mode, whatever the answer.
    pub bosh_creates: u64,
    /// BOSH sessions actually opened (answered with `<stream:features>`).
    pub bosh_sessions: u64,
    /// `type='terminate'` requests that closed a known session.
    pub bosh_terminates: u64,
    /// HTTP requests of any kind that reached the server.
    pub requests: u64,
    /// TCP connections accepted.
    pub connections: u64,
}

/// One request as the stand-in received it (see [`StandIn::recent_requests`]).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// Path and query, as sent.
    pub path: String,
    pub headers: HeaderMap,
    /// The body, lossily decoded as UTF-8.
    pub body: String,
}

#[derive(Default)]
struct Counters {
    config_js: AtomicU64,
    bosh_creates: AtomicU64,
    bosh_sessions: AtomicU64,
    bosh_terminates: AtomicU64,
    requests: AtomicU64,
    connections: AtomicU64,
}

/// State shared by the handle, the accept loop and every connection.
struct Shared {
    prefix: String,
    xmpp_domains: Vec<String>,
    tls: Option<TlsAcceptor>,
    slow_interval: Duration,
    counters: Counters,
    /// Woken on every counter change, so waits are event-driven, not polled.
    counted: Notify,
    sessions: Mutex<HashSet<String>>,
    next_sid: AtomicU64,
    /// Session requests seen in `Flapping` mode; odd ones fail.
    flaps: AtomicU64,
    recorded: Mutex<VecDeque<Recorded>>,
}

impl Shared {
    fn bump(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.counted.notify_waiters();
    }
}

/// The mode plus a generation number, so `set_mode` can wait until the
/// accept loop has applied exactly its change.
type ModeCell = (Mode, u64);

/// Configures a stand-in; get one from [`StandIn::builder`].
pub struct StandInBuilder {
    mode: Mode,
    prefix: String,
    xmpp_domain: Option<String>,
    tls: Option<Arc<rustls::ServerConfig>>,
    slow_interval: Duration,
}

impl StandInBuilder {
    /// Initial mode (default `Healthy`).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Serve under a path prefix such as `/jitsi`; paths outside it get 404.
    pub fn prefix(mut self, prefix: &str) -> Self {
        let trimmed = prefix.trim_matches('/');
        self.prefix = if trimmed.is_empty() {
            String::new()
        } else {
            format!("/{trimmed}")
        };
        self
    }

    /// The only XMPP domain accepted in BOSH `to` attributes.
    pub fn xmpp_domain(mut self, domain: &str) -> Self {
        self.xmpp_domain = Some(domain.to_string());
        self
    }

    /// Serve HTTPS with this certificate; `url()` becomes `https://localhost:PORT`.
    pub fn tls(mut self, leaf: &Leaf) -> Self {
        self.tls = Some(leaf.server_config());
        self
    }

    /// Serve HTTPS with a ready-made rustls config (e.g. for odd ALPN tests).
    pub fn tls_config(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Delay between body bytes in `SlowBody` mode, and between head bytes
    /// in `SlowHeaders` mode.
    pub fn slow_interval(mut self, interval: Duration) -> Self {
        self.slow_interval = interval;
        self
    }

    /// Binds 127.0.0.1 on a free port and starts serving.
    pub async fn start(self) -> StandIn {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind stand-in");
        let addr = listener.local_addr().expect("stand-in address");
        let xmpp_domains = match self.xmpp_domain {
            Some(domain) => vec![domain],
            None => vec!["localhost".to_string(), "127.0.0.1".to_string()],
        };
        let shared = Arc::new(Shared {
            prefix: self.prefix,
            xmpp_domains,
            tls: self.tls.map(TlsAcceptor::from),
            slow_interval: self.slow_interval,
            counters: Counters::default(),
            counted: Notify::new(),
            sessions: Mutex::new(HashSet::new()),
            next_sid: AtomicU64::new(1),
            flaps: AtomicU64::new(0),
            recorded: Mutex::new(VecDeque::new()),
        });
        // Generation 1 is the initial mode; `applied` starts below it so
        // that `start` really waits for the accept loop.
        let (mode_tx, mode_rx) = watch::channel((self.mode, 1));
        let (applied_tx, applied_rx) = watch::channel(0);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(
            shared.clone(),
            listener,
            addr,
            mode_rx,
            applied_tx,
            stop_rx,
        ));
        let stand_in = StandIn {
            shared,
            addr,
            mode_tx,
            applied_rx,
            stop: Some(stop_tx),
            task: Some(task),
        };
        // Starting in Refusing must mean refusing by the time we return.
        stand_in.wait_applied(1).await;
        stand_in
    }
}

/// A running stand-in Jitsi server. Dropping it (or [`StandIn::shutdown`])
/// closes the port and every connection.
pub struct StandIn {
    shared: Arc<Shared>,
    addr: SocketAddr,
    mode_tx: watch::Sender<ModeCell>,
    applied_rx: watch::Receiver<u64>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every
        // connection task with it.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl StandIn {
    /// A plain-HTTP stand-in at `http://127.0.0.1:PORT`.
    pub async fn http(mode: Mode) -> StandIn {
        Self::builder().mode(mode).start().await
    }

    /// An HTTPS stand-in at `https://localhost:PORT` serving `leaf`.
    pub async fn https(mode: Mode, leaf: &Leaf) -> StandIn {
        Self::builder().mode(mode).tls(leaf).start().await
    }

    /// Defaults: `Healthy`, no prefix, plain HTTP, domains localhost and 127.0.0.1.
    pub fn builder() -> StandInBuilder {
        StandInBuilder {
            mode: Mode::Healthy,
            prefix: String::new(),
            xmpp_domain: None,
            tls: None,
            slow_interval: Duration::from_millis(200),
        }
    }

    /// Base URL with prefix, no trailing slash: `http://127.0.0.1:PORT` or,
    /// with TLS, `https://localhost:PORT` (the name the certificate is for).
    pub fn url(&self) -> String {
        let host = if self.is_tls() {
            "localhost"
        } else {
            "127.0.0.1"
        };
        format!(
            "{}://{host}:{}{}",
            self.scheme(),
            self.port(),
            self.shared.prefix
        )
    }

    /// Like [`StandIn::url`] but always with host `127.0.0.1`.
    pub fn ip_url(&self) -> String {
        format!("{}://{}{}", self.scheme(), self.addr, self.shared.prefix)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn is_tls(&self) -> bool {
        self.shared.tls.is_some()
    }

    /// The path prefix (`""` or e.g. `/jitsi`).
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// The XMPP domains accepted as BOSH `to`.
    pub fn xmpp_domains(&self) -> &[String] {
        &self.shared.xmpp_domains
    }

    pub fn mode(&self) -> Mode {
        self.mode_tx.borrow().0
    }

    /// Switches the mode. New requests (also on kept-alive connections) see
    /// it at once; when this returns, a `Refusing` port is closed and a port
    /// leaving `Refusing` is listening again.
    pub async fn set_mode(&self, mode: Mode) {
        let mut generation = 0;
        self.mode_tx.send_modify(|cell| {
            cell.1 += 1;
            generation = cell.1;
            cell.0 = mode;
        });
        self.wait_applied(generation).await;
    }

    async fn wait_applied(&self, generation: u64) {
        let mut applied = self.applied_rx.clone();
        let done = tokio::time::timeout(MODE_APPLY_BOUND, applied.wait_for(|g| *g >= generation))
            .await
            .map(|seen| seen.is_ok());
        match done {
            Ok(true) => {}
            Ok(false) => panic!("stand-in on {} stopped", self.addr),
            Err(_) => panic!(
                "stand-in on {}: mode {:?} not applied within {MODE_APPLY_BOUND:?} (port taken?)",
                self.addr,
                self.mode()
            ),
        }
    }

    pub fn counts(&self) -> Counts {
        let c = &self.shared.counters;
        Counts {
            config_js: c.config_js.load(Ordering::SeqCst),
            bosh_creates: c.bosh_creates.load(Ordering::SeqCst),
            bosh_sessions: c.bosh_sessions.load(Ordering::SeqCst),
            bosh_terminates: c.bosh_terminates.load(Ordering::SeqCst),
            requests: c.requests.load(Ordering::SeqCst),
            connections: c.connections.load(Ordering::SeqCst),
        }
    }

    /// Zeroes the counters and forgets recorded requests (open BOSH sessions
    /// stay known, so a later terminate still counts).
    pub fn reset_counts(&self) {
        let c = &self.shared.counters;
        for counter in [
            &c.config_js,
            &c.bosh_creates,
            &c.bosh_sessions,
            &c.bosh_terminates,
            &c.requests,
            &c.connections,
        ] {
            counter.store(0, Ordering::SeqCst);
        }
        lock(&self.shared.recorded).clear();
        self.shared.counted.notify_waiters();
    }

    /// BOSH sessions opened and not yet terminated.
    pub fn open_sessions(&self) -> usize {
        lock(&self.shared.sessions).len()
    }

    /// The last requests received (up to 64), oldest first.
    pub fn recent_requests(&self) -> Vec<Recorded> {
        lock(&self.shared.recorded).iter().cloned().collect()
    }

    /// Waits until `pred` holds for the counters, at most `timeout`.
    /// `Ok` carries the counts that satisfied it, `Err` the last counts seen.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Counts) -> bool,
    ) -> Result<Counts, Counts> {
        let deadline = Instant::now() + timeout;
        loop {
            // Register interest before reading, so a bump between the read
            // and the await cannot be missed.
            let notified = self.shared.counted.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let counts = self.counts();
            if pred(&counts) {
                return Ok(counts);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let counts = self.counts();
                return if pred(&counts) {
                    Ok(counts)
                } else {
                    Err(counts)
                };
            }
        }
    }

    /// Waits until at least `n` BOSH session creates were seen.
    pub async fn wait_for_creates(&self, n: u64, timeout: Duration) -> Result<Counts, Counts> {
        self.wait_for(timeout, |c| c.bosh_creates >= n).await
    }

    /// Waits until at least `n` BOSH sessions were terminated.
    pub async fn wait_for_terminates(&self, n: u64, timeout: Duration) -> Result<Counts, Counts> {
        self.wait_for(timeout, |c| c.bosh_terminates >= n).await
    }

    /// Stops the server and waits until its port and connections are closed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn scheme(&self) -> &'static str {
        if self.is_tls() {
            "https"
        } else {
            "http"
        }
    }
}

/// A poisoned lock only means another test thread panicked; the data
/// (counters, logs) is still fine to read, and server tasks must not panic.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    // Closed connections linger in TIME_WAIT; re-binding the same port after
    // Refusing must not trip over them.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

/// Owns the listening socket and all connection tasks. Closing the socket
/// (Refusing) happens here, since only dropping the last handle to it makes
/// the kernel refuse connects.
async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    addr: SocketAddr,
    mut mode_rx: watch::Receiver<ModeCell>,
    applied_tx: watch::Sender<u64>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut listener = Some(listener);
    let mut conns = JoinSet::new();
    loop {
        let (mode, generation) = *mode_rx.borrow_and_update();
        if mode == Mode::Refusing {
            if listener.take().is_some() {
                // A crashed server takes its open connections down with it.
                conns.shutdown().await;
            }
        } else if listener.is_none() {
            listener = bind(addr).ok();
        }
        let settled = (mode == Mode::Refusing) == listener.is_none();
        if settled {
            applied_tx.send_replace(generation);
        }
        tokio::select! {
            _ = &mut stop => break,
            changed = mode_rx.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            accepted = accept(listener.as_ref()) => match accepted {
                Ok(stream) => {
                    conns.spawn(serve_connection(shared.clone(), mode_rx.clone(), stream));
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            // The port was still taken when leaving Refusing; try again soon.
            _ = tokio::time::sleep(Duration::from_millis(20)), if !settled => {}
        }
    }
    drop(listener);
    conns.shutdown().await;
}

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<TcpStream> {
    match listener {
        Some(listener) => listener.accept().await.map(|(stream, _)| stream),
        None => std::future::pending().await,
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    mode_rx: watch::Receiver<ModeCell>,
    stream: TcpStream,
) {
    shared.bump(&shared.counters.connections);
    let mode = mode_rx.borrow().0;
    match mode {
        Mode::BlackHole => return hold(stream).await,
        Mode::SlowHeaders => return slow_head(&shared, stream).await,
        _ => {}
    }
    let _ = stream.set_nodelay(true);
    match shared.tls.clone() {
        None => serve_http(shared, mode_rx, stream).await,
        Some(acceptor) => {
            // Bounded so clients that connect and never say hello do not pin
            // a task for the rest of the test.
            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
            if let Ok(Ok(tls)) = handshake.await {
                serve_http(shared, mode_rx, tls).await;
            }
        }
    }
}

/// Waits for a request, then trickles a response head one byte per
/// `slow_interval`; stops when the client hangs up.
async fn slow_head(shared: &Shared, mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 4096];
    if !matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
        return;
    }
    shared.bump(&shared.counters.requests);
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 0\r\n\r\n";
    for byte in head.chunks(1) {
        if stream.write_all(byte).await.is_err() {
            return;
        }
        tokio::time::sleep(shared.slow_interval).await;
    }
}

/// Keeps the socket open without reading or writing until the task is
/// aborted (mode Refusing, or the stand-in stops).
async fn hold<T>(io: T) {
    let _io = io;
    std::future::pending::<()>().await
}

async fn serve_http<IO>(shared: Arc<Shared>, mode_rx: watch::Receiver<ModeCell>, io: IO)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(shared.clone(), mode_rx.clone(), req));
    // Errors here are client hang-ups and the like: nothing to report.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await;
}

type Resp = Response<BoxBody<Bytes, Infallible>>;

async fn handle(
    shared: Arc<Shared>,
    mode_rx: watch::Receiver<ModeCell>,
    req: Request<Incoming>,
) -> Result<Resp, std::io::Error> {
    shared.bump(&shared.counters.requests);
    // Read the mode per request, so kept-alive connections follow changes.
    let mode = mode_rx.borrow().0;
    match mode {
        Mode::BlackHole => std::future::pending::<()>().await,
        // An error from the service makes hyper drop the connection.
        Mode::Refusing => return Err(std::io::Error::other("stand-in is refusing")),
        _ => {}
    }
    let (parts, body) = req.into_parts();
    // Like nginx, read the whole (bounded) body before answering.
    let body = match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(_) => {
            let answer = simple(StatusCode::PAYLOAD_TOO_LARGE, "text/plain", "too large");
            return Ok(answer.into_response());
        }
    };
    {
        let mut recorded = lock(&shared.recorded);
        if recorded.len() == RECORD_LIMIT {
            recorded.pop_front();
        }
        recorded.push_back(Recorded {
            method: parts.method.clone(),
            path: parts
                .uri
                .path_and_query()
                .map(|pq| pq.as_str().to_string())
                .unwrap_or_default(),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
    }
    // A mode change while the body was read applies to this request too.
    let mode = mode_rx.borrow().0;
    Ok(route(&shared, mode, &parts.method, parts.uri.path(), &body).into_response())
}

fn route(shared: &Shared, mode: Mode, method: &Method, path: &str, body: &str) -> Answer {
    let Some(rest) = strip_prefix(path, &shared.prefix) else {
        return simple(StatusCode::NOT_FOUND, "text/html", &nginx_error_page(404));
    };
    match rest {
        "/http-bind" => bosh(shared, mode, method, body),
        "/config.js" => {
            shared.bump(&shared.counters.config_js);
            if mode == Mode::Error500 {
                simple(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/html",
                    &nginx_error_page(500),
                )
            } else if method == Method::GET || method == Method::HEAD {
                simple(StatusCode::OK, "application/javascript", CONFIG_JS)
            } else {
                not_allowed()
            }
        }
        _ if mode == Mode::Error500 => simple(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/html",
            &nginx_error_page(500),
        ),
        _ if method == Method::GET || method == Method::HEAD => {
            simple(StatusCode::OK, "text/html; charset=utf-8", ROOM_PAGE)
        }
        _ => not_allowed(),
    }
}

/// The part of `path` below `prefix`, or `None` when outside it.
fn strip_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

fn bosh(shared: &Shared, mode: Mode, method: &Method, body: &str) -> Answer {
    let attrs = if method == Method::POST {
        parse_body_element(body)
    } else {
        None
    };
    if attrs.as_ref().is_some_and(|a| attr(a, "sid").is_none()) {
        shared.bump(&shared.counters.bosh_creates);
    }
    match mode {
        Mode::Error500 => simple(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/html",
            &nginx_error_page(500),
        ),
        Mode::BoshDown => simple(StatusCode::BAD_GATEWAY, "text/html", &nginx_error_page(502)),
        Mode::WrongBody => simple(StatusCode::OK, "text/html; charset=utf-8", MAINTENANCE_PAGE),
        Mode::UnknownDomain => xml(UNKNOWN_DOMAIN_BODY.to_owned()),
        Mode::ForgedCondition => xml(terminate_body(Some(FORGED_CONDITION))),
        Mode::HugeCondition => xml(terminate_body(Some(&"x".repeat(HUGE_CONDITION_LEN)))),
        Mode::SlowBody => Answer {
            // Only the body is slowed; the status and headers go out at once.
            trickle: Some(shared.slow_interval),
            ..prosody(shared, method, attrs)
        },
        Mode::SlowTerminate
            if attrs
                .as_ref()
                .is_some_and(|a| attr(a, "type") == Some("terminate")) =>
        {
            Answer {
                trickle: Some(shared.slow_interval),
                ..prosody(shared, method, attrs)
            }
        }
        Mode::Flapping if attrs.as_ref().is_some_and(|a| attr(a, "sid").is_none()) => {
            if shared
                .flaps
                .fetch_add(1, Ordering::SeqCst)
                .is_multiple_of(2)
            {
                prosody(shared, method, attrs)
            } else {
                simple(StatusCode::BAD_GATEWAY, "text/html", &nginx_error_page(502))
            }
        }
        Mode::Healthy
        | Mode::Refusing
        | Mode::BlackHole
        | Mode::SlowHeaders
        | Mode::Flapping
        | Mode::SlowTerminate => prosody(shared, method, attrs),
    }
}

/// Prosody's mod_bosh, reduced to what a probe can observe.
fn prosody(shared: &Shared, method: &Method, attrs: Option<Vec<(String, String)>>) -> Answer {
    if method == Method::GET || method == Method::HEAD {
        return simple(StatusCode::OK, "text/html; charset=utf-8", PROSODY_BOSH_GET);
    }
    if method != Method::POST {
        return not_allowed();
    }
    let Some(attrs) = attrs else {
        return simple(StatusCode::BAD_REQUEST, "text/plain", "Bad Request");
    };
    if attr(&attrs, "xmlns") != Some(BOSH_NS) {
        return xml(terminate_body(Some("bad-request")));
    }
    if let Some(sid) = attr(&attrs, "sid") {
        let known = lock(&shared.sessions).contains(sid);
        if !known {
            return xml(terminate_body(Some("item-not-found")));
        }
        if attr(&attrs, "type") == Some("terminate") {
            lock(&shared.sessions).remove(sid);
            shared.bump(&shared.counters.bosh_terminates);
            return xml(terminate_body(None));
        }
        // A poll or stanza delivery: answer empty at once (Prosody would hold
        // it up to `wait` seconds, which no probe needs).
        return xml(format!("<body xmlns='{BOSH_NS}'/>"));
    }
    let Some(to) = attr(&attrs, "to") else {
        return xml(terminate_body(Some("improper-addressing")));
    };
    if !shared
        .xmpp_domains
        .iter()
        .any(|d| d.eq_ignore_ascii_case(to))
    {
        return xml(UNKNOWN_DOMAIN_BODY.to_owned());
    }
    if !attr(&attrs, "rid")
        .is_some_and(|rid| !rid.is_empty() && rid.bytes().all(|b| b.is_ascii_digit()))
    {
        return xml(terminate_body(Some("bad-request")));
    }
    let n = shared.next_sid.fetch_add(1, Ordering::SeqCst);
    let sid = format!("standin{n:08x}{:08x}", std::process::id());
    lock(&shared.sessions).insert(sid.clone());
    shared.bump(&shared.counters.bosh_sessions);
    xml(format!(
        "<body xmlns='{BOSH_NS}' sid='{sid}' wait='10' requests='2' inactivity='60' \
         maxpause='120' polling='2' ver='1.6' from='{from}' secure='true' authid='{sid}' \
         xmlns:xmpp='urn:xmpp:xbosh' xmlns:stream='http://etherx.jabber.org/streams' \
         xmpp:version='1.0'><stream:features xmlns:stream='http://etherx.jabber.org/streams'>\
         <mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>ANONYMOUS</mechanism>\
         </mechanisms></stream:features></body>",
        from = escape(to),
    ))
}

/// What Prosody 0.12's mod_bosh answers to a session request whose `to`
/// is none of its virtual hosts: the same element and attributes (Prosody
/// orders attributes differently from run to run), `improper-addressing`
/// rather than the `host-unknown` that XEP-0124 suggests.
pub const UNKNOWN_DOMAIN_BODY: &str = "<body condition='improper-addressing' \
     xmlns:stream='http://etherx.jabber.org/streams' type='terminate' \
     xmlns='http://jabber.org/protocol/httpbind'/>";

fn terminate_body(condition: Option<&str>) -> String {
    match condition {
        Some(c) => format!("<body type='terminate' condition='{c}' xmlns='{BOSH_NS}'/>"),
        None => format!("<body type='terminate' xmlns='{BOSH_NS}'/>"),
    }
}

fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Attributes of a BOSH `<body>` root element, or `None` if the text is not
/// one (strict enough to catch a malformed probe, nowhere near a full XML
/// parser). Never panics: every slice index comes from `find` on ASCII.
fn parse_body_element(text: &str) -> Option<Vec<(String, String)>> {
    let mut doc = text.trim();
    if doc.starts_with("<?xml") {
        doc = doc[doc.find("?>")? + 2..].trim_start();
    }
    let mut rest = doc.strip_prefix("<body")?;
    if !rest.starts_with(|c: char| c.is_whitespace() || c == '/' || c == '>') {
        return None;
    }
    let mut attrs = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("/>") {
            return after.trim().is_empty().then_some(attrs);
        }
        if let Some(after) = rest.strip_prefix('>') {
            return after.trim_end().ends_with("</body>").then_some(attrs);
        }
        let eq = rest.find('=')?;
        let name = rest[..eq].trim();
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || "<>/\"'".contains(c)) {
            return None;
        }
        let value_part = rest[eq + 1..].trim_start();
        let quote = value_part
            .chars()
            .next()
            .filter(|q| *q == '\'' || *q == '"')?;
        let value_part = &value_part[1..];
        let end = value_part.find(quote)?;
        if attrs.iter().any(|(n, _)| n == name) {
            return None;
        }
        attrs.push((name.to_string(), unescape(&value_part[..end])));
        rest = &value_part[end + 1..];
    }
}

fn unescape(s: &str) -> String {
    s.replace("&apos;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// A response before it becomes a hyper body, so modes can reshape it.
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: String,
    /// Send the body one byte per this interval (SlowBody).
    trickle: Option<Duration>,
}

impl Answer {
    fn into_response(self) -> Resp {
        let data = Bytes::from(self.body);
        // Trickle has no size hint, so hyper sends it chunked and flushes
        // the head before the first slow byte.
        let body = match self.trickle {
            Some(interval) => BoxBody::new(Trickle::new(data, interval)),
            None => BoxBody::new(Full::new(data)),
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = self.status;
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        headers.insert(header::SERVER, HeaderValue::from_static("nginx"));
        resp
    }
}

fn simple(status: StatusCode, content_type: &'static str, body: &str) -> Answer {
    Answer {
        status,
        content_type,
        body: body.to_owned(),
        trickle: None,
    }
}

fn xml(body: String) -> Answer {
    simple(StatusCode::OK, "text/xml; charset=utf-8", &body)
}

fn not_allowed() -> Answer {
    simple(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/html",
        &nginx_error_page(405),
    )
}

fn nginx_error_page(code: u16) -> String {
    let reason = StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n\
         <center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n\
         </body>\r\n</html>\r\n"
    )
}

const CONFIG_JS: &str = "var config = {\n    hosts: {\n        domain: 'localhost',\n        \
    muc: 'conference.localhost'\n    },\n    bosh: '/http-bind',\n    \
    websocket: '/xmpp-websocket'\n};\n";

const ROOM_PAGE: &str = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
    <title>Jitsi Meet</title><script src=\"config.js\"></script></head>\
    <body><div id=\"react\"></div></body></html>\n";

const MAINTENANCE_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Maintenance</title></head>\
    <body><h1>We'll be back soon</h1><p>This service is under maintenance.</p></body></html>\n";

/// What Prosody answers to a browser opening the BOSH URL.
const PROSODY_BOSH_GET: &str = "<!DOCTYPE html><html><head><title>Prosody BOSH endpoint</title>\
    </head><body><p>It works! Now point your BOSH client to this URL to connect to Prosody.\
    </p></body></html>";

/// A body that yields its bytes one at a time, `interval` apart (the first
/// at once, so the client sees the body has started).
struct Trickle {
    data: Bytes,
    interval: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Trickle {
    fn new(data: Bytes, interval: Duration) -> Trickle {
        Trickle {
            data,
            interval,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }
}

impl Body for Trickle {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.data.is_empty() {
            return Poll::Ready(None);
        }
        ready!(this.sleep.as_mut().poll(cx));
        let byte = this.data.split_to(1);
        let next = Instant::now() + this.interval;
        this.sleep.as_mut().reset(next);
        Poll::Ready(Some(Ok(Frame::data(byte))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }
}
