//! What the status page brings besides the page itself: QR codes that decode
//! back to the room link, OpenGraph cards for link-preview fetchers,
//! `/metrics` as parseable Prometheus text, the uptime history in
//! `/status.json`, and relative self-links everywhere.
//!
//! Stand-in servers and the gateway run on 127.0.0.1; no fixed sleeps.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::*;

/// Bound on anything the probers should notice.
const BOUND: Duration = Duration::from_secs(20);

async fn two_servers() -> (StandIn, StandIn) {
    (
        StandIn::http(Mode::Healthy).await,
        StandIn::http(Mode::Healthy).await,
    )
}

/// [`two_server_yaml`] with a `site:` section in front.
fn with_site(site: &str, primary: &StandIn, backup: &StandIn) -> String {
    format!(
        "{site}{}",
        two_server_yaml(&primary.url(), &backup.url(), "")
    )
}

async fn ready(gate: &Gate) {
    wait_state(&gate.url("/status.json"), "primary", "up", BOUND).await;
    wait_state(&gate.url("/status.json"), "backup", "up", BOUND).await;
}

// ---------------------------------------------------------------- QR codes

/// Rasterizes the SVG the gateway serves: a white background and one path
/// of dark rectangles, each `M{x} {y}h{w}v{h}H{x}V{y}`. Fails loudly on any
/// other shape, so a change of the SVG is noticed rather than misread.
fn rasterize(svg: &str) -> (usize, usize, Vec<u8>) {
    let attr = |name: &str| -> usize {
        let at = svg.find(&format!(" {name}=\"")).expect(name) + name.len() + 3;
        svg[at..].split('"').next().unwrap().parse().expect(name)
    };
    let (w, h) = (attr("width"), attr("height"));
    let mut pixels = vec![255u8; w * h];
    let d_at = svg.find(" d=\"").expect("a path") + 4;
    let d = svg[d_at..].split('"').next().unwrap();
    for rect in d.split('M').filter(|r| !r.is_empty()) {
        // "x y h w v h H x V y"
        let nums: Vec<usize> = rect
            .split(|c: char| c == ' ' || c.is_ascii_alphabetic())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().expect("integer coordinates"))
            .collect();
        assert_eq!(nums.len(), 6, "unexpected path segment M{rect}");
        let (x, y, rw, rh) = (nums[0], nums[1], nums[2], nums[3]);
        for row in y..(y + rh).min(h) {
            for col in x..(x + rw).min(w) {
                pixels[row * w + col] = 0;
            }
        }
    }
    (w, h, pixels)
}

/// Decodes the one QR code in `svg` with rqrr.
pub(crate) fn decode_qr(svg: &str) -> String {
    let (w, h, pixels) = rasterize(svg);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| pixels[y * w + x]);
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "expected one QR code");
    let (_meta, content) = grids[0].decode().expect("the QR code decodes");
    content
}

#[tokio::test]
async fn qr_codes_decode_to_the_rooms_absolute_short_link() {
    let (primary, backup) = two_servers().await;
    let gate = Gate::start(&two_server_yaml(&primary.url(), &backup.url(), "")).await;

    // Without public_url, the base comes from the request's Host.
    let r = get(
        &gate.url("/_/qr/Lounge.svg"),
        &[("host", "rooms.example:8080")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("image/svg+xml"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(decode_qr(&r.body), "http://rooms.example:8080/Lounge");

    // Aliases and other spellings get the room's own link.
    let r = get(&gate.url("/_/qr/treff.svg"), &[("host", "g.example")]).await;
    assert_eq!(decode_qr(&r.body), "http://g.example/Lounge");
    let r = get(&gate.url("/_/qr/cave.svg"), &[("host", "g.example")]).await;
    assert_eq!(decode_qr(&r.body), "http://g.example/Cave");

    // Unknown rooms, other shapes, and hostile names: 404, no code.
    for path in [
        "/_/qr/Nope.svg",
        "/_/qr/Lounge",
        "/_/qr/Lounge.png",
        "/_/qr/.svg",
        "/_/qr/..%2FLounge.svg",
        "/_/qr/Lounge.svg/x",
    ] {
        let r = get(&gate.url(path), &[]).await;
        assert_eq!(r.status, 404, "{path}: {}", r.body);
    }
    // A Host that is not a host gives no code rather than a wrong one.
    let r = get(&gate.url("/_/qr/Lounge.svg"), &[("host", "a@b.example")]).await;
    assert_eq!(r.status, 400, "{}", r.body);
    gate.stop().await;

    // With public_url the Host does not matter.
    let yaml = with_site(
        "site:\n  public_url: https://rooms.example/gate/\n",
        &primary,
        &backup,
    );
    let gate = Gate::start(&yaml).await;
    let r = get(&gate.url("/_/qr/Cave.svg"), &[("host", "evil.example")]).await;
    assert_eq!(decode_qr(&r.body), "https://rooms.example/gate/Cave");
    // The status page links each room to its code, relatively.
    let r = get(&gate.url("/"), &[]).await;
    assert!(r.body.contains("href=\"./_/qr/Lounge.svg\""), "{}", r.body);
    assert!(r.body.contains("https://rooms.example/gate/<wbr>Lounge"));
}

// ----------------------------------------------------------- link previews

/// User agents that real link-preview fetchers send.
const FETCHERS: &[(&str, &str)] = &[
    ("Telegram", "TelegramBot (like TwitterBot)"),
    (
        "Slack",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    ),
    (
        "Discord",
        "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    ),
    ("WhatsApp", "WhatsApp/2.23.20.0 A"),
    // Signal's apps fetch previews with this User-Agent.
    ("Signal", "WhatsApp/2"),
    (
        "Matrix",
        "Synapse (bot; +https://github.com/matrix-org/synapse)",
    ),
    (
        "Mastodon",
        "http.rb/5.1.1 (Mastodon/4.2.1; +https://mastodon.social/)",
    ),
    (
        "Facebook",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    ),
    ("X", "Twitterbot/1.0"),
    (
        "LinkedIn",
        "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
    ),
];

/// User agents of browsers, which must get the redirect.
const BROWSERS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.5 Mobile/15E148 Safari/604.1",
    "curl/8.5.0",
];

/// Undoes HTML escaping (named and numeric references of the five escaped
/// characters).
fn unescape(text: &str) -> String {
    text.replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#60;", "<")
        .replace("&lt;", "<")
        .replace("&#62;", ">")
        .replace("&gt;", ">")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

/// The `content` of `<meta property="{property}" ...>`, unescaped.
fn og(html: &str, property: &str) -> Option<String> {
    let tag = format!("<meta property=\"{property}\" content=\"");
    let at = html.find(&tag)? + tag.len();
    let raw = html[at..].split('"').next()?;
    Some(unescape(raw))
}

#[tokio::test]
async fn link_preview_fetchers_get_an_opengraph_card_and_browsers_the_redirect() {
    let (primary, backup) = two_servers().await;
    let title = r#"Chaos "<dorf>" & co"#;
    let description = r#"Treff <script>alert("x")</script> & 'quotes'"#;
    let yaml = format!(
        "site:\n  title: '{}'\n{}",
        title.replace('\'', "''"),
        two_server_yaml(&primary.url(), &backup.url(), "").replace(
            "description: Der allgemeine Treffpunkt",
            &format!("description: '{}'", description.replace('\'', "''")),
        )
    );
    let gate = Gate::start(&yaml).await;
    ready(&gate).await;

    for (who, agent) in FETCHERS {
        let r = get(
            &gate.url("/Lounge?x=1"),
            &[("user-agent", agent), ("host", "rooms.example")],
        )
        .await;
        assert_eq!(r.status, 200, "{who}: {r:?}");
        assert_eq!(r.header("location"), None, "{who}");
        assert!(r.header("content-type").unwrap().starts_with("text/html"));
        assert_eq!(r.header("vary"), Some("user-agent"), "{who}");
        let csp = r.header("content-security-policy").expect("CSP");
        assert!(!csp.contains("script-src"), "{csp}");
        let html = &r.body;
        assert_eq!(
            og(html, "og:title").as_deref(),
            Some(format!("{title} – Lounge").as_str()),
            "{who}: {html}"
        );
        assert_eq!(
            og(html, "og:description").as_deref(),
            Some(description),
            "{who}"
        );
        assert_eq!(og(html, "og:site_name").as_deref(), Some(title), "{who}");
        assert_eq!(
            og(html, "og:url").as_deref(),
            Some("http://rooms.example/Lounge"),
            "{who}"
        );
        // Escaped: the config's markup never reaches the page raw.
        assert!(!html.contains("<script"), "{who}: {html}");
        assert!(!html.contains("<dorf>"), "{who}: {html}");
        assert!(html.contains("href=\"http://rooms.example/Lounge\""));
    }
    // Aliases and case: the card names the room as configured.
    let r = get(
        &gate.url("/TREFF"),
        &[("user-agent", "TelegramBot (like TwitterBot)")],
    )
    .await;
    assert_eq!(
        og(&r.body, "og:title").as_deref(),
        Some(format!("{title} – Lounge").as_str())
    );
    // A fetcher asking for a room that does not exist gets the 404.
    let r = get(&gate.url("/Nope"), &[("user-agent", "Twitterbot/1.0")]).await;
    assert_eq!(r.status, 404);

    for agent in BROWSERS {
        let r = get(&gate.url("/Lounge"), &[("user-agent", agent)]).await;
        assert_eq!(r.status, 302, "{agent}");
        assert_eq!(
            r.header("location"),
            Some(format!("{}/Lounge", primary.url()).as_str())
        );
    }
    // No User-Agent at all: the redirect.
    let r = Req::get(&gate.url("/Lounge")).send().await.unwrap();
    assert_eq!(r.status, 302);

    let m = scrape(&gate).await;
    assert_eq!(
        value(&m, "roomgate_link_previews_total{}"),
        (FETCHERS.len() + 1) as f64
    );
    gate.stop().await;

    // The list is configurable; `[FooBot]` replaces the defaults.
    let yaml = with_site("site:\n  preview_agents: [FooBot]\n", &primary, &backup);
    let gate = Gate::start(&yaml).await;
    ready(&gate).await;
    let r = get(
        &gate.url("/Lounge"),
        &[("user-agent", "TelegramBot (like TwitterBot)")],
    )
    .await;
    assert_eq!(r.status, 302);
    let r = get(
        &gate.url("/Lounge"),
        &[("user-agent", "Mozilla/5.0 (compatible; foobot/3)")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        og(&r.body, "og:description").as_deref(),
        Some("Der allgemeine Treffpunkt")
    );
}

// ----------------------------------------------------------------- metrics

/// `/metrics`, parsed: sample name plus sorted labels -> value.
async fn scrape(gate: &Gate) -> HashMap<String, f64> {
    let r = get(&gate.url("/metrics"), &[]).await;
    assert_eq!(r.status, 200);
    let lines = r.body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let mut out = HashMap::new();
    for sample in scrape.samples {
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => 0.0,
        };
        out.insert(format!("{}{{{}}}", sample.metric, labels.join(",")), value);
    }
    out
}

fn value(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no {key} in {:#?}", m.keys().collect::<Vec<_>>()))
}

/// Polls `/metrics` until `key` is at least `min`.
async fn wait_metric(gate: &Gate, key: &str, min: f64) -> HashMap<String, f64> {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let m = scrape(gate).await;
        if m.get(key).is_some_and(|v| *v >= min) {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} not >= {min} within {BOUND:?}: {:?}",
            m.get(key)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_parse_and_move_with_requests_probes_and_reloads() {
    let (primary, backup) = two_servers().await;
    let gate = Gate::start(&two_server_yaml(&primary.url(), &backup.url(), "")).await;
    ready(&gate).await;

    let before = scrape(&gate).await;
    let version = format!(
        "roomgate_build_info{{version={}}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&before, &version), 1.0);
    assert_eq!(
        value(&before, "roomgate_server_state{server=primary,state=up}"),
        1.0
    );
    assert_eq!(
        value(&before, "roomgate_server_state{server=primary,state=down}"),
        0.0
    );
    assert!(value(&before, "roomgate_open_connections{}") >= 1.0);

    // Redirects, by room and server.
    let lounge = "roomgate_redirects_total{room=Lounge,server=primary}";
    for _ in 0..3 {
        assert_eq!(get(&gate.url("/Lounge"), &[]).await.status, 302);
    }
    assert_eq!(get(&gate.url("/Nope"), &[]).await.status, 404);
    let after = scrape(&gate).await;
    assert_eq!(value(&after, lounge) - value(&before, lounge), 3.0);
    assert_eq!(
        value(&after, "roomgate_not_found_total{}") - value(&before, "roomgate_not_found_total{}"),
        1.0
    );

    // Probes run by themselves: successes and their durations grow.
    let ok = "roomgate_probes_total{result=success,server=primary}";
    let durations = "roomgate_probe_duration_seconds{server=primary}";
    let later = wait_metric(&gate, ok, value(&after, ok) + 2.0).await;
    assert!(value(&later, durations) > value(&before, durations));

    // The primary fails: failures, a state change, the state gauge.
    primary.set_mode(Mode::BoshDown).await;
    wait_state(&gate.url("/status.json"), "primary", "down", BOUND).await;
    let down = scrape(&gate).await;
    assert!(
        value(
            &down,
            "roomgate_probes_total{result=failure,server=primary}"
        ) >= 2.0
    );
    assert_eq!(
        value(&down, "roomgate_state_changes_total{server=primary}")
            - value(&before, "roomgate_state_changes_total{server=primary}"),
        1.0
    );
    assert_eq!(
        value(&down, "roomgate_server_state{server=primary,state=down}"),
        1.0
    );
    assert_eq!(
        value(&down, "roomgate_server_state{server=primary,state=up}"),
        0.0
    );
    assert_eq!(get(&gate.url("/Lounge"), &[]).await.status, 302);
    let moved = scrape(&gate).await;
    assert_eq!(
        value(
            &moved,
            "roomgate_redirects_total{room=Lounge,server=backup}"
        ),
        1.0
    );

    // Reloads: one good, one bad.
    gate.gw.reload().await.expect("the same file reloads");
    std::fs::write(gate.config_path(), "servers: [").unwrap();
    assert!(gate.gw.reload().await.is_err());
    let reloaded = scrape(&gate).await;
    assert_eq!(
        value(&reloaded, "roomgate_config_reloads_total{result=success}"),
        1.0
    );
    assert_eq!(
        value(&reloaded, "roomgate_config_reloads_total{result=failure}"),
        1.0
    );
}

// ------------------------------------------------- history and the page

#[tokio::test]
async fn status_json_carries_the_uptime_history() {
    let (primary, backup) = two_servers().await;
    let gate = Gate::start(&two_server_yaml(&primary.url(), &backup.url(), "")).await;
    ready(&gate).await;
    let status = status_json(&gate.url("/status.json")).await;
    let up = &server(&status, "primary")["uptime"];
    assert_eq!(up["window_s"], 86_400, "{up}");
    assert_eq!(up["availability_percent"], 100.0, "{up}");
    let segments = up["segments"].as_array().expect("segments");
    assert_eq!(segments.last().unwrap()["state"], "up", "{up}");
    assert!(status["generated"].is_string());

    primary.set_mode(Mode::BoshDown).await;
    let status = wait_state(&gate.url("/status.json"), "primary", "down", BOUND).await;
    let up = &server(&status, "primary")["uptime"];
    let states: Vec<&str> = up["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.last(), Some(&"down"), "{up}");
    assert!(states.contains(&"up"), "{up}");
    let percent = up["availability_percent"].as_f64().unwrap();
    assert!(percent < 100.0 && percent > 0.0, "{up}");
    assert!(up["known_s"].as_u64().unwrap() >= up["up_s"].as_u64().unwrap());
    // Segments are consecutive.
    let list = up["segments"].as_array().unwrap();
    for pair in list.windows(2) {
        assert_eq!(pair[0]["to"], pair[1]["from"], "{up}");
    }

    // The page shows the down server at the top, the backup marked, and
    // the bar with a down stretch.
    let r = get(&gate.url("/"), &[]).await;
    let body = &r.body;
    let alert = body.split("id=\"alert\"").nth(1).expect("banner");
    assert!(!alert.starts_with(" class=\"alert\" role=\"status\" aria-live=\"polite\" hidden"));
    assert!(
        body.contains("class=\"badge backup\" data-field=\"backup\">"),
        "{body}"
    );
    assert!(body.contains("class=\"down\""), "{body}");
}

#[tokio::test]
async fn every_self_link_is_relative() {
    let (primary, backup) = two_servers().await;
    let gate = Gate::start(&two_server_yaml(&primary.url(), &backup.url(), "")).await;
    ready(&gate).await;
    primary.set_mode(Mode::BoshDown).await;
    wait_state(&gate.url("/status.json"), "primary", "down", BOUND).await;
    let html = [("accept", "text/html")];
    let pages = [
        get(&gate.url("/"), &[]).await.body,
        get(&gate.url("/Nope"), &html).await.body,
        get(&gate.url("/Lounge"), &[("user-agent", "Twitterbot/1.0")])
            .await
            .body,
    ];
    for page in &pages {
        for attr in ["href=\"", "src=\"", "action=\""] {
            for value in page.split(attr).skip(1) {
                let value = value.split('"').next().unwrap();
                let external = value.starts_with("http://") || value.starts_with("https://");
                assert!(
                    !value.starts_with('/') && (external || !value.contains(':')),
                    "{attr}{value}\" is not relative in {page}"
                );
            }
        }
    }
    // The script fetches status.json relatively too.
    assert!(roomgate::page::SCRIPT.contains("fetch(\"status.json\""));
    assert!(!roomgate::page::SCRIPT.contains("\"/"));
}
