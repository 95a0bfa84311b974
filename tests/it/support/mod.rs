//! Shared test support: stand-in Jitsi servers ([`StandIn`]), a real
//! Prosody behind a real nginx (`prosody`, `jitsi_front`, `xmpp_component`),
//! throw-away certificate authorities ([`TestCa`]) and a small HTTP client.
//!
//! Include with `mod support;` from an integration test file. Every test
//! binary uses a different subset, hence the blanket allowances (the
//! re-exports below count as unused imports in binaries that skip them).
#![allow(dead_code, unused_imports)]

pub mod bosh_client;
pub mod faults;
pub mod gate;
pub mod jitsi_front;
pub mod nginx;
pub mod prosody;
pub mod receiver;
pub mod standin;
pub mod synapse;
pub mod tls;
pub mod tools;
pub mod webdriver;
pub mod xmpp_component;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub use gate::{healthy_pair, servers_yaml, two_server_yaml, Gate, GateProcess, FAST_CHECK};
pub use standin::{
    Counts, Mode, Recorded, StandIn, StandInBuilder, FORGED_CONDITION, HUGE_CONDITION_LEN,
    UNKNOWN_DOMAIN_BODY,
};
pub use tls::{Leaf, TestCa};

/// Bound on a whole exchange unless [`Req::timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A complete HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body, lossily decoded as UTF-8.
    pub body: String,
}

impl Resp {
    /// A header's value as text (first one if repeated).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Why a [`Req`] got no response.
#[derive(Debug)]
pub enum FetchError {
    /// The URL is not absolute http(s) with a host.
    BadUrl(String),
    /// TCP connect failed (e.g. `ConnectionRefused`).
    Connect(std::io::Error),
    /// TLS handshake failed; the inner error wraps the `rustls::Error`.
    Tls(std::io::Error),
    /// HTTP-level failure (reset, malformed answer, closed early).
    Http(hyper::Error),
    /// Nothing complete within the bound.
    Timeout,
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::BadUrl(u) => write!(f, "bad URL {u:?}"),
            FetchError::Connect(e) => write!(f, "connect: {e}"),
            FetchError::Tls(e) => write!(f, "TLS: {e}"),
            FetchError::Http(e) => write!(f, "HTTP: {e}"),
            FetchError::Timeout => write!(f, "timed out"),
        }
    }
}

impl std::error::Error for FetchError {}

/// One request on a fresh connection (never pooled, so every call really
/// connects). Build with [`Req::get`] / [`Req::post`] / [`Req::new`], send
/// with [`Req::send`].
#[derive(Clone)]
pub struct Req {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    /// Local address to connect from (e.g. 127.0.0.2), else the kernel's pick.
    source: Option<std::net::IpAddr>,
}

impl Req {
    pub fn new(method: Method, url: &str) -> Req {
        Req {
            method,
            url: url.to_string(),
            headers: Vec::new(),
            body: String::new(),
            tls: None,
            timeout: DEFAULT_TIMEOUT,
            source: None,
        }
    }

    /// Connect from `ip` (any address of 127.0.0.0/8 works on loopback), to
    /// look like another client to the server.
    pub fn source(mut self, ip: &str) -> Req {
        self.source = Some(ip.parse().expect("source IP"));
        self
    }

    pub fn get(url: &str) -> Req {
        Req::new(Method::GET, url)
    }

    pub fn post(url: &str, body: &str) -> Req {
        Req::new(Method::POST, url).body(body)
    }

    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn headers(mut self, headers: &[(&str, &str)]) -> Req {
        for (name, value) in headers {
            self = self.header(name, value);
        }
        self
    }

    pub fn body(mut self, body: &str) -> Req {
        self.body = body.to_string();
        self
    }

    /// Trust only `ca` for https. An https URL needs this (or
    /// [`Req::tls_config`]); without it `send` fails with `BadUrl`.
    pub fn ca(self, ca: &TestCa) -> Req {
        self.tls_config(ca.client_config())
    }

    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Req {
        self.tls = Some(config);
        self
    }

    /// Bound on connect + TLS + request + whole body (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Req {
        self.timeout = timeout;
        self
    }

    pub async fn send(self) -> Result<Resp, FetchError> {
        let bound = self.timeout;
        tokio::time::timeout(bound, self.exchange())
            .await
            .unwrap_or(Err(FetchError::Timeout))
    }

    async fn exchange(self) -> Result<Resp, FetchError> {
        let bad_url = || FetchError::BadUrl(self.url.clone());
        let uri: Uri = self.url.parse().map_err(|_| bad_url())?;
        let host = uri.host().ok_or_else(bad_url)?.to_string();
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad_url()),
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri.authority().ok_or_else(bad_url)?.as_str().to_string();
        let path = uri
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| "/".to_string());

        let mut builder = Request::builder().method(self.method.clone()).uri(path);
        if !self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("host"))
        {
            builder = builder.header(http::header::HOST, authority);
        }
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let request = builder
            .body(Full::new(Bytes::from(self.body.clone())))
            .map_err(|_| bad_url())?;

        // IPv6 literals come back bracketed from `Uri::host`.
        let connect_host = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = match self.source {
            None => TcpStream::connect((connect_host, port)).await,
            Some(source) => {
                let target: std::net::IpAddr = connect_host.parse().map_err(|_| bad_url())?;
                let socket = if source.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()
                } else {
                    tokio::net::TcpSocket::new_v6()
                }
                .map_err(FetchError::Connect)?;
                socket
                    .bind((source, 0).into())
                    .map_err(FetchError::Connect)?;
                socket.connect((target, port).into()).await
            }
        }
        .map_err(FetchError::Connect)?;
        if !https {
            return exchange_on(tcp, request).await;
        }
        let config = self.tls.clone().ok_or_else(bad_url)?;
        let name = rustls::pki_types::ServerName::try_from(connect_host.to_string())
            .map_err(|_| bad_url())?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(FetchError::Tls)?;
        exchange_on(tls, request).await
    }
}

/// Runs one HTTP/1.1 exchange on `io`, driving the connection in the same
/// future (no spawned task outlives a timeout or a dropped call).
async fn exchange_on<IO>(io: IO, request: Request<Full<Bytes>>) -> Result<Resp, FetchError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(FetchError::Http)?;
    let work = async move {
        let response = sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await?.to_bytes();
        Ok::<_, hyper::Error>(Resp {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    };
    tokio::pin!(work, conn);
    tokio::select! {
        resp = &mut work => resp.map_err(FetchError::Http),
        done = &mut conn => match done {
            // The connection finished first; the response is already queued.
            Ok(()) => work.await.map_err(FetchError::Http),
            Err(e) => Err(FetchError::Http(e)),
        },
    }
}

/// GET `path` over the unix socket at `socket` on a fresh connection,
/// bounded by [`DEFAULT_TIMEOUT`].
pub async fn unix_get(socket: &Path, path: &str) -> Result<Resp, FetchError> {
    let exchange = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(FetchError::Connect)?;
        let request = Request::get(path)
            .header(http::header::HOST, "localhost")
            .body(Full::new(Bytes::new()))
            .map_err(|_| FetchError::BadUrl(path.to_owned()))?;
        exchange_on(stream, request).await
    };
    tokio::time::timeout(DEFAULT_TIMEOUT, exchange)
        .await
        .unwrap_or(Err(FetchError::Timeout))
}

/// The sum of the samples `name` whose labels include `labels` in the
/// Prometheus text `metrics` (one sample when `labels` name them all); 0
/// when there is none (a counter with these labels appears only once
/// counted).
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, value)| {
            value
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("{name}: {value:?}: {e}"))
        })
        .sum()
}

/// `roomgate_config_reloads_total` with `result` (`success` or `failure`)
/// in the Prometheus text `metrics`.
pub fn reloads(metrics: &str, result: &str) -> u64 {
    sample(
        metrics,
        "roomgate_config_reloads_total",
        &[("result", result)],
    ) as u64
}

/// Polls `metrics_url` until `roomgate_config_reloads_total{result}`
/// reaches `count`, at most `bound`; returns the metrics text then.
pub async fn wait_reloads(metrics_url: &str, result: &str, count: u64, bound: Duration) -> String {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let metrics = get(metrics_url, &[]).await.body;
        let seen = reloads(&metrics, result);
        if seen >= count {
            return metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{seen} reloads with result {result} within {bound:?}, not {count}:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// GET `url` (http only) with extra `headers` on a fresh connection,
/// bounded by 5 s; panics on any failure.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Resp {
    Req::get(url)
        .headers(headers)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// Writes `contents` to `dir/name` and returns the path.
/// Runs `roomgate probe FILE` without blocking the runtime the test's
/// servers run on, bounded at 10 s.
pub async fn run_probe(file: &Path) -> std::process::Output {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_roomgate"))
        .arg("probe")
        .arg(file)
        .current_dir(file.parent().unwrap())
        .env_remove("ROOMGATE_CONFIG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(10), out)
        .await
        .expect("probe finishes")
        .expect("run probe")
}

pub fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// `/status.json` at `url`, parsed.
pub async fn status_json(url: &str) -> serde_json::Value {
    let r = get(url, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).expect("status.json is JSON")
}

/// The `servers[]` entry of `status` called `name`.
pub fn server<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    entry(status, "servers", name)
}

/// The `rooms[]` entry of `status` called `name`.
pub fn room<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    entry(status, "rooms", name)
}

fn entry<'a>(status: &'a serde_json::Value, list: &str, name: &str) -> &'a serde_json::Value {
    status[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} array in {status}"))
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {list} entry {name} in {status}"))
}

/// Polls `/status.json` at `url` until server `name` is in `state`, at most
/// `bound`; returns that whole status.
pub async fn wait_state(url: &str, name: &str, state: &str, bound: Duration) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let status = status_json(url).await;
        if server(&status, name)["state"] == state {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} not {state} within {bound:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
