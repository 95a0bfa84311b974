//! The HTML the gateway serves: the status page, the 404 page, the page of
//! links when every server of a room is down, redirect bodies, link-preview
//! pages, and QR codes.
//!
//! Pages are askama templates (`templates/`), compiled into the binary and
//! escaped automatically. Every self-link is relative (`./Lounge`,
//! `status.json`), so the pages work unchanged under a path prefix behind a
//! reverse proxy.
//!
//! The status page carries one inline stylesheet and one inline script. The
//! Content-Security-Policy allows exactly those two by their SHA-256 hashes,
//! computed once at first use, so the policy has no `'unsafe-inline'`.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use askama::Template;
use base64::Engine as _;
use http::header::{HeaderMap, HeaderValue};

use crate::config::{Config, Site};
use crate::forwarded::{self, Peer};
use crate::health::history::WINDOW;
use crate::health::State;
use crate::lang::Strings;
use crate::status::{Status, Time};

/// The stylesheet of every page.
pub const STYLE: &str = include_str!("../../templates/style.css");

/// The status page's script: refreshes the live parts from `status.json`
/// and adds the copy buttons.
pub const SCRIPT: &str = include_str!("../../templates/status.js");

/// The icon browsers show in tabs and bookmarks.
pub const FAVICON: &str = include_str!("../../templates/favicon.svg");

/// Width of the uptime bar in SVG user units: one unit per minute of 24 h.
const BAR_WIDTH: f64 = 1440.0;

/// The Content-Security-Policy headers, built once.
pub struct Policies {
    /// Pages with the stylesheet only (404, all down, redirect, preview).
    pub page: HeaderValue,
    /// The status page: stylesheet, script, and `fetch` of `status.json`.
    pub status: HeaderValue,
    /// Images (the QR code SVG): nothing at all.
    pub image: HeaderValue,
    /// Redirects, whose tiny body has no style: nothing at all, and short,
    /// since every redirect carries it.
    pub redirect: HeaderValue,
}

/// The policies, with the hashes of [`STYLE`] and [`SCRIPT`].
pub static POLICIES: LazyLock<Policies> = LazyLock::new(|| {
    let style = sha256(STYLE);
    let script = sha256(SCRIPT);
    let common = "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
    let page = format!("default-src 'none'; style-src '{style}'; {common}");
    let status = format!(
        "default-src 'none'; style-src '{style}'; script-src '{script}'; \
         connect-src 'self'; img-src 'self'; {common}"
    );
    let value = |s: String| HeaderValue::from_str(&s).expect("a CSP is ASCII");
    Policies {
        page: value(page),
        status: value(status),
        image: HeaderValue::from_static(
            "default-src 'none'; base-uri 'none'; frame-ancestors 'none'",
        ),
        // A redirect is followed, never rendered or framed; its body is a
        // bare absolute link for clients that do not follow it.
        redirect: HeaderValue::from_static("default-src 'none'"),
    }
});

/// `sha256-<base64>` of `text`, as a CSP source.
fn sha256(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    )
}

/// The absolute base URL of this gateway's short links, without a trailing
/// slash: `site.public_url` when set, else what a trusted proxy forwarded
/// (`X-Forwarded-Proto`, `-Host`, `-Prefix`), else `http://` and the
/// authority of an absolute-form target (`target_authority`) or the Host.
///
/// The one place that decides it. `None` when no valid host is known.
pub fn public_base(
    config: &Config,
    peer: &Peer,
    target_authority: Option<&str>,
    headers: &HeaderMap,
) -> Option<String> {
    if let Some(url) = &config.site.public_url {
        return Some(url.clone());
    }
    forwarded::public_base(peer, target_authority, headers, &config.trusted_proxies)
        .map(|b| b.as_str().to_owned())
}

/// The path under which clients reach us, without a trailing slash (empty
/// at the root): the path of `site.public_url` when set, whatever a proxy
/// forwards; else the `X-Forwarded-Prefix` of a trusted proxy.
pub fn public_prefix<'a>(config: &'a Config, peer: &Peer, headers: &'a HeaderMap) -> &'a str {
    match &config.site.public_url {
        Some(url) => url_path(url),
        None => forwarded::prefix(peer, headers, &config.trusted_proxies),
    }
}

/// The path of an absolute URL without query or fragment (as
/// `site.public_url` is validated to be): `https://a.example/gate` ->
/// `/gate`, `https://a.example` -> empty.
fn url_path(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |at| at + 3);
    url[after_scheme..]
        .find('/')
        .map_or("", |at| &url[after_scheme + at..])
}

/// The QR code of `url` as an SVG document.
pub fn qr_svg(url: &str) -> Option<String> {
    let code = qrcode::QrCode::with_error_correction_level(url, qrcode::EcLevel::M).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color>()
            .min_dimensions(240, 240)
            .quiet_zone(true)
            .build(),
    )
}

/// `/`: the status page.
#[derive(Template)]
#[template(path = "index.html")]
pub struct IndexPage<'a> {
    /// Title, intro, notice and links.
    site: &'a Site,
    /// The words of the page, in `site.lang`.
    t: &'static Strings,
    /// The intro, one entry per paragraph (a line of its own in the YAML
    /// text).
    intro: Vec<&'a str>,
    /// Every room, with where it goes now.
    rooms: Vec<RoomView<'a>>,
    /// Every server, with its state and history.
    servers: Vec<ServerView<'a>>,
    /// Labels of the servers that are down, for the banner.
    down: Vec<&'a str>,
    /// Whether some room is on a backup server that is not down.
    moved: bool,
    /// Rooms that go to a server that is down, or nowhere: every server of
    /// theirs is down.
    stranded: Vec<&'a str>,
    /// Whether every server is up, for the all-clear line.
    all_up: bool,
    /// When the page was made, RFC 3339.
    generated: String,
    /// The stylesheet, inlined.
    style: &'static str,
    /// The script, inlined.
    script: &'static str,
}

/// A room on the status page.
struct RoomView<'a> {
    name: &'a str,
    aliases: &'a [String],
    description: Option<&'a str>,
    /// The public base of the short link, when known; the script fills in
    /// the link from the page's own URL either way.
    short_base: Option<&'a str>,
    /// Where the room goes now.
    target: Option<&'a str>,
    /// Display name of the server of `target`.
    server_label: Option<&'a str>,
    /// State of that server: a room can go to a server that is not up.
    server_state: &'static str,
    /// The same in words of the page's language.
    server_state_word: &'static str,
    /// Whether that server is a backup.
    fallback: bool,
    /// People in the room there, when known.
    occupants: Option<u32>,
    /// The badge for `occupants`: `3 here now`.
    occupants_text: String,
}

/// A server on the status page.
struct ServerView<'a> {
    name: &'a str,
    label: &'a str,
    url: &'a str,
    state: &'static str,
    /// `state` in words of the page's language.
    state_word: &'static str,
    since: Option<Stamp>,
    last_check: Option<Stamp>,
    latency_ms: Option<u64>,
    error: Option<&'a str>,
    /// Availability over the window, e.g. `99.95 %`, or `no data`.
    availability: String,
    /// How much of the window the availability covers, e.g. `(watched for 2 h)`.
    watched: String,
    /// The bar's rectangles.
    bar: Vec<BarRect>,
}

/// A time shown both machine-readable and for people.
struct Stamp {
    /// RFC 3339.
    iso: String,
    /// `12 min ago`, `vor 12 min`.
    ago: String,
}

/// One rectangle of the uptime bar.
struct BarRect {
    x: String,
    width: String,
    state: &'static str,
}

impl<'a> IndexPage<'a> {
    /// The page for `status`, with short links under `base`.
    pub fn new(site: &'a Site, status: &'a Status<'a>, base: Option<&'a str>) -> IndexPage<'a> {
        let t = site.lang.strings();
        let now = SystemTime::now();
        let state_of = |index: Option<usize>| {
            index
                .and_then(|i| status.servers.get(i))
                .map_or("unknown", |s| s.state.as_str())
        };
        let rooms = status
            .rooms
            .iter()
            .map(|room| {
                let server_state = state_of(room.server_index);
                RoomView {
                    name: room.name,
                    aliases: room.aliases,
                    description: room.description,
                    short_base: base,
                    target: room.target,
                    server_label: room.server_label,
                    server_state,
                    server_state_word: t.state(server_state),
                    fallback: room.fallback,
                    occupants: room.occupants,
                    occupants_text: room.occupants.map(|n| t.here(n)).unwrap_or_default(),
                }
            })
            .collect();
        let servers = status
            .servers
            .iter()
            .map(|s| ServerView {
                name: s.name,
                label: s.label,
                url: s.url,
                state: s.state.as_str(),
                state_word: t.state(s.state.as_str()),
                since: s.since.map(|time| stamp(t, time, now)),
                last_check: s.last_check.map(|time| stamp(t, time, now)),
                latency_ms: s.latency_ms,
                error: s.error,
                availability: match s.uptime.availability_percent {
                    Some(p) => format!("{p:.2} %").replace('.', t.decimal),
                    None => t.no_data.to_owned(),
                },
                watched: t.fill(
                    t.watched_for,
                    &span(t, Duration::from_secs(s.uptime.known_s)),
                ),
                bar: bar(&s.uptime.segments, now),
            })
            .collect();
        let down = status
            .servers
            .iter()
            .filter(|s| s.state == State::Down)
            .map(|s| s.label)
            .collect();
        // The banner must not promise a backup to a room that has none left.
        let stranded = status
            .rooms
            .iter()
            .filter(|r| r.target.is_none() || state_of(r.server_index) == "down")
            .map(|r| r.name)
            .collect();
        let moved = status
            .rooms
            .iter()
            .any(|r| r.fallback && r.target.is_some() && state_of(r.server_index) != "down");
        let all_up = status.servers.iter().all(|s| s.state == State::Up);
        IndexPage {
            site,
            t,
            intro: site
                .intro
                .as_deref()
                .map(|text| {
                    text.lines()
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            rooms,
            servers,
            down,
            moved,
            stranded,
            all_up,
            generated: rfc3339(status.generated),
            style: STYLE,
            script: SCRIPT,
        }
    }
}

fn stamp(t: &Strings, time: Time, now: SystemTime) -> Stamp {
    Stamp {
        iso: rfc3339(time),
        ago: ago(t, now.duration_since(time.0).unwrap_or_default()),
    }
}

/// A time as RFC 3339 in UTC, to the second, as `/status.json` has it.
fn rfc3339(t: Time) -> String {
    humantime::format_rfc3339_seconds(t.0).to_string()
}

/// `12 s ago`, `vor 5 min`; the script does the same with the same table.
fn ago(t: &Strings, d: Duration) -> String {
    t.fill(t.ago, &span(t, d))
}

/// `12 s`, `5 min`, `3 h`, `2 d`: rough, for people.
fn span(t: &Strings, d: Duration) -> String {
    let s = d.as_secs();
    let [sec, min, hour, day] = t.units;
    match s {
        0..=59 => format!("{s} {sec}"),
        60..=3599 => format!("{} {min}", s / 60),
        3600..=86_399 => format!("{} {hour}", s / 3600),
        _ => format!("{} {day}", s / 86_400),
    }
}

/// The rectangles of the 24-hour bar: x runs from 24 hours ago (0) to now.
fn bar(segments: &[crate::status::UptimeSegment], now: SystemTime) -> Vec<BarRect> {
    let start = now.checked_sub(WINDOW).unwrap_or(SystemTime::UNIX_EPOCH);
    let pos = |t: Time| {
        let offset = t.0.duration_since(start).unwrap_or_default().as_secs_f64();
        (offset / WINDOW.as_secs_f64() * BAR_WIDTH).clamp(0.0, BAR_WIDTH)
    };
    segments
        .iter()
        .map(|s| {
            let (from, to) = (pos(s.from), pos(s.to));
            BarRect {
                x: format!("{from:.1}"),
                // At least a sliver, so that a short outage stays visible.
                width: format!("{:.1}", (to - from).max(3.0)),
                state: s.state.as_str(),
            }
        })
        .collect()
}

/// 404 for browsers: the rooms that exist.
#[derive(Template)]
#[template(path = "not_found.html")]
pub struct NotFoundPage<'a> {
    /// The words of the page, in `site.lang`.
    pub t: &'static Strings,
    /// Our root, relative to the page (`./`, `../`): see `http::not_found`.
    pub root: String,
    /// Names of the listed rooms.
    pub rooms: Vec<&'a str>,
    /// The stylesheet, inlined.
    pub style: &'static str,
}

/// 503 when every server of a room is down: each link to try.
#[derive(Template)]
#[template(path = "links.html")]
pub struct LinksPage<'a> {
    /// The words of the page, in `site.lang`.
    pub t: &'static Strings,
    /// The room.
    pub room: &'a str,
    /// Server label and the room's URL there.
    pub links: Vec<(&'a str, String)>,
    /// The stylesheet, inlined.
    pub style: &'static str,
}

/// The body of a redirect, for clients that do not follow it.
#[derive(Template)]
#[template(path = "redirect.html")]
pub struct RedirectPage<'a> {
    /// Where the redirect goes.
    pub url: &'a str,
}

/// The page link-preview fetchers get instead of the redirect.
#[derive(Template)]
#[template(path = "preview.html")]
pub struct PreviewPage<'a> {
    /// The words of the page, in `site.lang`.
    pub t: &'static Strings,
    /// `site.title`.
    pub site_title: &'a str,
    /// The room's configured name.
    pub room: &'a str,
    /// What the room is for.
    pub description: Option<&'a str>,
    /// People in the room on the server it redirects to, when known.
    pub occupants: Option<u32>,
    /// The absolute short link, when known.
    pub url: Option<String>,
    /// The stylesheet, inlined.
    pub style: &'static str,
}

impl PreviewPage<'_> {
    /// The description, or for a room without one (and unlisted rooms) a
    /// line naming the room, so that a card never shows the bare site;
    /// led by how many people are in the room when that is known, so that
    /// a shared link tells whether anyone is there.
    fn description_or_fallback(&self) -> String {
        let text = match self.description {
            Some(d) => d.to_owned(),
            None => self.t.fill(self.t.preview_description, self.room),
        };
        match self.occupants {
            Some(n) => self.t.in_room(n) + &text,
            None => text,
        }
    }
}

#[cfg(test)]
mod tests;
