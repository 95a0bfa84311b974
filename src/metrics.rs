//! Prometheus metrics, served at `/metrics`.
//!
//! Counters on the redirect path are resolved once per route (see
//! `routes.rs`), so a redirect costs one atomic increment, not a label lookup.
//!
//! This module depends on nothing else in the crate: health and routes
//! report into it, never the other way round.

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

/// Labels of probe counters.
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
