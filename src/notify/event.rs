//! What a notification says: the [`Event`] (the JSON a webhook receives,
//! documented in docs/notifications.md) and its one-paragraph text in the
//! site's language, which Matrix and Telegram get.
//!
//! [`describe`] is pure: a change, the config and every server's state in,
//! an event (or nothing) out, so the rules of what is announced are tested
//! without a network.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::{Config, Room};
use crate::decision::{self, Choice};
use crate::health::{Change, State};
use crate::lang::Lang;

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
    let text = text(&event, change, config.site.lang);
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

/// The phrases of a message in one language. `{}` stands for the value.
struct Words {
    /// `{server} is down since {time}`.
    down: &'static str,
    /// `{server} is back up since {time}`.
    up: &'static str,
    /// After `up`: how long it was down.
    was_down: &'static str,
    /// `{rooms} now goes to`, one room.
    goes_to: &'static str,
    /// `{rooms} now go to`, several.
    go_to: &'static str,
    /// `{rooms} now goes to ... again`, one room (after `goes_to`'s target).
    again: &'static str,
    /// Every server of these rooms is down.
    all_down: &'static str,
    /// Rooms that get the error page while every server is down.
    page: &'static str,
    /// The last separator of a list.
    and: &'static str,
    /// The test message.
    test: &'static str,
}

impl Words {
    fn of(lang: Lang) -> &'static Words {
        match lang {
            Lang::En => &EN,
            Lang::De => &DE,
        }
    }
}

static EN: Words = Words {
    down: "{server} is down since {time}",
    up: "{server} is back up since {time}",
    was_down: "down for {}",
    goes_to: "{rooms} now goes to {server}",
    go_to: "{rooms} now go to {server}",
    again: " again",
    all_down: "Every server of {rooms} is down.",
    page: "{rooms}: no server to go to.",
    and: "and",
    test: "Test message from roomgate: notifications reach this target.",
};

static DE: Words = Words {
    down: "{server} ist seit {time} nicht erreichbar",
    up: "{server} ist seit {time} wieder erreichbar",
    was_down: "war {} weg",
    goes_to: "{rooms} geht jetzt zu {server}",
    go_to: "{rooms} gehen jetzt zu {server}",
    again: "",
    all_down: "Alle Server von {rooms} sind nicht erreichbar.",
    page: "{rooms}: kein Server erreichbar.",
    and: "und",
    test: "Testnachricht von roomgate: Benachrichtigungen an dieses Ziel kommen an.",
};

/// `Chaosdorf is down since 12:03 (BOSH answered 502). Lounge, Hackcenter
/// and Cave now go to Freifunk München: https://gate/`
fn text(event: &Event, change: &Change, lang: Lang) -> String {
    let w = Words::of(lang);
    let label = event.server.as_ref().map_or("", |s| s.label.as_str());
    let time = clock(change.at);
    let mut out = if change.to == State::Up {
        let mut head = w.up.replace("{server}", label).replace("{time}", &time);
        if change.from == State::Down {
            let lasted = change
                .at
                .duration_since(change.from_since)
                .unwrap_or_default();
            head.push_str(&format!(
                " ({})",
                w.was_down.replace("{}", &span(lang, lasted))
            ));
        }
        head + "."
    } else {
        let mut head = w.down.replace("{server}", label).replace("{time}", &time);
        if let Some(error) = &event.error {
            head.push_str(&format!(" ({error})"));
        }
        head + "."
    };
    // Rooms grouped by where they go now, in the order they first appear.
    let mut groups: Vec<(Option<&str>, Vec<&str>)> = Vec::new();
    for m in &event.moved {
        let to = m.to.as_ref().map(|s| s.label.as_str());
        match groups.iter_mut().find(|(t, _)| *t == to) {
            Some((_, rooms)) => rooms.push(&m.room),
            None => groups.push((to, vec![&m.room])),
        }
    }
    let mut sentences = Vec::new();
    for (to, rooms) in &groups {
        let list = join(rooms, w.and);
        let sentence = match to {
            Some(server) => {
                let pattern = if rooms.len() == 1 { w.goes_to } else { w.go_to };
                let mut s = pattern
                    .replace("{rooms}", &list)
                    .replace("{server}", server);
                if change.to == State::Up {
                    s.push_str(w.again);
                }
                s
            }
            None => w
                .page
                .replace("{rooms}", &list)
                .trim_end_matches('.')
                .to_owned(),
        };
        sentences.push(sentence);
    }
    if !sentences.is_empty() {
        out.push(' ');
        out.push_str(&sentences.join("; "));
        match &event.public_url {
            Some(url) => out.push_str(&format!(": {url}")),
            None => out.push('.'),
        }
    }
    if !event.all_down.is_empty() {
        let rooms: Vec<&str> = event.all_down.iter().map(String::as_str).collect();
        out.push(' ');
        out.push_str(&w.all_down.replace("{rooms}", &join(&rooms, w.and)));
        if sentences.is_empty() {
            if let Some(url) = &event.public_url {
                out.push_str(&format!(" {url}"));
            }
        }
    }
    out
}

/// `A`, `A and B`, `A, B and C`.
fn join(items: &[&str], and: &str) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} {and} {last}", rest.join(", ")),
    }
}

/// The time of day in the machine's time zone (`TZ`, else
/// /etc/localtime), as people in the chat read it: `12:03`.
fn clock(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Local>::from(t)
        .format("%H:%M")
        .to_string()
}

/// `45 s`, `38 min`, `2 h 5 min`, `3 d 4 h`: how long an outage lasted.
fn span(lang: Lang, d: Duration) -> String {
    let [sec, min, hour, day] = lang.strings().units;
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s} {sec}"),
        60..=3599 => format!("{} {min}", s / 60),
        3600..=86_399 if (s % 3600) / 60 == 0 => format!("{} {hour}", s / 3600),
        3600..=86_399 => format!("{} {hour} {} {min}", s / 3600, (s % 3600) / 60),
        _ if (s % 86_400) / 3600 == 0 => format!("{} {day}", s / 86_400),
        _ => format!("{} {day} {} {hour}", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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

    #[test]
    fn spans_and_lists() {
        assert_eq!(span(Lang::En, Duration::from_secs(45)), "45 s");
        assert_eq!(span(Lang::En, Duration::from_secs(7500)), "2 h 5 min");
        assert_eq!(span(Lang::En, Duration::from_secs(3 * 86_400)), "3 d");
        assert_eq!(join(&["A"], "and"), "A");
        assert_eq!(join(&["A", "B"], "und"), "A und B");
        assert_eq!(join(&["A", "B", "C"], "and"), "A, B and C");
    }
}
