//! `routes.yaml`: the file format, its validation, and the validated [`Config`].
//!
//! Every rule of the design contract is checked while the file is
//! deserialized, inside the `Deserialize` impls of small newtypes (a room
//! name, a server reference, a duration). That is what gives each error its
//! position: `serde_yaml` stamps an error with the line and column of the
//! YAML node whose `Deserialize` impl raised it, so
//! `rooms: { Lounge: { servers: [chaosdorf, nope] } }` is reported at `nope`,
//! not at the top of the file.
//!
//! Checks that need to see more than one node (is this server declared? was
//! this room name used before?) read a per-parse `Context` held in a thread
//! local. The file is read twice for that: a first, lenient pass collects the
//! declared server names, so rooms may reference servers declared further
//! down; the second pass builds and checks everything in document order.
//!
//! The module is three files, read in this order:
//!
//! - this one: the validated types the rest of the gateway reads, and
//!   loading: reading the file, the two passes, and turning a `serde_yaml`
//!   error into `file:line:column: message`;
//! - `raw.rs`: the mappings and lists as the file writes them, and how they
//!   resolve into the types here, defaults filled in;
//! - `scalars.rs`: the single values, each checked where it stands: names,
//!   server references, URLs, durations, counts, statuses, networks, paths;
//! - `notify.rs`: the `notify:` section and its targets;
//! - `secret.rs`: their tokens, from a file or the environment;
//! - `bounds.rs`: what is checked before parsing: a regular file, its size,
//!   its nesting depth.
//!
//! Limits keep a file's cost bounded: [`MAX_FILE_BYTES`], [`MAX_NESTING`],
//! [`MAX_ROOMS`], [`MAX_SERVERS`], [`MAX_DURATION`].

mod bounds;
mod notify;
mod raw;
mod scalars;
mod secret;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use serde::Deserialize;

use raw::{RawFile, ServerNames};

/// The Chaosdorf routes.yaml, built into the binary so that `roomgate` with no
/// file at hand still serves something useful.
const BUILTIN_ROUTES: &str = include_str!("../../routes.yaml");

/// Paths the gateway answers itself; no room or alias may take their names.
/// `_` covers everything under `/_/`. Compared case-insensitively, like rooms.
pub(crate) const RESERVED_NAMES: &[&str] = &["healthz", "readyz", "metrics", "status.json", "_"];

/// Longest room name, alias or server name; long enough for any real room.
pub(crate) const MAX_NAME_LEN: usize = 64;

pub use bounds::{MAX_FILE_BYTES, MAX_NESTING};
pub use notify::{
    Notify, NotifyTarget, Secret, TargetKind, DEFAULT_NOTIFY_TIMEOUT, MAX_TARGETS, TELEGRAM_API,
};

/// The most rooms a file may list. The status page lists every room with
/// its links: at 500 rooms `GET /` answers about 440 KB (a 200,000-room
/// file made it 145 MB).
pub const MAX_ROOMS: usize = 500;

/// The most servers a file may declare: each has its own prober and a row
/// on the status page.
pub const MAX_SERVERS: usize = 50;

/// The longest duration (`interval`, `fast_interval`, `timeout`): one day.
/// Longer ones overflowed the prober's clock arithmetic (a panic, and a
/// server that stayed unknown); a check once a day is already rare.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

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
    /// Where state changes are announced (`notify.rs`).
    pub notify: Notify,
}

/// The `site:` section: texts shown on the status page.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of site settings")]
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
    /// Links shown with the intro: the space's own pages, guides.
    #[serde(default, deserialize_with = "scalars::links")]
    pub links: Vec<Link>,
    /// Language of the pages' own words (headings, states, times).
    #[serde(default, deserialize_with = "scalars::lang")]
    pub lang: crate::lang::Lang,
    /// The gateway's own public base URL (no trailing slash), for absolute
    /// short links in QR codes and link previews; derived from the request
    /// when not set.
    #[serde(default, deserialize_with = "scalars::public_url")]
    pub public_url: Option<String>,
    /// User-Agent substrings of link-preview fetchers, which get an
    /// OpenGraph page instead of the redirect.
    #[serde(default)]
    pub preview_agents: crate::preview::PreviewAgents,
}

/// An entry of `site.links`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The text of the link.
    pub label: String,
    /// An absolute http(s) URL.
    pub url: String,
}

/// Most entries `site.links` may have: a short list next to the intro.
pub(crate) const MAX_LINKS: usize = 20;

fn default_title() -> String {
    "roomgate".to_owned()
}

impl Default for Site {
    fn default() -> Self {
        Site {
            title: default_title(),
            intro: None,
            notice: None,
            links: Vec::new(),
            lang: Default::default(),
            public_url: None,
            preview_agents: Default::default(),
        }
    }
}

/// One Jitsi deployment.
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
    /// Whether and how the rooms' occupants are counted; `None` (the
    /// default) never asks, since a count tells the public who is meeting.
    pub occupancy: Option<Occupancy>,
}

impl Server {
    /// A `jitsi` server `primary` at an address nothing listens on, with
    /// the default check: the fixture of unit tests that script its probes.
    #[cfg(test)]
    pub(crate) fn test_primary() -> Server {
        Server {
            name: "primary".into(),
            url: "http://127.0.0.1:1".into(),
            label: "Primary".into(),
            check: Check {
                kind: CheckKind::Jitsi {
                    xmpp_domain: "localhost".into(),
                    depth: Depth::Bosh,
                    guest_domain: None,
                },
                interval: check_defaults::INTERVAL,
                fast_interval: check_defaults::FAST_INTERVAL,
                timeout: check_defaults::TIMEOUT,
                rise: check_defaults::RISE,
                fall: check_defaults::FALL,
            },
            extra_roots: vec![],
            occupancy: None,
        }
    }

    /// Whether `other` is probed exactly as this one is: same name, URL,
    /// check and trusted roots. A reload keeps such a server's prober and
    /// so its health state, whatever else (label, occupancy) changed.
    pub fn probed_alike(&self, other: &Server) -> bool {
        self.name == other.name
            && self.url == other.url
            && self.check == other.check
            && self.extra_roots == other.extra_roots
    }
}

/// `servers.X.occupancy`: counting the people in the server's rooms (only
/// counts: never names, nicks or JIDs). Only for `jitsi` checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occupancy {
    /// Time between two queries, each one guest session on the server; at
    /// least [`MIN_OCCUPANCY_INTERVAL`].
    pub interval: Duration,
    /// The conference MUC, where a room lives as `<room>@<muc_domain>`.
    pub muc_domain: String,
    /// Occupants of a live room that are not people (Jitsi's focus,
    /// Jicofo, sits in every room), subtracted from a count above zero.
    pub exclude: u32,
}

/// Defaults of `servers.X.occupancy`, as documented in the README.
mod occupancy_defaults {
    use std::time::Duration;
    /// Time between two queries.
    pub const INTERVAL: Duration = Duration::from_secs(30);
    /// Jicofo's one occupant per live room.
    pub const EXCLUDE: u32 = 1;
    /// The MUC of Jitsi's Debian packages; docker-jitsi-meet uses `muc.`.
    pub const MUC_PREFIX: &str = "conference.";
}

/// The shortest `occupancy.interval`: every query logs a guest in on
/// someone else's server, which should not happen more than a few times
/// a minute.
pub const MIN_OCCUPANCY_INTERVAL: Duration = Duration::from_secs(10);

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

/// Defaults of a check, as documented in the README.
mod check_defaults {
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

/// The two kinds of probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// `config.js`, then a BOSH session that must offer stream features,
    /// and as deep into a guest's way into a meeting as `depth` says.
    Jitsi {
        /// The deployment's XMPP domain: the `to` of the BOSH session.
        xmpp_domain: String,
        /// How far a probe goes.
        depth: Depth,
        /// Where guests log in, for `login` and `focus`, if not at
        /// `xmpp_domain` (deployments with a secure domain).
        guest_domain: Option<String>,
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

/// How far a `jitsi` probe goes, each depth including the ones before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Depth {
    /// A BOSH session with stream features: Prosody answers.
    Bosh,
    /// Plus an anonymous guest login and a bound resource: guests can join.
    Login,
    /// Plus a ping to the conference focus (Jicofo): meetings can start.
    Focus {
        /// The focus's address, `focus.<xmpp_domain>` unless set.
        focus_domain: String,
    },
}

impl Depth {
    /// The name routes.yaml gives it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Depth::Bosh => "bosh",
            Depth::Login => "login",
            Depth::Focus { .. } => "focus",
        }
    }
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
    ///
    /// The reason is part of the message and deliberately not the error's
    /// `source()`: error chains (`roomgate: {e:#}`) would print it twice.
    #[error("{file}: cannot read: {reason}")]
    Read {
        /// The file as named by the user.
        file: String,
        /// What the operating system said.
        reason: std::io::Error,
    },
    /// The path names something other than a regular file (a FIFO, a
    /// socket, a device), which is refused before reading: a FIFO would
    /// block the read until something wrote to it.
    #[error("{file}: cannot read: it is {what}, not a regular file")]
    NotAFile {
        /// The file as named by the user.
        file: String,
        /// What it is instead, like "a FIFO (named pipe)".
        what: &'static str,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("{file}: the file is larger than 256 KiB, the most roomgate reads; a routes file at the room and server limits fits well within it")]
    TooLarge {
        /// The file as named by the user.
        file: String,
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
    /// relative to the file's directory. Only a regular file of at most
    /// [`MAX_FILE_BYTES`] is read, and the read never waits (see
    /// `bounds.rs`); parsing takes time linear in its size. Blocking file
    /// I/O all the same: in the runtime, call it through `spawn_blocking`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = bounds::read_config(path, &file)?;
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
        // Before the parser, whose time grows with the square of the depth.
        if let Err(at) = bounds::check_nesting(text) {
            let (line, column) = within_text(text, at.line, at.column);
            return Err(ConfigError::Invalid {
                file: file.to_owned(),
                line,
                column,
                message: format!(
                    "the file is nested deeper than {MAX_NESTING} levels here; a routes file needs 5, and deeper files are refused before parsing"
                ),
            });
        }
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
