//! The HTTP interface of the README, behaviour by behaviour, against a real
//! roomgate (in-process, real sockets) and local stand-in Jitsi servers.
//!
//! No fixed sleeps: state changes are awaited by polling `/status.json` (or
//! `Gateway::is_ready`) within a bound, so every test ends in well under 3 s.

use std::time::{Duration, Instant};

use crate::support::*;
use http::Method;
use serde_json::Value;

/// Probe timings that make a state change take a few hundred milliseconds.
const FAST: &str = FAST_CHECK;

/// Upper bound for anything a test waits for.
const BOUND: Duration = Duration::from_secs(3);

/// A browser's Accept header.
const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// `servers:` with `primary` and `backup` (both jitsi-checked), then `rest`.
fn config(primary: &str, backup: &str, rest: &str) -> String {
    config_checks(primary, FAST, backup, FAST, rest)
}

fn config_checks(
    primary: &str,
    primary_check: &str,
    backup: &str,
    backup_check: &str,
    rest: &str,
) -> String {
    servers_yaml(primary, primary_check, backup, backup_check) + rest
}

/// `defaults:` (plus `defaults_extra` lines), `unlisted_section` and three
/// rooms: Lounge (alias treff), Hackcenter, and Cave, renamed on the backup.
fn rooms(defaults_extra: &str, unlisted_section: &str) -> String {
    format!(
        "defaults:
  servers: [primary, backup]
{defaults_extra}{unlisted_section}rooms:
  Lounge:
    description: Der allgemeine Treffpunkt
    aliases: [treff]
  Hackcenter: {{}}
  Cave:
    servers: [primary, {{ server: backup, room: ChaosLounge }}]
"
    )
}

/// Two healthy stand-ins and a roomgate over them whose first probes are in.
async fn healthy_setup(rest: &str) -> (StandIn, StandIn, Gate) {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let gate = Gate::start(&config(&primary.url(), &backup.url(), rest)).await;
    wait_ready(&gate).await;
    (primary, backup, gate)
}

/// Waits (bounded) until every server has its first probe result.
async fn wait_ready(gate: &Gate) {
    let deadline = Instant::now() + BOUND;
    while !gate.gw.is_ready() {
        assert!(
            Instant::now() < deadline,
            "roomgate not ready within {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn status_of(gate: &Gate) -> Value {
    status_json(&gate.url("/status.json")).await
}

/// Polls `/status.json` until `server` is in `state`; returns that status.
async fn wait_for_state(gate: &Gate, name: &str, state: &str) -> Value {
    wait_state(&gate.url("/status.json"), name, state, BOUND).await
}

fn location(r: &Resp) -> &str {
    r.header("location")
        .unwrap_or_else(|| panic!("no Location in {r:?}"))
}

/// `html` with the numeric character references of the five escaped
/// characters written as named ones, so checks need not care which form the
/// template engine picked.
fn named_entities(html: &str) -> String {
    html.replace("&#34;", "&quot;")
        .replace("&#38;", "&amp;")
        .replace("&#60;", "&lt;")
        .replace("&#62;", "&gt;")
}

/// The security headers every HTML page carries.
fn assert_html_headers(r: &Resp) {
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/html"),
        "{r:?}"
    );
    let csp = r.header("content-security-policy").expect("CSP");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
}

/// One request written by hand, for targets hyper's client would not send
/// (a fragment). Returns the status and the Location, if any.
async fn raw_get(gate: &Gate, target: &str) -> (u16, Option<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = gate.base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(BOUND, tcp.read_to_end(&mut buf))
        .await
        .expect("answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let loc = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case("location"))
        .map(|(_, v)| v.trim().to_owned());
    (status, loc)
}

#[tokio::test]
async fn rooms_redirect_case_insensitively_to_the_configured_spelling() {
    let (primary, _backup, gate) = healthy_setup(&rooms("", "")).await;
    let want = format!("{}/Lounge", primary.url());
    for path in [
        "/Lounge", "/lounge", "/LOUNGE", "/lOuNgE", "/Lounge/", "/lounge/", "/treff", "/TREFF",
        "/treff/",
    ] {
        let r = get(&gate.url(path), &[]).await;
        assert_eq!(r.status, 302, "{path}");
        assert_eq!(location(&r), want, "{path}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
        assert_html_headers(&r);
        // The body links the target for clients that do not follow redirects.
        assert!(r.body.contains(&format!("href=\"{want}\"")), "{}", r.body);
    }
    let r = get(&gate.url("/hackcenter"), &[]).await;
    assert_eq!(location(&r), format!("{}/Hackcenter", primary.url()));
}

#[tokio::test]
async fn redirect_status_is_configurable() {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    for status in [302u16, 303, 307] {
        let extra = format!("  redirect_status: {status}\n");
        let gate = Gate::start(&config(&primary.url(), &backup.url(), &rooms(&extra, ""))).await;
        wait_ready(&gate).await;
        for path in ["/Lounge", "/treff/"] {
            let r = get(&gate.url(path), &[]).await;
            assert_eq!(r.status, status, "{path}");
            assert_eq!(location(&r), format!("{}/Lounge", primary.url()));
            assert_eq!(r.header("cache-control"), Some("no-store"));
        }
    }
}

#[tokio::test]
async fn query_strings_pass_unchanged_and_fragments_never() {
    let (primary, _backup, gate) = healthy_setup(&rooms("", "")).await;
    let base = format!("{}/Lounge", primary.url());
    for (path, want) in [
        ("/Lounge?jwt=a.b.c&lang=de", "?jwt=a.b.c&lang=de"),
        ("/lounge/?jwt=a.b.c&lang=de", "?jwt=a.b.c&lang=de"),
        ("/treff?jwt=a.b.c&lang=de", "?jwt=a.b.c&lang=de"),
        ("/Lounge?a=%2F%2Fevil.example", "?a=%2F%2Fevil.example"),
        ("/Lounge?", "?"),
        ("/Lounge??", "??"),
        ("/Lounge?a=1&a=2&b", "?a=1&a=2&b"),
        (
            "/Lounge?config.startWithAudioMuted=true",
            "?config.startWithAudioMuted=true",
        ),
    ] {
        let r = get(&gate.url(path), &[]).await;
        assert_eq!(r.status, 302, "{path}");
        assert_eq!(location(&r), format!("{base}{want}"), "{path}");
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    // The body's link carries the query too, escaped for HTML.
    let r = get(&gate.url("/Lounge?jwt=a.b.c&lang=de"), &[]).await;
    assert!(
        named_entities(&r.body).contains(&format!("href=\"{base}?jwt=a.b.c&amp;lang=de\"")),
        "{}",
        r.body
    );
    // A fragment (which browsers never send) is not passed on.
    for (target, want) in [
        ("/Lounge#config.prejoinPageEnabled=false", base.clone()),
        ("/Lounge?x=1#frag", format!("{base}?x=1")),
    ] {
        let (status, loc) = raw_get(&gate, target).await;
        assert_eq!(status, 302, "{target}");
        assert_eq!(loc.as_deref(), Some(want.as_str()), "{target}");
    }
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let (primary, _backup, gate) = healthy_setup(&rooms("", "")).await;
    let r = Req::new(Method::HEAD, &gate.url("/lounge?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(location(&r), format!("{}/Lounge?x=1", primary.url()));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.body.is_empty(), "{:?}", r.body);
    let r = Req::new(Method::HEAD, &gate.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn other_methods_get_405_with_allow() {
    let (_primary, _backup, gate) = healthy_setup(&rooms("", "")).await;
    for method in [
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
        Method::PATCH,
    ] {
        for path in ["/Lounge", "/", "/healthz", "/status.json", "/Nope"] {
            let r = Req::new(method.clone(), &gate.url(path))
                .body("x")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status, 405, "{method} {path}");
            assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method} {path}");
            assert!(r.header("location").is_none());
        }
    }
}

#[tokio::test]
async fn unknown_rooms_get_404_with_the_room_list() {
    let (_primary, _backup, gate) = healthy_setup(&rooms("", "")).await;
    // (path, the way back to the root from it): links are relative to the
    // request path, so they stay under a proxy's path prefix.
    for (path, root) in [
        ("/Nope", "./"),
        ("/Loungee", "./"),
        ("/Lounge/x", "../"),
        ("/Lounge//", "../../"),
        ("//", "../"),
        ("/ChaosLounge", "./"),
    ] {
        // Browsers get HTML with a link to every room.
        let r = get(&gate.url(path), &[("accept", BROWSER_ACCEPT)]).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(r.header("location").is_none());
        assert_html_headers(&r);
        for name in ["Lounge", "Hackcenter", "Cave"] {
            assert!(
                r.body.contains(&format!("href=\"{root}{name}\"")),
                "{path}: {}",
                r.body
            );
        }
        // Everyone else gets plain text.
        for accept in [None, Some("*/*"), Some("application/json")] {
            let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("accept", *a)).collect();
            let r = get(&gate.url(path), &headers).await;
            assert_eq!(r.status, 404, "{path}");
            assert!(
                r.header("content-type").unwrap().starts_with("text/plain"),
                "{r:?}"
            );
            assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
            for name in ["/Lounge", "/Hackcenter", "/Cave"] {
                assert!(r.body.lines().any(|l| l == name), "{name} in {}", r.body);
            }
        }
    }
}

#[tokio::test]
async fn over_long_uris_get_414() {
    let (primary, _backup, gate) = healthy_setup(&rooms("", "")).await;
    let long_path = format!("/{}", "a".repeat(5000));
    let long_query = format!("/Lounge?q={}", "b".repeat(5000));
    for target in [long_path, long_query] {
        let r = get(&gate.url(&target), &[]).await;
        assert_eq!(r.status, 414, "{} bytes", target.len());
        assert!(r.header("location").is_none());
    }
    // The limit is roomgate::http::MAX_URI_LEN bytes of path and query.
    let max = roomgate::http::MAX_URI_LEN;
    let fits = format!("/Lounge?q={}", "c".repeat(max - "/Lounge?q=".len()));
    assert_eq!(fits.len(), max);
    let r = get(&gate.url(&fits), &[]).await;
    assert_eq!(r.status, 302);
    assert_eq!(location(&r), format!("{}{fits}", primary.url()));
    let r = get(&gate.url(&format!("{fits}c")), &[]).await;
    assert_eq!(r.status, 414);
}

#[tokio::test]
async fn healthz_always_readyz_after_first_results() {
    // The primary swallows its probe: its first result is the 1 s timeout.
    let primary = StandIn::http(Mode::BlackHole).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let slow = "{ interval: 10s, timeout: 1s, xmpp_domain: localhost }";
    let gate = Gate::start(&config_checks(
        &primary.url(),
        slow,
        &backup.url(),
        FAST,
        &rooms("", ""),
    ))
    .await;
    let started = Instant::now();
    let r = get(&gate.url("/healthz"), &[]).await;
    assert_eq!(r.status, 200);
    let r = get(&gate.url("/readyz"), &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    // Even once the backup has its result, the primary still has none.
    backup
        .wait_for(BOUND, |c| c.bosh_sessions >= 1)
        .await
        .unwrap();
    let r = get(&gate.url("/readyz"), &[]).await;
    if started.elapsed() < Duration::from_millis(900) {
        assert_eq!(r.status, 503, "ready before the primary's first timeout");
    }
    let ready_at = loop {
        let r = get(&gate.url("/readyz"), &[]).await;
        if r.status == 200 {
            break started.elapsed();
        }
        assert_eq!(r.status, 503);
        assert!(started.elapsed() < BOUND, "/readyz never turned 200");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        ready_at >= Duration::from_millis(900),
        "ready at {ready_at:?}"
    );
    assert_eq!(get(&gate.url("/healthz"), &[]).await.status, 200);
    let status = status_of(&gate).await;
    assert_eq!(server(&status, "primary")["state"], "down");
    assert_eq!(status["ready"], true);
}

/// The value of the `roomgate_redirects_total` sample for room and server.
fn redirects_total(metrics: &str, room: &str, server: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("roomgate_redirects_total{"))
        .find(|l| {
            l.contains(&format!("room=\"{room}\"")) && l.contains(&format!("server=\"{server}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().expect("sample value"))
}

#[tokio::test]
async fn metrics_count_redirects() {
    let (_primary, _backup, gate) = healthy_setup(&rooms("", "")).await;
    let r = get(&gate.url("/metrics"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().contains("text"), "{r:?}");
    assert!(r.body.contains("roomgate_redirects_total"), "{}", r.body);
    // Prometheus text: `# TYPE` lines and samples.
    assert!(r.body.lines().any(|l| l.starts_with("# TYPE roomgate_")));
    let before = redirects_total(&r.body, "Lounge", "primary");
    assert_eq!(get(&gate.url("/treff"), &[]).await.status, 302);
    assert_eq!(get(&gate.url("/Lounge?x=1"), &[]).await.status, 302);
    let after = redirects_total(
        &get(&gate.url("/metrics"), &[]).await.body,
        "Lounge",
        "primary",
    );
    assert_eq!(after, before + 2.0);
}

#[tokio::test]
async fn status_json_targets_follow_health() {
    let (primary, backup, gate) = healthy_setup(&rooms("", "")).await;
    let r = get(&gate.url("/status.json"), &[]).await;
    assert!(r
        .header("content-type")
        .unwrap()
        .contains("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let status: Value = serde_json::from_str(&r.body).unwrap();
    let servers = status["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2);
    for (s, url) in servers.iter().zip([primary.url(), backup.url()]) {
        for key in [
            "name",
            "url",
            "state",
            "since",
            "last_check",
            "latency_ms",
            "error",
        ] {
            assert!(s.get(key).is_some(), "{key} missing in {s}");
        }
        assert_eq!(s["url"], url);
        assert_eq!(s["state"], "up");
        assert!(s["since"].is_string() && s["last_check"].is_string(), "{s}");
        assert!(s["latency_ms"].is_u64(), "{s}");
        assert!(s["error"].is_null(), "{s}");
    }
    let rooms_json = status["rooms"].as_array().unwrap();
    let names: Vec<&str> = rooms_json
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Lounge", "Hackcenter", "Cave"]);
    for r in rooms_json {
        for key in ["name", "aliases", "description", "target", "server"] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
    }
    let lounge = room(&status, "Lounge");
    assert_eq!(lounge["aliases"], serde_json::json!(["treff"]));
    assert_eq!(lounge["description"], "Der allgemeine Treffpunkt");
    // `target` is what `/{room}` answers right now.
    for name in ["Lounge", "Cave"] {
        let r = get(&gate.url(&format!("/{name}")), &[]).await;
        assert_eq!(room(&status, name)["target"], location(&r), "{name}");
        assert_eq!(room(&status, name)["server"], "primary");
    }
    assert_eq!(lounge["target"], format!("{}/Lounge", primary.url()));

    primary.set_mode(Mode::BoshDown).await;
    let status = wait_for_state(&gate, "primary", "down").await;
    let p = server(&status, "primary");
    assert!(p["error"].is_string(), "{p}");
    assert!(p["latency_ms"].is_null(), "{p}");
    for (name, want) in [
        ("Lounge", format!("{}/Lounge", backup.url())),
        ("Cave", format!("{}/ChaosLounge", backup.url())),
    ] {
        let r = get(&gate.url(&format!("/{name}")), &[]).await;
        assert_eq!(location(&r), want, "{name}");
        assert_eq!(room(&status, name)["target"], want, "{name}");
        assert_eq!(room(&status, name)["server"], "backup");
    }
}

#[tokio::test]
async fn index_page_lists_rooms_and_servers_with_config_text_escaped() {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let yaml = format!(
        r#"site:
  title: '<script>alert("title")</script> & co'
  intro: 'intro <img src=x onerror="alert(1)">'
  notice: 'notice <b>"bold"</b>'
servers:
  primary:
    url: {}
    label: 'Prim <script>alert("label")</script>'
    check: {FAST}
  backup:
    url: {}
    label: Backup "B"
    check: {FAST}
defaults:
  servers: [primary, backup]
rooms:
  Lounge:
    description: 'Treff <script>alert("room")</script> "quoted"'
    aliases: [treff]
  Cave: {{}}
"#,
        primary.url(),
        backup.url()
    );
    let gate = Gate::start(&yaml).await;
    wait_ready(&gate).await;
    let r = get(&gate.url("/"), &[]).await;
    assert_eq!(r.status, 200);
    assert_html_headers(&r);
    // The page's own script is its only script element.
    assert_eq!(r.body.matches("<script").count(), 1, "{}", r.body);
    let body = &named_entities(&r.body.replacen("<script>", "", 1));
    // Config text shows up, escaped.
    for escaped in [
        "&lt;script&gt;alert(&quot;title&quot;)&lt;/script&gt; &amp; co",
        "intro &lt;img src=x onerror=&quot;alert(1)&quot;&gt;",
        "notice &lt;b&gt;&quot;bold&quot;&lt;/b&gt;",
        "Prim &lt;script&gt;alert(&quot;label&quot;)&lt;/script&gt;",
        "Backup &quot;B&quot;",
        "Treff &lt;script&gt;alert(&quot;room&quot;)&lt;/script&gt; &quot;quoted&quot;",
    ] {
        assert!(body.contains(escaped), "{escaped} not in {body}");
    }
    // And never raw.
    for raw in [
        "<script",
        "<img",
        "<b>",
        "\"bold\"",
        "\"quoted\"",
        "\"B\"",
        "onerror=\"",
    ] {
        assert!(!body.contains(raw), "raw {raw} in {body}");
    }
    // Every room and server is listed.
    for text in [
        "href=\"./Lounge\"",
        "href=\"./Cave\"",
        &primary.url(),
        &backup.url(),
    ] {
        assert!(body.contains(text), "{text} not in {body}");
    }
}

#[tokio::test]
async fn renamed_room_on_the_backup() {
    let primary = StandIn::http(Mode::BoshDown).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let gate = Gate::start(&config(&primary.url(), &backup.url(), &rooms("", ""))).await;
    wait_ready(&gate).await;
    // The first failed probe turns the primary down at once.
    wait_for_state(&gate, "primary", "down").await;
    let r = get(&gate.url("/cave"), &[]).await;
    assert_eq!(r.status, 302);
    assert_eq!(location(&r), format!("{}/ChaosLounge", backup.url()));
    let r = get(&gate.url("/Cave/?lang=de"), &[]).await;
    assert_eq!(
        location(&r),
        format!("{}/ChaosLounge?lang=de", backup.url())
    );
    // Rooms without a rename keep their name on the backup.
    let r = get(&gate.url("/Lounge"), &[]).await;
    assert_eq!(location(&r), format!("{}/Lounge", backup.url()));
    // The name on the backup is not itself a room here.
    assert_eq!(get(&gate.url("/ChaosLounge"), &[]).await.status, 404);
}

#[tokio::test]
async fn unlisted_rooms_when_allowed() {
    let unlisted = "unlisted:\n  allow: true\n  servers: [primary, backup]\n";
    let (primary, _backup, gate) = healthy_setup(&rooms("", unlisted)).await;
    let p = primary.url();
    let max = "m".repeat(64);
    for (path, want) in [
        ("/AnyName_1-x".to_owned(), format!("{p}/AnyName_1-x")),
        ("/anyname_1-x/".to_owned(), format!("{p}/anyname_1-x")),
        (
            "/AnyName?jwt=a.b.c".to_owned(),
            format!("{p}/AnyName?jwt=a.b.c"),
        ),
        (format!("/{max}"), format!("{p}/{max}")),
        // Listed rooms still use their configured spelling.
        ("/lounge".to_owned(), format!("{p}/Lounge")),
    ] {
        let r = get(&gate.url(&path), &[]).await;
        assert_eq!(r.status, 302, "{path}");
        assert_eq!(location(&r), want, "{path}");
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    let too_long = format!("/{}", "n".repeat(65));
    for path in [
        "/Any.Name",
        "/..",
        "/.hidden",
        "/a%2Fb",
        "/a%20b",
        "/%C3%A4",
        "/a~b",
        "/a/b",
        too_long.as_str(),
    ] {
        let r = get(&gate.url(path), &[]).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(r.header("location").is_none(), "{path}");
    }
}

#[tokio::test]
async fn unlisted_rooms_when_not_allowed() {
    let unlisted = "unlisted:\n  allow: false\n";
    let (_primary, _backup, gate) = healthy_setup(&rooms("", unlisted)).await;
    for path in ["/AnyName_1-x", "/anyname", "/x"] {
        let r = get(&gate.url(path), &[]).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(r.header("location").is_none());
    }
    // Not setting `unlisted` at all means the same.
    let (_primary, _backup, gate) = healthy_setup(&rooms("", "")).await;
    assert_eq!(get(&gate.url("/AnyName_1-x"), &[]).await.status, 404);
}

#[tokio::test]
async fn all_down_first_redirects_to_the_first_server() {
    let primary = StandIn::http(Mode::BoshDown).await;
    let backup = StandIn::http(Mode::BoshDown).await;
    let rest = rooms("  when_all_down: first\n", "");
    let gate = Gate::start(&config(&primary.url(), &backup.url(), &rest)).await;
    wait_ready(&gate).await;
    let status = wait_for_state(&gate, "primary", "down").await;
    assert_eq!(server(&status, "backup")["state"], "down");
    for (path, want) in [
        ("/Lounge", format!("{}/Lounge", primary.url())),
        ("/Cave", format!("{}/Cave", primary.url())),
    ] {
        let r = get(&gate.url(path), &[]).await;
        assert_eq!(r.status, 302, "{path}");
        assert_eq!(location(&r), want, "{path}");
        assert_eq!(room(&status, &path[1..])["target"], want);
    }
}

#[tokio::test]
async fn all_down_page_lists_every_link() {
    let primary = StandIn::http(Mode::BoshDown).await;
    let backup = StandIn::http(Mode::BoshDown).await;
    let rest = rooms("  when_all_down: page\n", "");
    let gate = Gate::start(&config(&primary.url(), &backup.url(), &rest)).await;
    wait_ready(&gate).await;
    let status = wait_for_state(&gate, "primary", "down").await;
    assert_eq!(server(&status, "backup")["state"], "down");
    for (path, links) in [
        (
            "/lounge",
            [
                format!("{}/Lounge", primary.url()),
                format!("{}/Lounge", backup.url()),
            ],
        ),
        (
            "/Cave",
            [
                format!("{}/Cave", primary.url()),
                format!("{}/ChaosLounge", backup.url()),
            ],
        ),
    ] {
        let r = get(&gate.url(path), &[]).await;
        assert_eq!(r.status, 503, "{path}");
        assert!(r.header("location").is_none(), "{path}");
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_html_headers(&r);
        for link in &links {
            assert!(
                r.body.contains(&format!("href=\"{link}\"")),
                "{link} in {}",
                r.body
            );
        }
    }
    // status.json has no target while the room answers 503.
    assert!(room(&status, "Lounge")["target"].is_null());
    // HEAD says the same.
    let r = Req::new(Method::HEAD, &gate.url("/Lounge"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn cold_start_answers_within_a_short_bound() {
    // The primary swallows its first probe, which only times out after 5 s.
    let primary = StandIn::http(Mode::BlackHole).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let slow = "{ interval: 10s, timeout: 5s, xmpp_domain: localhost }";
    let gate = Gate::start(&config_checks(
        &primary.url(),
        slow,
        &backup.url(),
        FAST,
        &rooms("", ""),
    ))
    .await;
    let wait = roomgate::gateway::COLD_START_WAIT;
    let started = Instant::now();
    let r = get(&gate.url("/Lounge"), &[]).await;
    let took = started.elapsed();
    assert_eq!(r.status, 302);
    assert!(
        took < wait + Duration::from_millis(700),
        "first request took {took:?}"
    );
    // The backup's probe is long in by then, and up beats unknown.
    assert!(backup.counts().bosh_sessions >= 1, "{:?}", backup.counts());
    assert_eq!(location(&r), format!("{}/Lounge", backup.url()));
    // The primary is still being probed: no result yet.
    assert!(!gate.gw.is_ready());
    assert_eq!(primary.counts().connections, 1, "{:?}", primary.counts());
}

/// A page that resolves every room must not wait the cold-start bound once
/// per room: the contract bounds the whole request.
#[tokio::test]
async fn cold_start_status_pages_wait_one_bound_not_one_per_room() {
    let primary = StandIn::http(Mode::BlackHole).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let slow = "{ interval: 10s, timeout: 5s, xmpp_domain: localhost }";
    let gate = Gate::start(&config_checks(
        &primary.url(),
        slow,
        &backup.url(),
        FAST,
        &rooms("", ""),
    ))
    .await;
    let bound = roomgate::gateway::COLD_START_WAIT + Duration::from_millis(700);
    for path in ["/status.json", "/"] {
        let started = Instant::now();
        let r = Req::get(&gate.url(path))
            .timeout(bound)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{path} with 3 rooms at cold start: {e} after {:?}",
                    started.elapsed()
                )
            });
        assert_eq!(r.status, 200, "{path}");
    }
}

#[tokio::test]
async fn reserved_paths_are_not_rooms() {
    // Even with unlisted rooms allowed, `/_/...` never redirects.
    let unlisted = "unlisted:\n  allow: true\n  servers: [primary, backup]\n";
    let (_primary, _backup, gate) = healthy_setup(&rooms("", unlisted)).await;
    for path in ["/_/", "/_/x", "/_/Lounge", "/_/qr/Lounge", "/_/style.css"] {
        let r = get(&gate.url(path), &[]).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(r.header("location").is_none(), "{path}");
    }
    // The reserved pages themselves answer, and are not redirects.
    for path in ["/", "/healthz", "/readyz", "/metrics", "/status.json"] {
        let r = get(&gate.url(path), &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("location").is_none(), "{path}");
    }
}

/// Writes `request` byte for byte to the gateway and reads the whole
/// answer (the request should ask for `Connection: close`, or be HTTP/1.0).
/// Returns the status and the answer as text.
async fn raw_exchange(gate: &Gate, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = gate.base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(BOUND, tcp.read_to_end(&mut buf))
        .await
        .expect("answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// RFC 9112 §3.2.2: in an absolute-form target (`GET http://host/path`, as
/// sent to proxies), the target's authority is the host and the Host header
/// is ignored. So links built from the host (previews, QR codes, the status
/// page) use the target's authority, not a different Host.
#[tokio::test]
async fn absolute_form_targets_use_their_own_authority() {
    let (primary, _backup, gate) = healthy_setup(&rooms("", "")).await;
    // The redirect itself: routed by the target's path.
    let (status, answer) = raw_exchange(
        &gate,
        "GET http://rooms.example/Lounge HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 302, "{answer}");
    assert!(
        answer.contains(&format!("\r\nlocation: {}/Lounge\r\n", primary.url())),
        "{answer}"
    );
    // A link preview's URL.
    let (status, answer) = raw_exchange(
        &gate,
        "GET http://rooms.example:8080/Lounge HTTP/1.1\r\nHost: evil.example\r\n\
         User-Agent: Twitterbot/1.0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer.contains("content=\"http://rooms.example:8080/Lounge\""),
        "{answer}"
    );
    assert!(!answer.contains("evil.example"), "{answer}");
    // The status page's short links.
    let (status, answer) = raw_exchange(
        &gate,
        "GET http://rooms.example/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer.contains("http://rooms.example/<wbr>Lounge"),
        "{answer}"
    );
    assert!(!answer.contains("evil.example"), "{answer}");
    // An authority that is not a host (userinfo) gives no link, rather than
    // falling back to the Host header.
    let (status, answer) = raw_exchange(
        &gate,
        "GET http://evil@rooms.example/_/qr/Lounge.svg HTTP/1.1\r\nHost: evil.example\r\n\
         Connection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{answer}");
}

/// RFC 9112 §3.2: an HTTP/1.1 request without a Host header, or with more
/// than one Host line, gets 400. HTTP/1.0 predates Host and is served.
#[tokio::test]
async fn http11_requests_need_exactly_one_host() {
    let (primary, _backup, gate) = healthy_setup(&rooms("", "")).await;
    let want = format!("\r\nlocation: {}/Lounge\r\n", primary.url());
    for request in [
        "GET /Lounge HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET http://rooms.example/Lounge HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /Lounge HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    ] {
        let (status, answer) = raw_exchange(&gate, request).await;
        assert_eq!(status, 400, "{request:?}: {answer}");
        assert!(
            !answer.to_ascii_lowercase().contains("\r\nlocation:"),
            "{answer}"
        );
    }
    for request in [
        "GET /Lounge HTTP/1.0\r\n\r\n",
        "GET /Lounge HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        // An empty Host is what RFC 9112 asks of a client without a host.
        "GET /Lounge HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
    ] {
        let (status, answer) = raw_exchange(&gate, request).await;
        assert_eq!(status, 302, "{request:?}: {answer}");
        assert!(answer.contains(&want), "{answer}");
    }
}

/// With `site.public_url` set, that URL's path is the prefix of the 404
/// page's links, whatever `X-Forwarded-Prefix` a proxy sends; the header
/// would otherwise send clients somewhere the configured URL does not lead.
#[tokio::test]
async fn with_public_url_404_links_ignore_the_forwarded_prefix() {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let yaml = format!(
        "site:\n  public_url: https://rooms.example/gate/\n{}",
        config(&primary.url(), &backup.url(), &rooms("", ""))
    );
    let gate = Gate::start(&yaml).await;
    // From loopback, a trusted proxy by default.
    let forwarded = ("x-forwarded-prefix", "/elsewhere");
    let r = get(&gate.url("/Nope"), &[forwarded]).await;
    assert_eq!(r.status, 404);
    for name in ["Lounge", "Hackcenter", "Cave"] {
        assert!(
            r.body.lines().any(|l| l == format!("/gate/{name}")),
            "{name} in {}",
            r.body
        );
    }
    assert!(!r.body.contains("/elsewhere"), "{}", r.body);
    // A path too deep for relative links gets links from the prefix.
    let deep = "/a".repeat(20);
    let r = get(&gate.url(&deep), &[forwarded, ("accept", BROWSER_ACCEPT)]).await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("href=\"/gate/Lounge\""), "{}", r.body);
    assert!(!r.body.contains("/elsewhere"), "{}", r.body);
}
