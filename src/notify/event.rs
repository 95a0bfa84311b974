//! What a notification says: the [`Event`] (the JSON a webhook receives,
//! documented in docs/notifications.md) and its one-paragraph text in the
//! site's language, which Matrix and Telegram get.
//!
//! [`describe`] is pure: a change, the config and every server's state in,
//! an event (or nothing) out, so the rules of what is announced are tested
//! without a network.

use std::time::SystemTime;

use serde::Serialize;

use super::text::{text, Facts, Words};
use crate::config::{Config, Room};
use crate::decision::{self, Choice};
use crate::health::{Change, State};

/// Version of the event's JSON shape; raised only when a field changes
/// meaning or goes away (new fields may appear without it).
pub const EVENT_VERSION: u32 = 1;

/// One announcement: a server went down or came back, or a test.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// [`EVENT_VERSION`].
    pub version: u32,
    /// `down`, `up` or `test`.
    pub kind: &'static str,
    /// The server that changed; `null` for a test.
    pub server: Option<ServerInfo>,
    /// Its state before (`unknown` for a first result, with `on_start`).
    pub old_state: Option<State>,
    /// Its state now.
    pub new_state: Option<State>,
    /// When it changed (RFC 3339, UTC).
    pub since: Option<String>,
    /// When the state before began.
    pub old_since: Option<String>,
    /// Why the probe that made the change failed.
    pub error: Option<String>,
    /// Listed rooms that go somewhere else since this change.
    pub moved: Vec<Moved>,
    /// Listed rooms of this server whose every server is down now.
    pub all_down: Vec<String>,
    /// The gateway's status page (`site.public_url`), if configured.
    pub public_url: Option<String>,
    /// The message, in the site's language.
    pub text: String,
}

/// A server as the event names it.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    /// Key in `servers:`.
    pub name: String,
    /// Display name.
    pub label: String,
    /// Base URL.
    pub url: String,
}

/// A room that moved, and where it goes now.
#[derive(Debug, Clone, Serialize)]
pub struct Moved {
    /// The room's name.
    pub room: String,
    /// The server it goes to now; `null` when every server is down and
    /// `when_all_down: page` answers instead.
    pub to: Option<ServerInfo>,
    /// The URL `/{room}` redirects to now, if it redirects.
    pub target: Option<String>,
}

/// The event for `change`, or `None` when it is not announced: first
/// results after start or reload (unless `notify.on_start` and the server
/// is down). `states` is every server's state now, in config order; the
/// changed server's entry is taken from `change`.
pub fn describe(change: &Change, config: &Config, states: &[State]) -> Option<Event> {
    if change.from == State::Unknown && !(config.notify.on_start && change.to == State::Down) {
        return None;
    }
    let index = config
        .servers
        .iter()
        .position(|s| s.name == change.server)?;
    let mut after: Vec<State> = states.to_vec();
    after.resize(config.servers.len(), State::Unknown);
    after[index] = change.to;
    // A first result (announced with `on_start`) is told as if the server
    // had been up before: the rooms its being down sends elsewhere.
    let mut before = after.clone();
    before[index] = match change.from {
        State::Unknown => State::Up,
        from => from,
    };

    let choose = |room: &Room, states: &[State]| {
        decision::choose(
            room.targets.iter().map(|t| states[t.server]),
            config.defaults.when_all_down,
        )
    };
    let mut moved = Vec::new();
    let mut all_down = Vec::new();
    for room in config.rooms.iter() {
        if !room.targets.iter().any(|t| t.server == index) {
            continue;
        }
        if room.targets.iter().all(|t| after[t.server] == State::Down) {
            all_down.push(room.name.clone());
            continue;
        }
        let now = choose(room, &after);
        if now != choose(room, &before) {
            moved.push(moved_to(config, room, now));
        }
    }
    let server = server_info(config, index);
    let event = Event {
        version: EVENT_VERSION,
        kind: if change.to == State::Up { "up" } else { "down" },
        old_state: Some(change.from),
        new_state: Some(change.to),
        since: Some(rfc3339(change.at)),
        old_since: Some(rfc3339(change.from_since)),
        error: (change.to == State::Down)
            .then(|| change.error.clone())
            .flatten(),
        moved,
        all_down,
        public_url: status_page(config),
        text: String::new(),
        server: Some(server),
    };
    let facts = Facts {
        server: event.server.as_ref().map_or("", |s| s.label.as_str()),
        error: event.error.as_deref(),
        moved: event
            .moved
            .iter()
            .map(|m| (m.room.as_str(), m.to.as_ref().map(|s| s.label.as_str())))
            .collect(),
        all_down: event.all_down.iter().map(String::as_str).collect(),
        public_url: event.public_url.as_deref(),
    };
    let text = text(&facts, change, config.site.lang);
    Some(Event { text, ..event })
}

/// The test message of `roomgate notify-test`.
pub fn test_event(config: &Config) -> Event {
    let public_url = status_page(config);
    let words = Words::of(config.site.lang);
    let text = match &public_url {
        Some(url) => format!("{} {url}", words.test),
        None => words.test.to_owned(),
    };
    Event {
        version: EVENT_VERSION,
        kind: "test",
        server: None,
        old_state: None,
        new_state: None,
        since: Some(rfc3339(SystemTime::now())),
        old_since: None,
        error: None,
        moved: Vec::new(),
        all_down: Vec::new(),
        public_url,
        text,
    }
}

fn server_info(config: &Config, index: usize) -> ServerInfo {
    let s = &config.servers[index];
    ServerInfo {
        name: s.name.clone(),
        label: s.label.clone(),
        url: s.url.clone(),
    }
}

fn moved_to(config: &Config, room: &Room, choice: Choice) -> Moved {
    match choice {
        Choice::Target(i) => {
            let target = &room.targets[i];
            let server = server_info(config, target.server);
            Moved {
                room: room.name.clone(),
                target: Some(format!("{}/{}", server.url, target.room)),
                to: Some(server),
            }
        }
        Choice::AllDownPage => Moved {
            room: room.name.clone(),
            to: None,
            target: None,
        },
    }
}

/// The status page, where people see the rooms: `site.public_url` + `/`.
fn status_page(config: &Config) -> Option<String> {
    config.site.public_url.as_ref().map(|u| format!("{u}/"))
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::super::text::clock;
    use super::*;
    use crate::lang::Lang;
    use std::path::Path;
    use std::time::Duration;

    fn chaosdorf(extra: &str) -> Config {
        let yaml = format!(
            "site: {{ public_url: 'https://gate.example' }}
servers:
  chaosdorf: {{ url: 'https://virtual.chaosdorf.space', label: Chaosdorf }}
  ffmuc: {{ url: 'https://meet.ffmuc.net', label: Freifunk München }}
defaults: {{ servers: [chaosdorf, ffmuc] }}
rooms:
  Lounge: {{}}
  Hackcenter: {{}}
  Cave: {{}}
  Freitagsfoo: {{ servers: [ffmuc] }}
{extra}"
        );
        Config::parse(&yaml, "t.yaml", Path::new(".")).unwrap()
    }

    fn change(server: &str, from: State, to: State, error: Option<&str>) -> Change {
        let at = SystemTime::now();
        Change {
            server: server.into(),
            from,
            to,
            at,
            from_since: at - Duration::from_secs(38 * 60),
            error: error.map(str::to_owned),
        }
    }

    use State::*;

    #[test]
    fn a_primary_going_down_moves_its_rooms() {
        let config = chaosdorf("");
        let c = change("chaosdorf", Up, Down, Some("BOSH answered 502"));
        let e = describe(&c, &config, &[Up, Up]).unwrap();
        let rooms: Vec<&str> = e.moved.iter().map(|m| m.room.as_str()).collect();
        assert_eq!(rooms, ["Lounge", "Hackcenter", "Cave"]);
        assert_eq!(
            e.moved[0].target.as_deref(),
            Some("https://meet.ffmuc.net/Lounge")
        );
        let expected = format!(
            "Chaosdorf is down since {} (BOSH answered 502). Lounge, Hackcenter and Cave now go to Freifunk München: https://gate.example/",
            clock(c.at)
        );
        assert_eq!(e.text, expected);
        assert!(e.all_down.is_empty());
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "down");
        assert_eq!(json["old_state"], "up");
        assert_eq!(json["server"]["name"], "chaosdorf");
        assert_eq!(json["moved"][2]["to"]["label"], "Freifunk München");
    }

    #[test]
    fn recovery_in_german() {
        let config = chaosdorf("");
        let mut config = config;
        config.site.lang = Lang::De;
        let c = change("chaosdorf", Down, Up, None);
        let e = describe(&c, &config, &[Down, Up]).unwrap();
        assert_eq!(
            e.text,
            format!(
                "Chaosdorf ist seit {} wieder erreichbar (war 38 min weg). Lounge, Hackcenter und Cave gehen jetzt zu Chaosdorf: https://gate.example/",
                clock(c.at)
            )
        );
        assert_eq!(e.kind, "up");
        assert_eq!(e.error, None);
    }

    #[test]
    fn the_backup_going_down_strands_its_own_rooms() {
        let config = chaosdorf("");
        // Chaosdorf is down already; now ffmuc goes too.
        let c = change("ffmuc", Up, Down, Some("no answer within 3s"));
        let e = describe(&c, &config, &[Down, Up]).unwrap();
        assert_eq!(e.all_down, ["Lounge", "Hackcenter", "Cave", "Freitagsfoo"]);
        assert!(e.moved.is_empty());
        assert!(
            e.text.ends_with("Every server of Lounge, Hackcenter, Cave and Freitagsfoo is down. https://gate.example/"),
            "{}",
            e.text
        );
        // While Chaosdorf is up, ffmuc going down moves Freitagsfoo nowhere
        // but strands it, and Lounge & co are untouched.
        let e = describe(&c, &config, &[Up, Up]).unwrap();
        assert_eq!(e.all_down, ["Freitagsfoo"]);
        assert!(e.moved.is_empty());
    }

    #[test]
    fn first_results_are_not_news_unless_asked() {
        let config = chaosdorf("");
        let first_down = change("chaosdorf", Unknown, Down, Some("BOSH answered 502"));
        assert!(describe(&first_down, &config, &[Unknown, Up]).is_none());
        let config = chaosdorf("notify: { on_start: true }");
        let e = describe(&first_down, &config, &[Unknown, Up]).unwrap();
        assert_eq!(e.moved.len(), 3);
        let first_up = change("chaosdorf", Unknown, Up, None);
        assert!(describe(&first_up, &config, &[Unknown, Up]).is_none());
    }

    #[test]
    fn without_a_public_url_the_text_ends_plainly() {
        let mut config = chaosdorf("");
        config.site.public_url = None;
        let c = change("chaosdorf", Up, Down, None);
        let e = describe(&c, &config, &[Up, Up]).unwrap();
        assert!(
            e.text.ends_with("now go to Freifunk München."),
            "{}",
            e.text
        );
        assert_eq!(e.public_url, None);
    }

    #[test]
    fn a_server_that_is_gone_is_not_described() {
        let config = chaosdorf("");
        let c = change("old", Up, Down, None);
        assert!(describe(&c, &config, &[Up, Up]).is_none());
    }
}
