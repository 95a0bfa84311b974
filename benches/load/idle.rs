//! Memory per idle keep-alive connection: a server's RSS before and after
//! holding many connections that each made one request and then stay quiet.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::die;
use crate::procs::{rss_kb, tree};
use crate::wrk::BROWSER;

/// Connections opened at once while building up the idle set.
const PARALLEL: usize = 100;

/// Bound on one connection's connect, request and answer.
const EXCHANGE_BOUND: Duration = Duration::from_secs(5);

/// Time for the servers to settle (freed buffers, allocator purges) before
/// each RSS reading.
const SETTLE: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug)]
pub struct Idle {
    pub connections: usize,
    /// Connections still open when the RSS was read.
    pub held: usize,
    pub rss_before_kb: u64,
    pub rss_after_kb: u64,
}

impl Idle {
    pub fn kib_per_connection(&self) -> f64 {
        (self.rss_after_kb as f64 - self.rss_before_kb as f64) / self.connections.max(1) as f64
    }
}

/// Opens `n` connections to `addr`, each sending one `GET /Lounge` and
/// reading its answer, and reads the RSS of `pid` (with its children) before
/// and while they are held open.
pub async fn measure(addr: SocketAddr, pid: u32, n: usize) -> Idle {
    tokio::time::sleep(SETTLE).await;
    let pids = tree(pid);
    let rss_before_kb = rss_kb(&pids);
    let mut held = Vec::with_capacity(n);
    let mut tasks = JoinSet::new();
    let mut started = 0;
    for _ in 0..n {
        while tasks.len() < PARALLEL && started < n {
            tasks.spawn(one_request(addr));
            started += 1;
        }
        match tasks.join_next().await {
            Some(Ok(Ok(stream))) => held.push(stream),
            Some(Ok(Err(e))) => die(&format!("idle connection to {addr}: {e}")),
            Some(Err(e)) => die(&format!("idle connection task: {e}")),
            None => break,
        }
    }
    tokio::time::sleep(SETTLE).await;
    let rss_after_kb = rss_kb(&pids);
    let held = held.iter().filter(|s| is_open(s)).count();
    Idle {
        connections: n,
        held,
        rss_before_kb,
        rss_after_kb,
    }
}

/// Connects, sends one request, reads the whole answer; the connection
/// stays open.
async fn one_request(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        let request = format!("GET /Lounge HTTP/1.1\r\nHost: {addr}\r\n{BROWSER}\r\n\r\n");
        s.write_all(request.as_bytes()).await?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 2048];
        loop {
            let got = s.read(&mut chunk).await?;
            if got == 0 {
                return Err(std::io::Error::other("closed before a whole answer"));
            }
            buf.extend_from_slice(&chunk[..got]);
            if answer_complete(&buf)? {
                return Ok(s);
            }
        }
    };
    tokio::time::timeout(EXCHANGE_BOUND, exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("no answer in time")))
}

/// Whether `buf` holds a whole 302 answer (head and `Content-Length` body).
fn answer_complete(buf: &[u8]) -> std::io::Result<bool> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err(std::io::Error::other("answer head too long"));
        }
        return Ok(false);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 302") {
        return Err(std::io::Error::other(format!("not a 302: {head}")));
    }
    let body = &buf[end + 4..];
    if head.contains("transfer-encoding: chunked") {
        return Ok(body.ends_with(b"0\r\n\r\n"));
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Ok(body.len() >= length)
}

/// Whether the server still holds `s` open (nothing to read, no EOF).
fn is_open(s: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(s.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}
