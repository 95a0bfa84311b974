//! The security rule of the README: "A Location is always a configured
//! server URL plus a validated room name: no byte of the request reaches
//! scheme, host or port."
//!
//! Two angles: a property test that feeds hostile request targets straight
//! into `roomgate::http::handle` (no sockets, thousands of cases), and a list
//! of classic open-redirect payloads written byte for byte to a real socket.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::support::*;
use http::{Request, Uri};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use roomgate::config::Config;
use roomgate::gateway::{ConfigSource, Gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The peer the handler is told about: a local client.
const PEER: roomgate::forwarded::Peer = roomgate::forwarded::Peer::Tcp(std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 40000),
));

const FAST: &str = "{ interval: 300ms, fast_interval: 100ms, timeout: 200ms, rise: 2, fall: 2, xmpp_domain: localhost }";

/// Two servers, one under a path prefix, and rooms that use both, renamed
/// and not. The backup is down, so both servers show up in Locations (the
/// prefixed primary for most rooms, the backup for its only room through
/// `when_all_down: first`).
fn yaml(primary: &str, backup: &str, allow_unlisted: bool) -> String {
    format!(
        "servers:
  primary:
    url: {primary}
    check: {FAST}
  backup:
    url: {backup}/
    check: {FAST}
defaults:
  servers: [primary, backup]
unlisted:
  allow: {allow_unlisted}
  servers: [backup, primary]
rooms:
  Lounge:
    aliases: [treff, lounge.alt]
  Cave:
    servers: [backup, {{ server: primary, room: ChaosCave }}]
  Freitagsfoo:
    servers: [backup]
  a.b-c_d: {{}}
"
    )
}

/// The configured server URLs (as roomgate stores them: no trailing slash).
fn bases(primary: &StandIn, backup: &StandIn) -> Vec<String> {
    vec![primary.url(), backup.url()]
}

/// Checks one answer's Location (raw bytes, if any) against the rule.
fn check_location(location: Option<&[u8]>, status: u16, bases: &[String], what: &str) {
    let Some(loc) = location else {
        assert!(
            !(300..400).contains(&status),
            "{what}: redirect {status} without Location"
        );
        return;
    };
    assert!(
        matches!(status, 302 | 303 | 307),
        "{what}: Location on a {status}"
    );
    for bad in [b'\r', b'\n', 0u8] {
        assert!(
            !loc.contains(&bad),
            "{what}: byte {bad:#x} in Location {loc:?}"
        );
    }
    assert!(!loc.contains(&b'#'), "{what}: fragment in Location {loc:?}");
    let loc = std::str::from_utf8(loc).unwrap_or_else(|_| panic!("{what}: Location not UTF-8"));
    // A configured URL, then `/`, then a name of the room-name alphabet.
    let base = bases
        .iter()
        .find(|b| loc.starts_with(&format!("{b}/")))
        .unwrap_or_else(|| panic!("{what}: Location {loc:?} is not below {bases:?}"));
    let rest = &loc[base.len() + 1..];
    let room = rest.split('?').next().unwrap_or("");
    assert!(
        !room.is_empty()
            && room.len() <= 64
            && room
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && room.bytes().any(|b| b != b'.'),
        "{what}: room {room:?} in Location {loc:?}"
    );
    // And as a URL, its origin is the configured one.
    let uri: Uri = loc
        .parse()
        .unwrap_or_else(|e| panic!("{what}: Location {loc:?} is no URI: {e}"));
    let want: Uri = base.parse().unwrap();
    assert_eq!(uri.scheme(), want.scheme(), "{what}: {loc}");
    assert_eq!(uri.authority(), want.authority(), "{what}: {loc}");
    assert_eq!(uri.host(), want.host(), "{what}: {loc}");
}

// ---------------------------------------------------------------------------
// Property test, through the handler directly.

/// A gateway over two stand-ins, kept for all cases of one property.
struct Fixture {
    rt: tokio::runtime::Runtime,
    gw: Arc<Gateway>,
    bases: Vec<String>,
    _standins: (StandIn, StandIn),
}

fn fixture(allow_unlisted: bool) -> &'static Fixture {
    static CLOSED: OnceLock<Fixture> = OnceLock::new();
    static OPEN: OnceLock<Fixture> = OnceLock::new();
    let cell = if allow_unlisted { &OPEN } else { &CLOSED };
    cell.get_or_init(|| {
        // Multi-threaded, so probers and stand-ins run between cases too.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (gw, standins) = rt.block_on(async {
            let primary = StandIn::builder().prefix("/jitsi").start().await;
            let backup = StandIn::http(Mode::BoshDown).await;
            let text = yaml(&primary.url(), &backup.url(), allow_unlisted);
            let config = Config::parse(&text, "t.yaml", Path::new(".")).unwrap();
            let gw = Gateway::start(config, ConfigSource::File("t.yaml".into()));
            // Let the first probes land so that no case waits for them.
            let deadline = Instant::now() + Duration::from_secs(3);
            while !gw.is_ready() {
                assert!(Instant::now() < deadline, "not ready");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (gw, (primary, backup))
        });
        let bases = bases(&standins.0, &standins.1);
        Fixture {
            rt,
            gw,
            bases,
            _standins: standins,
        }
    })
}

/// Pieces of hostile request targets.
const ATOMS: &[&str] = &[
    "/",
    "//",
    "\\",
    ".",
    "..",
    "%",
    "%2F",
    "%2f",
    "%5C",
    "%5c",
    "2F",
    "5C",
    "%2E",
    "%00",
    "%0d%0a",
    "%09",
    "%40",
    "@",
    ":",
    ";",
    "?",
    "#",
    "&",
    "=",
    "+",
    "~",
    "!",
    "$",
    "'",
    "\"",
    "(",
    "{",
    "}",
    "[",
    "]",
    "|",
    "^",
    "`",
    "*",
    ",",
    "a",
    "Z",
    "0",
    "_",
    "-",
    "x",
    "Lounge",
    "lounge",
    "treff",
    "Cave",
    "ChaosCave",
    "a.b-c_d",
    "evil.example",
    "127.0.0.1",
    "localhost",
    "http:",
    "https:",
    "javascript:",
    "\u{FF0F}",
    "\u{3002}",
    "\u{FF3C}",
    "\u{2044}",
    "\u{2215}",
    "ä",
    "\u{1F600}",
    "\t",
    " ",
    "\r",
    "\n",
    "\0",
    "\u{7F}",
    "\u{85}",
];

/// How request targets start: origin-form, absolute-form, or odd.
const STARTS: &[&str] = &[
    "/",
    "/",
    "/",
    "//",
    "/\\",
    "http://evil.example/",
    "https://evil.example",
    "http://evil.example:80@127.0.0.1/",
    "",
    "?",
    "*",
];

/// Names that reach a room, listed or unlisted.
const ROOMISH: &[&str] = &[
    "Lounge",
    "lounge",
    "TREFF",
    "Cave",
    "a.b-c_d",
    "lounge.alt",
    "Freitagsfoo",
    "AnyName",
    "x",
    "Un-listed_1",
];

/// Either hostile atoms after a start, or a room name followed by hostile
/// atoms (so that many cases reach the redirect path).
fn target() -> impl Strategy<Value = String> {
    let atoms = |n| prop::collection::vec(prop::sample::select(ATOMS), 0..n);
    prop_oneof![
        (prop::sample::select(STARTS), atoms(12))
            .prop_map(|(start, atoms)| format!("{start}{}", atoms.concat())),
        (
            prop::sample::select(STARTS),
            prop::sample::select(ROOMISH),
            prop::sample::select(&["", "/", "?", "#", "?x=", "/?", "?#"][..]),
            atoms(8),
        )
            .prop_map(|(start, room, sep, atoms)| format!("{start}{room}{sep}{}", atoms.concat())),
    ]
}

/// Runs one target through the handler; `None` when `Uri` rejects it.
fn answer(fx: &Fixture, target: &str) -> Option<(u16, Option<Vec<u8>>)> {
    // hyper parses the request target into a `Uri` too, and rejects what
    // this rejects.
    let uri: Uri = target.parse().ok()?;
    // An HTTP/1.1 request carries a Host, as hyper's client sends it.
    let req = Request::get(uri)
        .header("host", "gateway.example")
        .body(())
        .unwrap();
    let resp = fx.rt.block_on(roomgate::http::handle(&fx.gw, &PEER, req));
    let locs: Vec<_> = resp.headers().get_all("location").iter().collect();
    assert!(locs.len() <= 1, "{target:?}: {} Locations", locs.len());
    Some((
        resp.status().as_u16(),
        locs.first().map(|v| v.as_bytes().to_vec()),
    ))
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 5000,
        // Regressions would be written into tests/; the case is printed anyway.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn hostile_targets_never_redirect_elsewhere_unlisted_closed(t in target()) {
        let fx = fixture(false);
        if let Some((status, loc)) = answer(fx, &t) {
            check_location(loc.as_deref(), status, &fx.bases, &format!("{t:?}"));
        }
    }

    #[test]
    fn hostile_targets_never_redirect_elsewhere_unlisted_open(t in target()) {
        let fx = fixture(true);
        if let Some((status, loc)) = answer(fx, &t) {
            check_location(loc.as_deref(), status, &fx.bases, &format!("{t:?}"));
        }
    }
}

/// The generator must produce mostly parseable targets, and some redirects,
/// or the properties above test little.
#[test]
fn the_generator_reaches_the_redirect_path() {
    let fx = fixture(true);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = target();
    let (mut parsed, mut redirects) = (0, 0);
    for _ in 0..1000 {
        let t = strategy.new_tree(&mut runner).unwrap().current();
        if let Some((status, loc)) = answer(fx, &t) {
            parsed += 1;
            check_location(loc.as_deref(), status, &fx.bases, &format!("{t:?}"));
            redirects += usize::from(loc.is_some());
        }
    }
    assert!(parsed > 300, "only {parsed}/1000 targets parse");
    assert!(redirects > 100, "only {redirects}/1000 targets redirect");
}

/// Sanity for the checker itself: it does reject what it must.
#[test]
#[should_panic(expected = "is not below")]
fn the_checker_rejects_foreign_hosts() {
    let bases = ["http://127.0.0.1:1".to_owned()];
    check_location(
        Some(b"http://127.0.0.1:1.evil.example/Lounge"),
        302,
        &bases,
        "self-test",
    );
}

// ---------------------------------------------------------------------------
// Classic payloads, over real sockets.

/// Request targets (raw bytes on the request line) that open redirects have
/// been made of.
const PAYLOADS: &[&[u8]] = &[
    b"//evil.example",
    b"//evil.example/",
    b"//evil.example/Lounge",
    b"///evil.example",
    b"////evil.example//",
    b"/%2F%2Fevil.example",
    b"/%2f%2fevil.example",
    b"/%2F/evil.example",
    b"/%252F%252Fevil.example",
    b"/\\evil.example",
    b"/\\\\evil.example",
    b"/\\/evil.example",
    b"/%5Cevil.example",
    b"/%5c%5cevil.example",
    b"/.evil.example",
    b"/..",
    b"/../evil.example",
    b"/./evil.example",
    b"/%2e%2e/evil.example",
    b"/Lounge/..%2F..%2Fevil",
    b"/Lounge/../../evil.example",
    b"/Lounge/%2e%2e/%2e%2e/evil",
    b"/Lounge/..;/evil.example",
    b"/https:evil.example",
    b"/https://evil.example",
    b"/http:%2F%2Fevil.example",
    b"/http:/\\evil.example",
    b"/javascript:alert(1)",
    b"/data:text/html,x",
    b"/Lounge@evil.example",
    b"/@evil.example",
    b"/Lounge:@evil.example",
    b"/Lounge;@evil.example",
    b"/Lounge%40evil.example",
    b"/:evil.example",
    b"/%0d%0aLocation:%20http://evil",
    b"/Lounge%0d%0aLocation:%20http://evil",
    b"/Lounge?%0d%0aLocation:%20http://evil",
    b"/Lounge?x=%0d%0aSet-Cookie:%20a=b",
    b"/Lounge?next=//evil.example",
    b"/Lounge?@evil.example",
    b"/Lounge?/\\evil.example",
    b"/Lounge?#//evil.example",
    b"/Lounge#@evil.example",
    b"/Lounge#//evil.example",
    b"/treff?url=http://evil.example",
    b"/%E3%80%82evil.example",
    "/\u{FF0F}evil.example".as_bytes(),
    "/\u{FF0F}\u{FF0F}evil.example".as_bytes(),
    "/\u{3002}evil.example".as_bytes(),
    "/Lounge\u{FF0F}evil.example".as_bytes(),
    "/Lounge?\u{FF0F}\u{FF0F}evil.example".as_bytes(),
    b"/%00evil.example",
    b"/Lounge%00",
    b"/Lounge\x00",
    b"/Lounge\xff",
    b"/%09/evil.example",
    b"/\tevil.example",
    b"/Lounge\r\nLocation: http://evil.example",
    b"/Lounge?\r\nLocation: http://evil.example",
    b"/Lounge\nLocation: http://evil.example",
    b"http://evil.example/Lounge",
    b"https://evil.example/",
    b"http://evil.example//evil.example",
    b"//evil.example?Lounge",
    b"evil.example:443",
    b"*",
    b"/ Lounge",
    b"/evil.example",
    b"/Lounge/evil.example",
    b"/lounge.alt/..",
    b"/a.b-c_d?//evil.example",
    // Double slashes and schemes in more spellings.
    b"//evil.example:443",
    b"//evil.example%2F..",
    b"//evil.example%00.127.0.0.1",
    b"//evil.example%E3%80%82127.0.0.1",
    b"//127.0.0.1@evil.example",
    b"//@evil.example",
    b"///\\evil.example",
    b"/\\\\\\evil.example",
    b"/////evil.example",
    b"//evil%2Eexample",
    b"//%65vil.example",
    b"//evil.example\\@127.0.0.1",
    b"//0x7f000001",
    b"//2130706433",
    b"//[::1]",
    b"//evil.example#Lounge",
    b"/Lounge//evil.example",
    b"/Lounge/%2F%2Fevil.example",
    b"/http://evil.example",
    b"/http:/evil.example",
    b"/http:evil.example",
    b"/https:/\\/\\evil.example",
    b"/HTTP://evil.example",
    b"/hTtPs://evil.example",
    b"/ftp://evil.example",
    b"/%68%74%74%70%3a%2f%2fevil.example",
    b"/http%3A%2F%2Fevil.example",
    b"/http%3a//evil.example",
    b"/https%3A%5C%5Cevil.example",
    // Encoded and double-encoded separators.
    b"/%2F/evil.example/",
    b"/%2F%5Cevil.example",
    b"/%5C%2Fevil.example",
    b"/%5C%5Cevil.example",
    b"/%252f%252fevil.example",
    b"/%255C%255Cevil.example",
    b"/%25252F%25252Fevil.example",
    b"/%%32%46%%32%46evil.example",
    b"/%2%46%2%46evil.example",
    b"/%u2215%u2215evil.example",
    b"/%u002F%u002Fevil.example",
    b"/%2F%2F%65%76%69%6C%2E%65%78%61%6D%70%6C%65",
    b"/Lounge%2F..%2F..%2Fevil",
    b"/Lounge%252F..%252Fevil",
    b"/Lounge%3F%2F%2Fevil.example",
    b"/Lounge%23%2F%2Fevil.example",
    b"/Lounge%3Fnext=//evil.example",
    b"/%3F//evil.example",
    b"/%23//evil.example",
    b"/%2e%2e%2f%2e%2e%2fevil",
    b"/%252e%252e%252fevil",
    b"/Lounge%2e",
    b"/Lounge%2E%2E",
    b"/%2e",
    b"/%2e%2e",
    b"/.%2e/evil",
    b"/%2e./evil",
    // `..` segments.
    b"/../../../evil.example",
    b"/..//evil.example",
    b"/..\\evil.example",
    b"/...",
    b"/....//evil.example",
    b"/./",
    b"/.",
    b"/Lounge/.",
    b"/Lounge/..",
    b"/Lounge/../",
    b"/Lounge/./",
    b"/Cave/../../ChaosCave",
    b"/../Lounge",
    b"/./Lounge",
    b"/..;/Lounge",
    b"/Lounge/..%00/evil",
    b"/Lounge/..%5C..%5Cevil",
    // `@` and userinfo.
    b"/@@evil.example",
    b"/Lounge@127.0.0.1",
    b"/user:pass@evil.example",
    b"/Lounge:pass@evil.example/",
    b"/%40evil.example",
    b"/Lounge%2540evil.example",
    b"/Lounge?@@evil.example",
    b"/Lounge?x=1@evil.example",
    b"http://user@evil.example/Lounge",
    b"http://127.0.0.1@evil.example/Lounge",
    b"http://evil.example@127.0.0.1/Lounge",
    b"http://evil.example%40127.0.0.1/Lounge",
    // Unicode dots and slashes, raw and percent-encoded.
    "/\u{2215}\u{2215}evil.example".as_bytes(),
    "/\u{2044}\u{2044}evil.example".as_bytes(),
    "/\u{FF3C}\u{FF3C}evil.example".as_bytes(),
    "/\u{FE68}evil.example".as_bytes(),
    "/\u{29F5}evil.example".as_bytes(),
    "/\u{FF0E}\u{FF0E}/evil".as_bytes(),
    "/evil\u{FF0E}example".as_bytes(),
    "/evil\u{3002}example".as_bytes(),
    "/evil\u{FE52}example".as_bytes(),
    "/evil\u{2024}example".as_bytes(),
    "/Lounge\u{2215}evil.example".as_bytes(),
    "/Lounge\u{FF03}evil".as_bytes(),
    "/Lounge\u{FF1F}next=//evil".as_bytes(),
    "/\u{0130}stanbul".as_bytes(),
    "/LOUNGE\u{017F}".as_bytes(),
    "/\u{212A}ave".as_bytes(),
    "/Lounge\u{200B}".as_bytes(),
    "/\u{202E}elgnuoL".as_bytes(),
    b"/%E2%88%95%E2%88%95evil.example",
    b"/%E2%81%84evil.example",
    b"/%EF%BC%8F%EF%BC%8Fevil.example",
    b"/%EF%BC%BCevil.example",
    b"/evil%EF%BC%8Eexample",
    b"/evil%E3%80%82example",
    b"/Lounge%E2%80%8B",
    // Overlong UTF-8 for `/`, `\` and `.`, raw and encoded.
    b"/\xC0\xAF\xC0\xAFevil.example",
    b"/\xE0\x80\xAF\xE0\x80\xAFevil.example",
    b"/\xF0\x80\x80\xAFevil.example",
    b"/\xC1\x9Cevil.example",
    b"/\xC0\xAE\xC0\xAE/evil",
    b"/Lounge\xC0\xAF..\xC0\xAFevil",
    b"/%C0%AF%C0%AFevil.example",
    b"/%E0%80%AF%E0%80%AFevil.example",
    b"/%F0%80%80%AFevil.example",
    b"/%C1%9C%C1%9Cevil.example",
    b"/%C0%AE%C0%AE%C0%AFevil",
    b"/%C0%2F%C0%2Fevil.example",
    b"/%C0%80",
    b"/Lounge%C0%AF",
    b"/Lounge\xC0\x80",
    // Tabs, CR, LF and other control bytes.
    b"/%09%09evil.example",
    b"/%0Aevil.example",
    b"/%0D%0A%0D%0A<html>",
    b"/%0d%0aSet-Cookie:%20a=b",
    b"/Lounge%0D%0ASet-Cookie:%20a=b",
    b"/Lounge%0ALocation:%20//evil.example",
    b"/Lounge%E5%98%8A%E5%98%8DLocation:%20//evil",
    b"/Lounge?%E5%98%8A%E5%98%8DSet-Cookie:a=b",
    b"/Lounge?%0AX-Injected:%201",
    b"/Lounge\t",
    b"/\t/evil.example",
    b"/Lounge\x0b",
    b"/Lounge\x0c",
    b"/Lounge\x1b[31m",
    b"/Lounge\x7f",
    b"/Lounge\rLocation: http://evil.example",
    b"/Lounge?\rSet-Cookie: a=b",
    b"/Lounge?x=%00",
    b"/%00/evil.example",
    b"/Lounge%0d%0a",
    // Script and data schemes.
    b"/javascript:alert(document.domain)",
    b"/javascript://%0aalert(1)",
    b"/JaVaScRiPt:alert(1)",
    b"/java%0d%0ascript:alert(1)",
    b"/%6A%61%76%61%73%63%72%69%70%74:alert(1)",
    b"/javascript%3Aalert(1)",
    b"/vbscript:msgbox(1)",
    b"/data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    b"/Lounge?javascript:alert(1)",
    b"/Lounge?redirect=javascript:alert(1)",
    b"javascript:alert(1)",
    b"data:text/html,x",
    // Absolute URLs and authority forms.
    b"http://evil.example",
    b"http://evil.example/",
    b"https://evil.example/Lounge?x=1",
    b"http://evil.example:8080/Lounge",
    b"http://127.0.0.1.evil.example/Lounge",
    b"http://evil.example/%2F%2Fevil.example",
    b"http://evil.example/..//evil.example",
    b"HTTP://EVIL.EXAMPLE/Lounge",
    b"ftp://evil.example/Lounge",
    b"javascript://evil.example/%0aalert(1)",
    b"http:/evil.example/Lounge",
    b"http:evil.example",
    b"evil.example",
    b"evil.example/Lounge",
    b"127.0.0.1:1",
    b"[::1]:80",
    // Open-redirect parameter names, passed on unchanged in the query only.
    b"/Lounge?url=//evil.example",
    b"/Lounge?return_to=https://evil.example",
    b"/Lounge?redirect_uri=%2F%2Fevil.example",
    b"/Lounge?continue=/\\evil.example",
    b"/Lounge?next=%5C%5Cevil.example",
    b"/Lounge??//evil.example",
    b"/Lounge?&&//evil.example",
    b"/treff?//evil.example#//evil.example",
    b"/Cave?to=http://evil.example",
    b"/lounge.alt?x=//evil.example",
    b"/Freitagsfoo?x=//evil.example",
    b"/AnyName?x=//evil.example",
    b"/Un-listed_1?//evil.example",
    // Odd room names.
    b"/-",
    b"/_",
    b"/_/evil.example",
    b"/_/../Lounge",
    b"/Lounge.",
    b"/.Lounge",
    b"/Lounge;evil.example",
    b"/Lounge,evil.example",
    b"/Lounge evil.example",
    b"/Lounge+evil.example",
    b"/Lounge%20",
    b"/Lounge%",
    b"/Lounge%zz",
    b"/%",
    b"/%%",
    b"/~evil",
    b"/Lounge'\"><script>alert(1)</script>",
    b"/<script>alert(1)</script>",
    b"/HEALTHZ?//evil.example",
    b"/metrics/..",
    b"/status.json/..//evil.example",
];

/// The list covers the issue's families (at least 200 payloads) without
/// repeating itself.
#[test]
fn the_payload_list_is_long_and_has_no_repeats() {
    let mut seen = std::collections::HashSet::new();
    for payload in PAYLOADS {
        assert!(
            seen.insert(*payload),
            "repeated: {:?}",
            String::from_utf8_lossy(payload)
        );
    }
    assert!(PAYLOADS.len() >= 200, "only {} payloads", PAYLOADS.len());
}

/// What roomgate answered to one raw request.
struct RawAnswer {
    status: u16,
    locations: Vec<Vec<u8>>,
    head: Vec<u8>,
}

/// Writes `GET <target> HTTP/1.1` plus `extra` header lines by hand (hyper's
/// client would refuse most targets) and reads the answer head.
async fn raw(addr: &str, target: &[u8], extra: &[u8]) -> RawAnswer {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(target);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    req.extend_from_slice(addr.as_bytes());
    req.extend_from_slice(b"\r\nConnection: close\r\n");
    req.extend_from_slice(extra);
    req.extend_from_slice(b"\r\n");
    // A request hyper rejects may be answered (400) and closed before all of
    // it is written; that is fine.
    let _ = tcp.write_all(&req).await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), async {
        let mut chunk = [0u8; 4096];
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "{:?}: no end of answer",
        String::from_utf8_lossy(target)
    );
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(buf.len());
    let head = buf[..end].to_vec();
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status = lines
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let locations = lines
        .filter_map(|l| {
            let colon = l.iter().position(|&b| b == b':')?;
            l[..colon]
                .eq_ignore_ascii_case(b"location")
                .then(|| l[colon + 1..].trim_ascii().to_vec())
        })
        .collect();
    RawAnswer {
        status,
        locations,
        head,
    }
}

fn check_raw(answer: &RawAnswer, bases: &[String], what: &str) {
    assert!(
        answer.status == 0 || answer.head.starts_with(b"HTTP/1.1 "),
        "{what}: odd answer {:?}",
        String::from_utf8_lossy(&answer.head)
    );
    assert!(answer.locations.len() <= 1, "{what}: several Locations");
    check_location(
        answer.locations.first().map(Vec::as_slice),
        answer.status,
        bases,
        what,
    );
    // No header line was injected from the request.
    let head = String::from_utf8_lossy(&answer.head).to_ascii_lowercase();
    for line in head.lines().skip(1) {
        let name = line.split(':').next().unwrap_or("");
        assert!(
            !name.contains("evil") && name != "set-cookie",
            "{what}: header {line:?}"
        );
    }
}

#[tokio::test]
async fn classic_payloads_over_sockets() {
    let primary = StandIn::builder().prefix("/jitsi").start().await;
    let backup = StandIn::http(Mode::BoshDown).await;
    let bases = bases(&primary, &backup);
    for allow in [false, true] {
        let gate = Gate::start(&yaml(&primary.url(), &backup.url(), allow)).await;
        let deadline = Instant::now() + Duration::from_secs(3);
        while !gate.gw.is_ready() {
            assert!(Instant::now() < deadline, "not ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let addr = gate.base.trim_start_matches("http://").to_owned();
        let mut redirects = 0;
        let mut answered = 0;
        for payload in PAYLOADS {
            let what = format!("allow={allow} {:?}", String::from_utf8_lossy(payload));
            let answer = raw(&addr, payload, b"").await;
            check_raw(&answer, &bases, &what);
            redirects += usize::from(!answer.locations.is_empty());
            answered += usize::from(answer.status != 0);
        }
        println!(
            "allow={allow}: {} payloads, {answered} answered, {redirects} redirects",
            PAYLOADS.len()
        );
        // Sanity: some payloads do reach a room (query passed on, absolute
        // form, fragment dropped) and still stay home.
        assert!(redirects >= 10, "allow={allow}: only {redirects} redirects");

        // Known answers for a few, so the raw client is known to work.
        let lounge = format!("{}/Lounge", primary.url());
        for (target, status, loc) in [
            (&b"/Lounge"[..], 302, Some(lounge.clone())),
            (b"http://evil.example/Lounge", 302, Some(lounge.clone())),
            (b"/Lounge#@evil.example", 302, Some(lounge.clone())),
            (
                b"/Lounge?next=//evil.example",
                302,
                Some(format!("{lounge}?next=//evil.example")),
            ),
            (b"//evil.example", 404, None),
            (b"/%2F%2Fevil.example", 404, None),
            (b"/\\evil.example", 404, None),
            (b"/Lounge\r\nLocation: http://evil.example", 400, None),
        ] {
            let answer = raw(&addr, target, b"").await;
            let what = format!("allow={allow} {:?}", String::from_utf8_lossy(target));
            assert_eq!(answer.status, status, "{what}");
            let got = answer
                .locations
                .first()
                .map(|l| String::from_utf8_lossy(l).into_owned());
            assert_eq!(got, loc, "{what}");
        }

        // Headers a proxy might trust do not move the redirect either.
        let hostile_headers: &[&[u8]] = &[
            b"X-Forwarded-Host: evil.example\r\n",
            b"X-Forwarded-Proto: javascript\r\n",
            b"X-Original-URL: //evil.example\r\nX-Rewrite-URL: //evil.example\r\n",
            b"Forwarded: host=evil.example;proto=https\r\n",
            b"X-Forwarded-Prefix: //evil.example\r\n",
            b"Referer: http://evil.example/\r\n",
        ];
        for extra in hostile_headers {
            let answer = raw(&addr, b"/Lounge", extra).await;
            let what = format!("allow={allow} {:?}", String::from_utf8_lossy(extra));
            check_raw(&answer, &bases, &what);
            assert_eq!(answer.locations, [lounge.as_bytes().to_vec()], "{what}");
        }
        // A hostile Host header (replacing ours) does not either.
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(b"GET /Lounge HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&buf);
        assert!(
            text.contains(&format!("\r\nlocation: {lounge}\r\n")),
            "{text}"
        );
        gate.stop().await;
    }
}
