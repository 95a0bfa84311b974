//! The live status of every room and server: what `/status.json` serializes
//! and what the status page renders.

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Serialize, Serializer};
use tokio::time::Instant;

use crate::decision::{self, Choice};
use crate::gateway::Snapshot;
use crate::health::history::{Summary, WINDOW};
use crate::health::{Health, State};

/// A moment, serialized as RFC 3339 in UTC to the second; the page reads
/// the time itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time(pub SystemTime);

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_seconds(self.0))
    }
}

/// The JSON of `/status.json`.
#[derive(Serialize)]
pub struct Status<'a> {
    /// Whether every server has a first result.
    pub ready: bool,
    /// When this status was put together.
    pub generated: Time,
    /// Every server, in config order.
    pub servers: Vec<ServerStatus<'a>>,
    /// Every listed room, in config order.
    pub rooms: Vec<RoomStatus<'a>>,
}

/// One server in `/status.json`.
#[derive(Serialize)]
pub struct ServerStatus<'a> {
    /// Name from routes.yaml.
    pub name: &'a str,
    /// Display name.
    pub label: &'a str,
    /// Base URL.
    pub url: &'a str,
    /// Routing state now.
    pub state: State,
    /// When the state last changed.
    pub since: Option<Time>,
    /// When the last probe finished.
    pub last_check: Option<Time>,
    /// How long the last probe took, if it succeeded.
    pub latency_ms: Option<u64>,
    /// Why the last probe failed, if it did.
    pub error: Option<&'a str>,
    /// The last 24 hours.
    pub uptime: Uptime,
}

/// A server's recent history in `/status.json`.
#[derive(Serialize)]
pub struct Uptime {
    /// Length of the window in seconds (86400).
    pub window_s: u64,
    /// Where the window starts: 24 hours ago, or when the gateway started
    /// watching the server, if that is later.
    pub from: Time,
    /// Seconds of the window the server was up.
    pub up_s: u64,
    /// Seconds of the window the state was known (up or down).
    pub known_s: u64,
    /// `up_s / known_s` in percent, two decimals; `null` while nothing is
    /// known.
    pub availability_percent: Option<f64>,
    /// Stretches of one state covering the window, oldest first.
    pub segments: Vec<UptimeSegment>,
}

/// One stretch of [`Uptime::segments`].
#[derive(Serialize)]
pub struct UptimeSegment {
    /// `up`, `down` or `unknown`.
    pub state: State,
    /// Start of the stretch.
    pub from: Time,
    /// End of the stretch.
    pub to: Time,
}

/// One room in `/status.json`.
#[derive(Serialize)]
pub struct RoomStatus<'a> {
    /// Configured spelling.
    pub name: &'a str,
    /// Other short names.
    pub aliases: &'a [String],
    /// What the room is for.
    pub description: Option<&'a str>,
    /// Where `/{room}` redirects now; `null` when it answers 503.
    pub target: Option<&'a str>,
    /// Name of the server of `target`.
    pub server: Option<&'a str>,
    /// Whether `server` is not the room's first choice.
    pub fallback: bool,
    /// People in the room on `server` (the focus not counted); `null`
    /// when unknown or not counted there.
    pub occupants: Option<u32>,
    /// When `server` told that count.
    pub occupants_at: Option<Time>,
    /// Display name of `server`, for the HTML page.
    #[serde(skip)]
    pub server_label: Option<&'a str>,
    /// Index of `server` in [`Status::servers`], for the HTML page.
    #[serde(skip)]
    pub server_index: Option<usize>,
}

/// Resolves every room and server of the snapshot from `health`, each
/// server's latest result read once (see `Snapshot::health`), so that the
/// servers' states and the rooms' targets describe the same moment.
pub fn status<'a>(snap: &'a Snapshot, health: &'a [Option<Arc<Health>>]) -> Status<'a> {
    let now = SystemTime::now();
    let instant = Instant::now();
    let state = |i: usize| {
        health
            .get(i)
            .and_then(Option::as_ref)
            .map_or(State::Unknown, |h| h.state_at(instant))
    };
    let servers = snap
        .config
        .servers
        .iter()
        .zip(health)
        .zip(&snap.servers)
        .enumerate()
        .map(|(i, ((server, health), handle))| ServerStatus {
            name: &server.name,
            label: &server.label,
            url: &server.url,
            state: state(i),
            since: health.as_ref().map(|h| Time(h.since)),
            last_check: health.as_ref().map(|h| Time(h.last_check)),
            latency_ms: health
                .as_ref()
                .and_then(|h| h.latency)
                .map(|d| d.as_millis().try_into().unwrap_or(u64::MAX)),
            error: health.as_ref().and_then(|h| h.error.as_deref()),
            uptime: uptime(&handle.history.summary(now, WINDOW)),
        })
        .collect();
    let rooms = snap
        .routes
        .rooms
        .iter()
        .map(|room| {
            let choice = decision::choose(room.servers().map(state), snap.routes.when_all_down);
            let (target, server, fallback) = match choice {
                Choice::Target(i) => {
                    let t = &room.targets[i];
                    (Some(t.url.as_str()), Some(t.server), i > 0)
                }
                Choice::AllDownPage => (None, None, false),
            };
            let seen = snap.occupants_of(room, choice, instant);
            let server_config = server.map(|i| &snap.config.servers[i]);
            RoomStatus {
                name: &room.name,
                aliases: &room.aliases,
                description: room.description.as_deref(),
                target,
                server: server_config.map(|s| s.name.as_str()),
                fallback,
                occupants: seen.map(|s| s.people),
                occupants_at: seen.map(|s| Time(s.at)),
                server_label: server_config.map(|s| s.label.as_str()),
                server_index: server,
            }
        })
        .collect();
    Status {
        ready: health.iter().all(Option::is_some),
        generated: Time(now),
        servers,
        rooms,
    }
}

fn uptime(summary: &Summary) -> Uptime {
    Uptime {
        window_s: WINDOW.as_secs(),
        from: Time(summary.from),
        up_s: summary.up.as_secs(),
        known_s: summary.known.as_secs(),
        availability_percent: summary
            .availability()
            .map(|a| (a * 10_000.0).round() / 100.0),
        segments: summary
            .segments
            .iter()
            .map(|s| UptimeSegment {
                state: s.state,
                from: Time(s.from),
                to: Time(s.to),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::config::Config;
    use crate::gateway::testing::{Fixed, Switch};
    use crate::occupancy::Occupancy::*;

    /// Lets the probers and pollers run until they sleep again.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    /// Two servers that count, each holding the Lounge (as `Lobby` on
    /// `b`); the Cave only on `b`, Quiet on `a` only.
    fn config() -> Config {
        Config::parse(
            "servers:\n  \
               a: { url: 'https://a.example', occupancy: true, check: { interval: 10s, timeout: 1s, fall: 1, rise: 1 } }\n  \
               b: { url: 'https://b.example', occupancy: { interval: 10s } }\n\
             rooms:\n  \
               Lounge: { servers: [a, { server: b, room: Lobby }] }\n  \
               Cave: { servers: [b] }\n  \
               Quiet: { servers: [a] }\n",
            "t",
            Path::new("."),
        )
        .unwrap()
    }

    fn occupants<'a>(status: &Status<'a>) -> Vec<(&'a str, Option<u32>)> {
        status.rooms.iter().map(|r| (r.name, r.occupants)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_room_shows_the_count_of_the_server_it_redirects_to() {
        let a = Switch::new(true);
        let snap = crate::gateway::Snapshot::scripted(
            config(),
            vec![a.clone(), Switch::new(true)],
            // a: lounge, quiet; b: lobby, cave.
            vec![Fixed(vec![Known(4), Unknown]), Fixed(vec![Known(2), Empty])],
        );
        settle().await;
        let health = snap.health();
        let now = status(&snap, &health);
        assert_eq!(
            occupants(&now),
            [("Lounge", Some(3)), ("Cave", Some(0)), ("Quiet", None)]
        );
        assert_eq!(snap.occupants_now().collect::<Vec<_>>(), occupants(&now));
        // The Lounge moves to b, where it is the Lobby: b's count.
        a.set(false);
        tokio::time::advance(Duration::from_secs(10)).await;
        settle().await;
        let health = snap.health();
        let moved = status(&snap, &health);
        assert_eq!(moved.rooms[0].server, Some("b"));
        assert_eq!(
            occupants(&moved),
            [("Lounge", Some(1)), ("Cave", Some(0)), ("Quiet", None)]
        );
        assert_eq!(snap.occupants_now().collect::<Vec<_>>(), occupants(&moved));
    }

    #[tokio::test(start_paused = true)]
    async fn the_json_has_a_number_and_its_time_or_null() {
        let snap = crate::gateway::Snapshot::scripted(
            config(),
            vec![Switch::new(true), Switch::new(true)],
            vec![Fixed(vec![Known(4), Unknown]), Fixed(vec![Known(2), Empty])],
        );
        settle().await;
        let health = snap.health();
        let json = serde_json::to_value(status(&snap, &health)).unwrap();
        let lounge = &json["rooms"][0];
        assert_eq!(lounge["occupants"], 3);
        let at = lounge["occupants_at"].as_str().expect("a time");
        // The same format as every other time in the JSON.
        assert_eq!(at.len(), json["generated"].as_str().unwrap().len());
        assert!(at.ends_with('Z'), "{at}");
        let quiet = &json["rooms"][2];
        assert!(quiet["occupants"].is_null() && quiet["occupants_at"].is_null());
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_without_occupancy_shows_no_count() {
        let config = Config::parse(
            "servers:\n  a: { url: 'https://a.example' }\nrooms:\n  Lounge: {}\n",
            "t",
            Path::new("."),
        )
        .unwrap();
        let snap = crate::gateway::Snapshot::scripted(
            config,
            vec![Switch::new(true)],
            vec![Fixed(vec![Known(9)])],
        );
        settle().await;
        let health = snap.health();
        assert_eq!(occupants(&status(&snap, &health)), [("Lounge", None)]);
    }
}
