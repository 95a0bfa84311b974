//! Proves the stand-in Jitsi servers in `tests/support` behave as documented,
//! using plain hyper clients (not roomgate), so other tests can trust them.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use crate::support::{
    FetchError, Leaf, Mode, Req, Resp, StandIn, TestCa, FORGED_CONDITION, HUGE_CONDITION_LEN,
    UNKNOWN_DOMAIN_BODY,
};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const SHORT: Duration = Duration::from_millis(300);

/// What roomgate's probe sends to open a session.
fn create_body(to: &str) -> String {
    format!(
        "<body rid='12345' to='{to}' xml:lang='en' wait='10' hold='1' \
         content='text/xml; charset=utf-8' ver='1.6' xmpp:version='1.0' \
         xmlns:xmpp='urn:xmpp:xbosh' xmlns='http://jabber.org/protocol/httpbind'/>"
    )
}

fn terminate_body(sid: &str) -> String {
    format!(
        "<body rid='12346' sid='{sid}' type='terminate' \
         xmlns='http://jabber.org/protocol/httpbind'>\
         <presence type='unavailable' xmlns='jabber:client'/></body>"
    )
}

async fn bosh(url: &str, body: &str) -> Resp {
    Req::post(&format!("{url}/http-bind"), body)
        .header("content-type", "text/xml; charset=utf-8")
        .send()
        .await
        .expect("BOSH request")
}

fn sid_of(xml: &str) -> String {
    let start = xml.find("sid='").expect("sid attribute") + 5;
    let len = xml[start..].find('\'').expect("sid end");
    xml[start..start + len].to_string()
}

fn is_refused(result: &Result<Resp, FetchError>) -> bool {
    matches!(result, Err(FetchError::Connect(e)) if e.kind() == ErrorKind::ConnectionRefused)
}

fn cert_error(result: Result<Resp, FetchError>) -> rustls::CertificateError {
    match result {
        Err(FetchError::Tls(e)) => {
            match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(rustls::Error::InvalidCertificate(c)) => c.clone(),
                other => panic!("not a certificate error: {other:?}"),
            }
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}

/// A kept-alive client connection: hyper's sender plus its driver task.
struct KeptAlive {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl KeptAlive {
    async fn open(addr: std::net::SocketAddr) -> KeptAlive {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        KeptAlive { sender, driver }
    }

    async fn send(&mut self, method: Method, path: &str, body: &str) -> hyper::Result<Resp> {
        self.sender.ready().await?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        let response = self.sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

impl Drop for KeptAlive {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

#[tokio::test]
async fn healthy_serves_config_pages_and_bosh() {
    let jitsi = StandIn::http(Mode::Healthy).await;
    let url = jitsi.url();
    assert_eq!(url, format!("http://127.0.0.1:{}", jitsi.port()));

    let config = crate::support::get(&format!("{url}/config.js"), &[]).await;
    assert_eq!(config.status, StatusCode::OK);
    assert_eq!(
        config.header("content-type"),
        Some("application/javascript")
    );
    assert!(config.body.starts_with("var config = {"));

    for page in ["/", "/Lounge", "/some/deep/path?x=1"] {
        let resp = crate::support::get(&format!("{url}{page}"), &[("accept", "text/html")]).await;
        assert_eq!(resp.status, StatusCode::OK, "{page}");
        assert!(resp.body.contains("<html>"), "{page}");
    }

    let created = bosh(&url, &create_body("localhost")).await;
    assert_eq!(created.status, StatusCode::OK);
    assert_eq!(
        created.header("content-type"),
        Some("text/xml; charset=utf-8")
    );
    assert!(
        created.body.contains("<stream:features"),
        "{}",
        created.body
    );
    assert!(created.body.contains("from='localhost'"));
    let sid = sid_of(&created.body);

    // Double quotes and an XML declaration are as good as single quotes.
    let double = create_body("localhost").replace('\'', "\"");
    let second = bosh(&url, &format!("<?xml version='1.0'?>\n{double}")).await;
    assert!(second.body.contains("<stream:features"), "{}", second.body);
    assert_ne!(sid_of(&second.body), sid, "session ids are unique");
    assert_eq!(jitsi.open_sessions(), 2);

    let ended = bosh(&url, &terminate_body(&sid)).await;
    assert_eq!(ended.status, StatusCode::OK);
    assert_eq!(
        ended.body,
        "<body type='terminate' xmlns='http://jabber.org/protocol/httpbind'/>"
    );
    assert_eq!(jitsi.open_sessions(), 1);

    // The session is gone now: a second terminate is not counted.
    let again = bosh(&url, &terminate_body(&sid)).await;
    assert!(again.body.contains("condition='item-not-found'"));

    // A browser opening the BOSH URL gets Prosody's page, not a session.
    let browser = crate::support::get(&format!("{url}/http-bind"), &[]).await;
    assert_eq!(browser.status, StatusCode::OK);
    assert!(!browser.body.contains("<stream:features"));

    let counts = jitsi.counts();
    assert_eq!(counts.config_js, 1);
    assert_eq!(counts.bosh_creates, 2);
    assert_eq!(counts.bosh_sessions, 2);
    assert_eq!(counts.bosh_terminates, 1);
    assert_eq!(counts.requests, 9);
    assert_eq!(
        counts.connections, 9,
        "every helper request uses a fresh connection"
    );

    let recorded = jitsi.recent_requests();
    let first_bosh = recorded
        .iter()
        .find(|r| r.path == "/http-bind" && r.method == Method::POST)
        .expect("recorded BOSH request");
    assert_eq!(
        first_bosh.headers.get("content-type").unwrap(),
        "text/xml; charset=utf-8"
    );
    assert!(first_bosh.body.contains("rid='12345'"));

    jitsi.reset_counts();
    assert_eq!(jitsi.counts(), crate::support::Counts::default());
    assert!(jitsi.recent_requests().is_empty());
}

#[tokio::test]
async fn bosh_requests_are_validated_like_prosody() {
    let jitsi = StandIn::http(Mode::Healthy).await;
    let url = jitsi.url();

    let wrong_host = bosh(&url, &create_body("meet.example")).await;
    assert_eq!(wrong_host.status, StatusCode::OK);
    // As Prosody 0.12 answers (checked against it in tests/it/prosody.rs).
    assert_eq!(wrong_host.body, UNKNOWN_DOMAIN_BODY);

    // Default domains are localhost and 127.0.0.1 (the hosts of url()s).
    let by_ip = bosh(&url, &create_body("127.0.0.1")).await;
    assert!(by_ip.body.contains("<stream:features"));

    let no_ns =
        create_body("localhost").replace(" xmlns='http://jabber.org/protocol/httpbind'", "");
    let no_ns = bosh(&url, &no_ns).await;
    assert!(
        no_ns.body.contains("condition='bad-request'"),
        "{}",
        no_ns.body
    );

    let no_to = create_body("localhost").replace(" to='localhost'", "");
    assert!(bosh(&url, &no_to)
        .await
        .body
        .contains("improper-addressing"));

    let no_rid = create_body("localhost").replace("rid='12345' ", "");
    assert!(bosh(&url, &no_rid).await.body.contains("bad-request"));

    for junk in [
        "",
        "hello",
        "<bodyx/>",
        "<body rid='1'",
        "<html></html>",
        "<body a='1' a='2'/>",
    ] {
        let resp = bosh(&url, junk).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{junk:?}");
    }
    assert_eq!(jitsi.counts().bosh_sessions, 1);

    let custom = StandIn::builder().xmpp_domain("meet.test").start().await;
    let ok = bosh(&custom.url(), &create_body("MEET.test")).await;
    assert!(ok.body.contains("<stream:features"));
    let localhost = bosh(&custom.url(), &create_body("localhost")).await;
    assert!(localhost.body.contains("improper-addressing"));
    assert_eq!(custom.xmpp_domains(), ["meet.test".to_string()]);
}

#[tokio::test]
async fn prefix_serves_only_below_it() {
    let jitsi = StandIn::builder().prefix("/jitsi/").start().await;
    let url = jitsi.url();
    assert_eq!(url, format!("http://127.0.0.1:{}/jitsi", jitsi.port()));

    assert_eq!(
        crate::support::get(&format!("{url}/config.js"), &[])
            .await
            .status,
        200
    );
    assert_eq!(
        crate::support::get(&format!("{url}/Lounge"), &[])
            .await
            .status,
        200
    );
    assert!(bosh(&url, &create_body("localhost"))
        .await
        .body
        .contains("<stream:features"));

    let root = format!("http://127.0.0.1:{}", jitsi.port());
    assert_eq!(
        crate::support::get(&format!("{root}/config.js"), &[])
            .await
            .status,
        404
    );
    assert_eq!(
        crate::support::get(&format!("{root}/jitsix/config.js"), &[])
            .await
            .status,
        404
    );
    assert_eq!(jitsi.counts().config_js, 1);
}

/// The hostile conditions arrive raw: a real newline in the attribute, and
/// a megabyte of it, within the probe's 1 MiB body limit.
#[tokio::test]
async fn hostile_conditions_are_sent_as_they_are() {
    let jitsi = StandIn::http(Mode::ForgedCondition).await;
    let r = bosh(&jitsi.url(), &create_body("localhost")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.contains(&format!("condition='{FORGED_CONDITION}'")),
        "{:?}",
        r.body
    );
    assert!(FORGED_CONDITION.contains("&#10;FORGED "));

    jitsi.set_mode(Mode::HugeCondition).await;
    let r = bosh(&jitsi.url(), &create_body("localhost")).await;
    assert_eq!(r.status, StatusCode::OK);
    let start = r.body.find("condition='").expect("a condition") + "condition='".len();
    let len = r.body[start..].find('\'').expect("its end");
    assert_eq!(len, HUGE_CONDITION_LEN);
    assert!(r.body.len() < 1024 * 1024, "{} bytes", r.body.len());
    assert!(!r.body.contains("<stream:features"));
}

#[tokio::test]
async fn failure_modes_answer_like_broken_deployments() {
    let jitsi = StandIn::http(Mode::BoshDown).await;
    let url = jitsi.url();
    let config = format!("{url}/config.js");

    // nginx up, Prosody down.
    assert_eq!(crate::support::get(&config, &[]).await.status, 200);
    assert_eq!(
        crate::support::get(&format!("{url}/Lounge"), &[])
            .await
            .status,
        200
    );
    let down = bosh(&url, &create_body("localhost")).await;
    assert_eq!(down.status, StatusCode::BAD_GATEWAY);
    assert!(down.body.contains("502 Bad Gateway"));

    jitsi.set_mode(Mode::Error500).await;
    assert_eq!(jitsi.mode(), Mode::Error500);
    assert_eq!(crate::support::get(&config, &[]).await.status, 500);
    assert_eq!(
        crate::support::get(&format!("{url}/"), &[]).await.status,
        500
    );
    assert_eq!(bosh(&url, &create_body("localhost")).await.status, 500);

    jitsi.set_mode(Mode::UnknownDomain).await;
    assert_eq!(crate::support::get(&config, &[]).await.status, 200);
    let unknown = bosh(&url, &create_body("localhost")).await;
    assert_eq!(unknown.status, StatusCode::OK);
    assert_eq!(unknown.body, UNKNOWN_DOMAIN_BODY);
    assert!(!unknown.body.contains("<stream:features"));

    jitsi.set_mode(Mode::WrongBody).await;
    let wrong = bosh(&url, &create_body("localhost")).await;
    assert_eq!(wrong.status, StatusCode::OK);
    assert!(wrong
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(!wrong.body.contains("<stream:features"));

    let counts = jitsi.counts();
    assert_eq!(counts.bosh_creates, 4, "attempts are counted in every mode");
    assert_eq!(counts.bosh_sessions, 0);
    assert_eq!(counts.config_js, 3);

    jitsi.set_mode(Mode::Healthy).await;
    assert!(bosh(&url, &create_body("localhost"))
        .await
        .body
        .contains("<stream:features"));
}

#[tokio::test]
async fn slow_body_sends_headers_then_trickles() {
    let jitsi = StandIn::http(Mode::SlowBody).await;
    let url = jitsi.url();

    // A short overall timeout expires mid-body...
    let started = Instant::now();
    let timed_out = Req::post(&format!("{url}/http-bind"), &create_body("localhost"))
        .timeout(SHORT)
        .send()
        .await;
    assert!(
        matches!(timed_out, Err(FetchError::Timeout)),
        "{timed_out:?}"
    );
    assert!(started.elapsed() < SHORT * 2);

    // ...after the head arrived promptly and the body had begun.
    let mut conn = KeptAlive::open(jitsi.addr()).await;
    conn.sender.ready().await.unwrap();
    let request = Request::builder()
        .method(Method::POST)
        .uri("/http-bind")
        .header("host", "localhost")
        .body(Full::new(Bytes::from(create_body("localhost"))))
        .unwrap();
    let started = Instant::now();
    let response = tokio::time::timeout(SHORT, conn.sender.send_request(request))
        .await
        .expect("head in time")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("content-length").is_none());

    let mut body = response.into_body();
    let mut received = 0;
    let window = Duration::from_millis(700);
    while let Ok(Some(frame)) =
        tokio::time::timeout_at((started + window).into(), body.frame()).await
    {
        received += frame.unwrap().data_ref().map_or(0, |d| d.len());
    }
    // One byte at once, then one per 200 ms.
    assert!(
        (2..=6).contains(&received),
        "received {received} bytes in {window:?}"
    );
    assert_eq!(jitsi.counts().bosh_sessions, 2);

    // Other paths stay fast.
    let config = Req::get(&format!("{url}/config.js"))
        .timeout(SHORT)
        .send()
        .await;
    assert_eq!(config.unwrap().status, 200);
}

#[tokio::test]
async fn refusing_closes_the_port_and_rebinds_it() {
    let jitsi = StandIn::http(Mode::Healthy).await;
    let url = format!("{}/config.js", jitsi.url());
    let mut kept = KeptAlive::open(jitsi.addr()).await;
    assert_eq!(
        kept.send(Method::GET, "/config.js", "")
            .await
            .unwrap()
            .status,
        200
    );

    jitsi.set_mode(Mode::Refusing).await;
    assert!(is_refused(&Req::get(&url).send().await));
    assert!(
        kept.send(Method::GET, "/config.js", "").await.is_err(),
        "open connections die too"
    );

    jitsi.set_mode(Mode::Healthy).await;
    assert_eq!(crate::support::get(&url, &[]).await.status, 200);

    // Flapping quickly still ends in the last mode.
    for _ in 0..3 {
        jitsi.set_mode(Mode::Refusing).await;
        jitsi.set_mode(Mode::Healthy).await;
    }
    assert_eq!(crate::support::get(&url, &[]).await.status, 200);

    // Starting out refusing works too: the port is bound once to learn its
    // number, closed, and bound again when the mode changes.
    let down = StandIn::builder().mode(Mode::Refusing).start().await;
    let down_url = format!("{}/config.js", down.url());
    assert!(is_refused(&Req::get(&down_url).send().await));
    down.set_mode(Mode::Healthy).await;
    assert_eq!(crate::support::get(&down_url, &[]).await.status, 200);
}

#[tokio::test]
async fn black_hole_accepts_and_never_answers() {
    let jitsi = StandIn::http(Mode::Healthy).await;
    let url = format!("{}/config.js", jitsi.url());
    let mut kept = KeptAlive::open(jitsi.addr()).await;
    assert_eq!(
        kept.send(Method::GET, "/config.js", "")
            .await
            .unwrap()
            .status,
        200
    );

    jitsi.set_mode(Mode::BlackHole).await;
    let before = jitsi.counts();
    let result = Req::get(&url).timeout(SHORT).send().await;
    assert!(matches!(result, Err(FetchError::Timeout)), "{result:?}");
    let after = jitsi.counts();
    assert_eq!(
        after.connections,
        before.connections + 1,
        "the connect is accepted"
    );
    assert_eq!(after.requests, before.requests, "but nothing is read");

    // A kept-alive connection hangs as well.
    let hung = tokio::time::timeout(SHORT, kept.send(Method::GET, "/config.js", "")).await;
    assert!(hung.is_err());

    jitsi.set_mode(Mode::Healthy).await;
    assert_eq!(crate::support::get(&url, &[]).await.status, 200);
}

#[tokio::test]
async fn kept_alive_connections_follow_mode_changes() {
    let jitsi = StandIn::http(Mode::Healthy).await;
    let mut conn = KeptAlive::open(jitsi.addr()).await;
    let create = create_body("localhost");

    let ok = conn
        .send(Method::POST, "/http-bind", &create)
        .await
        .unwrap();
    assert!(ok.body.contains("<stream:features"));
    jitsi.set_mode(Mode::BoshDown).await;
    let down = conn
        .send(Method::POST, "/http-bind", &create)
        .await
        .unwrap();
    assert_eq!(down.status, StatusCode::BAD_GATEWAY);
    jitsi.set_mode(Mode::Healthy).await;
    let ok = conn
        .send(Method::POST, "/http-bind", &create)
        .await
        .unwrap();
    assert!(ok.body.contains("<stream:features"));
    assert_eq!(jitsi.counts().connections, 1);
}

#[tokio::test]
async fn tls_stand_in_with_test_ca() {
    let ca = TestCa::new();
    let jitsi = StandIn::https(Mode::Healthy, &ca.localhost_leaf()).await;
    assert_eq!(jitsi.url(), format!("https://localhost:{}", jitsi.port()));
    assert_eq!(
        jitsi.ip_url(),
        format!("https://127.0.0.1:{}", jitsi.port())
    );

    for base in [jitsi.url(), jitsi.ip_url()] {
        let resp = Req::get(&format!("{base}/config.js"))
            .ca(&ca)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{base}");
    }
    let created = Req::post(
        &format!("{}/http-bind", jitsi.url()),
        &create_body("localhost"),
    )
    .ca(&ca)
    .send()
    .await
    .unwrap();
    assert!(created.body.contains("<stream:features"));

    // ALPN: HTTP/1.1 only.
    let tcp = TcpStream::connect(jitsi.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(ca.client_config())
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

    let dir = tempfile::tempdir().unwrap();
    let path = ca.pem_path(dir.path());
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(written, ca.pem());
    assert_ne!(
        TestCa::new().pem_path(dir.path()),
        path,
        "CAs do not overwrite each other"
    );

    // TLS black hole: the handshake never completes.
    jitsi.set_mode(Mode::BlackHole).await;
    let hung = Req::get(&jitsi.url()).ca(&ca).timeout(SHORT).send().await;
    assert!(matches!(hung, Err(FetchError::Timeout)), "{hung:?}");
}

#[tokio::test]
async fn tls_fault_certificates_are_rejected() {
    use rustls::CertificateError as E;

    let ca = TestCa::new();
    let other = TestCa::new();
    let cases: [(&str, Leaf); 4] = [
        ("unknown CA", other.localhost_leaf()),
        ("expired", ca.expired_leaf(&["localhost", "127.0.0.1"])),
        ("wrong host", ca.leaf(&["wrong.example"])),
        ("self-signed", Leaf::self_signed(&["localhost"])),
    ];
    for (case, leaf) in cases {
        let jitsi = StandIn::https(Mode::Healthy, &leaf).await;
        let err = cert_error(Req::get(&jitsi.url()).ca(&ca).send().await);
        let expected = match case {
            "unknown CA" | "self-signed" => matches!(err, E::UnknownIssuer),
            "expired" => matches!(err, E::Expired | E::ExpiredContext { .. }),
            _ => matches!(err, E::NotValidForName | E::NotValidForNameContext { .. }),
        };
        assert!(expected, "{case}: {err:?}");
        // The faulty server itself is fine for a client that trusts it.
        if case == "unknown CA" {
            let resp = Req::get(&jitsi.url()).ca(&other).send().await.unwrap();
            assert_eq!(resp.status, 200);
        }
    }
}

#[tokio::test]
async fn waits_are_event_driven_and_bounded() {
    let jitsi = StandIn::http(Mode::Healthy).await;
    let url = jitsi.url();

    let timed_out = jitsi.wait_for_creates(1, Duration::from_millis(50)).await;
    assert_eq!(timed_out.unwrap_err().bosh_creates, 0);

    let poster = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        bosh(&url, &create_body("localhost")).await;
        bosh(&url, &create_body("localhost")).await
    });
    let counts = jitsi
        .wait_for_creates(2, Duration::from_secs(2))
        .await
        .expect("two creates");
    assert_eq!(counts.bosh_creates, 2);
    let sid = sid_of(&poster.await.unwrap().body);

    bosh(&jitsi.url(), &terminate_body(&sid)).await;
    jitsi
        .wait_for_terminates(1, Duration::from_secs(2))
        .await
        .expect("terminate");
    jitsi
        .wait_for(Duration::from_secs(2), |c| {
            c.requests == 3 && c.connections == 3
        })
        .await
        .expect("requests");
}

#[tokio::test]
async fn shutdown_and_drop_close_port_and_connections() {
    let jitsi = StandIn::http(Mode::Healthy).await;
    let addr = jitsi.addr();
    let mut kept = KeptAlive::open(addr).await;
    assert_eq!(kept.send(Method::GET, "/", "").await.unwrap().status, 200);

    jitsi.shutdown().await;
    assert!(is_refused(
        &Req::get(&format!("http://{addr}/")).send().await
    ));
    assert!(kept.send(Method::GET, "/", "").await.is_err());

    // Dropping stops it too (asynchronously, so allow a moment).
    let jitsi = StandIn::builder().mode(Mode::BlackHole).start().await;
    let addr = jitsi.addr();
    let held = TcpStream::connect(addr).await.unwrap();
    drop(jitsi);
    let deadline = Instant::now() + Duration::from_secs(1);
    while !is_refused(
        &Req::get(&format!("http://{addr}/"))
            .timeout(SHORT)
            .send()
            .await,
    ) {
        assert!(Instant::now() < deadline, "port still open after drop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The held connection was closed by the server: reading sees EOF or reset.
    let mut buf = [0u8; 1];
    held.readable().await.unwrap();
    assert!(matches!(held.try_read(&mut buf), Ok(0) | Err(_)));
}
