//! Request target -> decision and Location, through the real handler
//! (`roomgate::http::handle`) of a real gateway.
//!
//! Input: byte 0 picks the config variant (bits 0-1: unlisted rooms
//! allowed, `when_all_down: page`), the method (bits 2-3) and the peer
//! (bits 4-5: loopback, a trusted proxy by default; a public address; a unix
//! socket); byte 1 gives the health of the three servers (2 bits each:
//! unknown, up, down, down); the rest is the request target, parsed into a
//! `Uri` as hyper does, then after the first LF optional `name: value`
//! header lines (so `X-Forwarded-*` from trusted and untrusted peers too).
//!
//! Invariants: no panic; at most one Location; a Location only on
//! 302/303/307; it starts with a configured server URL plus `/`, has that
//! URL's scheme and authority, a room part of the room-name alphabet, and no
//! CR, LF or NUL.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use libfuzzer_sys::fuzz_target;
use roomgate::config::Config;
use roomgate::forwarded::Peer;
use roomgate::gateway::{ConfigSource, Gateway};
use roomgate::health::State;

/// Loopback only, on a port nobody listens on: the probers' first (real)
/// probes fail at once, and with a day's interval they never run again, so
/// the states set by hand below hold.
const SERVERS: [&str; 3] = [
    "http://127.0.0.1:9",
    "https://127.0.0.1:9/jitsi",
    "http://[::1]:9/meet/x",
];

fn yaml(allow_unlisted: bool, page: bool) -> String {
    let check = "{ interval: 24h, timeout: 1s }";
    format!(
        "servers:
  a: {{ url: '{a}', check: {check} }}
  b: {{ url: '{b}/', check: {check} }}
  c: {{ url: '{c}', check: {check} }}
defaults:
  servers: [a, b, c]
  redirect_status: {status}
  when_all_down: {policy}
unlisted:
  allow: {allow_unlisted}
  servers: [c, a]
rooms:
  Lounge: {{ aliases: [treff, lounge.alt] }}
  Cave: {{ servers: [b, {{ server: a, room: ChaosCave }}] }}
  Freitagsfoo: {{ servers: [c] }}
  a.b-c_d: {{}}
",
        a = SERVERS[0],
        b = SERVERS[1],
        c = SERVERS[2],
        status = if page { 307 } else { 302 },
        policy = if page { "page" } else { "first" },
    )
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    /// Indexed by bits 0-1 of byte 0.
    gateways: Vec<Arc<Gateway>>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let gateways = rt.block_on(async {
            let mut gateways = Vec::new();
            for variant in 0..4u8 {
                let text = yaml(variant & 1 != 0, variant & 2 != 0);
                let config = Config::parse(&text, "fuzz.yaml", Path::new("."))
                    .unwrap_or_else(|e| panic!("fixed config invalid: {e}"));
                let gw = Gateway::start(config, ConfigSource::File("fuzz.yaml".into()));
                let deadline = Instant::now() + Duration::from_secs(10);
                while !gw.is_ready() {
                    assert!(Instant::now() < deadline, "first probes did not end");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                gateways.push(gw);
            }
            gateways
        });
        Fixture { rt, gateways }
    })
}

fn state(bits: u8) -> State {
    match bits & 3 {
        0 => State::Unknown,
        1 => State::Up,
        _ => State::Down,
    }
}

fuzz_target!(|data: &[u8]| {
    let [control, health, rest @ ..] = data else {
        return;
    };
    let (target, headers) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let peer = match control >> 4 & 3 {
        0 | 1 => Peer::Tcp(SocketAddr::from(([127, 0, 0, 1], 40000))),
        2 => Peer::Tcp(SocketAddr::from(([203, 0, 113, 7], 40000))),
        _ => Peer::Unix,
    };
    let method = [Method::GET, Method::HEAD, Method::GET, Method::POST]
        [usize::from(control >> 2 & 3)]
    .clone();
    let fx = fixture();
    let gw = &fx.gateways[usize::from(control & 3)];
    let mut builder = Request::builder().method(method).uri(uri);
    for line in headers.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        builder = builder.header(name, value);
    }
    // An HTTP/1.1 request without Host ends at a 400 (RFC 9112 §3.2); one
    // from the input stands, else a client's usual one goes in, so that
    // inputs without a Host line still reach the routes.
    if !builder
        .headers_ref()
        .is_some_and(|h| h.contains_key(http::header::HOST))
    {
        builder = builder.header(http::header::HOST, "gateway.example");
    }
    let Ok(req) = builder.body(()) else {
        return;
    };
    let resp = fx.rt.block_on(async {
        let snap = gw.snapshot();
        for (i, handle) in snap.servers.iter().enumerate() {
            handle.set_state_by_hand(state(health >> (2 * i)));
        }
        roomgate::http::handle(gw, &peer, req).await
    });
    let locations: Vec<_> = resp
        .headers()
        .get_all(http::header::LOCATION)
        .iter()
        .collect();
    assert!(locations.len() <= 1, "{} Locations", locations.len());
    let Some(location) = locations.first() else {
        assert!(
            !resp.status().is_redirection(),
            "{} without Location",
            resp.status()
        );
        return;
    };
    assert!(
        matches!(resp.status().as_u16(), 302 | 303 | 307),
        "Location on a {}",
        resp.status()
    );
    check(location.as_bytes());
});

/// The Location rule of the README's "Security" section.
fn check(location: &[u8]) {
    assert!(
        !location.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)),
        "CR, LF or NUL in {location:?}"
    );
    let text = std::str::from_utf8(location).expect("Location is UTF-8");
    let base = SERVERS
        .iter()
        .find(|base| {
            text.strip_prefix(**base)
                .is_some_and(|rest| rest.starts_with('/'))
        })
        .unwrap_or_else(|| panic!("{text:?} is below no configured server"));
    let rest = &text[base.len() + 1..];
    let room = rest.split_once('?').map_or(rest, |(room, _)| room);
    assert!(
        !room.is_empty()
            && room.len() <= 64
            && room != "."
            && room != ".."
            && room
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
        "room part {room:?} of {text:?}"
    );
    let got: Uri = text
        .parse()
        .unwrap_or_else(|e| panic!("{text:?} is no URI: {e}"));
    let want: Uri = base.parse().expect("configured URL");
    assert_eq!(got.scheme(), want.scheme(), "{text:?}");
    assert_eq!(got.authority(), want.authority(), "{text:?}");
}
