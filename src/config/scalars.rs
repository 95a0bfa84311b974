//! The single values of `routes.yaml`, each a newtype whose `Deserialize`
//! impl checks it where it stands, so that its error carries its position.
//!
//! Names (servers, rooms, aliases) also read the parse's `Context`: a server
//! name may be declared once, a room name or alias claimed once, and a
//! reference must name a declared server. Values that need no context
//! (URLs, durations, counts, statuses, networks, paths, certificates) are
//! checked on their own.

use std::fmt;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::{
    in_context, Link, StatusRange, MAX_DURATION, MAX_LINKS, MAX_NAME_LEN, MIN_OCCUPANCY_INTERVAL,
    RESERVED_NAMES,
};

/// Deserializes a scalar through `check`, inside the visitor, so that an
/// error carries the scalar's position (see the module docs).
pub(super) fn checked_str<'de, D, T>(
    d: D,
    expecting: &'static str,
    check: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<F> {
        expecting: &'static str,
        check: F,
    }
    impl<'de, T, F: FnOnce(&str) -> Result<T, String>> Visitor<'de> for V<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.check)(v).map_err(E::custom)
        }
        // YAML reads `2024:` or `room: 42` as numbers; as names they are text.
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
    }
    d.deserialize_str(V { expecting, check })
}

/// Checks the shape shared by room names, aliases and server names.
pub(super) fn check_name(what: &str, name: &str) -> Result<(), String> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty() || name.len() > MAX_NAME_LEN || !valid_chars {
        return Err(format!(
            "{what} `{name}` must be 1 to {MAX_NAME_LEN} characters of A-Z, a-z, 0-9, `.`, `_` and `-`"
        ));
    }
    // `.` and `..` are path segments with a meaning of their own: a browser
    // would never send them as a room.
    if name.bytes().all(|b| b == b'.') {
        return Err(format!("{what} `{name}` must contain more than dots"));
    }
    Ok(())
}

/// A key of `servers:`.
#[derive(PartialEq, Eq, Hash)]
pub(super) struct ServerName(pub(super) String);

impl<'de> Deserialize<'de> for ServerName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a server name", |name| {
            check_name("server name", name)?;
            let fresh = in_context(|c| Some(c.servers_seen.insert(name.to_owned())));
            if fresh == Some(false) {
                return Err(format!("server `{name}` is declared twice"));
            }
            Ok(ServerName(name.to_owned()))
        })
    }
}

/// Claims a room name or alias for the file, refusing reserved paths and
/// names already taken (case-insensitively, as Jitsi lowercases rooms).
fn claim_room_name(what: &str, name: &str) -> Result<String, String> {
    check_name(what, name)?;
    let lower = name.to_ascii_lowercase();
    if RESERVED_NAMES.contains(&lower.as_str()) {
        return Err(format!(
            "{what} `{name}` collides with the gateway's own path /{lower}; choose another name"
        ));
    }
    let taken = in_context(|c| match c.rooms_seen.get(&lower) {
        Some(first) => Some(first.clone()),
        None => {
            c.rooms_seen.insert(lower, name.to_owned());
            None
        }
    });
    if let Some(first) = taken {
        return Err(format!(
            "{what} `{name}` is already taken by `{first}` (room names and aliases compare case-insensitively)"
        ));
    }
    Ok(name.to_owned())
}

/// A key of `rooms:`.
#[derive(PartialEq, Eq, Hash)]
pub(super) struct RoomName(pub(super) String);

impl<'de> Deserialize<'de> for RoomName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a room name", |name| {
            claim_room_name("room name", name).map(RoomName)
        })
    }
}

/// An entry of a room's `aliases:`.
pub(super) struct AliasName(pub(super) String);

impl<'de> Deserialize<'de> for AliasName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "an alias", |name| {
            claim_room_name("alias", name).map(AliasName)
        })
    }
}

/// A reference to a declared server, by name.
pub(super) struct KnownServer(pub(super) String);

impl<'de> Deserialize<'de> for KnownServer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a server name", |name| {
            let declared = in_context(|c| {
                if c.servers.iter().any(|s| s == name) {
                    None
                } else {
                    Some(c.servers.join(", "))
                }
            });
            match declared {
                None => Ok(KnownServer(name.to_owned())),
                Some(list) => Err(format!(
                    "unknown server `{name}`; the servers declared under `servers:` are: {list}"
                )),
            }
        })
    }
}

/// A room's name on another server: same shape as a room name, but it claims
/// nothing in our own namespace.
pub(super) struct RemoteRoomName(pub(super) String);

impl<'de> Deserialize<'de> for RemoteRoomName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a room name", |name| {
            check_name("room name", name)?;
            Ok(RemoteRoomName(name.to_owned()))
        })
    }
}

/// A validated server URL.
pub(super) struct ServerUrl {
    /// The URL without a trailing slash.
    pub(super) base: String,
    /// Its host, the default XMPP domain.
    pub(super) host: String,
}

impl<'de> Deserialize<'de> for ServerUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "an absolute http(s) URL", parse_server_url)
    }
}

/// The checks every URL of the file passes: absolute http(s), a host, no
/// user name or password. Returns the host.
pub(super) fn check_web_url(text: &str) -> Result<String, String> {
    let bad = |why: &str| format!("`{text}` {why}");
    // The fragment is the browser's; `http::Uri` refuses `#`, so it is
    // checked without it.
    let uri: http::Uri = text
        .split('#')
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|e| bad(&format!("is not a valid URL ({e})")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("must be an absolute http:// or https:// URL")),
    }
    let authority = uri.authority().ok_or_else(|| bad("must name a host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("must not carry a user name or password"));
    }
    if authority.host().is_empty() {
        return Err(bad("must name a host"));
    }
    Ok(authority.host().to_owned())
}

fn parse_server_url(text: &str) -> Result<ServerUrl, String> {
    let host = check_web_url(text)?;
    if text.contains(['?', '#']) {
        return Err(format!(
            "`{text}` must not have a query or fragment: rooms are appended to it as a path"
        ));
    }
    Ok(ServerUrl {
        base: text.trim_end_matches('/').to_owned(),
        host,
    })
}

/// `site.lang`: one of the supported languages.
pub(super) fn lang<'de, D: Deserializer<'de>>(d: D) -> Result<crate::lang::Lang, D::Error> {
    checked_str(d, "a language code like en", |code| {
        crate::lang::Lang::from_code(code).ok_or_else(|| {
            let codes: Vec<&str> = crate::lang::SUPPORTED.iter().map(|(c, _)| *c).collect();
            format!(
                "`{code}` is not a language of the pages; supported are: {}",
                codes.join(", ")
            )
        })
    })
}

/// Longest label of a `site.links` entry.
const MAX_LINK_LABEL: usize = 200;

/// An entry of `site.links` as written.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a link like `{ label: TEXT, url: https://... }`"
)]
struct RawLink {
    label: LinkLabel,
    url: LinkUrl,
}

/// The text of a link: not blank, not a page long.
struct LinkLabel(String);

impl<'de> Deserialize<'de> for LinkLabel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "the text of the link", |text| {
            let text = text.trim();
            if text.is_empty() {
                return Err("a link needs a label to show".to_owned());
            }
            if text.chars().count() > MAX_LINK_LABEL {
                return Err(format!(
                    "a link label is longer than {MAX_LINK_LABEL} characters"
                ));
            }
            Ok(LinkLabel(text.to_owned()))
        })
    }
}

/// The address of a link: checked like a server URL, but a page may have
/// a query and a fragment.
struct LinkUrl(String);

impl<'de> Deserialize<'de> for LinkUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "an absolute http(s) URL", |text| {
            check_web_url(text)?;
            Ok(LinkUrl(text.to_owned()))
        })
    }
}

/// `site.links`: a list of at most [`MAX_LINKS`] links.
pub(super) fn links<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Link>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<Link>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of links like `- { label: TEXT, url: https://... }`")
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Link>, A::Error> {
            let mut links = Vec::new();
            while let Some(link) = seq.next_element::<RawLink>()? {
                if links.len() == MAX_LINKS {
                    return Err(de::Error::custom(format!(
                        "more than {MAX_LINKS} links; the list is shown next to the intro"
                    )));
                }
                links.push(Link {
                    label: link.label.0,
                    url: link.url.0,
                });
            }
            Ok(links)
        }
    }
    d.deserialize_seq(V)
}

/// `site.public_url`: validated like a server URL, with its position.
pub(super) fn public_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    ServerUrl::deserialize(d).map(|url| Some(url.base))
}

/// An entry of `trusted_proxies`: an address (`127.0.0.1`, `::1`) or a
/// network (`10.0.0.0/8`, `fd00::/8`).
pub(super) struct TrustedNet(pub(super) ipnet::IpNet);

impl<'de> Deserialize<'de> for TrustedNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "an IP address or a network like 10.0.0.0/8", |text| {
            let text = text.trim();
            if let Ok(ip) = text.parse::<std::net::IpAddr>() {
                return Ok(TrustedNet(ip.into()));
            }
            let net: ipnet::IpNet = text.parse().map_err(|_| {
                format!("`{text}` is not an IP address or a network like 10.0.0.0/8 or fd00::/8")
            })?;
            // `10.0.0.1/8` is usually a typo for one host or for the network;
            // guessing either could trust far more, or less, than meant.
            if net.addr() != net.network() {
                return Err(format!(
                    "`{text}` has host bits set: write the network `{}` or the address `{}`",
                    net.trunc(),
                    net.addr()
                ));
            }
            Ok(TrustedNet(net))
        })
    }
}

/// A duration greater than zero and at most [`MAX_DURATION`], written like
/// `30s`, `1m 30s` or `500ms`.
#[derive(Clone, Copy)]
pub(super) struct PositiveDuration(pub(super) Duration);

impl<'de> Deserialize<'de> for PositiveDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a duration like 30s", |text| {
            positive_duration(text).map(PositiveDuration)
        })
    }
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|_| {
        format!("`{text}` is not a positive duration; write it with a unit, like 30s, 2m or 500ms")
    })?;
    if duration.is_zero() {
        return Err("the duration must be greater than zero".to_owned());
    }
    if duration > MAX_DURATION {
        return Err(format!(
            "`{text}` is longer than {}, the longest duration roomgate accepts",
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(duration)
}

/// `occupancy.interval`: a duration of at least [`MIN_OCCUPANCY_INTERVAL`].
#[derive(Clone, Copy)]
pub(super) struct OccupancyInterval(pub(super) Duration);

impl<'de> Deserialize<'de> for OccupancyInterval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a duration like 30s", |text| {
            let duration = positive_duration(text)?;
            if duration < MIN_OCCUPANCY_INTERVAL {
                return Err(format!(
                    "`{text}` is shorter than {}, the shortest occupancy interval: every query logs a guest in on the server",
                    humantime::format_duration(MIN_OCCUPANCY_INTERVAL)
                ));
            }
            Ok(OccupancyInterval(duration))
        })
    }
}

/// `occupancy.exclude`: occupants that are not people, 0 or more.
#[derive(Clone, Copy)]
pub(super) struct Exclude(pub(super) u32);

impl<'de> Deserialize<'de> for Exclude {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a whole number of 0 or more", |text| {
            text.parse::<u32>()
                .map(Exclude)
                .map_err(|_| format!("`{text}` is not a whole number of 0 or more"))
        })
    }
}

/// A count of at least one (`rise`, `fall`).
#[derive(Clone, Copy)]
pub(super) struct Count(pub(super) u32);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a whole number of at least 1", |text| {
            match text.parse::<u32>() {
                Ok(0) => Err("must be at least 1".to_owned()),
                Ok(n) => Ok(Count(n)),
                Err(_) => Err(format!("`{text}` is not a whole number of at least 1")),
            }
        })
    }
}

/// `redirect_status`: only temporary redirects.
pub(super) struct RedirectStatus(pub(super) u16);

impl<'de> Deserialize<'de> for RedirectStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "302, 303 or 307", |text| {
            match text {
            "302" | "303" | "307" => Ok(RedirectStatus(text.parse().unwrap_or(302))),
            // RFC 9110 §15.4.2: permanent redirects may be cached without
            // limit, and a cached redirect never sees a failover.
            "301" | "308" => Err(format!(
                "{text} is a permanent redirect: browsers would cache it and never follow a failover; use 302, 303 or 307"
            )),
            _ => Err(format!("must be 302, 303 or 307, not `{text}`")),
        }
        })
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a status like 200 or a range like 200-399", |text| {
            let status = |s: &str| match s.trim().parse::<u16>() {
                Ok(n) if (100..=599).contains(&n) => Ok(n),
                _ => Err(format!(
                    "`{text}` is not an HTTP status (100 to 599) or a range like 200-399"
                )),
            };
            let range = match text.split_once('-') {
                Some((lo, hi)) => StatusRange {
                    min: status(lo)?,
                    max: status(hi)?,
                },
                None => {
                    let n = status(text)?;
                    StatusRange { min: n, max: n }
                }
            };
            if range.min > range.max {
                return Err(format!("status range `{text}` is empty"));
            }
            Ok(range)
        })
    }
}

/// `ca_file`: PEM certificates, read at load so that a bad file is reported
/// with its position instead of failing every probe later.
pub(super) struct CaFile(pub(super) Vec<CertificateDer<'static>>);

impl<'de> Deserialize<'de> for CaFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a path to a PEM file", |text| {
            let base = in_context(|c| Some(c.base_dir.clone())).unwrap_or_default();
            let path = base.join(text);
            let pem = std::fs::read(&path)
                .map_err(|e| format!("ca_file `{}` cannot be read: {e}", path.display()))?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("ca_file `{}` is not valid PEM: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "ca_file `{}` holds no `BEGIN CERTIFICATE` block",
                    path.display()
                ));
            }
            Ok(CaFile(certs))
        })
    }
}

/// The XMPP domain goes into the BOSH request body, so it is held to the
/// characters of a host name.
pub(super) struct XmppDomain(pub(super) String);

impl<'de> Deserialize<'de> for XmppDomain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a domain name", |text| {
            let valid = !text.is_empty()
                && text.len() <= 253
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
            if valid {
                Ok(XmppDomain(text.to_owned()))
            } else {
                Err(format!("`{text}` is not a domain name"))
            }
        })
    }
}

/// The probe path of an `http` check.
pub(super) struct ProbePath(pub(super) String);

impl<'de> Deserialize<'de> for ProbePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a path starting with /", |text| {
            if !text.starts_with('/') || text.parse::<http::uri::PathAndQuery>().is_err() {
                return Err(format!("`{text}` must be a URL path starting with `/`"));
            }
            Ok(ProbePath(text.to_owned()))
        })
    }
}
