//! The `notify:` section: where roomgate announces that a server went down
//! or came back (a webhook, a Matrix room, a Telegram chat).
//!
//! Its own section with its own types, checked like the rest of the file:
//! each value where it stands, the fields of one target against each other
//! at the target's mapping. Tokens come from a file or the environment
//! (`secret.rs`), never from the file itself.

use std::fmt;
use std::time::Duration;

use indexmap::IndexMap;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::scalars::{check_name, check_web_url, checked_str, PositiveDuration};
pub use super::secret::Secret;
use super::secret::{InlineToken, TokenEnv, TokenFile};

/// The most targets `notify:` may list; each has a queue and a task.
pub const MAX_TARGETS: usize = 10;

/// Default bound on one delivery attempt: connect, TLS, request, answer.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// The Bot API of Telegram, unless a target says otherwise.
pub const TELEGRAM_API: &str = "https://api.telegram.org";

/// The validated `notify:` section; without one, no targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// Whether the first probe result of a server after start or reload is
    /// announced too (when it is down). Off by default: a restart is not news.
    pub on_start: bool,
    /// Bound on one delivery attempt.
    pub timeout: Duration,
    /// Where messages go, in file order.
    pub targets: Vec<NotifyTarget>,
}

impl Default for Notify {
    fn default() -> Self {
        Notify {
            on_start: false,
            timeout: DEFAULT_NOTIFY_TIMEOUT,
            targets: Vec::new(),
        }
    }
}

/// One entry of `notify.targets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyTarget {
    /// Key in `targets:`; the `target` label of the metrics.
    pub name: String,
    /// Where and how messages are sent.
    pub kind: TargetKind,
}

/// The three kinds of target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    /// `POST url` of the event as JSON.
    Webhook {
        /// Where the event is posted.
        url: String,
        /// Sent as `Authorization: Bearer`, if set.
        token: Option<Secret>,
    },
    /// A message to a room through the client-server API.
    Matrix {
        /// The homeserver's base URL, no trailing slash.
        homeserver: String,
        /// The room id, `!abc:example.org` (or `!hash`, room version 12).
        room: String,
        /// The access token of the account that posts.
        token: Secret,
    },
    /// `sendMessage` of the Bot API.
    Telegram {
        /// The API's base URL, no trailing slash.
        api: String,
        /// A chat id (`-100123...`) or a channel's `@name`.
        chat: String,
        /// The bot token.
        token: Secret,
    },
}

impl TargetKind {
    /// `webhook`, `matrix` or `telegram`, as the file writes it.
    pub fn as_str(&self) -> &'static str {
        match self {
            TargetKind::Webhook { .. } => "webhook",
            TargetKind::Matrix { .. } => "matrix",
            TargetKind::Telegram { .. } => "telegram",
        }
    }

    /// The token, if the target has one.
    pub fn token(&self) -> Option<&Secret> {
        match self {
            TargetKind::Webhook { token, .. } => token.as_ref(),
            TargetKind::Matrix { token, .. } | TargetKind::Telegram { token, .. } => Some(token),
        }
    }
}

/// `notify:` as written.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping like `{ targets: { NAME: { kind: matrix, ... } } }`"
)]
pub(super) struct RawNotify {
    #[serde(default)]
    on_start: bool,
    #[serde(default)]
    timeout: Option<PositiveDuration>,
    #[serde(default)]
    targets: Option<TargetMap>,
}

impl RawNotify {
    pub(super) fn resolve(self) -> Notify {
        Notify {
            on_start: self.on_start,
            timeout: self.timeout.map_or(DEFAULT_NOTIFY_TIMEOUT, |d| d.0),
            targets: self
                .targets
                .map(|t| t.0)
                .unwrap_or_default()
                .into_iter()
                .map(|(name, kind)| NotifyTarget { name, kind })
                .collect(),
        }
    }
}

/// `notify.targets`: names to targets, at most [`MAX_TARGETS`].
struct TargetMap(IndexMap<String, TargetKind>);

impl<'de> Deserialize<'de> for TargetMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TargetMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of target names to targets")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TargetMap, A::Error> {
                let mut targets = IndexMap::new();
                while let Some(name) = map.next_key::<TargetName>()? {
                    if targets.len() == MAX_TARGETS {
                        return Err(de::Error::custom(format!(
                            "more than {MAX_TARGETS} notify targets; roomgate sends to at most {MAX_TARGETS}"
                        )));
                    }
                    if targets.contains_key(&name.0) {
                        return Err(de::Error::custom(format!(
                            "target `{}` is declared twice",
                            name.0
                        )));
                    }
                    targets.insert(name.0, map.next_value::<RawTarget>()?.0);
                }
                Ok(TargetMap(targets))
            }
            fn visit_unit<E: de::Error>(self) -> Result<TargetMap, E> {
                Ok(TargetMap(IndexMap::new()))
            }
        }
        d.deserialize_map(V)
    }
}

/// A key of `targets:`, shaped like a server name.
struct TargetName(String);

impl<'de> Deserialize<'de> for TargetName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a target name", |name| {
            check_name("target name", name)?;
            Ok(TargetName(name.to_owned()))
        })
    }
}

/// `kind:` of a target.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Webhook,
    Matrix,
    Telegram,
}

/// A target mapping as written; [`RawTarget`] checks that its fields fit
/// its kind.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a target mapping with `kind: webhook`, `matrix` or `telegram`"
)]
struct TargetFields {
    kind: Kind,
    #[serde(default)]
    url: Option<TargetUrl>,
    #[serde(default)]
    homeserver: Option<TargetUrl>,
    #[serde(default)]
    room: Option<MatrixRoom>,
    #[serde(default)]
    api: Option<TargetUrl>,
    #[serde(default)]
    chat: Option<TelegramChat>,
    /// Only ever an error: its `Deserialize` refuses every value.
    #[serde(default, rename = "token")]
    _token: Option<InlineToken>,
    #[serde(default)]
    token_file: Option<TokenFile>,
    #[serde(default)]
    token_env: Option<TokenEnv>,
}

/// A target whose fields agree with its kind.
struct RawTarget(TargetKind);

impl<'de> Deserialize<'de> for RawTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawTarget;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a target mapping with `kind: webhook`, `matrix` or `telegram`")
            }
            // Checked inside visit_map, so that errors between fields carry
            // the position of the target's mapping.
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawTarget, A::Error> {
                let fields = TargetFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                fields.resolve().map(RawTarget).map_err(de::Error::custom)
            }
        }
        d.deserialize_map(V)
    }
}

impl TargetFields {
    fn resolve(self) -> Result<TargetKind, String> {
        let (kind, allowed): (&str, &[&str]) = match self.kind {
            Kind::Webhook => ("webhook", &["url"]),
            Kind::Matrix => ("matrix", &["homeserver", "room"]),
            Kind::Telegram => ("telegram", &["api", "chat"]),
        };
        let set = [
            ("url", self.url.is_some()),
            ("homeserver", self.homeserver.is_some()),
            ("room", self.room.is_some()),
            ("api", self.api.is_some()),
            ("chat", self.chat.is_some()),
        ];
        if let Some((key, _)) = set.iter().find(|(k, s)| *s && !allowed.contains(k)) {
            return Err(format!(
                "`{key}` does not apply to a target of `kind: {kind}`; it takes {}",
                allowed
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let token = match (self.token_file, self.token_env) {
            (Some(_), Some(_)) => {
                return Err(
                    "give the token once: `token_file:` or `token_env:`, not both".to_owned(),
                )
            }
            (Some(f), None) => Some(f.0),
            (None, Some(e)) => Some(e.0),
            (None, None) => None,
        };
        let missing = |key: &str| format!("a target of `kind: {kind}` needs `{key}:`");
        let needs_token = || {
            format!(
                "a target of `kind: {kind}` needs a token: `token_file: PATH` or `token_env: NAME`"
            )
        };
        Ok(match self.kind {
            Kind::Webhook => TargetKind::Webhook {
                url: self.url.ok_or_else(|| missing("url"))?.0,
                token,
            },
            Kind::Matrix => TargetKind::Matrix {
                homeserver: base_url(self.homeserver.ok_or_else(|| missing("homeserver"))?)?,
                room: self.room.ok_or_else(|| missing("room"))?.0,
                token: token.ok_or_else(needs_token)?,
            },
            Kind::Telegram => TargetKind::Telegram {
                api: match self.api {
                    Some(api) => base_url(api)?,
                    None => TELEGRAM_API.to_owned(),
                },
                chat: self.chat.ok_or_else(|| missing("chat"))?.0,
                token: token.ok_or_else(needs_token)?,
            },
        })
    }
}

/// A base URL that API paths are appended to: no query or fragment, no
/// trailing slash.
fn base_url(url: TargetUrl) -> Result<String, String> {
    if url.0.contains(['?', '#']) {
        return Err(format!(
            "`{}` must not have a query or fragment: API paths are appended to it",
            url.0
        ));
    }
    Ok(url.0.trim_end_matches('/').to_owned())
}

/// The URL of a target: `https://`, or `http://` to this machine only
/// (a token or a message sent in clear over a network is anyone's).
struct TargetUrl(String);

impl<'de> Deserialize<'de> for TargetUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "an absolute https URL", |text| {
            let host = check_web_url(text)?;
            if text.starts_with("http://") && !is_loopback(&host) {
                return Err(format!(
                    "`{text}` must be https: tokens and messages are not sent in clear text (plain http is allowed to localhost, 127.0.0.0/8 and ::1 only)"
                ));
            }
            Ok(TargetUrl(text.to_owned()))
        })
    }
}

/// Whether `host` (as in a URL's authority) is this machine.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A Matrix room id: `!opaque:server`, or `!hash` since room version 12.
struct MatrixRoom(String);

impl<'de> Deserialize<'de> for MatrixRoom {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a Matrix room id like !abc:example.org", |text| {
            if text.starts_with('#') {
                return Err(format!(
                    "`{text}` is a room alias; give the room id (`!...:server`, in Element under Room settings > Advanced)"
                ));
            }
            // Room version 12 ids are `!` and a hash, without `:server`.
            let valid = text.len() > 1
                && text.starts_with('!')
                && text.len() <= 255
                && text.bytes().all(|b| b.is_ascii_graphic());
            if !valid {
                return Err(format!(
                    "`{text}` is not a Matrix room id like !abc:example.org"
                ));
            }
            Ok(MatrixRoom(text.to_owned()))
        })
    }
}

/// A Telegram chat: a numeric id or a public channel's `@name`.
struct TelegramChat(String);

impl<'de> Deserialize<'de> for TelegramChat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a chat id like -1001234567890 or @channel", |text| {
            let digits = text.strip_prefix('-').unwrap_or(text);
            let numeric = !digits.is_empty()
                && digits.len() <= 20
                && digits.bytes().all(|b| b.is_ascii_digit());
            let channel = text.strip_prefix('@').is_some_and(|name| {
                (5..=32).contains(&name.len())
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
            if !numeric && !channel {
                return Err(format!(
                    "`{text}` is not a Telegram chat id (like -1001234567890) or channel (like @chaosdorf)"
                ));
            }
            Ok(TelegramChat(text.to_owned()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in ["localhost", "127.0.0.1", "127.8.9.1", "[::1]", "LOCALHOST"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["example.org", "10.0.0.1", "[::2]", "localhost.example"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    use crate::config::Config;

    #[test]
    fn every_kind_resolves_and_no_output_shows_a_token() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("matrix-token"), "syt_matrix_secret\n").unwrap();
        std::env::set_var("ROOMGATE_UNIT_TELEGRAM_TOKEN", "123456:telegram-secret");
        let yaml = "servers: { a: { url: 'https://a.example' } }
notify:
  timeout: 4s
  targets:
    hook: { kind: webhook, url: 'http://127.0.0.1:9/hook?x=1' }
    admins:
      kind: matrix
      homeserver: https://matrix.example/
      room: '!abc:matrix.example'
      token_file: matrix-token
    channel: { kind: telegram, chat: '-1001234567890', token_env: ROOMGATE_UNIT_TELEGRAM_TOKEN }
";
        let config = Config::parse(yaml, "t.yaml", dir.path()).unwrap();
        let n = &config.notify;
        assert!(!n.on_start);
        assert_eq!(n.timeout, Duration::from_secs(4));
        let names: Vec<&str> = n.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["hook", "admins", "channel"]);
        match &n.targets[1].kind {
            TargetKind::Matrix {
                homeserver,
                room,
                token,
            } => {
                assert_eq!(homeserver, "https://matrix.example");
                assert_eq!(room, "!abc:matrix.example");
                assert_eq!(token.expose(), "syt_matrix_secret");
            }
            other => panic!("{other:?}"),
        }
        match &n.targets[2].kind {
            TargetKind::Telegram { api, token, .. } => {
                assert_eq!(api, TELEGRAM_API);
                assert_eq!(token.source(), "env ROOMGATE_UNIT_TELEGRAM_TOKEN");
            }
            other => panic!("{other:?}"),
        }
        let shown = format!("{config:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn a_token_is_given_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "abc").unwrap();
        let yaml = "servers: { a: { url: 'https://a.example' } }
notify:
  targets:
    hook: { kind: webhook, url: 'https://h.example', token_file: token, token_env: HOME }
";
        let err = Config::parse(yaml, "t.yaml", dir.path())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "t.yaml:4:11: notify.targets.hook: give the token once: `token_file:` or `token_env:`, not both"
        );
    }
}
