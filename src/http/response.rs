//! Every answer's status, headers and body bytes, in one place.
//!
//! Handlers decide *what* to answer; this module decides how it looks on the
//! wire: content type, caching, and the security headers of HTML answers
//! (DESIGN: every HTML page carries a strict Content-Security-Policy and
//! `X-Content-Type-Options: nosniff`).

use askama::Template;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::page::{self, RedirectPage};

/// The response body type.
pub type Body = Full<Bytes>;

const NOSNIFF: (HeaderName, HeaderValue) = (
    header::X_CONTENT_TYPE_OPTIONS,
    HeaderValue::from_static("nosniff"),
);
const NO_STORE: (HeaderName, HeaderValue) =
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
const HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");

/// A response with `status`, `body` and `headers`.
fn answer<const N: usize>(
    status: StatusCode,
    body: impl Into<Bytes>,
    headers: [(HeaderName, HeaderValue); N],
) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    let map: &mut HeaderMap = resp.headers_mut();
    map.reserve(N);
    for (name, value) in headers {
        map.insert(name, value);
    }
    resp
}

/// The redirect of a room to `url` (whose header form is `location`).
///
/// `Cache-Control: no-store`, because the answer changes with health and no
/// browser or proxy may keep it. The body is a bare link for clients that do
/// not follow redirects, so its policy allows nothing at all.
pub fn redirect(status: StatusCode, location: HeaderValue, url: &str) -> Response<Body> {
    let body = RedirectPage { url }.render().unwrap_or_default();
    answer(
        status,
        body,
        [
            (header::LOCATION, location),
            NO_STORE,
            (header::CONTENT_TYPE, HTML),
            (
                header::CONTENT_SECURITY_POLICY,
                page::POLICIES.redirect.clone(),
            ),
            NOSNIFF,
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
    )
}

/// A plain text answer.
pub fn plain(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    answer(
        status,
        body,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            NOSNIFF,
        ],
    )
}

/// `plain`, not to be kept by caches (it changes with reloads or health).
pub fn plain_no_store(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = plain(status, body);
    resp.headers_mut().insert(NO_STORE.0, NO_STORE.1);
    resp
}

/// 405 for methods other than GET and HEAD.
pub fn method_not_allowed() -> Response<Body> {
    let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    resp
}

/// An HTML page with the stylesheet-only policy, not to be cached: the 404
/// page, the page of links when every server is down, link previews.
pub fn page(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    html(status, body, page::POLICIES.page.clone())
}

/// The status page, whose policy also allows its script and `fetch`.
pub fn status_page(body: impl Into<Bytes>) -> Response<Body> {
    html(StatusCode::OK, body, page::POLICIES.status.clone())
}

/// An HTML answer with `policy` and the headers every HTML answer carries.
fn html(status: StatusCode, body: impl Into<Bytes>, policy: HeaderValue) -> Response<Body> {
    answer(
        status,
        body,
        [
            (header::CONTENT_TYPE, HTML),
            (header::CONTENT_SECURITY_POLICY, policy),
            NOSNIFF,
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            NO_STORE,
        ],
    )
}

/// The page of links when every server of a room is down (503): try again
/// in a while.
pub fn all_down(body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = page(StatusCode::SERVICE_UNAVAILABLE, body);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
    resp
}

/// A link-preview card: the same URL answers browsers with a redirect.
pub fn preview(body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = page(StatusCode::OK, body);
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("user-agent"));
    resp
}

/// `/status.json`.
pub fn json(body: impl Into<Bytes>) -> Response<Body> {
    answer(
        StatusCode::OK,
        body,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            NO_STORE,
            NOSNIFF,
        ],
    )
}

/// An SVG image (a QR code, the favicon) with `cache_control`.
pub fn svg(body: impl Into<Bytes>, cache_control: &'static str) -> Response<Body> {
    answer(
        StatusCode::OK,
        body,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/svg+xml"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                page::POLICIES.image.clone(),
            ),
            NOSNIFF,
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(cache_control),
            ),
        ],
    )
}

/// `/metrics` in the OpenMetrics text format.
pub fn metrics(body: String) -> Response<Body> {
    answer(
        StatusCode::OK,
        body,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
    )
}
