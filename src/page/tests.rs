//! Unit tests of the pages.

use super::*;

#[test]
fn policies_carry_the_hashes_and_no_unsafe_inline() {
    let status = POLICIES.status.to_str().unwrap();
    assert!(status.contains(&sha256(SCRIPT)));
    assert!(status.contains(&sha256(STYLE)));
    assert!(!status.contains("unsafe"));
    assert!(!POLICIES.page.to_str().unwrap().contains("script-src"));
    // A known vector: sha256("") in base64.
    assert_eq!(
        sha256(""),
        "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    );
}

#[test]
fn public_base_prefers_the_config_then_the_request() {
    use http::header::HOST;
    let mut config = Config::parse(
        "servers: { a: { url: 'https://a.example' } }",
        "t",
        std::path::Path::new("."),
    )
    .unwrap();
    let mut headers = HeaderMap::new();
    let proxy = Peer::Tcp("127.0.0.1:4000".parse().unwrap());
    assert_eq!(public_base(&config, &proxy, None, &headers), None);
    headers.insert(HOST, HeaderValue::from_static("gate.example:8080"));
    assert_eq!(
        public_base(&config, &proxy, None, &headers).as_deref(),
        Some("http://gate.example:8080")
    );
    headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    headers.insert("x-forwarded-prefix", HeaderValue::from_static("/raum"));
    assert_eq!(
        public_base(&config, &proxy, None, &headers).as_deref(),
        Some("https://gate.example:8080/raum")
    );
    headers.insert(HOST, HeaderValue::from_static("evil@gate.example"));
    assert_eq!(public_base(&config, &proxy, None, &headers), None);
    config.site.public_url = Some("https://rooms.example/gate".into());
    assert_eq!(
        public_base(&config, &proxy, None, &headers).as_deref(),
        Some("https://rooms.example/gate")
    );
}

#[test]
fn the_public_prefix_is_the_configured_urls_path_when_there_is_one() {
    assert_eq!(url_path("https://rooms.example/gate"), "/gate");
    assert_eq!(url_path("https://rooms.example/a/b"), "/a/b");
    assert_eq!(url_path("https://rooms.example"), "");
    assert_eq!(url_path("http://[::1]:8080/x"), "/x");
    let mut config = Config::parse(
        "servers: { a: { url: 'https://a.example' } }",
        "t",
        std::path::Path::new("."),
    )
    .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-prefix", HeaderValue::from_static("/raum"));
    let proxy = Peer::Tcp("127.0.0.1:4000".parse().unwrap());
    assert_eq!(public_prefix(&config, &proxy, &headers), "/raum");
    config.site.public_url = Some("https://rooms.example/gate".into());
    assert_eq!(public_prefix(&config, &proxy, &headers), "/gate");
    config.site.public_url = Some("https://rooms.example".into());
    assert_eq!(public_prefix(&config, &proxy, &headers), "");
}

#[test]
fn the_bar_maps_the_last_24_hours_onto_its_width() {
    use crate::status::UptimeSegment;
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    let at = |hours_ago: u64| Time(now - Duration::from_secs(hours_ago * 3600));
    let segments = [
        UptimeSegment {
            state: State::Up,
            from: at(30),
            to: at(6),
        },
        UptimeSegment {
            state: State::Down,
            from: at(6),
            to: at(0),
        },
    ];
    let rects = bar(&segments, now);
    let got: Vec<(&str, &str, &str)> = rects
        .iter()
        .map(|r| (r.x.as_str(), r.width.as_str(), r.state))
        .collect();
    // Clamped to the window: 24 h ago is 0, 6 h ago is 1080, now 1440.
    assert_eq!(got, [("0.0", "1080.0", "up"), ("1080.0", "360.0", "down")]);
}

#[test]
fn ago_reads_naturally() {
    use crate::lang::{DE, EN};
    assert_eq!(ago(&EN, Duration::from_secs(5)), "5 s ago");
    assert_eq!(ago(&EN, Duration::from_secs(600)), "10 min ago");
    assert_eq!(ago(&EN, Duration::from_secs(7200)), "2 h ago");
    assert_eq!(ago(&EN, Duration::from_secs(3 * 86_400)), "3 d ago");
    assert_eq!(ago(&DE, Duration::from_secs(11)), "vor 11 s");
    assert_eq!(ago(&DE, Duration::from_secs(600)), "vor 10 min");
}

/// The status page of a Lounge with 3 people (4 occupants, the focus
/// one of them), an empty Cave and a Quiet room whose count is unknown.
async fn page_with_people(lang: &str) -> String {
    use crate::gateway::testing::{Fixed, Switch};
    use crate::occupancy::Occupancy::*;
    let config = Config::parse(
        &format!(
            "site: {{ lang: {lang} }}\nservers:\n  a: {{ url: 'https://a.example', occupancy: true }}\n\
             rooms:\n  Lounge: {{}}\n  Cave: {{}}\n  Quiet: {{}}\n"
        ),
        "t",
        std::path::Path::new("."),
    )
    .unwrap();
    let snap = crate::gateway::Snapshot::scripted(
        config,
        vec![Switch::new(true)],
        vec![Fixed(vec![Known(4), Empty, Unknown])],
    );
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    let health = snap.health();
    let status = crate::status::status(&snap, &health);
    IndexPage::new(&snap.config.site, &status, None)
        .render()
        .unwrap()
}

/// The card of `room` in `html`.
fn card<'h>(html: &'h str, room: &str) -> &'h str {
    let start = html
        .find(&format!("data-room=\"{room}\""))
        .and_then(|at| html[..at].rfind("<li"))
        .unwrap_or_else(|| panic!("no card for {room}"));
    let end = start + html[start..].find("</li>").unwrap();
    &html[start..end]
}

#[tokio::test(start_paused = true)]
async fn a_room_with_people_says_how_many_and_stands_out() {
    let html = page_with_people("en").await;
    let lounge = card(&html, "Lounge");
    assert!(
        lounge.starts_with("<li class=\"card occupied\""),
        "{lounge}"
    );
    assert!(
        lounge.contains("<span class=\"badge people\" data-field=\"occupants\">3 here now</span>"),
        "{lounge}"
    );
    let cave = card(&html, "Cave");
    assert!(cave.starts_with("<li class=\"card\""), "{cave}");
    assert!(
        cave.contains(
            "<span class=\"badge people nobody\" data-field=\"occupants\">nobody here now</span>"
        ),
        "{cave}"
    );
    // Unknown: nothing to read, only the empty slot the script fills.
    let quiet = card(&html, "Quiet");
    assert!(quiet.starts_with("<li class=\"card\""), "{quiet}");
    assert!(
        quiet.contains("<span class=\"badge people\" data-field=\"occupants\" hidden></span>"),
        "{quiet}"
    );
    let german = page_with_people("de").await;
    assert!(card(&german, "Lounge").contains(">3 jetzt hier</span>"));
    assert!(card(&german, "Cave").contains(">gerade niemand hier</span>"));
}

#[test]
fn a_preview_leads_with_the_count_when_it_is_known() {
    let page = |t, description, occupants| {
        PreviewPage {
            t,
            site_title: "Space",
            room: "Lounge",
            description,
            occupants,
            url: None,
            style: STYLE,
        }
        .description_or_fallback()
    };
    use crate::lang::{DE, EN};
    let about = Some("Die Lounge ist der Treffpunkt.");
    assert_eq!(
        page(&EN, about, Some(3)),
        "3 in the room now. Die Lounge ist der Treffpunkt."
    );
    assert_eq!(
        page(&DE, about, Some(3)),
        "3 jetzt im Raum. Die Lounge ist der Treffpunkt."
    );
    assert_eq!(
        page(&EN, None, Some(0)),
        "Nobody in the room now. The video meeting room Lounge"
    );
    assert_eq!(page(&EN, about, None), "Die Lounge ist der Treffpunkt.");
    let html = PreviewPage {
        t: &EN,
        site_title: "Space",
        room: "Lounge",
        description: about,
        occupants: Some(1),
        url: None,
        style: STYLE,
    }
    .render()
    .unwrap();
    assert!(html.contains(
        "<meta property=\"og:description\" content=\"1 in the room now. Die Lounge ist der Treffpunkt.\">"
    ));
}

#[test]
fn templates_escape_config_text() {
    let page = PreviewPage {
        t: &crate::lang::EN,
        site_title: "A & B",
        room: "Lounge",
        description: Some("<script>alert(\"x\")</script> 'q'"),
        occupants: None,
        url: Some("https://g.example/Lounge".into()),
        style: STYLE,
    };
    let html = page.render().unwrap();
    assert!(!html.contains("<script>"));
    assert!(html.contains("&#60;script&#62;"));
    assert!(html.contains("A &#38; B"));
    assert!(!html.contains("\"x\""));
}
