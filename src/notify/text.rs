//! The words of a notification, in the site's language: `Chaosdorf is
//! down since 12:03 (BOSH answered 502). Lounge, Hackcenter and Cave now
//! go to Freifunk München: https://gate/`.
//!
//! Like the pages' words (`lang.rs`), one table per language, checked by
//! the compiler; times of day are the machine's local time (`TZ`, else
//! /etc/localtime), since people read them next to their own clocks.

use std::time::{Duration, SystemTime};

use crate::health::{Change, State};
use crate::lang::Lang;

/// What a message tells, borrowed from the event being described.
pub(super) struct Facts<'a> {
    /// The label of the server that changed.
    pub(super) server: &'a str,
    /// Why its probe failed, for a server that went down.
    pub(super) error: Option<&'a str>,
    /// Rooms that moved, with the label of where they go now (`None`: the
    /// all-down page).
    pub(super) moved: Vec<(&'a str, Option<&'a str>)>,
    /// Rooms whose every server is down.
    pub(super) all_down: Vec<&'a str>,
    /// The status page.
    pub(super) public_url: Option<&'a str>,
}

/// The phrases of a message in one language. `{}` stands for the value.
pub(super) struct Words {
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
    pub(super) test: &'static str,
}

impl Words {
    pub(super) fn of(lang: Lang) -> &'static Words {
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
pub(super) fn text(facts: &Facts, change: &Change, lang: Lang) -> String {
    let w = Words::of(lang);
    let label = facts.server;
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
        if let Some(error) = facts.error {
            head.push_str(&format!(" ({error})"));
        }
        head + "."
    };
    // Rooms grouped by where they go now, in the order they first appear.
    let mut groups: Vec<(Option<&str>, Vec<&str>)> = Vec::new();
    for &(room, to) in &facts.moved {
        match groups.iter_mut().find(|(t, _)| *t == to) {
            Some((_, rooms)) => rooms.push(room),
            None => groups.push((to, vec![room])),
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
        match facts.public_url {
            Some(url) => out.push_str(&format!(": {url}")),
            None => out.push('.'),
        }
    }
    if !facts.all_down.is_empty() {
        out.push(' ');
        out.push_str(&w.all_down.replace("{rooms}", &join(&facts.all_down, w.and)));
        if sentences.is_empty() {
            if let Some(url) = facts.public_url {
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
pub(super) fn clock(t: SystemTime) -> String {
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
