//! The file as written: its sections, mappings and lists, before defaults
//! are filled in and server names become indices.
//!
//! The single values inside them are the newtypes of `scalars.rs`, each
//! checked where it stands; the types here add the checks that span one
//! mapping or list (a server listed twice, a check key that does not fit the
//! check's kind), which is why some of them deserialize by hand. After a
//! successful parse [`RawFile::resolve`] cannot fail.

use std::fmt;

use indexmap::IndexMap;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::scalars::{
    AliasName, CaFile, Count, Exclude, KnownServer, OccupancyInterval, PositiveDuration, ProbePath,
    RedirectStatus, RemoteRoomName, RoomName, ServerName, ServerUrl, TrustedNet, XmppDomain,
};
use super::{
    check_defaults, occupancy_defaults, Check, CheckKind, Config, Defaults, Depth, Occupancy, Room,
    Server, Site, StatusRange, Target, Unlisted, WhenAllDown, MAX_ROOMS, MAX_SERVERS,
};

/// First pass: the server names and nothing else.
#[derive(Deserialize)]
#[serde(expecting = "a mapping with a `servers:` section")]
pub(super) struct ServerNames {
    /// Every key of `servers:`, valid or not; the second pass judges them.
    pub(super) servers: IndexMap<String, IgnoredAny>,
}

/// Second pass: the whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with a `servers:` section")]
pub(super) struct RawFile {
    #[serde(default)]
    site: Option<Site>,
    servers: ServerMap,
    #[serde(default)]
    defaults: Option<RawDefaults>,
    #[serde(default)]
    unlisted: Option<RawUnlisted>,
    #[serde(default)]
    rooms: Option<RoomMap>,
    #[serde(default)]
    trusted_proxies: Option<Vec<TrustedNet>>,
    #[serde(default)]
    notify: Option<super::notify::RawNotify>,
}

/// An entry of `servers:` as written.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a server mapping with at least `url:`"
)]
struct ServerFields {
    url: ServerUrl,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    check: Option<RawCheck>,
    #[serde(default)]
    ca_file: Option<CaFile>,
    #[serde(default)]
    occupancy: Option<RawOccupancy>,
}

/// An entry of `servers:` whose fields agree with each other.
struct RawServer(ServerFields);

impl<'de> Deserialize<'de> for RawServer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawServer;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a server mapping with at least `url:`")
            }
            // As for `check:`: the error of a key that needs another one
            // is given the position of the server's mapping.
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawServer, A::Error> {
                let fields = ServerFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let kind = fields.check.as_ref().and_then(|c| c.0.kind);
                if matches!(fields.occupancy, Some(RawOccupancy::On(_))) && kind == Some(Kind::Http)
                {
                    return Err(de::Error::custom(
                        "`occupancy` needs a check of `kind: jitsi`: the count comes from the Jitsi server's XMPP conference service; this server's check is of kind http",
                    ));
                }
                Ok(RawServer(fields))
            }
        }
        d.deserialize_map(V)
    }
}

/// `occupancy:` as written: `true`, `false`, or a mapping of settings
/// (which turns it on; `{}` takes every default).
enum RawOccupancy {
    Off,
    On(OccupancyFields),
}

/// The settings of an `occupancy:` mapping.
#[derive(Deserialize, Default)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `interval:`, `muc_domain:` or `exclude:`"
)]
struct OccupancyFields {
    #[serde(default)]
    interval: Option<OccupancyInterval>,
    #[serde(default)]
    muc_domain: Option<XmppDomain>,
    #[serde(default)]
    exclude: Option<Exclude>,
}

impl<'de> Deserialize<'de> for RawOccupancy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawOccupancy;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`true`, `false` or a mapping like `{ interval: 30s, exclude: 1 }`")
            }
            fn visit_bool<E: de::Error>(self, on: bool) -> Result<RawOccupancy, E> {
                Ok(if on {
                    RawOccupancy::On(OccupancyFields::default())
                } else {
                    RawOccupancy::Off
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawOccupancy, A::Error> {
                OccupancyFields::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawOccupancy::On)
            }
        }
        d.deserialize_any(V)
    }
}

impl RawOccupancy {
    /// The settings, defaults filled in; `check` is already resolved.
    fn resolve(self, check: &Check) -> Option<Occupancy> {
        let RawOccupancy::On(f) = self else {
            return None;
        };
        let CheckKind::Jitsi { xmpp_domain, .. } = &check.kind else {
            // Refused while parsing (see `RawServer`).
            return None;
        };
        Some(Occupancy {
            interval: f.interval.map_or(occupancy_defaults::INTERVAL, |i| i.0),
            muc_domain: f.muc_domain.map_or_else(
                || format!("{}{xmpp_domain}", occupancy_defaults::MUC_PREFIX),
                |d| d.0,
            ),
            exclude: f.exclude.map_or(occupancy_defaults::EXCLUDE, |e| e.0),
        })
    }
}

/// The `defaults:` section.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a mapping of defaults")]
struct RawDefaults {
    #[serde(default)]
    servers: Option<ServerList<false>>,
    #[serde(default)]
    redirect_status: Option<RedirectStatus>,
    #[serde(default)]
    when_all_down: Option<WhenAllDown>,
}

/// The `unlisted:` section.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a mapping like `{ allow: true }`")]
struct RawUnlisted {
    #[serde(default)]
    allow: bool,
    #[serde(default)]
    servers: Option<ServerList<false>>,
}

/// An entry of `rooms:`.
#[derive(Deserialize, Default)]
#[serde(
    deny_unknown_fields,
    expecting = "a room mapping with `description:`, `aliases:` or `servers:`"
)]
struct RawRoom {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    aliases: Vec<AliasName>,
    #[serde(default)]
    servers: Option<ServerList<true>>,
}

impl RawFile {
    /// Fills in defaults and resolves server names to indices. Everything that
    /// can fail has failed during deserialization, with a position.
    pub(super) fn resolve(self) -> Config {
        let servers: Vec<Server> = self
            .servers
            .0
            .into_iter()
            .map(|(name, RawServer(raw))| {
                let url = raw.url;
                let check = raw.check.unwrap_or_default().resolve(&url);
                Server {
                    label: raw.label.unwrap_or_else(|| name.0.clone()),
                    name: name.0,
                    url: url.base,
                    occupancy: raw.occupancy.and_then(|o| o.resolve(&check)),
                    check,
                    extra_roots: raw.ca_file.map(|f| f.0).unwrap_or_default(),
                }
            })
            .collect();
        let index = |name: &str| {
            servers
                .iter()
                .position(|s| s.name == name)
                .expect("server references are checked while parsing")
        };
        let targets = |list: &[ServerRef], room: &str| -> Vec<Target> {
            list.iter()
                .map(|r| Target {
                    server: index(&r.server),
                    room: r.room.clone().unwrap_or_else(|| room.to_owned()),
                })
                .collect()
        };

        let raw_defaults = self.defaults.unwrap_or_default();
        let default_refs: Vec<ServerRef> = match raw_defaults.servers {
            Some(list) => list.0,
            None => servers
                .iter()
                .map(|s| ServerRef {
                    server: s.name.clone(),
                    room: None,
                })
                .collect(),
        };
        let defaults = Defaults {
            servers: targets(&default_refs, ""),
            redirect_status: raw_defaults.redirect_status.map_or(302, |s| s.0),
            when_all_down: raw_defaults.when_all_down.unwrap_or(WhenAllDown::First),
        };
        let raw_unlisted = self.unlisted.unwrap_or_default();
        let unlisted = Unlisted {
            allow: raw_unlisted.allow,
            servers: match &raw_unlisted.servers {
                Some(list) => targets(&list.0, ""),
                None => defaults.servers.clone(),
            },
        };
        let rooms = self
            .rooms
            .map(|r| r.0)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, raw)| {
                let own = raw.servers.map(|list| list.0);
                Room {
                    targets: targets(own.as_deref().unwrap_or(&default_refs), &name.0),
                    description: raw.description,
                    aliases: raw.aliases.into_iter().map(|a| a.0).collect(),
                    name: name.0,
                }
            })
            .collect();
        Config {
            site: self.site.unwrap_or_default(),
            servers,
            defaults,
            unlisted,
            rooms,
            trusted_proxies: self.trusted_proxies.map_or_else(Default::default, |nets| {
                crate::forwarded::TrustedProxies(nets.into_iter().map(|n| n.0).collect())
            }),
            notify: self.notify.map(|n| n.resolve()).unwrap_or_default(),
        }
    }
}

/// The `servers:` mapping: at least one server.
struct ServerMap(IndexMap<ServerName, RawServer>);

impl<'de> Deserialize<'de> for ServerMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ServerMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of server names to servers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ServerMap, A::Error> {
                let mut servers = IndexMap::new();
                while let Some(name) = map.next_key::<ServerName>()? {
                    if servers.len() == MAX_SERVERS {
                        return Err(de::Error::custom(format!(
                            "more than {MAX_SERVERS} servers; roomgate probes at most {MAX_SERVERS} (each has its own prober and status row)"
                        )));
                    }
                    servers.insert(name, map.next_value::<RawServer>()?);
                }
                if servers.is_empty() {
                    return Err(de::Error::custom("`servers:` needs at least one server"));
                }
                Ok(ServerMap(servers))
            }
            fn visit_unit<E: de::Error>(self) -> Result<ServerMap, E> {
                Err(E::custom("`servers:` needs at least one server"))
            }
        }
        d.deserialize_map(V)
    }
}

/// The `rooms:` mapping: at most [`MAX_ROOMS`] rooms, so that the status
/// page, which lists them all, stays small.
struct RoomMap(IndexMap<RoomName, RawRoom>);

impl<'de> Deserialize<'de> for RoomMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RoomMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RoomMap, A::Error> {
                let mut rooms = IndexMap::new();
                while let Some(name) = map.next_key::<RoomName>()? {
                    if rooms.len() == MAX_ROOMS {
                        return Err(de::Error::custom(format!(
                            "more than {MAX_ROOMS} rooms; roomgate serves at most {MAX_ROOMS} (the status page lists every one)"
                        )));
                    }
                    rooms.insert(name, map.next_value::<RawRoom>()?);
                }
                Ok(RoomMap(rooms))
            }
            fn visit_unit<E: de::Error>(self) -> Result<RoomMap, E> {
                Ok(RoomMap(IndexMap::new()))
            }
        }
        d.deserialize_map(V)
    }
}

/// One entry of a server list: `chaosdorf` or `{ server: ffmuc, room: X }`.
#[derive(Debug, Clone)]
struct ServerRef {
    server: String,
    /// The room's name on that server, when it differs.
    room: Option<String>,
}

impl<'de> Deserialize<'de> for ServerRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ServerRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a server name or `{ server: NAME, room: ROOM }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ServerRef, E> {
                let known = KnownServer::deserialize(de::value::StrDeserializer::<E>::new(v))?;
                Ok(ServerRef {
                    server: known.0,
                    room: None,
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ServerRef, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ServerRef, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ServerRef, A::Error> {
                let (mut server, mut room) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "server" if server.is_none() => {
                            server = Some(map.next_value::<KnownServer>()?.0)
                        }
                        "room" if room.is_none() => {
                            room = Some(map.next_value::<RemoteRoomName>()?.0)
                        }
                        "server" | "room" => {
                            return Err(de::Error::custom(format!("`{key}` is given twice")))
                        }
                        other => return Err(de::Error::unknown_field(other, &["server", "room"])),
                    }
                }
                let server = server.ok_or_else(|| de::Error::missing_field("server"))?;
                Ok(ServerRef { server, room })
            }
        }
        d.deserialize_any(V)
    }
}

/// A non-empty list of servers, each at most once. Only a room's own list
/// may rename the room on a server (`RENAME`): in `defaults` or `unlisted` a
/// rename would send every room to that one remote room.
struct ServerList<const RENAME: bool>(Vec<ServerRef>);

impl<'de, const RENAME: bool> Deserialize<'de> for ServerList<RENAME> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const RENAME: bool>;
        impl<'de, const RENAME: bool> Visitor<'de> for V<RENAME> {
            type Value = ServerList<RENAME>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of server names")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut list: Vec<ServerRef> = Vec::new();
                while let Some(entry) = seq.next_element::<ServerRef>()? {
                    if !RENAME && entry.room.is_some() {
                        return Err(de::Error::custom(format!(
                            "`room:` renames a room on server `{}` and belongs in a room's own `servers:` list, not here",
                            entry.server
                        )));
                    }
                    if list.iter().any(|r| r.server == entry.server) {
                        return Err(de::Error::custom(format!(
                            "server `{}` is listed twice",
                            entry.server
                        )));
                    }
                    list.push(entry);
                }
                if list.is_empty() {
                    return Err(de::Error::custom("the list needs at least one server"));
                }
                Ok(ServerList(list))
            }
        }
        d.deserialize_seq(V::<RENAME>)
    }
}

/// `kind:` of a check.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Jitsi,
    Http,
}

/// `depth:` of a `jitsi` check.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum DepthName {
    Bosh,
    Login,
    Focus,
}

/// The `check:` mapping as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a check mapping")]
struct CheckFields {
    #[serde(default)]
    kind: Option<Kind>,
    #[serde(default)]
    path: Option<ProbePath>,
    #[serde(default)]
    expect_status: Option<StatusRange>,
    #[serde(default)]
    body_contains: Option<String>,
    #[serde(default)]
    xmpp_domain: Option<XmppDomain>,
    #[serde(default)]
    depth: Option<DepthName>,
    #[serde(default)]
    guest_domain: Option<XmppDomain>,
    #[serde(default)]
    focus_domain: Option<XmppDomain>,
    #[serde(default)]
    interval: Option<PositiveDuration>,
    #[serde(default)]
    fast_interval: Option<PositiveDuration>,
    #[serde(default)]
    timeout: Option<PositiveDuration>,
    #[serde(default)]
    rise: Option<Count>,
    #[serde(default)]
    fall: Option<Count>,
}

/// A `check:` mapping whose fields agree with each other.
#[derive(Default)]
struct RawCheck(CheckFields);

impl<'de> Deserialize<'de> for RawCheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawCheck;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a check mapping")
            }
            // Validating inside visit_map gives cross-field errors the
            // position of the `check:` mapping itself.
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawCheck, A::Error> {
                let fields = CheckFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                fields.validate().map_err(de::Error::custom)?;
                Ok(RawCheck(fields))
            }
        }
        d.deserialize_map(V)
    }
}

impl CheckFields {
    fn validate(&self) -> Result<(), String> {
        let interval = self.interval.map_or(check_defaults::INTERVAL, |d| d.0);
        let timeout = self.timeout.map_or(check_defaults::TIMEOUT, |d| d.0);
        if timeout >= interval {
            return Err(format!(
                "timeout ({}) must be below interval ({}), or probes would overlap",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ));
        }
        let kind = self.kind.unwrap_or(Kind::Jitsi);
        let http_only = [
            ("path", self.path.is_some()),
            ("expect_status", self.expect_status.is_some()),
            ("body_contains", self.body_contains.is_some()),
        ];
        if kind == Kind::Jitsi {
            if let Some((key, _)) = http_only.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "`{key}` applies to checks of `kind: http` only; this check is of kind jitsi"
                ));
            }
        }
        let jitsi_only = [
            ("xmpp_domain", self.xmpp_domain.is_some()),
            ("depth", self.depth.is_some()),
            ("guest_domain", self.guest_domain.is_some()),
            ("focus_domain", self.focus_domain.is_some()),
        ];
        if kind == Kind::Http {
            if let Some((key, _)) = jitsi_only.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "`{key}` applies to checks of `kind: jitsi` only; this check is of kind http"
                ));
            }
        }
        let depth = self.depth.unwrap_or(DepthName::Bosh);
        if self.guest_domain.is_some() && depth == DepthName::Bosh {
            return Err(
                "`guest_domain` applies to `depth: login` and `depth: focus`; this check's depth \
                 is bosh, which logs nobody in"
                    .to_owned(),
            );
        }
        if self.focus_domain.is_some() && depth != DepthName::Focus {
            return Err(format!(
                "`focus_domain` applies to `depth: focus` only; this check's depth is {}",
                if depth == DepthName::Login {
                    "login"
                } else {
                    "bosh"
                }
            ));
        }
        Ok(())
    }
}

impl RawCheck {
    fn resolve(self, url: &ServerUrl) -> Check {
        let f = self.0;
        let kind = match f.kind.unwrap_or(Kind::Jitsi) {
            Kind::Jitsi => {
                let xmpp_domain = f.xmpp_domain.map_or_else(|| url.host.clone(), |d| d.0);
                let depth = match f.depth.unwrap_or(DepthName::Bosh) {
                    DepthName::Bosh => Depth::Bosh,
                    DepthName::Login => Depth::Login,
                    DepthName::Focus => Depth::Focus {
                        focus_domain: f
                            .focus_domain
                            .map_or_else(|| format!("focus.{xmpp_domain}"), |d| d.0),
                    },
                };
                CheckKind::Jitsi {
                    xmpp_domain,
                    depth,
                    guest_domain: f.guest_domain.map(|d| d.0),
                }
            }
            Kind::Http => CheckKind::Http {
                path: f.path.map_or_else(|| "/".to_owned(), |p| p.0),
                expect_status: f
                    .expect_status
                    .unwrap_or(StatusRange { min: 200, max: 200 }),
                body_contains: f.body_contains,
            },
        };
        Check {
            kind,
            interval: f.interval.map_or(check_defaults::INTERVAL, |d| d.0),
            fast_interval: f
                .fast_interval
                .map_or(check_defaults::FAST_INTERVAL, |d| d.0),
            timeout: f.timeout.map_or(check_defaults::TIMEOUT, |d| d.0),
            rise: f.rise.map_or(check_defaults::RISE, |c| c.0),
            fall: f.fall.map_or(check_defaults::FALL, |c| c.0),
        }
    }
}
