//! The probes: what it takes to call a server up.
//!
//! A `jitsi` probe proves that the deployment can host a meeting, not only
//! that its nginx serves files: it fetches `config.js`, then opens a BOSH
//! session (XEP-0124/XEP-0206) at `/http-bind` and wants `<stream:features`
//! back, which only a running Prosody sends; then it ends the session
//! politely. A Jitsi whose nginx is up and whose Prosody is down answers the
//! room page with 200 and BOSH with 502 or 504, and is down here.
//!
//! Every probe opens a fresh connection (reused only for the requests of that
//! one probe) so that a pooled connection cannot hide firewall or DNS trouble,
//! and the whole probe is bounded by the check's `timeout`.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::Instant;
use tower_service::Service;

use super::resolve::Resolver;
use super::AbortOnDrop;
use crate::config::{CheckKind, Server};

/// Largest body a probe reads; Jitsi's config.js is well below it.
const MAX_BODY: usize = 1024 * 1024;

/// `User-Agent` of probes, so that server admins can tell them apart.
const USER_AGENT: &str = concat!("roomgate/", env!("CARGO_PKG_VERSION"), " (health check)");

/// Something that can be probed. The prober loop is generic over it so that
/// its timing can be tested with a scripted probe and a paused clock.
pub trait Probe: Send + Sync + 'static {
    /// Runs one probe; `Ok` carries a short note on what succeeded.
    fn probe(&self) -> impl Future<Output = Result<(), ProbeError>> + Send;
}

/// Longest text a [`ProbeError`] carries, in characters (escapes and the
/// cut mark included). Every such text ends up in a log line, on `/` and in
/// `/status.json` for every server, so a server that answers with a
/// megabyte-long BOSH `condition` must not make every page a megabyte.
pub const MAX_ERROR_CHARS: usize = 200;

/// Marks where `bounded_text` cut a text.
const CUT_MARK: char = '\u{2026}';

/// Why a probe failed, in words fit for a log line and the status page.
///
/// Its text is partly what the probed server said (a BOSH `condition`, or
/// names from its certificate inside a TLS error), so it is data, never
/// trusted: [`ProbeError::new`], the only way to make one, escapes control
/// characters (a newline would forge a log line) and bounds the length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeError(String);

impl ProbeError {
    /// A probe error saying `text`, made safe by `bounded_text`.
    pub fn new(text: impl AsRef<str>) -> ProbeError {
        ProbeError(bounded_text(text.as_ref(), MAX_ERROR_CHARS))
    }

    /// The text, escaped and bounded.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, escaped and bounded.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `text` fit for one log line and a page: characters that could break or
/// fake a line, or reorder what a terminal shows, are escaped (`\n`, `\r`,
/// `\t`, otherwise `\u{..}`), and the result is at most `max` characters
/// (`max` >= 1): a longer one is cut between characters, never inside an
/// escape, and ends with `…`. The text is looked at only as far as needed,
/// so a huge one costs no more than a short one.
fn bounded_text(text: &str, max: usize) -> String {
    let max = max.max(1);
    let mut out = String::with_capacity(text.len().min(max.saturating_mul(4)));
    // Characters in `out`, and the length of `out` at the last place where
    // the cut mark still fits.
    let mut chars = 0;
    let mut cut = None;
    for c in text.chars() {
        let before = out.len();
        let added = push_escaped(&mut out, c);
        if cut.is_none() && chars + added > max - 1 {
            cut = Some(before);
        }
        chars += added;
        if chars > max {
            out.truncate(cut.unwrap_or(0));
            out.push(CUT_MARK);
            return out;
        }
    }
    out
}

/// Whether `c` must not appear as itself in a log line: C0 and C1 controls
/// and DEL, the Unicode line and paragraph separators (some viewers break
/// lines there), and the bidirectional overrides and isolates (they make a
/// terminal show text in another order than it has).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Appends `c`, escaped if it must be; returns the characters appended.
fn push_escaped(out: &mut String, c: char) -> usize {
    use std::fmt::Write as _;
    if !needs_escape(c) {
        out.push(c);
        return 1;
    }
    let before = out.len();
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        _ => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    // Escapes are ASCII: bytes are characters.
    out.len() - before
}

impl std::error::Error for ProbeError {}

/// The real probe of one configured server.
pub struct ServerProbe {
    /// Base URL, no trailing slash.
    base: String,
    /// What to check.
    kind: CheckKind,
    /// Bound on the whole probe.
    timeout: Duration,
    /// Builds the fresh connection of each probe: TCP, and TLS with the
    /// webpki roots plus the server's `ca_file`.
    connector: HttpsConnector<HttpConnector<Resolver>>,
}

impl ServerProbe {
    /// A probe for `server`, following its `check` settings.
    pub fn new(server: &Server) -> ServerProbe {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in &server.extra_roots {
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
        http.set_connect_timeout(Some(server.check.timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        ServerProbe {
            base: server.url.clone(),
            kind: server.check.kind.clone(),
            timeout: server.check.timeout,
            connector,
        }
    }

    async fn jitsi(&self, xmpp_domain: &str, deadline: Instant) -> Result<(), ProbeError> {
        let mut conn = Conn::new(&self.connector);
        let config_js = conn
            .send(Method::GET, &format!("{}/config.js", self.base), None)
            .await?;
        if config_js.0 != StatusCode::OK {
            return Err(ProbeError::new(format!(
                "config.js answered {}",
                config_js.0.as_u16()
            )));
        }
        let bind = format!("{}/http-bind", self.base);
        let rid = random_rid();
        // XEP-0206 session request; `wait` is short because a healthy
        // Prosody answers a session request at once.
        let create = format!(
            "<body rid='{rid}' to='{xmpp_domain}' xml:lang='en' wait='10' hold='1' \
             content='text/xml; charset=utf-8' ver='1.6' xmpp:version='1.0' \
             xmlns:xmpp='urn:xmpp:xbosh' xmlns='http://jabber.org/protocol/httpbind'/>"
        );
        let (status, body) = conn.send(Method::POST, &bind, Some(create)).await?;
        if status != StatusCode::OK {
            return Err(ProbeError::new(format!(
                "BOSH answered {}",
                status.as_u16()
            )));
        }
        let body = String::from_utf8_lossy(&body);
        if !body.contains("<stream:features") {
            return Err(ProbeError::new(describe_bosh_refusal(&body)));
        }
        // End the session so that probes leave no half-open sessions behind
        // in Prosody. Whether it works does not change the verdict, and it
        // gets only what is left of the probe's time.
        if let Some(sid) = xml_attr(&body, "sid") {
            let terminate = format!(
                "<body rid='{}' sid='{sid}' type='terminate' \
                 xmlns='http://jabber.org/protocol/httpbind'>\
                 <presence type='unavailable' xmlns='jabber:client'/></body>",
                rid + 1
            );
            let ended = conn.send(Method::POST, &bind, Some(terminate));
            match tokio::time::timeout_at(deadline, ended).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!(server = %self.base, "BOSH terminate failed: {e}"),
                Err(_) => {
                    tracing::debug!(server = %self.base, "BOSH terminate got no answer in time")
                }
            }
        }
        Ok(())
    }

    async fn http(
        &self,
        path: &str,
        expect: crate::config::StatusRange,
        body_contains: Option<&str>,
    ) -> Result<(), ProbeError> {
        let mut conn = Conn::new(&self.connector);
        let (status, body) = conn
            .send(Method::GET, &format!("{}{path}", self.base), None)
            .await?;
        if !expect.contains(status.as_u16()) {
            return Err(ProbeError::new(format!(
                "{path} answered {} (expected {expect})",
                status.as_u16()
            )));
        }
        if let Some(needle) = body_contains {
            if !String::from_utf8_lossy(&body).contains(needle) {
                return Err(ProbeError::new(format!(
                    "{path} answered {} without the expected text",
                    status.as_u16()
                )));
            }
        }
        Ok(())
    }
}

impl Probe for ServerProbe {
    async fn probe(&self) -> Result<(), ProbeError> {
        let deadline = Instant::now() + self.timeout;
        let work = async {
            match &self.kind {
                CheckKind::Jitsi { xmpp_domain } => self.jitsi(xmpp_domain, deadline).await,
                CheckKind::Http {
                    path,
                    expect_status,
                    body_contains,
                } => {
                    self.http(path, *expect_status, body_contains.as_deref())
                        .await
                }
            }
        };
        match tokio::time::timeout_at(deadline, work).await {
            Ok(result) => result,
            Err(_) => Err(ProbeError::new(format!(
                "no answer within {}",
                humantime::format_duration(self.timeout)
            ))),
        }
    }
}

/// Says why a BOSH answer without stream features is not a session.
fn describe_bosh_refusal(body: &str) -> String {
    match xml_attr(body, "condition") {
        // Prosody does not serve the domain we asked for.
        Some("host-unknown") => {
            "BOSH refused the session: host-unknown (is xmpp_domain right?)".to_owned()
        }
        Some(condition) => format!("BOSH refused the session: {condition}"),
        None if body.contains("httpbind") => "BOSH answered without <stream:features>".to_owned(),
        None => "BOSH answered 200 with something else than XMPP (maintenance page?)".to_owned(),
    }
}

/// The value of attribute `name` in the first element of `xml` that has it.
/// Enough for the flat `<body .../>` of BOSH; not a general XML parser.
fn xml_attr<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = xml;
    while let Some(i) = rest.find(name) {
        let before_ok = i > 0 && rest.as_bytes()[i - 1].is_ascii_whitespace();
        let after = &rest[i + name.len()..];
        let after_trim = after.trim_start();
        if before_ok && after_trim.starts_with('=') {
            let value = after_trim[1..].trim_start();
            let quote = value.chars().next()?;
            if quote == '\'' || quote == '"' {
                let value = &value[1..];
                return value.find(quote).map(|end| &value[..end]);
            }
        }
        rest = after;
    }
    None
}

/// A BOSH request id: random, below 2^53 as XEP-0124 §5 asks, and far enough
/// below that increments never reach it.
fn random_rid() -> u64 {
    // RandomState is seeded from the OS; hashing nothing gives a fresh
    // random number without another dependency.
    RandomState::new().hash_one(()) >> 16
}

/// The connection of one probe: opened on first use, reused for the next
/// request of the same probe, reopened if the server closed it.
struct Conn<'a> {
    /// Opens connections.
    connector: &'a HttpsConnector<HttpConnector<Resolver>>,
    /// The open connection, if any.
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Drives the connection; aborted when the probe ends or is cancelled by
    /// its timeout, which closes the socket.
    driver: Option<AbortOnDrop>,
}

impl<'a> Conn<'a> {
    fn new(connector: &'a HttpsConnector<HttpConnector<Resolver>>) -> Conn<'a> {
        Conn {
            connector,
            sender: None,
            driver: None,
        }
    }

    async fn send(
        &mut self,
        method: Method,
        url: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, Bytes), ProbeError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| ProbeError::new(format!("bad probe URL {url}: {e}")))?;
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
            .header(header::HOST, host)
            .header(header::USER_AGENT, USER_AGENT);
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "text/xml; charset=utf-8");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ProbeError::new(format!("bad probe request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ProbeError::new(format!("request failed: {}", chain(&e))))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| ProbeError::new(format!("reading the answer failed: {e}")))?
            .to_bytes();
        self.sender = Some(sender);
        Ok((status, body))
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
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_attr_reads_either_quote() {
        let body = "<body xmlns='http://jabber.org/protocol/httpbind' sid=\"abc-1\" wait='60'><stream:features/></body>";
        assert_eq!(xml_attr(body, "sid"), Some("abc-1"));
        assert_eq!(xml_attr(body, "wait"), Some("60"));
        assert_eq!(xml_attr(body, "rid"), None);
        // `xmlns:sid` or `authsid` must not be taken for `sid`.
        assert_eq!(xml_attr("<body authsid='x' sid='y'/>", "sid"), Some("y"));
    }

    #[test]
    fn bosh_refusals_are_named() {
        let unknown = "<body type='terminate' condition='host-unknown' xmlns='http://jabber.org/protocol/httpbind'/>";
        assert!(describe_bosh_refusal(unknown).contains("host-unknown"));
        assert!(describe_bosh_refusal("<html>Wartung</html>").contains("maintenance"));
    }

    #[test]
    fn server_text_cannot_forge_a_log_line() {
        let forged = "<body type='terminate' condition='x\n2025-01-01T00:00:00Z  INFO roomgate: primary up\r\u{1b}[2J' xmlns='http://jabber.org/protocol/httpbind'/>";
        let e = ProbeError::new(describe_bosh_refusal(forged));
        assert_eq!(
            e.as_str(),
            "BOSH refused the session: x\\n2025-01-01T00:00:00Z  INFO roomgate: primary up\\r\\u{1b}[2J"
        );
        // Tab, DEL, C1, line separator, a bidi override.
        assert_eq!(
            bounded_text("a\tb\u{7f}c\u{85}d\u{2028}e\u{202e}f", 100),
            "a\\tb\\u{7f}c\\u{85}d\\u{2028}e\\u{202e}f"
        );
        // Plain text, even non-ASCII, is left as it is.
        assert_eq!(
            bounded_text("Wartung: bald zurück ✓", 100),
            "Wartung: bald zurück ✓"
        );
    }

    #[test]
    fn server_text_is_bounded() {
        let huge = format!(
            "<body type='terminate' condition='{}' xmlns='http://jabber.org/protocol/httpbind'/>",
            "ä".repeat(1_000_000)
        );
        let e = ProbeError::new(describe_bosh_refusal(&huge));
        assert_eq!(e.as_str().chars().count(), MAX_ERROR_CHARS);
        assert!(e.as_str().starts_with("BOSH refused the session: ää"));
        assert!(e.as_str().ends_with("ä\u{2026}"));
        // Exactly at the bound: not cut. One more: cut, mark included.
        assert_eq!(bounded_text("abcde", 5), "abcde");
        assert_eq!(bounded_text("abcdef", 5), "abcd\u{2026}");
        // An escape is never cut in half.
        assert_eq!(bounded_text("abc\u{1b}", 9), "abc\\u{1b}");
        assert_eq!(bounded_text("abc\u{1b}x", 9), "abc\u{2026}");
    }

    proptest::proptest! {
        #[test]
        fn bounded_text_is_safe_and_short(text in "(?s).{0,300}", max in 1usize..260) {
            let out = bounded_text(&text, max);
            proptest::prop_assert!(out.chars().count() <= max, "{:?}", out);
            proptest::prop_assert!(!out.chars().any(needs_escape), "{:?}", out);
            // Escaping alone, with no bound that bites, loses nothing.
            let full = bounded_text(&text, usize::MAX / 2);
            if full.chars().count() <= max {
                proptest::prop_assert_eq!(&out, &full);
            } else {
                // Cut: a prefix of the escaped text, then the mark.
                let kept = out.strip_suffix(CUT_MARK).expect("a cut is marked");
                proptest::prop_assert!(full.starts_with(kept));
            }
            if !text.chars().any(needs_escape) {
                proptest::prop_assert!(text.starts_with(out.strip_suffix(CUT_MARK).unwrap_or(&out)));
            }
        }
    }

    #[test]
    fn rids_are_below_two_to_the_53() {
        for _ in 0..100 {
            assert!(random_rid() < (1 << 53) - 1000);
        }
    }
}
