//! What a reverse proxy in front of us says about the request: the client's
//! address (`X-Forwarded-For`) and the public URL the client used
//! (`X-Forwarded-Proto`, `X-Forwarded-Host`, `X-Forwarded-Prefix`).
//!
//! These headers are only as trustworthy as whoever set them. A client can
//! send any of them itself, so they are honoured only when the connection
//! comes from a trusted proxy: a peer address inside `trusted_proxies` of
//! routes.yaml (loopback by default), or a unix socket peer, which can only
//! be a local process (file permissions decide which, see `--socket-mode`).
//!
//! Everything here works on borrowed header bytes and returns small `Copy`
//! values or slices, so the request path can ask for a client address
//! without allocating; only [`public_base`] builds a string.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderMap, HOST};
use ipnet::IpNet;

/// `X-Forwarded-For`: the chain of client and proxy addresses.
const X_FORWARDED_FOR: &str = "x-forwarded-for";
/// `X-Forwarded-Proto`: the scheme the client used (`http` or `https`).
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
/// `X-Forwarded-Host`: the host (and port) the client used.
const X_FORWARDED_HOST: &str = "x-forwarded-host";
/// `X-Forwarded-Prefix`: the path under which the proxy mounts us.
const X_FORWARDED_PREFIX: &str = "x-forwarded-prefix";

/// Longest `X-Forwarded-Prefix` we accept; a mount point is a few segments.
const MAX_PREFIX_LEN: usize = 256;

/// Longest host (with port) we accept; DNS names end at 253 bytes.
const MAX_HOST_LEN: usize = 260;

/// The other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP client and its address.
    Tcp(SocketAddr),
    /// A client on a unix socket: a local process, typically nginx.
    Unix,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(addr) => addr.fmt(f),
            Peer::Unix => f.write_str("unix"),
        }
    }
}

/// The proxies whose forwarding headers are believed (`trusted_proxies`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl Default for TrustedProxies {
    /// Loopback only: a proxy on the same host.
    fn default() -> Self {
        let v4: IpNet = ipnet::Ipv4Net::new(std::net::Ipv4Addr::LOCALHOST, 8)
            .expect("/8 is a valid IPv4 prefix")
            .into();
        let v6: IpNet = ipnet::Ipv6Net::new(std::net::Ipv6Addr::LOCALHOST, 128)
            .expect("/128 is a valid IPv6 prefix")
            .into();
        TrustedProxies(vec![v4, v6])
    }
}

impl TrustedProxies {
    /// Whether `ip` is inside one of the trusted networks. IPv4 addresses
    /// seen through an IPv6 socket (`::ffff:127.0.0.1`) count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Whether forwarding headers from `peer` are believed.
    pub fn trusts(&self, peer: &Peer) -> bool {
        match peer {
            Peer::Tcp(addr) => self.contains(addr.ip()),
            Peer::Unix => true,
        }
    }
}

/// Who sent a request, as far as we can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddr {
    /// An IP address: the TCP peer, or one named by a trusted proxy.
    Ip(IpAddr),
    /// A unix socket peer that named no client.
    Unix,
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAddr::Ip(ip) => ip.fmt(f),
            ClientAddr::Unix => f.write_str("unix"),
        }
    }
}

/// The client's address: the peer itself, unless the peer is a trusted
/// proxy; then the rightmost `X-Forwarded-For` entry that is not a trusted
/// proxy.
///
/// Walking from the right is what makes this safe: every trusted proxy
/// appends the address it saw, so entries right of the first untrusted one
/// were written by our proxies, and everything left of it may be made up by
/// the client. An entry that does not parse as an IP address ends the walk
/// at the last address we could verify.
pub fn client_addr(peer: &Peer, headers: &HeaderMap, trusted: &TrustedProxies) -> ClientAddr {
    let own = match peer {
        Peer::Tcp(addr) => ClientAddr::Ip(addr.ip().to_canonical()),
        Peer::Unix => ClientAddr::Unix,
    };
    if !trusted.trusts(peer) {
        return own;
    }
    let mut client = own;
    // Repeated header lines form one list, in order (RFC 9110 §5.3).
    for line in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        let Ok(line) = line.to_str() else {
            return client;
        };
        for entry in line.rsplit(',') {
            let Some(ip) = parse_forwarded_ip(entry.trim()) else {
                return client;
            };
            client = ClientAddr::Ip(ip);
            if !trusted.contains(ip) {
                return client;
            }
        }
    }
    client
}

/// An `X-Forwarded-For` entry: a bare address, or one with a port as some
/// proxies write it (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    entry
        .parse::<SocketAddr>()
        .ok()
        .map(|a| a.ip().to_canonical())
}

/// The path under which a trusted proxy mounts us (`/raum`), from
/// `X-Forwarded-Prefix`; empty when there is none, when the peer is not
/// trusted, or when the header is not a plain path (see [`valid_prefix`]).
/// Never ends with `/`.
pub fn prefix<'h>(peer: &Peer, headers: &'h HeaderMap, trusted: &TrustedProxies) -> &'h str {
    if !trusted.trusts(peer) {
        return "";
    }
    headers
        .get(X_FORWARDED_PREFIX)
        .and_then(|v| v.to_str().ok())
        .and_then(valid_prefix)
        .unwrap_or("")
}

/// A mount path fit to be pasted into a URL and an HTML attribute: it starts
/// with `/` (but not `//`, which a browser reads as another host), holds
/// only unreserved characters, `/` and `%XX` escapes, and no `.` or `..`
/// segment. Returns it without a trailing `/`.
fn valid_prefix(text: &str) -> Option<&str> {
    let text = text.trim();
    if text.len() > MAX_PREFIX_LEN || !text.starts_with('/') || text.starts_with("//") {
        return None;
    }
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let ok = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/')
            || (b == b'%'
                && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit));
        if !ok {
            return None;
        }
    }
    if text.split('/').any(|seg| seg == "." || seg == "..") {
        return None;
    }
    Some(text.trim_end_matches('/'))
}

/// A host (with optional port) fit for a URL and an HTML attribute: a DNS
/// name, an IPv4 address or a bracketed IPv6 address, optionally `:port`.
/// No user info, no path, no whitespace.
fn valid_host(text: &str) -> Option<&str> {
    let text = text.trim();
    if text.is_empty() || text.len() > MAX_HOST_LEN {
        return None;
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (text, None),
            _ => (&text[..v6.len() + 2], Some(after.strip_prefix(':')?)),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        port.parse::<u16>().ok()?;
    }
    if !host.starts_with('[') {
        let name_ok = !host.is_empty()
            && !host.starts_with(['.', '-'])
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !name_ok {
            return None;
        }
    }
    Some(text)
}

/// The URL under which clients reach us, e.g. `https://chaosdorf.example/raum`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicBase {
    /// The whole base URL, without a trailing `/`.
    url: String,
    /// Where the path (the prefix) starts in `url`.
    path_at: usize,
}

impl PublicBase {
    /// The base URL without a trailing `/`: `https://chaosdorf.example/raum`.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The path part, without a trailing `/`: `/raum`, or empty at the root.
    pub fn prefix(&self) -> &str {
        &self.url[self.path_at..]
    }
}

impl fmt::Display for PublicBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// The URL the client used to reach us, up to our own root: for QR codes,
/// link previews and anything else that needs an absolute link to us.
///
/// - scheme: `X-Forwarded-Proto` (`http` or `https`) from a trusted peer,
///   else `http` (we never terminate TLS ourselves);
/// - host: `X-Forwarded-Host` (its first entry) from a trusted peer, else
///   the authority of an absolute-form request target (`target_authority`,
///   `GET http://host/Lounge`), else `Host`. RFC 9112 §3.2.2: a target's
///   authority overrides Host, which is then ignored, even when the
///   authority is unfit (user info) and no host results;
/// - prefix: `X-Forwarded-Prefix` from a trusted peer (see [`prefix`]).
///
/// Headers that fail validation are ignored as if absent, so the result
/// never carries markup, quotes, whitespace or CR/LF and is safe in an HTML
/// attribute and a header. `None` when no valid host is known at all.
pub fn public_base(
    peer: &Peer,
    target_authority: Option<&str>,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> Option<PublicBase> {
    let trusted_peer = trusted.trusts(peer);
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let scheme = if trusted_peer {
        match header(X_FORWARDED_PROTO).map(|p| p.split(',').next().unwrap_or("").trim()) {
            Some(p) if p.eq_ignore_ascii_case("https") => "https",
            _ => "http",
        }
    } else {
        "http"
    };
    let forwarded_host = trusted_peer
        .then(|| header(X_FORWARDED_HOST))
        .flatten()
        .and_then(|h| valid_host(h.split(',').next().unwrap_or("")));
    let host = match (forwarded_host, target_authority) {
        (Some(host), _) => host,
        (None, Some(authority)) => valid_host(authority)?,
        (None, None) => header(HOST.as_str()).and_then(valid_host)?,
    };
    let prefix = prefix(peer, headers, trusted);
    let mut url = String::with_capacity(scheme.len() + 3 + host.len() + prefix.len());
    url.push_str(scheme);
    url.push_str("://");
    url.push_str(&host.to_ascii_lowercase());
    let path_at = url.len();
    url.push_str(prefix);
    Some(PublicBase { url, path_at })
}

#[cfg(test)]
mod tests;
