//! The HTTP client of probes (and of notifications): the connector with its
//! TLS roots, and the connection of one probe.
//!
//! Every probe opens a fresh connection (reused only for the requests of that
//! one probe) so that a pooled connection cannot hide firewall or DNS
//! trouble; dropping it closes the socket.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{header, HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::CertificateDer;
use tower_service::Service;

use super::super::resolve::Resolver;
use super::super::AbortOnDrop;
use super::ProbeError;

/// Largest body a probe reads; Jitsi's config.js is well below it.
const MAX_BODY: usize = 1024 * 1024;

/// `User-Agent` of probes, so that server admins can tell them apart.
const USER_AGENT: &str = concat!("roomgate/", env!("CARGO_PKG_VERSION"), " (health check)");

/// Opens the connections of one server's probes (or of one notification
/// target): TCP with `connect_timeout`, and TLS with the webpki roots plus
/// `extra_roots`, for `https://` URLs.
pub fn connector(
    extra_roots: &[CertificateDer<'static>],
    connect_timeout: Duration,
) -> HttpsConnector<HttpConnector<Resolver>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra_roots {
        // A certificate rustls cannot use as a root is skipped; the probe
        // then fails with a TLS error that names the problem.
        let _ = roots.add(cert.clone());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new_with_resolver(Resolver::new());
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

/// The connection of one probe: opened on first use, reused for the next
/// request of the same probe, reopened if the server closed it.
pub struct Conn<'a> {
    /// Opens connections.
    connector: &'a HttpsConnector<HttpConnector<Resolver>>,
    /// The open connection, if any.
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Drives the connection; aborted when the probe ends or is cancelled by
    /// its timeout, which closes the socket.
    driver: Option<AbortOnDrop>,
}

impl<'a> Conn<'a> {
    /// A connection that opens with `connector` at its first request.
    pub fn new(connector: &'a HttpsConnector<HttpConnector<Resolver>>) -> Conn<'a> {
        Conn {
            connector,
            sender: None,
            driver: None,
        }
    }

    /// Sends one request of a probe, with an XML body if any, and reads
    /// the answer's status and body.
    pub async fn send(
        &mut self,
        method: Method,
        url: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, Bytes), ProbeError> {
        let headers: &[(HeaderName, HeaderValue)] = match body {
            Some(_) => &[(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/xml; charset=utf-8"),
            )],
            None => &[],
        };
        let body = Bytes::from(body.unwrap_or_default());
        let (status, _, body) = self.request(method, url, headers, body).await?;
        Ok((status, body))
    }

    /// Sends one request with `headers` and `body`; the answer's status,
    /// headers and body (at most 1 MiB). A `User-Agent` in `headers`
    /// replaces the probes' own.
    pub async fn request(
        &mut self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ProbeError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| ProbeError::new(format!("bad URL {url}: {e}")))?;
        let sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect(uri.clone()).await?,
        };
        let mut sender = sender;
        sender
            .ready()
            .await
            .map_err(|e| ProbeError::new(format!("connection lost: {}", chain(&e))))?;
        let host = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let mut req = Request::builder()
            .method(method)
            .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(header::HOST, host);
        if !headers.iter().any(|(name, _)| name == header::USER_AGENT) {
            req = req.header(header::USER_AGENT, USER_AGENT);
        }
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| ProbeError::new(format!("bad request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ProbeError::new(format!("request failed: {}", chain(&e))))?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| ProbeError::new(format!("reading the answer failed: {e}")))?
            .to_bytes();
        self.sender = Some(sender);
        Ok((parts.status, parts.headers, body))
    }

    async fn connect(&mut self, uri: Uri) -> Result<SendRequest<Full<Bytes>>, ProbeError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| ProbeError::new(format!("connect: {}", chain(e.as_ref()))))?;
        let io = connector
            .call(uri)
            .await
            .map_err(|e| ProbeError::new(format!("connect: {}", chain(e.as_ref()))))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| ProbeError::new(format!("HTTP handshake: {}", chain(&e))))?;
        self.driver = Some(AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        })));
        Ok(sender)
    }
}

/// An error and its sources, joined: connect and TLS errors say what went
/// wrong only deep in the chain ("invalid peer certificate: UnknownIssuer").
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    // A name that says little to an admin gives way to words that do,
    // short enough to survive the bound on error texts.
    if let Some((name, plain)) = plain_tls_words(err) {
        return format!("{plain} ({name})");
    }
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    text
}

/// What to do about a TLS error whose rustls name says little to an admin,
/// with that name, or `None` for the others (their names are plain enough).
fn plain_tls_words(
    err: &(dyn std::error::Error + 'static),
) -> Option<(&'static str, &'static str)> {
    const CA_AS_LEAF: &str = "CaUsedAsEndEntity";
    let mut source = Some(err);
    while let Some(e) = source {
        // webpki's name for it, as rustls words the error.
        if e.to_string().contains(CA_AS_LEAF) {
            return Some((
                CA_AS_LEAF,
                "the server's certificate is a CA certificate (CA:TRUE), refused as a server's \
                 own: give it one signed by a CA in ca_file, or one with CA:FALSE",
            ));
        }
        source = e.source();
    }
    None
}
