//! `routes.yaml`: the file format, its validation, and the validated [`Config`].
//!
//! Every rule of the design contract is checked while the file is
//! deserialized, inside the `Deserialize` impls of small newtypes
//! ([`RoomName`], [`ServerRef`], [`PositiveDuration`], ...). That is what
//! gives each error its position: `serde_yaml` stamps an error with the line
//! and column of the YAML node whose `Deserialize` impl raised it, so
//! `rooms: { Lounge: { servers: [chaosdorf, nope] } }` is reported at `nope`,
//! not at the top of the file.
//!
//! Checks that need to see more than one node (is this server declared? was
//! this room name used before?) read a per-parse [`Context`] held in a thread
//! local. The file is read twice for that: a first, lenient pass collects the
//! declared server names, so rooms may reference servers declared further
//! down; the second pass builds and checks everything in document order.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// The Chaosdorf routes.yaml, built into the binary so that `roomgate` with no
/// file at hand still serves something useful.
pub const BUILTIN_ROUTES: &str = include_str!("../routes.yaml");

/// Paths the gateway answers itself; no room or alias may take their names.
/// `_` covers everything under `/_/`. Compared case-insensitively, like rooms.
pub const RESERVED_NAMES: &[&str] = &["healthz", "readyz", "metrics", "status.json", "_"];

/// Longest room name, alias or server name; long enough for any real room.
pub const MAX_NAME_LEN: usize = 64;

/// A validated configuration: every name resolved, every default filled in.
#[derive(Debug, Clone)]
pub struct Config {
    /// Texts for the status page.
    pub site: Site,
    /// Jitsi deployments in file order.
    pub servers: Vec<Server>,
    /// Settings for rooms that name no servers, and for the redirect itself.
    pub defaults: Defaults,
    /// What happens with room names that are not listed.
    pub unlisted: Unlisted,
    /// Listed rooms in file order.
    pub rooms: Vec<Room>,
    /// Peers whose `X-Forwarded-*` headers are believed (see `forwarded.rs`).
    pub trusted_proxies: crate::forwarded::TrustedProxies,
}

/// The `site:` section: texts shown on the status page.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Page title.
    #[serde(default = "default_title")]
    pub title: String,
    /// Paragraph under the title.
    #[serde(default)]
    pub intro: Option<String>,
    /// Banner, for example a pointer to the house rules.
    #[serde(default)]
    pub notice: Option<String>,
    /// The gateway's own public base URL (no trailing slash), for absolute
    /// short links in QR codes and link previews; derived from the request
    /// when not set.
    #[serde(default, deserialize_with = "public_url")]
    pub public_url: Option<String>,
    /// User-Agent substrings of link-preview fetchers, which get an
    /// OpenGraph page instead of the redirect.
    #[serde(default)]
    pub preview_agents: crate::preview::PreviewAgents,
}

/// `site.public_url`: validated like a server URL, with its position.
fn public_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    ServerUrl::deserialize(d).map(|url| Some(url.base))
}

fn default_title() -> String {
    "roomgate".to_owned()
}

impl Default for Site {
    fn default() -> Self {
        Site {
            title: default_title(),
            intro: None,
            notice: None,
            public_url: None,
            preview_agents: Default::default(),
        }
    }
}

/// One Jitsi deployment. Two servers are the same for a reload exactly when
/// they compare equal, which is when their health state may be kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Key in `servers:`; what rooms refer to.
    pub name: String,
    /// Base URL without a trailing slash: scheme, host, port, path prefix.
    pub url: String,
    /// Name for people; the server name when not set.
    pub label: String,
    /// How and how often the server is probed.
    pub check: Check,
    /// Extra trusted roots from `ca_file`, in addition to the webpki roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

/// Probe settings of one server, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What a probe does.
    pub kind: CheckKind,
    /// Time between probes while the state is settled.
    pub interval: Duration,
    /// Time between probes while a state change is being confirmed.
    pub fast_interval: Duration,
    /// Bound on one whole probe.
    pub timeout: Duration,
    /// Consecutive successes that turn down into up.
    pub rise: u32,
    /// Consecutive failures that turn up into down.
    pub fall: u32,
}

/// The two kinds of probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// `config.js`, then a BOSH session that must offer stream features.
    Jitsi {
        /// The `to` of the BOSH session: the deployment's XMPP domain.
        xmpp_domain: String,
    },
    /// A plain `GET url+path`.
    Http {
        /// Path (and query) below the server URL, starting with `/`.
        path: String,
        /// Statuses that count as success.
        expect_status: StatusRange,
        /// Text the body must contain, if set.
        body_contains: Option<String>,
    },
}

/// An inclusive range of HTTP statuses, from `200` or `"200-399"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    /// Lowest accepted status.
    pub min: u16,
    /// Highest accepted status.
    pub max: u16,
}

impl StatusRange {
    /// Whether `status` lies in the range.
    pub fn contains(&self, status: u16) -> bool {
        (self.min..=self.max).contains(&status)
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// The `defaults:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// Preference order for rooms that name no servers.
    pub servers: Vec<Target>,
    /// 302, 303 or 307.
    pub redirect_status: u16,
    /// What to answer when every server of a room is down.
    pub when_all_down: WhenAllDown,
}

/// Policy for a room whose servers are all down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenAllDown {
    /// Redirect to the room's first server anyway: it may be back by the time
    /// the browser gets there, and a Jitsi page explains itself.
    First,
    /// Answer 503 with a page listing every link of the room.
    Page,
}

/// The `unlisted:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlisted {
    /// Whether `/AnyName` is forwarded too.
    pub allow: bool,
    /// Servers for unlisted rooms, in preference order; the room keeps the
    /// requested spelling on each (`room` is empty here).
    pub servers: Vec<Target>,
}

/// A listed room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    /// The configured spelling, used in every Location.
    pub name: String,
    /// What the room is for.
    pub description: Option<String>,
    /// Other short names that lead to the room.
    pub aliases: Vec<String>,
    /// Servers in preference order, with the room's name on each.
    pub targets: Vec<Target>,
}

/// One place a room can be held: a server and the room's name there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Index into [`Config::servers`].
    pub server: usize,
    /// Room name on that server.
    pub room: String,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file as named by the user.
        file: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file was read but breaks a rule; the position points at the node.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        /// The file as named by the user.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong and, where it helps, how to fix it.
        message: String,
    },
}

impl Config {
    /// Reads and validates the file at `path`. Relative `ca_file`s are taken
    /// relative to the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, &file, base_dir)
    }

    /// The routes built into the binary.
    pub fn builtin() -> Config {
        Config::parse(BUILTIN_ROUTES, "<built-in routes.yaml>", Path::new("."))
            .expect("the built-in routes.yaml is checked by a unit test")
    }

    /// Validates `text`; `file` names it in errors and `base_dir` anchors
    /// relative `ca_file` paths.
    pub fn parse(text: &str, file: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let invalid = |err: serde_yaml::Error| invalid(file, text, err);
        // First pass: only the declared server names, so that references can
        // be checked wherever they stand.
        let names: ServerNames = serde_yaml::from_str(text).map_err(invalid)?;
        let context = Context {
            servers: names.servers.keys().cloned().collect(),
            base_dir: base_dir.to_owned(),
            ..Context::default()
        };
        let raw: RawFile = with_context(context, || serde_yaml::from_str(text)).map_err(invalid)?;
        Ok(raw.resolve())
    }

    /// The index of the server called `name`.
    pub fn server_index(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.name == name)
    }
}

/// Turns a serde_yaml error into `file:line:column: message`.
fn invalid(file: &str, text: &str, err: serde_yaml::Error) -> ConfigError {
    let (line, column) = match err.location().filter(|_| !text.trim().is_empty()) {
        Some(loc) => (loc.line(), loc.column()),
        // Errors without a mark are about the document as a whole.
        None => (1, 1),
    };
    let mut message = err.to_string();
    // serde_yaml appends the position in prose; ours leads the line instead.
    for suffix in [
        format!(" at line {line} column {column}"),
        format!(" at position {}", err.location().map_or(0, |l| l.index())),
    ] {
        if let Some(i) = message.find(&suffix) {
            message.replace_range(i..i + suffix.len(), "");
        }
    }
    if text.trim().is_empty() || message.starts_with("EOF while parsing") {
        message = "the file is empty; it needs at least a `servers:` section".to_owned();
    }
    let (line, column) = within_text(text, line, column);
    ConfigError::Invalid {
        file: file.to_owned(),
        line,
        column,
        message,
    }
}

/// Keeps a position inside `text`. libyaml reports some errors at the end of
/// the input one line past the last (fuzzing found `{!`, reported at 2:1);
/// just past the end of the last line says the same, and every editor can go
/// there. Lines break at LF, CRLF and a lone CR, as in YAML 1.2 (5.4).
fn within_text(text: &str, line: usize, column: usize) -> (usize, usize) {
    let text = text.replace("\r\n", "\n");
    let lines: Vec<&str> = text.split(['\n', '\r']).collect();
    let last = lines.len();
    if line > last {
        return (last, lines[last - 1].chars().count() + 1);
    }
    let line = line.max(1);
    (line, column.clamp(1, lines[line - 1].chars().count() + 1))
}

/// What the cross-node checks of one parse know and remember.
#[derive(Default)]
struct Context {
    /// Server names declared in `servers:` (from the first pass), in order.
    servers: Vec<String>,
    /// Server names seen so far in the second pass, to catch duplicates.
    servers_seen: HashSet<String>,
    /// Lowercased room names and aliases seen so far -> their spelling.
    rooms_seen: HashMap<String, String>,
    /// Directory that relative `ca_file` paths start from.
    base_dir: PathBuf,
}

thread_local! {
    /// The context of the parse running on this thread, if any.
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// Runs `f` with `context` installed, and removes it afterwards even if `f`
/// unwinds, so that a later parse never sees stale names.
fn with_context<T>(context: Context, f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            CONTEXT.with(|c| c.borrow_mut().take());
        }
    }
    CONTEXT.with(|c| *c.borrow_mut() = Some(context));
    let _reset = Reset;
    f()
}

/// Runs `f` on the current context. Outside a parse (which only happens if a
/// newtype is deserialized on its own) the cross-node checks are skipped.
fn in_context<T: Default>(f: impl FnOnce(&mut Context) -> T) -> T {
    CONTEXT.with(|c| c.borrow_mut().as_mut().map(f).unwrap_or_default())
}

/// First pass: the server names and nothing else.
#[derive(Deserialize)]
#[serde(expecting = "a mapping with a `servers:` section")]
struct ServerNames {
    servers: IndexMap<String, IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with a `servers:` section")]
struct RawFile {
    #[serde(default)]
    site: Option<Site>,
    servers: ServerMap,
    #[serde(default)]
    defaults: Option<RawDefaults>,
    #[serde(default)]
    unlisted: Option<RawUnlisted>,
    #[serde(default)]
    rooms: Option<IndexMap<RoomName, RawRoom>>,
    #[serde(default)]
    trusted_proxies: Option<Vec<TrustedNet>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    url: ServerUrl,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    check: Option<RawCheck>,
    #[serde(default)]
    ca_file: Option<CaFile>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    #[serde(default)]
    servers: Option<ServerList<false>>,
    #[serde(default)]
    redirect_status: Option<RedirectStatus>,
    #[serde(default)]
    when_all_down: Option<WhenAllDown>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUnlisted {
    #[serde(default)]
    allow: bool,
    #[serde(default)]
    servers: Option<ServerList<false>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
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
    fn resolve(self) -> Config {
        let servers: Vec<Server> = self
            .servers
            .0
            .into_iter()
            .map(|(name, raw)| {
                let url = raw.url;
                let check = raw.check.unwrap_or_default().resolve(&url);
                Server {
                    label: raw.label.unwrap_or_else(|| name.0.clone()),
                    name: name.0,
                    url: url.base,
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
        }
    }
}

/// Deserializes a scalar through `check`, inside the visitor, so that an
/// error carries the scalar's position (see the module docs).
fn checked_str<'de, D, T>(
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
fn check_name(what: &str, name: &str) -> Result<(), String> {
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
struct ServerName(String);

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
struct RoomName(String);

impl<'de> Deserialize<'de> for RoomName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a room name", |name| {
            claim_room_name("room name", name).map(RoomName)
        })
    }
}

/// An entry of a room's `aliases:`.
struct AliasName(String);

impl<'de> Deserialize<'de> for AliasName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "an alias", |name| {
            claim_room_name("alias", name).map(AliasName)
        })
    }
}

/// A reference to a declared server, by name.
struct KnownServer(String);

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

/// A room's name on another server: same shape as a room name, but it claims
/// nothing in our own namespace.
struct RemoteRoomName(String);

impl<'de> Deserialize<'de> for RemoteRoomName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a room name", |name| {
            check_name("room name", name)?;
            Ok(RemoteRoomName(name.to_owned()))
        })
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
                while let Some((name, server)) = map.next_entry::<ServerName, RawServer>()? {
                    servers.insert(name, server);
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

/// A validated server URL.
struct ServerUrl {
    /// The URL without a trailing slash.
    base: String,
    /// Its host, the default XMPP domain.
    host: String,
}

impl<'de> Deserialize<'de> for ServerUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "an absolute http(s) URL", parse_server_url)
    }
}

fn parse_server_url(text: &str) -> Result<ServerUrl, String> {
    let bad = |why: &str| format!("`{text}` {why}");
    let uri: http::Uri = text
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
    if uri.query().is_some() || text.contains('#') {
        return Err(bad(
            "must not have a query or fragment: rooms are appended to it as a path",
        ));
    }
    Ok(ServerUrl {
        base: text.trim_end_matches('/').to_owned(),
        host: authority.host().to_owned(),
    })
}

/// An entry of `trusted_proxies`: an address (`127.0.0.1`, `::1`) or a
/// network (`10.0.0.0/8`, `fd00::/8`).
struct TrustedNet(ipnet::IpNet);

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

/// A duration greater than zero, written like `30s`, `1m 30s` or `500ms`.
#[derive(Clone, Copy)]
struct PositiveDuration(Duration);

impl<'de> Deserialize<'de> for PositiveDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a duration like 30s", |text| {
            let duration = humantime::parse_duration(text).map_err(|_| {
                format!("`{text}` is not a positive duration; write it with a unit, like 30s, 2m or 500ms")
            })?;
            if duration.is_zero() {
                return Err("the duration must be greater than zero".to_owned());
            }
            Ok(PositiveDuration(duration))
        })
    }
}

/// A count of at least one (`rise`, `fall`).
#[derive(Clone, Copy)]
struct Count(u32);

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
struct RedirectStatus(u16);

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
struct CaFile(Vec<CertificateDer<'static>>);

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
struct XmppDomain(String);

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
struct ProbePath(String);

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

/// `kind:` of a check.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Jitsi,
    Http,
}

/// The `check:` mapping as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
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

/// Defaults of a check, as documented in the README.
pub mod check_defaults {
    use std::time::Duration;
    /// Time between probes while the state is settled.
    pub const INTERVAL: Duration = Duration::from_secs(30);
    /// Time between probes while a change is being confirmed.
    pub const FAST_INTERVAL: Duration = Duration::from_secs(2);
    /// Bound on one whole probe.
    pub const TIMEOUT: Duration = Duration::from_secs(3);
    /// Successes that turn down into up.
    pub const RISE: u32 = 2;
    /// Failures that turn up into down.
    pub const FALL: u32 = 2;
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
        if kind == Kind::Http && self.xmpp_domain.is_some() {
            return Err(
                "`xmpp_domain` applies to checks of `kind: jitsi` only; this check is of kind http"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

impl RawCheck {
    fn resolve(self, url: &ServerUrl) -> Check {
        let f = self.0;
        let kind = match f.kind.unwrap_or(Kind::Jitsi) {
            Kind::Jitsi => CheckKind::Jitsi {
                xmpp_domain: f.xmpp_domain.map_or_else(|| url.host.clone(), |d| d.0),
            },
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

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
