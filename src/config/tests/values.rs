//! Single values that are accepted (URLs, durations, counts, statuses, probe
//! settings, site texts, trusted proxies), and what they become.

use super::*;
use crate::preview::Matcher;

fn url_config(url: &str) -> String {
    format!("servers:\n  a:\n    url: {url}\n")
}

#[test]
fn urls_keep_their_path_prefix_and_lose_the_trailing_slash() {
    let cases = [
        ("https://a.example", "https://a.example", "a.example"),
        ("https://a.example/", "https://a.example", "a.example"),
        ("http://a.example", "http://a.example", "a.example"),
        (
            "https://a.example/jitsi",
            "https://a.example/jitsi",
            "a.example",
        ),
        (
            "https://a.example/jitsi/",
            "https://a.example/jitsi",
            "a.example",
        ),
        (
            "https://a.example:8443",
            "https://a.example:8443",
            "a.example",
        ),
        (
            "https://a.example:8443/x/y/",
            "https://a.example:8443/x/y",
            "a.example",
        ),
        (
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8080",
            "127.0.0.1",
        ),
    ];
    for (url, base, host) in cases {
        let config = ok(&url_config(url));
        assert_eq!(config.servers[0].url, base, "{url}");
        assert_eq!(
            config.servers[0].check.kind,
            CheckKind::Jitsi {
                xmpp_domain: host.to_owned(),
                depth: Depth::Bosh,
                guest_domain: None,
            },
            "{url}"
        );
    }
}

#[test]
fn durations_accept_humantime_forms() {
    let config = ok(&check(
        "      interval: 1m 30s\n      fast_interval: 500ms\n      timeout: 2s\n",
    ));
    let c = &config.servers[0].check;
    assert_eq!(c.interval, secs(90));
    assert_eq!(c.fast_interval, Duration::from_millis(500));
    assert_eq!(c.timeout, secs(2));
}

#[test]
fn timeout_just_below_interval_is_accepted() {
    // in both directions of the defaults
    let config = ok(&check("      interval: 4s\n"));
    assert_eq!(config.servers[0].check.interval, secs(4));
    assert_eq!(config.servers[0].check.timeout, secs(3));
    let config = ok(&check("      timeout: 29s\n"));
    assert_eq!(config.servers[0].check.timeout, secs(29));
    ok(&check("      interval: 1s\n      timeout: 999ms\n"));
}

#[test]
fn rise_and_fall_are_taken() {
    let config = ok(&check("      rise: 1\n      fall: 5\n"));
    assert_eq!(config.servers[0].check.rise, 1);
    assert_eq!(config.servers[0].check.fall, 5);
}

#[test]
fn temporary_redirect_statuses_are_accepted() {
    let at = |status: &str| format!("{ONE}defaults:\n  redirect_status: {status}\n");
    for status in [302, 303, 307] {
        assert_eq!(
            ok(&at(&status.to_string())).defaults.redirect_status,
            status
        );
        assert_eq!(
            ok(&at(&format!("\"{status}\""))).defaults.redirect_status,
            status
        );
    }
    assert_eq!(ok(ONE).defaults.redirect_status, 302);
}

fn http_check(rest: &str) -> String {
    check(&format!("      kind: http\n{rest}"))
}

#[test]
fn expect_status_single_and_range() {
    let cases = [
        ("204", 204, 204),
        ("\"200-399\"", 200, 399),
        ("200-399", 200, 399),
        ("\"200 - 399\"", 200, 399),
        ("100-599", 100, 599),
        ("301-301", 301, 301),
    ];
    for (text, min, max) in cases {
        let config = ok(&http_check(&format!("      expect_status: {text}\n")));
        match &config.servers[0].check.kind {
            CheckKind::Http { expect_status, .. } => {
                assert_eq!(*expect_status, StatusRange { min, max }, "{text}");
            }
            other => panic!("{other:?}"),
        }
    }
    let range = StatusRange { min: 200, max: 399 };
    assert!(range.contains(200) && range.contains(399) && !range.contains(400));
    assert!(!range.contains(199));
    assert_eq!(range.to_string(), "200-399");
    assert_eq!(StatusRange { min: 204, max: 204 }.to_string(), "204");
}

#[test]
fn probe_path_keeps_its_query() {
    let config = ok(&http_check("      path: /health?full=1\n"));
    match &config.servers[0].check.kind {
        CheckKind::Http { path, .. } => assert_eq!(path, "/health?full=1"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn xmpp_domain_is_taken() {
    let config = ok(&check("      xmpp_domain: meet.jitsi\n"));
    assert_eq!(
        config.servers[0].check.kind,
        CheckKind::Jitsi {
            xmpp_domain: "meet.jitsi".to_owned(),
            depth: Depth::Bosh,
            guest_domain: None,
        }
    );
}

#[test]
fn site_public_url_and_preview_agents() {
    let config = ok(&format!(
        "site:\n  public_url: https://rooms.example/gate/\n  preview_agents: [FooBot, bar]\n{ONE}"
    ));
    assert_eq!(
        config.site.public_url.as_deref(),
        Some("https://rooms.example/gate")
    );
    assert_eq!(config.site.preview_agents.patterns(), ["FooBot", "bar"]);
    let matcher = Matcher::new(&config.site.preview_agents);
    assert!(matcher.matches(b"Mozilla/5.0 (compatible; foobot/1)"));
    assert!(!matcher.matches(b"TelegramBot"));
    // Defaults: no public URL, the built-in fetcher list.
    let config = ok(ONE);
    assert_eq!(config.site.public_url, None);
    assert!(Matcher::new(&config.site.preview_agents).matches(b"TelegramBot (like TwitterBot)"));
    // An empty list turns previews off.
    let config = ok(&format!("site:\n  preview_agents: []\n{ONE}"));
    assert!(!Matcher::new(&config.site.preview_agents).matches(b"TelegramBot"));
}

#[test]
fn trusted_proxies_default_to_loopback() {
    let config = ok(ONE);
    assert_eq!(
        config.trusted_proxies,
        crate::forwarded::TrustedProxies::default()
    );
    let peer = |a: &str| crate::forwarded::Peer::Tcp(a.parse().unwrap());
    assert!(config.trusted_proxies.trusts(&peer("127.0.0.1:1")));
    assert!(config.trusted_proxies.trusts(&peer("[::1]:1")));
    assert!(!config.trusted_proxies.trusts(&peer("10.0.0.1:1")));
}

#[test]
fn trusted_proxies_take_addresses_and_networks() {
    let config = ok(&format!(
        "{ONE}trusted_proxies: [127.0.0.1, '::1', 10.0.0.0/8, 'fd00::/8', 192.0.2.7/32]\n"
    ));
    let nets: Vec<String> = config
        .trusted_proxies
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        nets,
        [
            "127.0.0.1/32",
            "::1/128",
            "10.0.0.0/8",
            "fd00::/8",
            "192.0.2.7/32"
        ]
    );
    let peer = |a: &str| crate::forwarded::Peer::Tcp(a.parse().unwrap());
    assert!(config.trusted_proxies.trusts(&peer("10.200.3.4:1")));
    assert!(config.trusted_proxies.trusts(&peer("[fd12::1]:1")));
    assert!(!config.trusted_proxies.trusts(&peer("127.0.0.2:1")));
}

#[test]
fn trusted_proxies_may_be_empty() {
    let config = ok(&format!("{ONE}trusted_proxies: []\n"));
    assert!(config.trusted_proxies.0.is_empty());
    let peer = crate::forwarded::Peer::Tcp("127.0.0.1:1".parse().unwrap());
    assert!(!config.trusted_proxies.trusts(&peer));
    // A unix socket peer is local whatever the list says.
    assert!(config.trusted_proxies.trusts(&crate::forwarded::Peer::Unix));
}

#[test]
fn the_limits_themselves_are_accepted() {
    let servers: String = (0..MAX_SERVERS)
        .map(|i| format!("  s{i}:\n    url: https://s{i}.example\n"))
        .collect();
    let rooms: String = (0..MAX_ROOMS).map(|i| format!("  R{i}: {{}}\n")).collect();
    let config = ok(&format!("servers:\n{servers}rooms:\n{rooms}"));
    assert_eq!(
        (config.servers.len(), config.rooms.len()),
        (MAX_SERVERS, MAX_ROOMS)
    );
    let config = ok(&check(
        "      interval: 1day\n      fast_interval: 24h\n      timeout: 23h\n",
    ));
    assert_eq!(config.servers[0].check.interval, MAX_DURATION);
    assert_eq!(config.servers[0].check.fast_interval, MAX_DURATION);
}

#[test]
fn check_depths_and_their_domains() {
    let kind = |extra: &str| ok(&check(extra)).servers[0].check.kind.clone();
    assert_eq!(
        kind("      xmpp_domain: meet.jitsi\n      depth: focus\n"),
        CheckKind::Jitsi {
            xmpp_domain: "meet.jitsi".to_owned(),
            depth: Depth::Focus {
                focus_domain: "focus.meet.jitsi".to_owned()
            },
            guest_domain: None,
        }
    );
    assert_eq!(
        kind("      depth: focus\n      guest_domain: guest.meet.jitsi\n      focus_domain: jicofo.meet.jitsi\n"),
        CheckKind::Jitsi {
            xmpp_domain: "a.example".to_owned(),
            depth: Depth::Focus {
                focus_domain: "jicofo.meet.jitsi".to_owned()
            },
            guest_domain: Some("guest.meet.jitsi".to_owned()),
        }
    );
    match kind("      depth: login\n") {
        CheckKind::Jitsi { depth, .. } => assert_eq!(depth, Depth::Login),
        other => panic!("{other:?}"),
    }
}

#[test]
fn occupancy_is_off_unless_asked_for() {
    assert_eq!(ok(ONE).servers[0].occupancy, None);
    let off = ok("servers:\n  a:\n    url: https://a.example\n    occupancy: false\n");
    assert_eq!(off.servers[0].occupancy, None);
}

#[test]
fn occupancy_true_takes_every_default() {
    let on = |rest: &str| {
        ok(&format!(
            "servers:\n  a:\n    url: https://a.example:8443/x\n{rest}"
        ))
        .servers[0]
            .occupancy
            .clone()
    };
    let defaults = Some(Occupancy {
        interval: secs(30),
        muc_domain: "conference.a.example".to_owned(),
        exclude: 1,
    });
    assert_eq!(on("    occupancy: true\n"), defaults);
    assert_eq!(on("    occupancy: {}\n"), defaults);
    // The MUC follows the check's XMPP domain, not the URL's host.
    assert_eq!(
        on("    check: { xmpp_domain: meet.example }\n    occupancy: true\n").map(|o| o.muc_domain),
        Some("conference.meet.example".to_owned())
    );
}

#[test]
fn occupancy_settings_are_taken() {
    let config = ok(
        "servers:\n  a:\n    url: https://a.example\n    occupancy:\n      \
         interval: 10s\n      muc_domain: muc.a.example\n      exclude: 0\n",
    );
    assert_eq!(
        config.servers[0].occupancy,
        Some(Occupancy {
            interval: MIN_OCCUPANCY_INTERVAL,
            muc_domain: "muc.a.example".to_owned(),
            exclude: 0,
        })
    );
    // `kind: jitsi` said out loud, after the occupancy, is fine too.
    let config = ok(
        "servers:\n  a:\n    url: https://a.example\n    occupancy: true\n    check: { kind: jitsi }\n",
    );
    assert!(config.servers[0].occupancy.is_some());
    // Off on an http check is no contradiction.
    let config = ok(
        "servers:\n  a:\n    url: https://a.example\n    occupancy: false\n    check: { kind: http }\n",
    );
    assert_eq!(config.servers[0].occupancy, None);
}
