//! A stand-in notification receiver on 127.0.0.1 port 0: a webhook, a
//! Matrix homeserver's send endpoint or Telegram's Bot API, as far as
//! roomgate sees them. It records every request with the moment it arrived
//! and answers from a script (then 200 with a body each API would send), so
//! a test can make it fail, ask for a wait, or hang.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200 with a body fit for every API roomgate talks to.
    Ok,
    /// This status, these headers and this body.
    Status(u16, Vec<(&'static str, String)>, String),
    /// Reads the request and never answers.
    Hang,
}

/// A request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
    /// When the whole request had arrived.
    pub at: SystemTime,
}

impl Received {
    /// The body as JSON (null if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

struct Shared {
    script: Mutex<VecDeque<Answer>>,
    received: Mutex<Vec<Received>>,
    arrived: Notify,
}

/// A running receiver; dropping it closes the port.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// A receiver that answers `script` in turn, then [`Answer::Ok`].
    pub async fn start(script: Vec<Answer>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let shared = Arc::new(Shared {
            script: Mutex::new(script.into()),
            received: Mutex::new(Vec::new()),
            arrived: Notify::new(),
        });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let shared = serving.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| answer(shared.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Receiver { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived, at most `bound`; returns
    /// them all.
    pub async fn wait(&self, n: usize, bound: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let arrived = self.shared.arrived.notified();
            let seen = self.received();
            if seen.len() >= n {
                return seen;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.received();
            }
        }
    }
}

async fn answer(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |p| p.to_string());
    let authorization = header("authorization");
    let content_type = header("content-type");
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    shared.received.lock().unwrap().push(Received {
        method,
        path,
        authorization,
        content_type,
        body,
        at: SystemTime::now(),
    });
    shared.arrived.notify_waiters();
    let next = shared
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Answer::Ok);
    let (status, headers, body) = match next {
        Answer::Ok => (
            200,
            vec![],
            r#"{"ok":true,"result":{"message_id":1},"event_id":"$roomgate"}"#.to_owned(),
        ),
        Answer::Status(status, headers, body) => (status, headers, body),
        Answer::Hang => std::future::pending().await,
    };
    let mut resp = Response::builder()
        .status(StatusCode::from_u16(status).expect("a status"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        resp = resp.header(name, value);
    }
    Ok(resp.body(Full::new(Bytes::from(body))).expect("a response"))
}
