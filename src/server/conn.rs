//! One connection: served by hyper on a task of its own, with the header
//! read and write timeouts, and finished politely at shutdown.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::listen::Accepted;
use crate::forwarded::Peer;
use crate::gateway::Gateway;
use crate::http;

/// A client must send its complete request head within this time, on a new
/// connection and between requests on a kept-alive one (slowloris guard).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A client must take each answer within this time: a write that makes no
/// progress for this long closes the connection. Without it, a client that
/// sends requests and never reads the answers would hold its connection
/// (and a place under the cap) forever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most header lines a request may have; browsers send about twenty.
pub const MAX_HEADERS: usize = 64;

/// Read buffer per connection, which bounds the request head. hyper answers
/// 431 to heads that do not fit.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// At shutdown, how long a connection that was accepted but has not yet
/// delivered its first request gets to do so. Its client sent the request
/// right after connecting (it is likely in our socket buffer already);
/// closing such a connection unanswered would fail a request we accepted.
/// Short, because browsers also open connections they never use.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Bound on writing the 503 to a connection over the cap.
const REJECT_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// What every connection shares.
pub(super) struct Server {
    /// The rooms, health and metrics.
    gw: Arc<Gateway>,
    /// hyper's HTTP/1 settings: timeouts and limits.
    builder: http1::Builder,
    /// One permit per open connection: the connection cap.
    pub(super) slots: Arc<Semaphore>,
}

impl Server {
    pub(super) fn new(gw: Arc<Gateway>, max_connections: usize) -> Server {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_headers(MAX_HEADERS)
            .max_buf_size(MAX_HEAD_BYTES)
            .keep_alive(true)
            // A redirect is one small head and a small body: copied into
            // one buffer, it goes out with one `send` instead of a two-part
            // `writev`, which costs the kernel more.
            .writev(false);
        Server {
            gw,
            builder,
            slots: Arc::new(Semaphore::new(max_connections)),
        }
    }

    /// Serves one connection until it ends; at `stop`, finishes the request
    /// in flight (or waits briefly for a first one) and closes.
    pub(super) async fn serve(
        self: Arc<Self>,
        stream: Accepted,
        peer: Peer,
        permit: OwnedSemaphorePermit,
        stop: CancellationToken,
    ) {
        let served = async {
            let ended = match stream {
                Accepted::Tcp(s) => self.connection(WriteTimeout::new(s), peer, &stop).await,
                Accepted::Unix(s) => self.connection(WriteTimeout::new(s), peer, &stop).await,
            };
            if let Err(e) = ended {
                tracing::debug!("connection ended: {e}");
            }
        };
        let open = &self.gw.metrics.open_connections;
        open.inc();
        // The span names the peer in debug lines; without them, no span.
        if tracing::enabled!(tracing::Level::DEBUG) {
            served.instrument(tracing::debug_span!("conn", %peer)).await;
        } else {
            served.await;
        }
        open.dec();
        drop(permit);
    }

    async fn connection<IO>(
        &self,
        io: IO,
        peer: Peer,
        stop: &CancellationToken,
    ) -> Result<(), hyper::Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let ctx = Arc::new(Connection {
            gw: self.gw.clone(),
            peer,
            had_request: AtomicBool::new(false),
        });
        let service = {
            let ctx = ctx.clone();
            service_fn(move |req| {
                ctx.had_request.store(true, Ordering::Relaxed);
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(http::handle(&ctx.gw, &ctx.peer, req).await) }
            })
        };
        let conn = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        tokio::select! {
            ended = conn.as_mut() => ended,
            () = stop.cancelled() => {
                // The connection goes on meanwhile, so its first request
                // can arrive.
                tokio::select! {
                    ended = conn.as_mut() => return ended,
                    () = first_request(&ctx.had_request) => {}
                }
                // Finishes a request in flight (answered with
                // `Connection: close`), closes an idle connection.
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    }
}

/// What a connection's requests share. Each request holds it (not the
/// gateway itself), so that counting its references stays with the
/// connection instead of every request on every thread touching one count.
struct Connection {
    /// The rooms, health and metrics.
    gw: Arc<Gateway>,
    /// The other end.
    peer: Peer,
    /// A request has come in (see [`first_request`]).
    had_request: AtomicBool,
}

/// Once shutdown has begun: completes at once if the connection has had a
/// request, else after its first one or [`FIRST_REQUEST_GRACE`].
async fn first_request(had_request: &AtomicBool) {
    let deadline = tokio::time::Instant::now() + FIRST_REQUEST_GRACE;
    while !had_request.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// At the connection cap, at most one warning per this interval: the first
/// rejected connection is logged at once, the ones after it are counted and
/// their number logged when the interval is over (or at shutdown). A flood
/// over the cap thus writes a line every 10 s, not one per connection (it
/// wrote 2,000 lines in 0.2 s), so the log neither drowns nor grows with the
/// attack.
pub(super) const CAP_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// The count of connections answered 503 at the cap since the last
/// warning, and when that warning was. The accept loop owns it; it says
/// what to log and when, the loop logs.
pub(super) struct CapWarnings {
    /// The connection cap, for the text.
    cap: usize,
    /// When the last warning was logged; `None` before the first.
    last: Option<Instant>,
    /// Connections rejected since then.
    unreported: u64,
}

impl CapWarnings {
    pub(super) fn new(cap: usize) -> CapWarnings {
        CapWarnings {
            cap,
            last: None,
            unreported: 0,
        }
    }

    /// Counts one rejected connection; the warning to log now, if no
    /// warning was logged within the interval.
    pub(super) fn rejected(&mut self, now: Instant) -> Option<String> {
        self.unreported += 1;
        match self.last {
            Some(last) if now.duration_since(last) < CAP_WARNING_INTERVAL => None,
            _ => self.report(now),
        }
    }

    /// When the rejections counted since the last warning are due to be
    /// logged; `None` when there are none.
    pub(super) fn due(&self) -> Option<Instant> {
        match self.last {
            Some(last) if self.unreported > 0 => Some(last + CAP_WARNING_INTERVAL),
            _ => None,
        }
    }

    /// The warning for the rejections counted since the last one, if any.
    pub(super) fn report(&mut self, now: Instant) -> Option<String> {
        let n = std::mem::take(&mut self.unreported);
        if n == 0 {
            return None;
        }
        let cap = self.cap;
        let plural = if n == 1 { "" } else { "s" };
        let line = match self.last {
            None => {
                format!("connection cap of {cap} reached; answered 503 to {n} connection{plural}")
            }
            Some(last) => format!(
                "connection cap of {cap} reached; answered 503 to {n} connection{plural} in the \
                 last {:.1} s",
                now.duration_since(last).as_secs_f64()
            ),
        };
        self.last = Some(now);
        Some(line)
    }
}

/// Answers a connection over the cap with a 503, then closes it. The
/// warning is [`CapWarnings`]'s business.
pub(super) async fn reject(stream: Accepted, peer: Peer) {
    tracing::debug!("connection cap reached; answering 503 to {peer}");
    let answer = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
        Content-Length: 20\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many connections";
    let _ = match stream {
        Accepted::Tcp(s) => {
            tokio::time::timeout(REJECT_WRITE_TIMEOUT, answer_once(s, answer)).await
        }
        Accepted::Unix(s) => {
            tokio::time::timeout(REJECT_WRITE_TIMEOUT, answer_once(s, answer)).await
        }
    };
}

/// Writes `answer` and closes the write side.
async fn answer_once<S: AsyncWrite + Unpin>(mut stream: S, answer: &[u8]) -> io::Result<()> {
    stream.write_all(answer).await?;
    stream.shutdown().await
}

/// A stream whose writes fail with `TimedOut` once one has made no progress
/// for [`WRITE_TIMEOUT`]. hyper has a timer for reading heads but none for
/// writing answers; this is that timer. The clock only runs while a write
/// waits, so a connection that is writing fine costs nothing extra.
struct WriteTimeout<IO> {
    io: IO,
    /// Armed when a write first has to wait; reset when one succeeds.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<IO> WriteTimeout<IO> {
    fn new(io: IO) -> Self {
        WriteTimeout { io, deadline: None }
    }

    /// After a write that could not go on: `Pending`, or an error once the
    /// client has read nothing for [`WRITE_TIMEOUT`].
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_TIMEOUT)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took no data for the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.waiting(cx),
            ready => {
                self.deadline = None;
                ready
            }
        }
    }
}

use std::future::Future as _;

impl<IO: AsyncRead + Unpin> AsyncRead for WriteTimeout<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        this.progressed(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.progressed(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.io).poll_flush(cx);
        this.progressed(result, cx)
    }

    /// Only flushes: hyper shuts the write side down just before it lets
    /// go of a connection, and the close when the socket is dropped sends
    /// the same FIN. One system call less per connection.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A flood makes one line at once and then one per interval with the
    /// count since the last; a quiet spell resets that.
    #[test]
    fn cap_warnings_come_once_per_interval_with_a_count() {
        let t0 = Instant::now();
        let mut w = CapWarnings::new(8);
        assert_eq!(w.due(), None);
        let first = w.rejected(t0).expect("the first is logged at once");
        assert_eq!(
            first,
            "connection cap of 8 reached; answered 503 to 1 connection"
        );
        for i in 1..=1000 {
            assert_eq!(w.rejected(t0 + Duration::from_millis(i)), None);
        }
        let due = w.due().expect("due");
        assert_eq!(due, t0 + CAP_WARNING_INTERVAL);
        let line = w.report(due).expect("the count");
        assert_eq!(
            line,
            "connection cap of 8 reached; answered 503 to 1000 connections in the last 10.0 s"
        );
        assert_eq!(w.due(), None);
        assert_eq!(w.report(due + CAP_WARNING_INTERVAL), None);
        // After a quiet spell the next rejection is logged at once again.
        let later = due + 3 * CAP_WARNING_INTERVAL;
        let line = w.rejected(later).expect("logged at once");
        assert!(
            line.ends_with("answered 503 to 1 connection in the last 30.0 s"),
            "{line}"
        );
        assert_eq!(w.rejected(later), None);
        assert_eq!(w.due(), Some(later + CAP_WARNING_INTERVAL));
    }

    /// A peer that never reads: once the pipe is full, the write waits, and
    /// after the write timeout (paused clock) it fails instead of waiting
    /// forever.
    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_reads_times_out() {
        let (ours, _theirs) = tokio::io::duplex(1024);
        let mut stream = WriteTimeout::new(ours);
        let chunk = [0u8; 4096];
        let write = async {
            loop {
                stream.write_all(&chunk).await?;
            }
            #[allow(unreachable_code)]
            Ok::<(), io::Error>(())
        };
        let started = tokio::time::Instant::now();
        let err = write.await.expect_err("the write must fail");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), WRITE_TIMEOUT);
    }

    /// A peer that reads slowly but steadily is never cut off: the clock
    /// starts again with every write that goes through.
    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_served() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut total = 0;
            while total < 64 * 1024 {
                tokio::time::sleep(WRITE_TIMEOUT / 2).await;
                total += theirs.read(&mut buf).await.unwrap();
            }
            total
        });
        let mut stream = WriteTimeout::new(ours);
        stream.write_all(&[1u8; 64 * 1024]).await.expect("served");
        assert!(reader.await.unwrap() >= 64 * 1024);
    }
}
