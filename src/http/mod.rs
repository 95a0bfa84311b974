//! The HTTP interface: one request in, one response out.
//!
//! Reserved paths are answered here; every other path is a room. A room
//! answers a temporary redirect to the first healthy server (see
//! `decision.rs`) with a Location that was built when the config was loaded.
//! How each answer looks on the wire is `response.rs`'s business.

pub mod response;

use std::fmt::Write as _;
use std::sync::Arc;

use askama::Template;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};

use crate::decision::Choice;
use crate::forwarded::{self, Peer};
use crate::gateway::{Gateway, Snapshot, COLD_START_WAIT};
use crate::health::Health;
use crate::page::{self, IndexPage, LinksPage, NotFoundPage, PreviewPage};
use crate::routes::{location, room_segment, Lookup, RouteRoom};
use crate::status::status;
pub use response::Body;
use response::{plain, plain_no_store};

/// Longest request target (path and query) we read; longer ones get 414.
/// Room links are short, and Jitsi's longest real query (`?jwt=`) fits.
pub const MAX_URI_LEN: usize = 4096;

/// Deepest request path whose 404 page links back with `../` steps; deeper
/// (hostile) paths get links from the forwarded prefix instead, so that the
/// page does not grow with the path.
const MAX_RELATIVE_DEPTH: usize = 16;

/// Answers one request from `peer`. Never fails: every problem has an HTTP
/// answer.
pub async fn handle<B>(gw: &Gateway, peer: &Peer, req: Request<B>) -> Response<Body> {
    let resp = respond(gw, peer, &req).await;
    // The access line. The client address is worked out only when someone
    // reads debug lines; the peer is in the connection's span.
    if tracing::enabled!(tracing::Level::DEBUG) {
        let snap = gw.snapshot();
        let client = forwarded::client_addr(peer, req.headers(), &snap.config.trusted_proxies);
        tracing::debug!(
            %client,
            method = %req.method(),
            uri = %req.uri(),
            status = resp.status().as_u16(),
            "request"
        );
    }
    resp
}

async fn respond<B>(gw: &Gateway, peer: &Peer, req: &Request<B>) -> Response<Body> {
    let uri = req.uri();
    // RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host, and for any
    // request with more than one Host line (which one would links use?).
    // HTTP/1.0 predates Host and is served without it.
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let no_host = hosts.next().is_none();
    if (no_host && req.version() == Version::HTTP_11) || hosts.next().is_some() {
        return plain(
            StatusCode::BAD_REQUEST,
            "bad request: HTTP/1.1 needs exactly one Host header\n",
        );
    }
    let target_len = uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > MAX_URI_LEN {
        return plain(StatusCode::URI_TOO_LONG, "request URI too long\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return response::method_not_allowed();
    }
    let snap = gw.snapshot();
    let headers = req.headers();
    // Set for an absolute-form target (`GET http://host/path`), where it
    // names the host instead of the Host header (RFC 9112 §3.2.2).
    let authority = uri.authority().map(http::uri::Authority::as_str);
    match uri.path() {
        "/" => index_page(&snap, peer, authority, headers).await,
        "/status.json" => status_json(&snap).await,
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/readyz" if snap.is_ready() => plain(StatusCode::OK, "ready\n"),
        "/readyz" => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for first probes\n",
        ),
        "/metrics" => response::metrics(gw.metrics.encode_with_occupants(snap.occupants_now())),
        "/_/favicon.svg" => response::svg(page::FAVICON, "public, max-age=86400"),
        path if path.starts_with("/_/qr/") => qr_code(&snap, peer, path, authority, headers),
        path if path.starts_with("/_/") => not_found(&snap, peer, path, headers),
        path => room(gw, &snap, peer, path, uri.query(), authority, headers).await,
    }
}

/// `/{room}`: the redirect, or a link preview for preview fetchers.
async fn room(
    gw: &Gateway,
    snap: &Snapshot,
    peer: &Peer,
    path: &str,
    query: Option<&str>,
    authority: Option<&str>,
    headers: &HeaderMap,
) -> Response<Body> {
    let Some(name) = room_segment(path) else {
        return unknown_room(gw, snap, peer, path, headers);
    };
    // Link-preview fetchers get a card instead of the redirect; clients
    // without a User-Agent skip the check at the cost of one header lookup.
    if let Some(agent) = headers.get(header::USER_AGENT) {
        if snap.routes.preview.matches(agent.as_bytes()) {
            return preview(gw, snap, peer, path, name, authority, headers).await;
        }
    }
    let status = snap.routes.redirect_status;
    match snap.routes.lookup(name) {
        Lookup::Room(room) => match snap.choose(room.servers()).await {
            Choice::Target(i) => {
                let target = &room.targets[i];
                target.redirects.inc();
                match query {
                    None => response::redirect(status, target.location.clone(), &target.url),
                    Some(q) => {
                        let base = &snap.config.servers[target.server].url;
                        redirect_to(status, &location(base, &target.room, Some(q)))
                    }
                }
            }
            Choice::AllDownPage => all_down_page(snap, room),
        },
        Lookup::Unlisted(name) => {
            let targets = snap.routes.unlisted.as_deref().unwrap_or_default();
            match snap.choose(targets.iter().map(|t| t.server)).await {
                Choice::Target(i) => {
                    targets[i].redirects.inc();
                    redirect_to(status, &location(&targets[i].base, name, query))
                }
                Choice::AllDownPage => {
                    let links = targets.iter().map(|t| {
                        let server = &snap.config.servers[t.server];
                        (server.label.as_str(), location(&t.base, name, query))
                    });
                    links_page(snap, name, links)
                }
            }
        }
        Lookup::NotFound => unknown_room(gw, snap, peer, path, headers),
    }
}

/// A redirect to a URL built for this request (it carries a query, or an
/// unlisted room name).
fn redirect_to(status: StatusCode, url: &str) -> Response<Body> {
    match HeaderValue::from_str(url) {
        Ok(location) => response::redirect(status, location, url),
        // Unreachable in practice: hyper only hands us valid URI bytes, and
        // everything else in `url` was validated at load.
        Err(_) => plain(StatusCode::BAD_REQUEST, "bad request\n"),
    }
}

/// 503 for a room whose servers are all down under `when_all_down: page`.
fn all_down_page(snap: &Snapshot, room: &RouteRoom) -> Response<Body> {
    let links = room.targets.iter().map(|t| {
        let label = snap.config.servers[t.server].label.as_str();
        (label, t.url.clone())
    });
    links_page(snap, &room.name, links)
}

fn links_page<'a>(
    snap: &Snapshot,
    room: &str,
    links: impl Iterator<Item = (&'a str, String)>,
) -> Response<Body> {
    let page = LinksPage {
        t: snap.config.site.lang.strings(),
        room,
        links: links.collect(),
        style: page::STYLE,
    };
    response::all_down(page.render().unwrap_or_default())
}

/// 404 for a room that does not exist, counted in the metrics.
fn unknown_room(
    gw: &Gateway,
    snap: &Snapshot,
    peer: &Peer,
    path: &str,
    headers: &HeaderMap,
) -> Response<Body> {
    gw.metrics.not_found.inc();
    not_found(snap, peer, path, headers)
}

/// 404 with the list of rooms: HTML for browsers, text for everyone else.
///
/// Behind a proxy that mounts us under a prefix (`/raum/Nope/x` arrives as
/// `/Nope/x`), root-relative links would leave the prefix. The HTML links
/// are therefore relative to the request path; the text lists paths under
/// the prefix: the path of `site.public_url` when set, else the one a
/// trusted proxy forwarded.
fn not_found(snap: &Snapshot, peer: &Peer, path: &str, headers: &HeaderMap) -> Response<Body> {
    let rooms = &snap.routes.rooms;
    let prefix = page::public_prefix(&snap.config, peer, headers);
    if wants_html(headers) {
        let page = NotFoundPage {
            t: snap.config.site.lang.strings(),
            root: root_href(path, prefix),
            rooms: rooms.iter().map(|r| r.name.as_str()).collect(),
            style: page::STYLE,
        };
        return response::page(StatusCode::NOT_FOUND, page.render().unwrap_or_default());
    }
    let mut body = String::from("no such room; these rooms exist:\n");
    for room in rooms {
        let _ = writeln!(body, "{prefix}/{}", room.name);
    }
    // Rooms come and go with reloads.
    plain_no_store(StatusCode::NOT_FOUND, body)
}

/// A link to our root as seen from a page at `path`: `./` at the top level,
/// one `../` per directory below it (`/Nope/x` -> `../`). Paths deeper
/// than [`MAX_RELATIVE_DEPTH`] get `{prefix}/` instead (`prefix` is the
/// path of `site.public_url`, the validated forwarded prefix, or empty).
fn root_href(path: &str, prefix: &str) -> String {
    let depth = path
        .bytes()
        .filter(|&b| b == b'/')
        .count()
        .saturating_sub(1);
    match depth {
        0 => "./".to_owned(),
        d if d <= MAX_RELATIVE_DEPTH => "../".repeat(d),
        _ => format!("{prefix}/"),
    }
}

/// Whether the client prefers HTML (a browser) over plain text (curl).
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// Every server's latest result, read once for a whole answer, after
/// waiting (at most [`COLD_START_WAIT`], once for the whole answer) for the
/// first results at cold start.
async fn health_once(snap: &Snapshot) -> Vec<Option<Arc<Health>>> {
    let deadline = tokio::time::Instant::now() + COLD_START_WAIT;
    snap.wait_ready(0..snap.servers.len(), deadline).await;
    snap.health()
}

/// `/status.json`.
async fn status_json(snap: &Snapshot) -> Response<Body> {
    let health = health_once(snap).await;
    let status = status(snap, &health);
    response::json(serde_json::to_vec_pretty(&status).unwrap_or_default())
}

/// `/`: the status page. All links are relative, so the page works under a
/// path prefix too.
async fn index_page(
    snap: &Snapshot,
    peer: &Peer,
    authority: Option<&str>,
    headers: &HeaderMap,
) -> Response<Body> {
    let health = health_once(snap).await;
    let status = status(snap, &health);
    let base = page::public_base(&snap.config, peer, authority, headers);
    let body = IndexPage::new(&snap.config.site, &status, base.as_deref())
        .render()
        .unwrap_or_default();
    response::status_page(body)
}

/// `/_/qr/{room}.svg`: the QR code of a listed room's absolute short link.
fn qr_code(
    snap: &Snapshot,
    peer: &Peer,
    path: &str,
    authority: Option<&str>,
    headers: &HeaderMap,
) -> Response<Body> {
    let name = path
        .strip_prefix("/_/qr/")
        .and_then(|rest| rest.strip_suffix(".svg"));
    let room = match name.map(|n| snap.routes.lookup(n)) {
        Some(Lookup::Room(room)) => room,
        _ => return not_found(snap, peer, path, headers),
    };
    let Some(base) = page::public_base(&snap.config, peer, authority, headers) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "cannot tell this gateway's public URL: send a Host header or set site.public_url\n",
        );
    };
    let Some(svg) = page::qr_svg(&format!("{base}/{}", room.name)) else {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "link too long for a QR code\n",
        );
    };
    // The link depends on the Host unless public_url is set.
    response::svg(svg, "no-cache")
}

/// The OpenGraph card a link-preview fetcher gets for `/{room}`, led by
/// how many people are in the room on the server it redirects to now.
async fn preview(
    gw: &Gateway,
    snap: &Snapshot,
    peer: &Peer,
    path: &str,
    name: &str,
    authority: Option<&str>,
    headers: &HeaderMap,
) -> Response<Body> {
    let (room, description, occupants) = match snap.routes.lookup(name) {
        Lookup::Room(room) => {
            let choice = snap.choose(room.servers()).await;
            let seen = snap.occupants_of(room, choice, tokio::time::Instant::now());
            let description = room.description.as_deref();
            (room.name.as_str(), description, seen.map(|s| s.people))
        }
        Lookup::Unlisted(name) => (name, None, None),
        Lookup::NotFound => return unknown_room(gw, snap, peer, path, headers),
    };
    gw.metrics.previews.inc();
    let site = &snap.config.site;
    let page = PreviewPage {
        t: site.lang.strings(),
        site_title: &site.title,
        room,
        description,
        occupants,
        url: page::public_base(&snap.config, peer, authority, headers)
            .map(|base| format!("{base}/{room}")),
        style: page::STYLE,
    };
    response::preview(page.render().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_links_climb_out_of_the_request_path() {
        assert_eq!(root_href("/", ""), "./");
        assert_eq!(root_href("/Nope", "/raum"), "./");
        assert_eq!(root_href("/Nope/", "/raum"), "../");
        assert_eq!(root_href("/Nope/x", "/raum"), "../");
        assert_eq!(root_href("/_/a/b", ""), "../../");
        assert_eq!(root_href("//evil.example", ""), "../");
        let deep = "/a".repeat(MAX_RELATIVE_DEPTH + 2);
        assert_eq!(root_href(&deep, "/raum"), "/raum/");
        assert_eq!(root_href(&deep, ""), "/");
    }
}
