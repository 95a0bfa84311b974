//! The words of the pages in each language `site.lang` can select.
//!
//! One [`Strings`] table per language, every field a `&'static str`: the
//! compiler checks that each language has every string, the templates read
//! the fields by name, and nothing is looked up at run time. The page chrome
//! is a few dozen short phrases in two languages, with no plurals that need
//! rules (times are abbreviated: `5 min`, `3 h`); an i18n crate (fluent,
//! gettext catalogues) would add a runtime, files to ship and lookups by
//! string key that fail only when a page renders.
//!
//! The status page's script needs some of the phrases too (relative times,
//! state words, the banner): the page carries the table as JSON in a data
//! attribute ([`Strings::json`]), so the script stays one static file that
//! the Content-Security-Policy allows by its hash.

use std::sync::LazyLock;

use serde::Serialize;

/// A language of the pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// English, the default.
    #[default]
    En,
    /// German.
    De,
}

/// The codes `site.lang` accepts, in the order error messages list them.
pub const SUPPORTED: &[(&str, Lang)] = &[("en", Lang::En), ("de", Lang::De)];

impl Lang {
    /// The language of `code` (`en`, `de`), if supported.
    pub fn from_code(code: &str) -> Option<Lang> {
        SUPPORTED.iter().find(|(c, _)| *c == code).map(|(_, l)| *l)
    }

    /// The BCP 47 code, for `<html lang>`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::De => "de",
        }
    }

    /// The table of this language.
    pub fn strings(self) -> &'static Strings {
        match self {
            Lang::En => &EN,
            Lang::De => &DE,
        }
    }
}

/// Every phrase of the pages. `{}` in a phrase stands for the one value it
/// takes (see [`Strings::fill`]); the script fills them the same way.
#[derive(Debug, Serialize)]
pub struct Strings {
    /// `<html lang>`.
    pub lang: &'static str,
    /// The link that skips to the list of rooms.
    pub skip_to_rooms: &'static str,
    /// Banner, before the list of servers that are down.
    pub servers_down: &'static str,
    /// Banner, when rooms use a backup server.
    pub rooms_moved: &'static str,
    /// Banner, before the list of rooms whose every server is down.
    pub rooms_stranded: &'static str,
    /// Line shown while every server is up.
    pub all_up: &'static str,
    /// Heading of the rooms.
    pub rooms: &'static str,
    /// Badge of a room on a backup server.
    pub on_backup: &'static str,
    /// Before a room's aliases.
    pub also: &'static str,
    /// The copy button.
    pub copy_link: &'static str,
    /// The copy button for screen readers; `{}` is the room.
    pub copy_link_to: &'static str,
    /// The copy button after copying.
    pub copied: &'static str,
    /// The copy button when the browser would not copy.
    pub press_ctrl_c: &'static str,
    /// The QR code link.
    pub qr_code: &'static str,
    /// The QR code link for screen readers; `{}` is the room.
    pub qr_code_for: &'static str,
    /// Badge of a room with people in it; `{}` is how many.
    pub here_now: &'static str,
    /// Badge of a room that is known to be empty.
    pub nobody_here: &'static str,
    /// Before the server a room goes to now.
    pub goes_to: &'static str,
    /// Instead of a server, when a room has none to go to.
    pub every_server_down: &'static str,
    /// Heading of the servers.
    pub servers: &'static str,
    /// State word: up.
    pub up: &'static str,
    /// State word: down.
    pub down: &'static str,
    /// State word: unknown.
    pub unknown: &'static str,
    /// Fact: when the state last changed.
    pub state_since: &'static str,
    /// Fact: when the last probe finished.
    pub last_check: &'static str,
    /// Instead of a time that has not happened.
    pub never: &'static str,
    /// Fact: how long the last probe took.
    pub latency: &'static str,
    /// Fact: why the last probe failed.
    pub last_error: &'static str,
    /// Instead of an error when there was none.
    pub no_error: &'static str,
    /// Fact: availability over the last 24 hours.
    pub up_24h: &'static str,
    /// Instead of an availability while nothing is known.
    pub no_data: &'static str,
    /// After the availability; `{}` is how long the server was watched.
    pub watched_for: &'static str,
    /// The decimal separator of the availability.
    pub decimal: &'static str,
    /// Label of the 24-hour bar.
    pub bar_label: &'static str,
    /// Left end of the bar.
    pub bar_start: &'static str,
    /// Right end of the bar.
    pub bar_end: &'static str,
    /// A time in the past; `{}` is a span like `11 s`.
    pub ago: &'static str,
    /// Units of a span: seconds, minutes, hours, days.
    pub units: [&'static str; 4],
    /// Footer, before the time of the page.
    pub updated: &'static str,
    /// The time of the page before the script has run.
    pub just_now: &'static str,
    /// Footer, after the time.
    pub refreshes: &'static str,
    /// Footer, before the machine-readable links.
    pub machine_readable: &'static str,
    /// After the time when a refresh failed.
    pub stale: &'static str,
    /// The time when not even the first one is known.
    pub a_while_ago: &'static str,
    /// Title and heading of the 404 page.
    pub no_such_room: &'static str,
    /// 404 page, before the list of rooms.
    pub rooms_that_exist: &'static str,
    /// 404 page, the link to the status page.
    pub all_rooms: &'static str,
    /// Title of the page of links; `{}` is the room.
    pub all_down_title: &'static str,
    /// Text of the page of links.
    pub all_down_text: &'static str,
    /// Link-preview page: the link; `{}` is the room.
    pub join: &'static str,
    /// Link-preview description of a room without one; `{}` is the room.
    pub preview_description: &'static str,
    /// Link-preview description, first sentence, when people are in the
    /// room; `{}` is how many.
    pub in_room_now: &'static str,
    /// Link-preview description, first sentence, when the room is known
    /// to be empty.
    pub nobody_in_room: &'static str,
}

impl Strings {
    /// `pattern` with its `{}` replaced by `value`.
    pub fn fill(&self, pattern: &str, value: &str) -> String {
        pattern.replacen("{}", value, 1)
    }

    /// The badge of a room with `people` in it: `3 here now`, or that
    /// nobody is.
    pub fn here(&self, people: u32) -> String {
        match people {
            0 => self.nobody_here.to_owned(),
            n => self.fill(self.here_now, &n.to_string()),
        }
    }

    /// The sentence a link preview starts with for a room with `people`
    /// in it, ending in a space: `3 in the room now. `.
    pub fn in_room(&self, people: u32) -> String {
        match people {
            0 => self.nobody_in_room.to_owned(),
            n => self.fill(self.in_room_now, &n.to_string()),
        }
    }

    /// The state word of `state` (`up`, `down`, `unknown`).
    pub fn state(&self, state: &str) -> &'static str {
        match state {
            "up" => self.up,
            "down" => self.down,
            _ => self.unknown,
        }
    }

    /// The table as JSON, for the page's `data-strings` attribute; built
    /// once per language.
    pub fn json(&self) -> &'static str {
        static EN_JSON: LazyLock<String> = LazyLock::new(|| to_json(&EN));
        static DE_JSON: LazyLock<String> = LazyLock::new(|| to_json(&DE));
        if self.lang == DE.lang {
            &DE_JSON
        } else {
            &EN_JSON
        }
    }
}

fn to_json(strings: &Strings) -> String {
    serde_json::to_string(strings).unwrap_or_else(|_| "{}".to_owned())
}

/// English.
pub static EN: Strings = Strings {
    lang: "en",
    skip_to_rooms: "Skip to the rooms",
    servers_down: "Server down:",
    rooms_moved: "Rooms with a backup server use it meanwhile.",
    rooms_stranded: "No server is up for:",
    all_up: "All servers are up.",
    rooms: "Rooms",
    on_backup: "on backup",
    also: "also:",
    copy_link: "Copy link",
    copy_link_to: "Copy the link to {}",
    copied: "Copied",
    press_ctrl_c: "Press Ctrl+C",
    qr_code: "QR code",
    qr_code_for: "QR code for {}",
    here_now: "{} here now",
    nobody_here: "nobody here now",
    goes_to: "Goes to:",
    every_server_down: "every server is down",
    servers: "Servers",
    up: "up",
    down: "down",
    unknown: "unknown",
    state_since: "State since",
    last_check: "Last check",
    never: "never",
    latency: "Latency",
    last_error: "Last error",
    no_error: "none",
    up_24h: "Up, 24 h",
    no_data: "no data yet",
    watched_for: "(watched for {})",
    decimal: ".",
    bar_label: "State over the last 24 hours",
    bar_start: "24 h ago",
    bar_end: "now",
    ago: "{} ago",
    units: ["s", "min", "h", "d"],
    updated: "Updated",
    just_now: "just now",
    refreshes: "refreshes itself every few seconds.",
    machine_readable: "Machine-readable:",
    stale: "{} (the gateway did not answer since)",
    a_while_ago: "a while ago",
    no_such_room: "No such room",
    rooms_that_exist: "These rooms exist:",
    all_rooms: "All rooms and their state",
    all_down_title: "{}: all servers down",
    all_down_text: "Every server of this room failed its health checks. \
                    They may work again by now; try them:",
    join: "Join {}",
    preview_description: "The video meeting room {}",
    in_room_now: "{} in the room now. ",
    nobody_in_room: "Nobody in the room now. ",
};

/// German.
pub static DE: Strings = Strings {
    lang: "de",
    skip_to_rooms: "Zu den Räumen springen",
    servers_down: "Server ausgefallen:",
    rooms_moved: "Räume mit Ersatzserver weichen solange dorthin aus.",
    rooms_stranded: "Kein Server erreichbar für:",
    all_up: "Alle Server sind erreichbar.",
    rooms: "Räume",
    on_backup: "auf Ersatzserver",
    also: "auch:",
    copy_link: "Link kopieren",
    copy_link_to: "Link zu {} kopieren",
    copied: "Kopiert",
    press_ctrl_c: "Strg+C drücken",
    qr_code: "QR-Code",
    qr_code_for: "QR-Code für {}",
    here_now: "{} jetzt hier",
    nobody_here: "gerade niemand hier",
    goes_to: "Führt zu:",
    every_server_down: "alle Server sind ausgefallen",
    servers: "Server",
    up: "erreichbar",
    down: "ausgefallen",
    unknown: "unbekannt",
    state_since: "Zustand geändert",
    last_check: "Letzte Prüfung",
    never: "nie",
    latency: "Antwortzeit",
    last_error: "Letzter Fehler",
    no_error: "keiner",
    up_24h: "Erreichbar, 24 h",
    no_data: "noch keine Daten",
    watched_for: "(beobachtet seit {})",
    decimal: ",",
    bar_label: "Zustand in den letzten 24 Stunden",
    bar_start: "vor 24 h",
    bar_end: "jetzt",
    ago: "vor {}",
    units: ["s", "min", "h", "d"],
    updated: "Stand:",
    just_now: "gerade eben",
    refreshes: "die Seite aktualisiert sich alle paar Sekunden.",
    machine_readable: "Maschinenlesbar:",
    stale: "{} (das Gateway antwortet seitdem nicht)",
    a_while_ago: "vor einer Weile",
    no_such_room: "Diesen Raum gibt es nicht",
    rooms_that_exist: "Diese Räume gibt es:",
    all_rooms: "Alle Räume und ihr Zustand",
    all_down_title: "{}: alle Server ausgefallen",
    all_down_text: "Alle Server dieses Raums sind bei ihren Prüfungen durchgefallen. \
                    Vielleicht gehen sie inzwischen wieder; probiere sie aus:",
    join: "{} betreten",
    preview_description: "Der Videokonferenzraum {}",
    in_room_now: "{} jetzt im Raum. ",
    nobody_in_room: "Gerade niemand im Raum. ",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_its_table() {
        for (code, lang) in SUPPORTED {
            assert_eq!(Lang::from_code(code), Some(*lang));
            assert_eq!(lang.code(), *code);
            assert_eq!(lang.strings().lang, *code);
        }
        assert_eq!(Lang::from_code("fr"), None);
    }

    #[test]
    fn the_json_islands_differ_by_language() {
        let de: serde_json::Value = serde_json::from_str(DE.json()).unwrap();
        assert_eq!(de["ago"], "vor {}");
        assert_eq!(de["units"][1], "min");
        let en: serde_json::Value = serde_json::from_str(EN.json()).unwrap();
        assert_eq!(en["ago"], "{} ago");
    }

    #[test]
    fn counts_read_naturally() {
        assert_eq!(EN.here(3), "3 here now");
        assert_eq!(EN.here(0), "nobody here now");
        assert_eq!(DE.here(3), "3 jetzt hier");
        assert_eq!(DE.here(0), "gerade niemand hier");
        assert_eq!(EN.in_room(1), "1 in the room now. ");
        assert_eq!(DE.in_room(12), "12 jetzt im Raum. ");
        assert_eq!(EN.in_room(0), "Nobody in the room now. ");
    }

    #[test]
    fn placeholders_appear_once_where_a_value_goes() {
        for s in [&EN, &DE] {
            for p in [
                s.copy_link_to,
                s.qr_code_for,
                s.watched_for,
                s.ago,
                s.stale,
                s.all_down_title,
                s.join,
                s.preview_description,
                s.here_now,
                s.in_room_now,
            ] {
                assert_eq!(p.matches("{}").count(), 1, "{}: {p}", s.lang);
            }
        }
    }
}
