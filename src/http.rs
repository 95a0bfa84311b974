//! The HTTP interface: one request in, one response out.
//!
//! Reserved paths are answered here; every other path is a room. A room
//! answers a temporary redirect to the first healthy server (see
//! `decision.rs`) with a Location that was built when the config was loaded.

use std::convert::Infallible;
use std::fmt::Write as _;

use askama::Template;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::decision::Choice;
use crate::forwarded::{self, Peer};
use crate::gateway::{Gateway, Snapshot};
use crate::page::{self, IndexPage, LinksPage, NotFoundPage, PreviewPage, RedirectPage};
use crate::routes::{location, room_segment, Lookup, RouteRoom, RouteTarget};
use crate::status::{healths, status};

/// Longest request target (path and query) we read; longer ones get 414.
/// Room links are short, and Jitsi's longest real query (`?jwt=`) fits.
pub const MAX_URI_LEN: usize = 4096;

/// The response body type.
pub type Body = Full<Bytes>;

/// Deepest request path whose 404 page links back with `../` steps; deeper
/// (hostile) paths get links from the forwarded prefix instead, so that the
/// page does not grow with the path.
const MAX_RELATIVE_DEPTH: usize = 16;

/// Answers one request from `peer`. Never fails: every problem has an HTTP
/// answer.
pub async fn handle<B>(
    gw: &Gateway,
    peer: &Peer,
    req: Request<B>,
) -> Result<Response<Body>, Infallible> {
    match handle_now(gw, peer, req) {
        Now::Answer(resp) => Ok(resp),
        Now::Wait(waiting) => waiting.answer(gw, peer).await,
    }
}

/// What [`handle_now`] gives: the answer, or the request when its answer
/// has to wait.
pub enum Now<B> {
    /// The answer.
    Answer(Response<Body>),
    /// The answer waits for health results: the status page and JSON, and
    /// a room whose servers have no first probe result yet (cold start).
    Wait(Waiting<B>),
}

/// A request whose answer waits for health results.
pub struct Waiting<B> {
    req: Request<B>,
    why: Why,
}

impl<B> Waiting<B> {
    /// Waits and answers.
    pub async fn answer(self, gw: &Gateway, peer: &Peer) -> Result<Response<Body>, Infallible> {
        let resp = respond_later(gw, peer, &self.req, self.why).await;
        log_request(gw, peer, &self.req, &resp);
        Ok(resp)
    }
}

/// [`handle`] without a future, for the requests that need not wait: every
/// redirect in steady state. The server answers those without boxing or
/// polling anything.
pub fn handle_now<B>(gw: &Gateway, peer: &Peer, req: Request<B>) -> Now<B> {
    match respond_now(gw, peer, &req) {
        Ok(resp) => {
            log_request(gw, peer, &req, &resp);
            Now::Answer(resp)
        }
        Err(why) => Now::Wait(Waiting { req, why }),
    }
}

/// The access line. The redirect path must stay cheap, so the client
/// address is worked out only when someone reads debug lines.
fn log_request<B>(gw: &Gateway, peer: &Peer, req: &Request<B>, resp: &Response<Body>) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        let snap = gw.snapshot();
        let client = forwarded::client_addr(peer, req.headers(), &snap.config.trusted_proxies);
        // The peer is in the connection's span.
        tracing::debug!(
            %client,
            method = %req.method(),
            uri = %req.uri(),
            status = resp.status().as_u16(),
            "request"
        );
    }
}

/// Why an answer has to wait.
enum Why {
    /// The status page or JSON: they show every server.
    Status,
    /// A room, for the first probe results of these servers.
    Servers(Vec<usize>),
}

/// The answer, unless it has to wait.
fn respond_now<B>(gw: &Gateway, peer: &Peer, req: &Request<B>) -> Result<Response<Body>, Why> {
    let uri = req.uri();
    let target_len = uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > MAX_URI_LEN {
        return Ok(plain(StatusCode::URI_TOO_LONG, "request URI too long\n"));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(resp);
    }
    let snap = gw.snapshot();
    let path = uri.path();
    let resp = match path {
        "/" | "/status.json" => return Err(Why::Status),
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/readyz" if gw.is_ready() => plain(StatusCode::OK, "ready\n"),
        "/readyz" => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for first probes\n",
        ),
        "/metrics" => metrics(gw),
        "/_/favicon.svg" => favicon(),
        _ if path.starts_with("/_/qr/") => qr_code(&snap, peer, path, req.headers()),
        _ if path.starts_with("/_/") => not_found(&snap, peer, path, req.headers()),
        _ => room(gw, &snap, peer, path, uri.query(), req.headers(), false)?,
    };
    Ok(resp)
}

/// The answers that wait: the status page and JSON, and rooms at cold start.
async fn respond_later<B>(gw: &Gateway, peer: &Peer, req: &Request<B>, why: Why) -> Response<Body> {
    let snap = gw.snapshot();
    let uri = req.uri();
    match why {
        Why::Status if uri.path() == "/" => index_page(gw, &snap, peer, req.headers()).await,
        Why::Status => status_json(gw, &snap).await,
        Why::Servers(servers) => {
            gw.wait_ready(&snap, servers.into_iter()).await;
            // The snapshot may have changed while waiting; decide by the
            // current one, with what results there are now.
            let snap = gw.snapshot();
            let path = uri.path();
            // After the wait a room never asks to wait again; the 503 only
            // keeps the types honest.
            room(gw, &snap, peer, path, uri.query(), req.headers(), true).unwrap_or_else(|_| {
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "waiting for first probes\n",
                )
            })
        }
    }
}

/// `/{room}`: the redirect. Before every server of the room has its first
/// probe result, this asks to wait, unless `waited` (then servers without a
/// result count as unknown).
fn room(
    gw: &Gateway,
    snap: &Snapshot,
    peer: &Peer,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    waited: bool,
) -> Result<Response<Body>, Why> {
    let Some(name) = room_segment(path) else {
        gw.metrics.not_found.inc();
        return Ok(not_found(snap, peer, path, headers));
    };
    // Link-preview fetchers get a card instead of the redirect; clients
    // without a User-Agent skip the check at the cost of one header lookup.
    if let Some(agent) = headers.get(header::USER_AGENT) {
        if snap.config.site.preview_agents.matches(agent.as_bytes()) {
            return Ok(preview(gw, snap, peer, path, name, headers));
        }
    }
    match snap.routes.lookup(name) {
        Lookup::Room(room) => {
            let servers = room.targets.iter().map(|t| t.server);
            match decide(gw, snap, servers, waited)? {
                Choice::Target(i) => {
                    let target = &room.targets[i];
                    target.redirects.inc();
                    Ok(match query {
                        None => redirect_prebuilt(snap, target),
                        Some(q) => {
                            let base = &snap.config.servers[target.server].url;
                            redirect_to(snap, &location(base, &target.room, Some(q)))
                        }
                    })
                }
                Choice::AllDownPage => Ok(all_down_page(snap, room)),
            }
        }
        Lookup::Unlisted(name) => {
            let targets = snap.routes.unlisted.as_deref().unwrap_or_default();
            Ok(
                match decide(gw, snap, targets.iter().map(|t| t.server), waited)? {
                    Choice::Target(i) => {
                        targets[i].redirects.inc();
                        redirect_to(snap, &location(&targets[i].base, name, query))
                    }
                    Choice::AllDownPage => {
                        let links = targets.iter().map(|t| {
                            let server = &snap.config.servers[t.server];
                            (server.label.as_str(), location(&t.base, name, query))
                        });
                        links_page(StatusCode::SERVICE_UNAVAILABLE, name, links)
                    }
                },
            )
        }
        Lookup::NotFound => {
            gw.metrics.not_found.inc();
            Ok(not_found(snap, peer, path, headers))
        }
    }
}

/// The decision for a room with these servers: now, or once `waited` with
/// what results there are; otherwise the servers to wait for.
fn decide(
    gw: &Gateway,
    snap: &Snapshot,
    servers: impl ExactSizeIterator<Item = usize> + Clone,
    waited: bool,
) -> Result<Choice, Why> {
    if waited {
        return Ok(gw.decide(snap, servers));
    }
    gw.choose_now(snap, servers.clone())
        .ok_or_else(|| Why::Servers(servers.collect()))
}

/// A redirect whose Location was built at load time.
fn redirect(snap: &Snapshot, location: HeaderValue, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = snap.routes.redirect_status;
    *resp.headers_mut() = redirect_head(location);
    resp
}

/// A redirect to a listed room: body and headers were built when the config
/// was loaded, so this clones shared buffers and nothing else.
fn redirect_prebuilt(snap: &Snapshot, target: &RouteTarget) -> Response<Body> {
    let mut resp = Response::new(Full::new(target.body.clone()));
    *resp.status_mut() = snap.routes.redirect_status;
    *resp.headers_mut() = target.head.clone();
    resp
}

/// Every header of a redirect to `location`.
pub(crate) fn redirect_head(location: HeaderValue) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(8);
    html_headers(&mut headers);
    // The body is a bare link: no stylesheet to allow.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        page::POLICIES.redirect.clone(),
    );
    headers.insert(header::LOCATION, location);
    // The answer changes with health: no browser or proxy may keep it.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers
}

/// A redirect to a URL built for this request (it carries a query, or an
/// unlisted room name).
fn redirect_to(snap: &Snapshot, url: &str) -> Response<Body> {
    match HeaderValue::from_str(url) {
        Ok(value) => redirect(snap, value, Bytes::from(redirect_body(url))),
        // Unreachable in practice: hyper only hands us valid URI bytes, and
        // everything else in `url` was validated at load.
        Err(_) => plain(StatusCode::BAD_REQUEST, "bad request\n"),
    }
}

/// The body of a redirect, for clients that do not follow it.
pub(crate) fn redirect_body(url: &str) -> String {
    RedirectPage { url }.render().unwrap_or_default()
}

/// 503 for a room whose servers are all down under `when_all_down: page`.
fn all_down_page(snap: &Snapshot, room: &RouteRoom) -> Response<Body> {
    let links = room.targets.iter().map(|t| {
        let label = snap.config.servers[t.server].label.as_str();
        (label, t.url.clone())
    });
    links_page(StatusCode::SERVICE_UNAVAILABLE, &room.name, links)
}

fn links_page<'a>(
    status: StatusCode,
    room: &str,
    links: impl Iterator<Item = (&'a str, String)>,
) -> Response<Body> {
    let page = LinksPage {
        room,
        links: links.collect(),
        style: page::STYLE,
    };
    let mut resp = html(status, page.render().unwrap_or_default());
    let headers = resp.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
    resp
}

/// 404 with the list of rooms: HTML for browsers, text for everyone else.
///
/// Behind a proxy that mounts us under a prefix (`/raum/Nope/x` arrives as
/// `/Nope/x`), root-relative links would leave the prefix. The HTML links
/// are therefore relative to the request path; the text lists paths under
/// the prefix a trusted proxy forwarded.
fn not_found(snap: &Snapshot, peer: &Peer, path: &str, headers: &HeaderMap) -> Response<Body> {
    let rooms = &snap.routes.rooms;
    let prefix = forwarded::prefix(peer, headers, &snap.config.trusted_proxies);
    let mut resp = if wants_html(headers) {
        let page = NotFoundPage {
            root: root_href(path, prefix),
            rooms: rooms.iter().map(|r| r.name.as_str()).collect(),
            style: page::STYLE,
        };
        html(StatusCode::NOT_FOUND, page.render().unwrap_or_default())
    } else {
        let mut body = String::from("no such room; these rooms exist:\n");
        for room in rooms {
            let _ = writeln!(body, "{prefix}/{}", room.name);
        }
        plain(StatusCode::NOT_FOUND, body)
    };
    // Rooms come and go with reloads.
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A link to our root as seen from a page at `path`: `./` at the top level,
/// one `../` per directory below it (`/Nope/x` -> `../`). Paths deeper
/// than [`MAX_RELATIVE_DEPTH`] get `{prefix}/` instead (`prefix` is the
/// validated forwarded prefix, or empty).
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

async fn status_json(gw: &Gateway, snap: &Snapshot) -> Response<Body> {
    let healths = healths(gw, snap).await;
    let status = status(gw, snap, &healths).await;
    let body = serde_json::to_vec_pretty(&status).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// `/`: the status page. All links are relative, so the page works under a
/// path prefix too.
async fn index_page(
    gw: &Gateway,
    snap: &Snapshot,
    peer: &Peer,
    headers: &HeaderMap,
) -> Response<Body> {
    let healths = healths(gw, snap).await;
    let status = status(gw, snap, &healths).await;
    let base = page::public_base(&snap.config, peer, headers);
    let body = IndexPage::new(&snap.config.site, &status, base.as_deref())
        .render()
        .unwrap_or_default();
    let mut resp = html(StatusCode::OK, body);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        page::POLICIES.status.clone(),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `/_/qr/{room}.svg`: the QR code of a listed room's absolute short link.
fn qr_code(snap: &Snapshot, peer: &Peer, path: &str, headers: &HeaderMap) -> Response<Body> {
    let name = path
        .strip_prefix("/_/qr/")
        .and_then(|rest| rest.strip_suffix(".svg"));
    let room = match name.map(|n| snap.routes.lookup(n)) {
        Some(Lookup::Room(room)) => room,
        _ => return not_found(snap, peer, path, headers),
    };
    let Some(base) = page::public_base(&snap.config, peer, headers) else {
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
    let mut resp = Response::new(Full::new(Bytes::from(svg)));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        page::POLICIES.image.clone(),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    // The link depends on the Host unless public_url is set.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `/_/favicon.svg`: the status page's icon.
fn favicon() -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(page::FAVICON.as_bytes())));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        page::POLICIES.image.clone(),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    resp
}

/// The OpenGraph card a link-preview fetcher gets for `/{room}`.
fn preview(
    gw: &Gateway,
    snap: &Snapshot,
    peer: &Peer,
    path: &str,
    name: &str,
    headers: &HeaderMap,
) -> Response<Body> {
    let (room, description) = match snap.routes.lookup(name) {
        Lookup::Room(room) => (room.name.as_str(), room.description.as_deref()),
        Lookup::Unlisted(name) => (name, None),
        Lookup::NotFound => {
            gw.metrics.not_found.inc();
            return not_found(snap, peer, path, headers);
        }
    };
    gw.metrics.previews.inc();
    let site = &snap.config.site;
    let page = PreviewPage {
        site_title: &site.title,
        room,
        description,
        url: page::public_base(&snap.config, peer, headers).map(|base| format!("{base}/{room}")),
        style: page::STYLE,
    };
    let mut resp = html(StatusCode::OK, page.render().unwrap_or_default());
    let headers = resp.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Same URL, another answer for browsers.
    headers.insert(header::VARY, HeaderValue::from_static("user-agent"));
    resp
}

fn metrics(gw: &Gateway) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(gw.metrics.encode())));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

/// A plain text response.
fn plain(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// An HTML response with the security headers every page carries.
fn html(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    html_headers(resp.headers_mut());
    resp
}

/// The content type and security headers every HTML answer carries.
fn html_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CONTENT_SECURITY_POLICY, page::POLICIES.page.clone());
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
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

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\" onclick='y'>&</a>"),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }
}
