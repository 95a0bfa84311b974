//! Prometheus metrics, served at `/metrics`.
//!
//! Counters on the redirect path are resolved once per route (see
//! `routes.rs`), so a redirect costs one atomic increment, not a label lookup.
//!
//! This module depends on nothing else in the crate: health and routes
//! report into it, never the other way round.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of per-room counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoomLabels {
    /// Room name as configured (or as requested, for unlisted rooms).
    pub room: String,
    /// Server the redirect went to.
    pub server: String,
}

/// Labels of per-server metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    /// Server name from routes.yaml.
    pub server: String,
}

/// Labels of the server state gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// Server name from routes.yaml.
    pub server: String,
    /// `up`, `down` or `unknown`.
    pub state: &'static str,
}

/// Labels of the occupants gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OccupantsLabels {
    /// Room name as configured.
    pub room: String,
}

/// Labels of probe and occupancy query counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    /// Server name from routes.yaml.
    pub server: String,
    /// `success` or `failure`.
    pub result: &'static str,
}

/// Labels of the reload counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `success` or `failure`.
    pub result: &'static str,
}

/// Labels of the notification counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotifyLabels {
    /// Target name from `notify.targets`.
    pub target: String,
    /// `sent`, `retried` (an attempt that failed and is tried again),
    /// `failed` (refused or given up) or `dropped` (the queue was full).
    pub result: &'static str,
}

/// Labels of the build info gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// The counter of redirects: one per room and server, resolved when the
/// routes are compiled.
pub type RedirectCounter = Counter;

/// Every metric of the process, registered once at start.
pub struct Metrics {
    /// The registry that `/metrics` encodes.
    registry: Registry,
    /// Redirects answered, by room and server.
    pub redirects: Family<RoomLabels, RedirectCounter>,
    /// Requests for rooms that do not exist.
    pub not_found: Counter,
    /// OpenGraph pages answered to link-preview fetchers.
    pub previews: Counter,
    /// 1 for the current state of each server, 0 for the others.
    pub server_state: Family<StateLabels, Gauge>,
    /// Probes run, by server and result.
    pub probes: Family<ProbeLabels, Counter>,
    /// How long probes took, by server.
    pub probe_duration: Family<ServerLabels, Histogram>,
    /// State changes, by server.
    pub state_changes: Family<ServerLabels, Counter>,
    /// Config reloads, by result.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Client connections open right now.
    pub open_connections: Gauge,
    /// Occupancy queries run, by server and result.
    pub occupancy_queries: Family<ProbeLabels, Counter>,
    /// People in each room, on the server it redirects to now; only rooms
    /// whose count is known. Set from the live state at each scrape.
    room_occupants: Family<OccupantsLabels, Gauge>,
    /// Makes a scrape's update of `room_occupants` and its encoding one
    /// step, so that two scrapes never see each other's half-done update.
    scrape: Mutex<()>,
    /// Notification attempts and messages, by target and result.
    pub notifications: Family<NotifyLabels, Counter>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("roomgate");
        let redirects = Family::<RoomLabels, RedirectCounter>::default();
        registry.register(
            "redirects",
            "Redirects answered, by room and server",
            redirects.clone(),
        );
        let not_found = Counter::default();
        registry.register("not_found", "Requests for unknown rooms", not_found.clone());
        let previews = Counter::default();
        registry.register(
            "link_previews",
            "OpenGraph pages answered to link-preview fetchers",
            previews.clone(),
        );
        let server_state = Family::<StateLabels, Gauge>::default();
        registry.register(
            "server_state",
            "1 for the current health state of each server",
            server_state.clone(),
        );
        let probes = Family::<ProbeLabels, Counter>::default();
        registry.register("probes", "Health probes run, by result", probes.clone());
        let probe_duration = Family::<ServerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
        });
        registry.register(
            "probe_duration_seconds",
            "Duration of health probes",
            probe_duration.clone(),
        );
        let state_changes = Family::<ServerLabels, Counter>::default();
        registry.register(
            "state_changes",
            "Health state changes, by server",
            state_changes.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads, by result",
            reloads.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections open now",
            open_connections.clone(),
        );
        let occupancy_queries = Family::<ProbeLabels, Counter>::default();
        registry.register(
            "occupancy_queries",
            "Occupancy queries (one guest session each), by server and result",
            occupancy_queries.clone(),
        );
        let room_occupants = Family::<OccupantsLabels, Gauge>::default();
        registry.register(
            "room_occupants",
            "People in the room now, on the server it redirects to; absent while unknown",
            room_occupants.clone(),
        );
        let notifications = Family::<NotifyLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notifications by target and result: sent, retried, failed, dropped",
            notifications.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "Version of this roomgate", build);
        Metrics {
            registry,
            redirects,
            not_found,
            previews,
            server_state,
            probes,
            probe_duration,
            state_changes,
            reloads,
            open_connections,
            occupancy_queries,
            room_occupants,
            scrape: Mutex::new(()),
            notifications,
        }
    }

    /// Marks `state` as the current state of `server`, and every other of
    /// `states` as not current.
    pub fn set_state(&self, server: &str, states: &[&'static str], state: &str) {
        for &s in states {
            let labels = StateLabels {
                server: server.to_owned(),
                state: s,
            };
            self.server_state
                .get_or_create(&labels)
                .set(i64::from(s == state));
        }
    }

    /// Counts a config reload.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// The Prometheus text exposition of every metric, with
    /// `room_occupants` set to `occupants` (room, people; `None` leaves the
    /// room out), which replace those of the last scrape: rooms that are
    /// gone or unknown now have no value.
    pub fn encode_with_occupants<'a>(
        &self,
        occupants: impl IntoIterator<Item = (&'a str, Option<u32>)>,
    ) -> String {
        // Plain data behind the lock: a panic elsewhere cannot tear it.
        let _scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.room_occupants.clear();
        for (room, people) in occupants {
            if let Some(n) = people {
                self.room_occupants
                    .get_or_create(&OccupantsLabels {
                        room: room.to_owned(),
                    })
                    .set(i64::from(n));
            }
        }
        self.encode()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occupants(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| l.starts_with("roomgate_room_occupants{"))
            .collect()
    }

    #[test]
    fn a_scrape_shows_the_known_counts_of_that_moment_only() {
        let metrics = Metrics::new();
        let text = metrics.encode_with_occupants([
            ("Lounge", Some(3)),
            ("Cave", Some(0)),
            ("Quiet", None),
        ]);
        let mut got = occupants(&text);
        got.sort();
        assert_eq!(
            got,
            [
                "roomgate_room_occupants{room=\"Cave\"} 0",
                "roomgate_room_occupants{room=\"Lounge\"} 3"
            ]
        );
        // A room that became unknown, or was removed by a reload, is gone.
        let text = metrics.encode_with_occupants([("Cave", Some(1))]);
        assert_eq!(
            occupants(&text),
            ["roomgate_room_occupants{room=\"Cave\"} 1"]
        );
        assert!(text.contains("# TYPE roomgate_room_occupants gauge"));
    }

    #[test]
    fn occupancy_queries_are_counted_by_server_and_result() {
        let metrics = Metrics::new();
        for result in ["success", "success", "failure"] {
            metrics
                .occupancy_queries
                .get_or_create(&ProbeLabels {
                    server: "a".into(),
                    result,
                })
                .inc();
        }
        let text = metrics.encode();
        assert!(
            text.contains("roomgate_occupancy_queries_total{server=\"a\",result=\"success\"} 2")
        );
        assert!(
            text.contains("roomgate_occupancy_queries_total{server=\"a\",result=\"failure\"} 1")
        );
    }
}
