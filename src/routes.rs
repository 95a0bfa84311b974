//! The route table: request path -> room -> ready-made Location per server.
//!
//! Built once per config load, so that answering a redirect is a lookup and a
//! preformatted header. Every Location is a configured server URL plus a
//! validated room name: no byte of the request reaches scheme, host or port.

use std::collections::HashMap;

use http::HeaderValue;

use crate::config::{Config, WhenAllDown, MAX_NAME_LEN, RESERVED_NAMES};
use crate::metrics::{Metrics, RedirectCounter, RoomLabels};
use crate::preview::Matcher;

/// Metric label for all unlisted rooms together: requested names are
/// unbounded and must not become label values.
const UNLISTED_LABEL: &str = "(unlisted)";

/// The compiled routes of one config.
pub struct Routes {
    /// Listed rooms in config order.
    pub rooms: Vec<RouteRoom>,
    /// Lowercased room names and aliases -> index into `rooms`.
    index: HashMap<Box<[u8]>, usize>,
    /// Servers for unlisted rooms, when they are allowed.
    pub unlisted: Option<Vec<UnlistedTarget>>,
    /// 302, 303 or 307.
    pub redirect_status: http::StatusCode,
    /// What to answer when all servers of a room are down.
    pub when_all_down: WhenAllDown,
    /// Tells link-preview fetchers (`site.preview_agents`) from browsers.
    pub preview: Matcher,
}

/// A listed room with its targets.
pub struct RouteRoom {
    /// Configured spelling.
    pub name: String,
    /// What the room is for.
    pub description: Option<String>,
    /// Other names of the room.
    pub aliases: Vec<String>,
    /// Servers in preference order.
    pub targets: Vec<RouteTarget>,
}

/// One server of a room, with its Location ready.
pub struct RouteTarget {
    /// Index into the config's servers.
    pub server: usize,
    /// The room's name on that server.
    pub room: String,
    /// The room's URL on that server (without query).
    pub url: String,
    /// `url` as a header value, shared rather than copied per request.
    pub location: HeaderValue,
    /// Redirects to this room on this server.
    pub redirects: RedirectCounter,
}

impl RouteRoom {
    /// The room's servers (indices into the config's servers), in
    /// preference order.
    pub fn servers(&self) -> impl Iterator<Item = usize> + Clone + '_ {
        self.targets.iter().map(|t| t.server)
    }
}

/// A server for unlisted rooms.
pub struct UnlistedTarget {
    /// Index into the config's servers.
    pub server: usize,
    /// The server URL; the requested room name is appended.
    pub base: String,
    /// Redirects of unlisted rooms to this server.
    pub redirects: RedirectCounter,
}

/// What a room name resolves to.
pub enum Lookup<'a> {
    /// A listed room or one of its aliases.
    Room(&'a RouteRoom),
    /// A name that is not listed, while unlisted rooms are allowed; the name
    /// has been checked against the unlisted character set.
    Unlisted(&'a str),
    /// Nothing to redirect to.
    NotFound,
}

impl Routes {
    /// Compiles `config`, resolving per-route counters in `metrics`.
    pub fn compile(config: &Config, metrics: &Metrics) -> Routes {
        let mut index = HashMap::new();
        let rooms = config
            .rooms
            .iter()
            .enumerate()
            .map(|(i, room)| {
                for name in std::iter::once(&room.name).chain(&room.aliases) {
                    index.insert(name.to_ascii_lowercase().into_bytes().into(), i);
                }
                let targets = room
                    .targets
                    .iter()
                    .map(|t| {
                        let server = &config.servers[t.server];
                        let url = location(&server.url, &t.room, None);
                        let location = HeaderValue::from_str(&url)
                            .expect("server URLs and room names are validated");
                        RouteTarget {
                            server: t.server,
                            room: t.room.clone(),
                            location,
                            url,
                            redirects: metrics
                                .redirects
                                .get_or_create(&RoomLabels {
                                    room: room.name.clone(),
                                    server: server.name.clone(),
                                })
                                .clone(),
                        }
                    })
                    .collect();
                RouteRoom {
                    name: room.name.clone(),
                    description: room.description.clone(),
                    aliases: room.aliases.clone(),
                    targets,
                }
            })
            .collect();
        let unlisted = config.unlisted.allow.then(|| {
            config
                .unlisted
                .servers
                .iter()
                .map(|t| {
                    let server = &config.servers[t.server];
                    UnlistedTarget {
                        server: t.server,
                        base: server.url.clone(),
                        redirects: metrics
                            .redirects
                            .get_or_create(&RoomLabels {
                                room: UNLISTED_LABEL.to_owned(),
                                server: server.name.clone(),
                            })
                            .clone(),
                    }
                })
                .collect()
        });
        Routes {
            rooms,
            index,
            unlisted,
            redirect_status: http::StatusCode::from_u16(config.defaults.redirect_status)
                .unwrap_or(http::StatusCode::FOUND),
            when_all_down: config.defaults.when_all_down,
            preview: Matcher::new(&config.site.preview_agents),
        }
    }

    /// Resolves a room name (the path without slashes), case-insensitively.
    pub fn lookup<'a>(&'a self, name: &'a str) -> Lookup<'a> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Lookup::NotFound;
        }
        // Lowercase on the stack: the common path allocates nothing.
        let mut buf = [0u8; MAX_NAME_LEN];
        let lower = &mut buf[..name.len()];
        lower.copy_from_slice(name.as_bytes());
        lower.make_ascii_lowercase();
        if let Some(&i) = self.index.get(&*lower) {
            return Lookup::Room(&self.rooms[i]);
        }
        if self.unlisted.is_some() && is_unlisted_name(name) {
            return Lookup::Unlisted(name);
        }
        Lookup::NotFound
    }
}

/// The room segment of a request path: `/Lounge` and `/Lounge/` give
/// `Lounge`; anything with more segments, or an empty one, gives `None`.
pub fn room_segment(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let name = rest.strip_suffix('/').unwrap_or(rest);
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

/// Unlisted rooms are held to `[A-Za-z0-9_-]{1,64}`: no dots, so no `..`,
/// and nothing that needs encoding. The gateway's own path names are not
/// rooms in any spelling (`/HEALTHZ` must not become a Jitsi room).
pub fn is_unlisted_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !RESERVED_NAMES.iter().any(|r| r.eq_ignore_ascii_case(name))
}

/// `base/room`, plus `?query` when the request had one. The query is passed
/// on unchanged (Jitsi reads options such as `?jwt=` from it); a fragment is
/// never sent by browsers, and they keep the user's own across a redirect.
pub fn location(base: &str, room: &str, query: Option<&str>) -> String {
    let mut url = String::with_capacity(base.len() + room.len() + 2 + query.map_or(0, str::len));
    url.push_str(base);
    url.push('/');
    url.push_str(room);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn routes(yaml: &str) -> Routes {
        let config = Config::parse(yaml, "test.yaml", Path::new(".")).unwrap();
        Routes::compile(&config, &Metrics::new())
    }

    const YAML: &str = "
servers:
  a: { url: 'https://a.example/' }
  b: { url: 'https://b.example:8443/jitsi' }
rooms:
  Lounge: { aliases: [treff] }
  Cave: { servers: [b, { server: a, room: ChaosCave }] }
";

    fn name(l: Lookup<'_>) -> String {
        match l {
            Lookup::Room(r) => r.name.clone(),
            Lookup::Unlisted(n) => format!("unlisted:{n}"),
            Lookup::NotFound => "404".into(),
        }
    }

    #[test]
    fn rooms_and_aliases_match_case_insensitively() {
        let r = routes(YAML);
        for (path, expect) in [
            ("Lounge", "Lounge"),
            ("lounge", "Lounge"),
            ("LOUNGE", "Lounge"),
            ("TrEfF", "Lounge"),
            ("cave", "Cave"),
            ("Caves", "404"),
            ("", "404"),
            ("ChaosCave", "404"),
        ] {
            assert_eq!(name(r.lookup(path)), expect, "{path}");
        }
    }

    #[test]
    fn locations_use_the_configured_spelling_and_server() {
        let r = routes(YAML);
        let Lookup::Room(lounge) = r.lookup("lounge") else {
            panic!()
        };
        assert_eq!(lounge.targets[0].url, "https://a.example/Lounge");
        assert_eq!(lounge.targets[1].url, "https://b.example:8443/jitsi/Lounge");
        let Lookup::Room(cave) = r.lookup("CAVE") else {
            panic!()
        };
        assert_eq!(cave.targets[0].url, "https://b.example:8443/jitsi/Cave");
        assert_eq!(cave.targets[1].url, "https://a.example/ChaosCave");
        assert_eq!(cave.targets[1].location, "https://a.example/ChaosCave");
    }

    #[test]
    fn location_appends_the_query_unchanged() {
        assert_eq!(
            location("https://a.example", "Lounge", None),
            "https://a.example/Lounge"
        );
        assert_eq!(
            location("https://a.example", "Lounge", Some("jwt=x.y.z&lang=de")),
            "https://a.example/Lounge?jwt=x.y.z&lang=de"
        );
        assert_eq!(
            location("https://a.example", "Lounge", Some("")),
            "https://a.example/Lounge?"
        );
    }

    #[test]
    fn room_segments() {
        assert_eq!(room_segment("/Lounge"), Some("Lounge"));
        assert_eq!(room_segment("/Lounge/"), Some("Lounge"));
        for path in [
            "/",
            "//",
            "//evil.example",
            "/Lounge//",
            "/a/b",
            "Lounge",
            "",
            "/\\evil",
        ] {
            let seg = room_segment(path);
            assert!(seg.is_none() || seg == Some("\\evil"), "{path}: {seg:?}");
        }
    }

    #[test]
    fn unlisted_rooms_only_when_allowed_and_well_formed() {
        let closed = routes(YAML);
        assert_eq!(name(closed.lookup("Elsewhere")), "404");
        let open = routes(&format!(
            "{YAML}unlisted: {{ allow: true, servers: [b] }}\n"
        ));
        assert_eq!(name(open.lookup("Elsewhere")), "unlisted:Elsewhere");
        assert_eq!(name(open.lookup("lounge")), "Lounge");
        for bad in [
            "a.b",
            "..",
            "a%2F",
            "a b",
            "ä",
            &"x".repeat(65),
            "HEALTHZ",
            "Metrics",
            "_",
        ] {
            assert_eq!(name(open.lookup(bad)), "404", "{bad}");
        }
        assert_eq!(
            open.unlisted.as_ref().unwrap()[0].base,
            "https://b.example:8443/jitsi"
        );
    }
}
