//! One occupancy poller per server with `occupancy` on, and the one place
//! its counts are published.
//!
//! The poller is the only thing that queries, on its own clock: one query
//! per interval, however many requests read the counts. Each successful
//! query replaces the counts whole; a failed one leaves the last counts in
//! place, to age: they read as unknown three intervals after they were
//! taken, so a server that stopped telling never shows an old crowd.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use tokio::time::Instant;

use super::{people, source_for, Occupancy, OccupancySource};
use crate::config::{self, Server};
use crate::health::{supervise, AbortOnDrop, ProbeError};
use crate::metrics::{Metrics, ProbeLabels};

/// Counts live for this many intervals: a query that is merely late or
/// failed once does not blank them; a server that stopped answering
/// cannot keep a room full.
const TTL_INTERVALS: u32 = 3;

/// A count as readers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// People in the room (the focus not counted).
    pub people: u32,
    /// When the server said so.
    pub at: SystemTime,
}

/// The result of one successful query.
#[derive(Debug)]
struct Counts {
    /// When the query ended.
    at: SystemTime,
    /// From when on the counts read as unknown.
    expires: Instant,
    /// Room (lowercased, as on the server) -> people; `None` where the
    /// server did not say.
    people: HashMap<String, Option<u32>>,
}

/// A server's occupancy poller and its latest counts: the one place they
/// live. Dropping the last handle stops the poller.
pub struct OccupancyHandle {
    /// The server as configured, occupancy settings included; a reload
    /// keeps the handle while this and `rooms` stay the same.
    server: Server,
    /// The rooms asked about, lowercased, each once.
    rooms: Arc<[String]>,
    /// The latest counts; `None` until the first query succeeds. Read by
    /// every status page and preview without a lock.
    latest: Arc<ArcSwapOption<Counts>>,
    /// The task that runs the poller and restarts it if it fails; `None`
    /// when the server's occupancy is off.
    _poller: Option<AbortOnDrop>,
}

impl OccupancyHandle {
    /// Starts counting the occupants of `rooms` on `server`, with the
    /// source [`source_for`] gives; `None` when the server's occupancy is
    /// off. Must run inside a tokio runtime.
    pub fn spawn(
        server: &Server,
        rooms: Vec<String>,
        metrics: &Arc<Metrics>,
    ) -> Option<Arc<OccupancyHandle>> {
        let source = source_for(server)?;
        Some(OccupancyHandle::spawn_with(server, rooms, source, metrics))
    }

    /// Starts counting with `source`; tests hand in scripted sources. No
    /// poller runs when the server's occupancy is off.
    pub fn spawn_with<S: OccupancySource>(
        server: &Server,
        rooms: Vec<String>,
        source: S,
        metrics: &Arc<Metrics>,
    ) -> Arc<OccupancyHandle> {
        let rooms: Arc<[String]> = rooms.into();
        let latest = Arc::new(ArcSwapOption::empty());
        let poller = server.occupancy.clone().map(|settings| {
            let poller = Poller {
                name: server.name.clone(),
                settings,
                rooms: rooms.clone(),
                source: Arc::new(source),
                latest: latest.clone(),
                metrics: metrics.clone(),
                failing: false,
                told_hidden: false,
            };
            AbortOnDrop(tokio::spawn(poller.supervise()))
        });
        Arc::new(OccupancyHandle {
            server: server.clone(),
            rooms,
            latest,
            _poller: poller,
        })
    }

    /// Whether this handle counts `rooms` on `server` as configured (the
    /// same connection, login and occupancy settings; a label does not
    /// matter), so that a reload may keep it (and its counts).
    pub fn fits(&self, server: &Server, rooms: &[String]) -> bool {
        self.server.probed_alike(server)
            && self.server.occupancy == server.occupancy
            && *self.rooms == *rooms
    }

    /// The people in `room` (its name on this server, any case) at `now`:
    /// `None` when unknown (no count yet, the server did not say, or the
    /// count has expired).
    pub fn people(&self, room: &str, now: Instant) -> Option<Seen> {
        let counts = self.latest.load();
        let counts = counts.as_ref().filter(|c| now < c.expires)?;
        let people = (*counts.people.get(&room.to_ascii_lowercase())?)?;
        Some(Seen {
            people,
            at: counts.at,
        })
    }
}

/// The loop that queries one server.
struct Poller<S> {
    /// Server name, for logs and metrics.
    name: String,
    /// Interval, MUC and the rule for the focus.
    settings: config::Occupancy,
    /// What is asked about.
    rooms: Arc<[String]>,
    /// What a query does; shared with the poller that takes over after a
    /// failure.
    source: Arc<S>,
    /// Where counts are published for every reader.
    latest: Arc<ArcSwapOption<Counts>>,
    /// Query counts.
    metrics: Arc<Metrics>,
    /// Whether the last query failed, so that a failure that goes on is
    /// logged once, not every interval.
    failing: bool,
    /// Whether the log said why hidden rooms show no count.
    told_hidden: bool,
}

impl<S: OccupancySource> Poller<S> {
    /// Runs the poller in a task of its own and, should it ever end (a
    /// panic in a query), logs why and starts a new one an interval later,
    /// in the same place, so that even then a server sees at most one
    /// query per interval. Never returns; aborting this task aborts the
    /// poller.
    async fn supervise(self) {
        let what = format!("{}: the occupancy poller", self.name);
        let pause = self.settings.interval;
        supervise(&what, pause, move || self.again().run()).await
    }

    fn again(&self) -> Poller<S> {
        Poller {
            name: self.name.clone(),
            settings: self.settings.clone(),
            rooms: self.rooms.clone(),
            source: self.source.clone(),
            latest: self.latest.clone(),
            metrics: self.metrics.clone(),
            failing: self.failing,
            told_hidden: self.told_hidden,
        }
    }

    /// Queries at once, then every interval from the start of the last
    /// query. A query that has not ended when the next is due is given up.
    async fn run(mut self) {
        let interval = self.settings.interval;
        loop {
            let started = Instant::now();
            let outcome =
                match tokio::time::timeout(interval, self.source.occupants(&self.rooms)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(ProbeError::new(format!(
                        "the query did not end within the interval ({})",
                        humantime::format_duration(interval)
                    ))),
                };
            self.record(outcome);
            tokio::time::sleep_until(started + interval).await;
        }
    }

    fn record(&mut self, outcome: Result<Vec<Occupancy>, ProbeError>) {
        let result = if outcome.is_ok() {
            "success"
        } else {
            "failure"
        };
        self.metrics
            .occupancy_queries
            .get_or_create(&ProbeLabels {
                server: self.name.clone(),
                result,
            })
            .inc();
        let name = &self.name;
        let answers = match outcome {
            Ok(answers) => answers,
            Err(e) => {
                if self.failing {
                    tracing::debug!("{name}: occupancy query failed: {e}");
                } else {
                    tracing::warn!("{name}: occupancy query failed: {e}; the counts age out");
                }
                self.failing = true;
                return;
            }
        };
        if self.failing {
            tracing::info!("{name}: occupancy query succeeded again");
        }
        self.failing = false;
        if answers.len() != self.rooms.len() {
            tracing::debug!(
                "{name}: the occupancy source answered for {} of {} rooms; the others are unknown",
                answers.len(),
                self.rooms.len()
            );
        }
        let hidden: Vec<&str> = self
            .rooms
            .iter()
            .zip(&answers)
            .filter(|(_, a)| **a == Occupancy::Hidden)
            .map(|(room, _)| room.as_str())
            .collect();
        if !hidden.is_empty() && !self.told_hidden {
            tracing::warn!(
                "{name}: rooms {} are hidden, so their counts are not shown; Prosody makes new \
                 rooms hidden unless the MUC component sets muc_room_default_public = true",
                hidden.join(", ")
            );
            self.told_hidden = true;
        }
        let answers = answers
            .into_iter()
            .chain(std::iter::repeat(Occupancy::Unknown));
        let people = self
            .rooms
            .iter()
            .zip(answers)
            .map(|(room, answer)| (room.clone(), people(answer, self.settings.exclude)))
            .collect();
        self.latest.store(Some(Arc::new(Counts {
            at: SystemTime::now(),
            expires: Instant::now() + self.settings.interval * TTL_INTERVALS,
            people,
        })));
    }
}
