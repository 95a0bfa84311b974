//! Unit tests of `forwarded`.

use super::*;
use http::HeaderValue;

fn nets(list: &[&str]) -> TrustedProxies {
    TrustedProxies(list.iter().map(|n| n.parse().unwrap()).collect())
}

fn tcp(addr: &str) -> Peer {
    Peer::Tcp(addr.parse().unwrap())
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn ip(s: &str) -> ClientAddr {
    ClientAddr::Ip(s.parse().unwrap())
}

#[test]
fn default_trusts_loopback_only() {
    let t = TrustedProxies::default();
    assert!(t.trusts(&tcp("127.0.0.1:1")));
    assert!(t.trusts(&tcp("127.9.9.9:1")));
    assert!(t.trusts(&tcp("[::1]:1")));
    assert!(t.trusts(&tcp("[::ffff:127.0.0.1]:1")));
    assert!(t.trusts(&Peer::Unix));
    assert!(!t.trusts(&tcp("192.0.2.1:1")));
    assert!(!t.trusts(&tcp("[2001:db8::1]:1")));
    assert!(!t.trusts(&tcp("[::ffff:192.0.2.1]:1")));
}

#[test]
fn untrusted_peer_is_the_client_whatever_it_claims() {
    let t = TrustedProxies::default();
    let h = headers(&[("x-forwarded-for", "127.0.0.1, 10.0.0.1")]);
    assert_eq!(client_addr(&tcp("192.0.2.7:5"), &h, &t), ip("192.0.2.7"));
}

#[test]
fn trusted_peer_names_the_rightmost_untrusted_entry() {
    let t = nets(&["127.0.0.0/8", "10.0.0.0/8"]);
    // client-made-up, real client, our inner proxy
    let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.4, 10.1.2.3")]);
    assert_eq!(
        client_addr(&tcp("127.0.0.1:80"), &h, &t),
        ip("198.51.100.4")
    );
    // Repeated header lines are one list.
    let h = headers(&[
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-for", "198.51.100.4, 10.1.2.3"),
    ]);
    assert_eq!(
        client_addr(&tcp("127.0.0.1:80"), &h, &t),
        ip("198.51.100.4")
    );
}

#[test]
fn all_trusted_chain_gives_the_leftmost() {
    let t = nets(&["127.0.0.0/8", "10.0.0.0/8"]);
    let h = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.8")]);
    assert_eq!(client_addr(&tcp("127.0.0.1:80"), &h, &t), ip("10.0.0.9"));
}

#[test]
fn garbage_stops_the_walk_at_the_last_verified_hop() {
    let t = nets(&["127.0.0.0/8", "10.0.0.0/8"]);
    let h = headers(&[("x-forwarded-for", "1.2.3.4, <script>, 10.0.0.8")]);
    assert_eq!(client_addr(&tcp("127.0.0.1:80"), &h, &t), ip("10.0.0.8"));
    let h = headers(&[("x-forwarded-for", "unknown")]);
    assert_eq!(client_addr(&tcp("127.0.0.1:80"), &h, &t), ip("127.0.0.1"));
    let h = headers(&[("x-forwarded-for", "")]);
    assert_eq!(client_addr(&Peer::Unix, &h, &t), ClientAddr::Unix);
}

#[test]
fn unix_peer_without_header_and_ports_in_entries() {
    let t = TrustedProxies::default();
    assert_eq!(
        client_addr(&Peer::Unix, &HeaderMap::new(), &t),
        ClientAddr::Unix
    );
    let h = headers(&[("x-forwarded-for", "[2001:db8::5]:4711")]);
    assert_eq!(client_addr(&Peer::Unix, &h, &t), ip("2001:db8::5"));
    let h = headers(&[("x-forwarded-for", "192.0.2.3:80")]);
    assert_eq!(client_addr(&Peer::Unix, &h, &t), ip("192.0.2.3"));
    let h = headers(&[("x-forwarded-for", "::ffff:192.0.2.3")]);
    assert_eq!(client_addr(&Peer::Unix, &h, &t).to_string(), "192.0.2.3");
}

#[test]
fn empty_list_trusts_only_unix() {
    let t = nets(&[]);
    let h = headers(&[("x-forwarded-for", "198.51.100.4")]);
    assert_eq!(client_addr(&tcp("127.0.0.1:9"), &h, &t), ip("127.0.0.1"));
    assert_eq!(client_addr(&Peer::Unix, &h, &t), ip("198.51.100.4"));
}

#[test]
fn public_base_from_a_trusted_proxy() {
    let t = TrustedProxies::default();
    let h = headers(&[
        ("host", "127.0.0.1:8080"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "Chaosdorf.example"),
        ("x-forwarded-prefix", "/raum/"),
    ]);
    let base = public_base(&tcp("127.0.0.1:5"), None, &h, &t).unwrap();
    assert_eq!(base.as_str(), "https://chaosdorf.example/raum");
    assert_eq!(base.prefix(), "/raum");
    assert_eq!(base.to_string(), base.as_str());

    let h = headers(&[
        ("host", "virtual.example.org"),
        ("x-forwarded-proto", "http"),
    ]);
    let base = public_base(&Peer::Unix, None, &h, &t).unwrap();
    assert_eq!(base.as_str(), "http://virtual.example.org");
    assert_eq!(base.prefix(), "");
}

/// RFC 9112 §3.2.2: an absolute-form target's authority wins over Host;
/// a trusted proxy's X-Forwarded-Host still says what the client used.
#[test]
fn public_base_takes_the_authority_of_an_absolute_target() {
    let t = TrustedProxies::default();
    let stranger = tcp("192.0.2.1:5");
    let h = headers(&[("host", "evil.example")]);
    let base = public_base(&stranger, Some("Rooms.example:8080"), &h, &t).unwrap();
    assert_eq!(base.as_str(), "http://rooms.example:8080");
    // An unfit authority is not replaced by the Host it overrides.
    assert_eq!(
        public_base(&stranger, Some("a@rooms.example"), &h, &t),
        None
    );
    let h = headers(&[
        ("host", "evil.example"),
        ("x-forwarded-host", "gate.example"),
    ]);
    let base = public_base(&tcp("127.0.0.1:5"), Some("rooms.example"), &h, &t).unwrap();
    assert_eq!(base.as_str(), "http://gate.example");
    let base = public_base(&stranger, Some("rooms.example"), &h, &t).unwrap();
    assert_eq!(base.as_str(), "http://rooms.example");
}

#[test]
fn public_base_ignores_forwarding_headers_from_strangers() {
    let t = TrustedProxies::default();
    let h = headers(&[
        ("host", "gate.example:8080"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-prefix", "/phish"),
    ]);
    let base = public_base(&tcp("192.0.2.1:5"), None, &h, &t).unwrap();
    assert_eq!(base.as_str(), "http://gate.example:8080");
    assert_eq!(prefix(&tcp("192.0.2.1:5"), &h, &t), "");
    assert_eq!(prefix(&tcp("127.0.0.1:5"), &h, &t), "/phish");
}

#[test]
fn hostile_headers_never_reach_the_url() {
    let t = TrustedProxies::default();
    let peer = Peer::Unix;
    for bad_prefix in [
        "raum",
        "//evil.example",
        "/a\"><script>",
        "/a b",
        "/a/../b",
        "/./x",
        "/%zz",
        "/a?b",
        "/a#b",
        "/a\\b",
        "/'x",
    ] {
        let h = headers(&[("host", "ok.example"), ("x-forwarded-prefix", bad_prefix)]);
        assert_eq!(prefix(&peer, &h, &t), "", "{bad_prefix:?}");
        assert_eq!(
            public_base(&peer, None, &h, &t).unwrap().as_str(),
            "http://ok.example",
            "{bad_prefix:?}"
        );
    }
    let long = format!("/{}", "a".repeat(MAX_PREFIX_LEN));
    let h = headers(&[("host", "ok.example"), ("x-forwarded-prefix", &long)]);
    assert_eq!(prefix(&peer, &h, &t), "");
    for bad_host in [
        "evil.example/path",
        "user@evil.example",
        "a\"b",
        "<x>",
        "x:99999",
        "x:",
        "[::1",
        "[zz]:80",
        "-x",
        "a b",
    ] {
        let h = headers(&[("host", "ok.example"), ("x-forwarded-host", bad_host)]);
        assert_eq!(
            public_base(&peer, None, &h, &t).unwrap().as_str(),
            "http://ok.example",
            "{bad_host:?}"
        );
        let h = headers(&[("host", bad_host)]);
        assert_eq!(public_base(&peer, None, &h, &t), None, "{bad_host:?}");
    }
    // CR/LF cannot even be stored in a HeaderValue; obs-text can.
    let mut h = headers(&[("host", "ok.example")]);
    h.insert(
        "x-forwarded-prefix",
        HeaderValue::from_bytes(b"/r\xc3\xa4um").unwrap(),
    );
    assert_eq!(prefix(&peer, &h, &t), "");
    assert_eq!(public_base(&peer, None, &HeaderMap::new(), &t), None);
}

proptest::proptest! {
    /// Whatever a proxy (or a client pretending to be one) sends, the
    /// base URL holds only characters that are inert in HTML attributes
    /// and headers, and its host part is one the headers named.
    #[test]
    fn public_base_is_always_inert(
        host in "\\PC{0,40}",
        fwd_host in "\\PC{0,40}",
        prefix in "[/a-z%.<>\"' \\\\:@?#]{0,30}",
        proto in "\\PC{0,8}",
    ) {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("host", &host),
            ("x-forwarded-host", &fwd_host),
            ("x-forwarded-prefix", &prefix),
            ("x-forwarded-proto", &proto),
        ] {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        }
        if let Some(base) = public_base(&Peer::Unix, None, &h, &TrustedProxies::default()) {
            let url = base.as_str();
            proptest::prop_assert!(
                url.starts_with("http://") || url.starts_with("https://"),
                "{}", url
            );
            proptest::prop_assert!(
                url.bytes().all(|b| b.is_ascii_alphanumeric()
                    || b"-._~/%:[]".contains(&b)),
                "{}", url
            );
            proptest::prop_assert!(!base.prefix().starts_with("//"), "{}", url);
        }
    }
}

#[test]
fn hosts_with_ports_and_ipv6() {
    for good in [
        "a.example:443",
        "[2001:db8::1]:8443",
        "[::1]",
        "192.0.2.1",
        "x_y.local",
    ] {
        assert_eq!(valid_host(good), Some(good), "{good}");
    }
    let t = TrustedProxies::default();
    let h = headers(&[
        ("host", "x"),
        ("x-forwarded-host", "a.example:8443, b.example"),
    ]);
    assert_eq!(
        public_base(&Peer::Unix, None, &h, &t).unwrap().as_str(),
        "http://a.example:8443"
    );
}
