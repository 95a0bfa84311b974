//! One prober task per server, and the one place its results are published.
//!
//! The prober is the only writer of a server's health, so probes never
//! multiply with traffic: at most one probe per server is in flight, however
//! many requests arrive. It publishes each result in the server's [`Slot`];
//! every reader (redirects, the status page, `/status.json`, `/readyz`)
//! reads that slot, so they all see the same result. Readers never wait for a probe,
//! except at cold start for the first one (bounded by the caller). A result
//! carries its expiry, past which it reads as unknown, never as up.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::journal::Journal;
use super::probe::TERMINATE_BUDGET;
use super::{
    AbortOnDrop, Change, ChangeSender, Health, History, Probe, ProbeError, ServerProbe, State,
    Tracker,
};
use crate::config::{Check, Server};
use crate::metrics::{Metrics, ProbeLabels, ServerLabels};

/// Slack on top of a probe's own timeout before the prober gives up on it;
/// the probe is expected to bound itself.
const PROBE_GRACE: Duration = Duration::from_millis(250);

/// Results live for this many intervals (plus a timeout): long enough that a
/// probe that is merely late does not blank the state, short enough that a
/// stuck prober cannot keep a server "up".
const TTL_INTERVALS: u32 = 3;

/// Pause before a prober that failed starts again: long enough not to spin
/// on a fault that repeats, short against any check interval that matters.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// A server's latest result: the one place its health lives.
///
/// Every redirect reads it, from every thread, so it is an `ArcSwapOption`:
/// a read takes no lock and writes to no memory that other threads read.
/// `published` wakes the few requests that wait at cold start for the
/// first result; it holds no state of its own.
#[derive(Default)]
struct Slot {
    /// `None` until the first probe has ended.
    value: ArcSwapOption<Health>,
    /// Told of every publication.
    published: Notify,
}

impl Slot {
    fn load(&self) -> Option<Arc<Health>> {
        self.value.load_full()
    }

    fn publish(&self, health: Option<Arc<Health>>) {
        self.value.store(health);
        self.published.notify_waiters();
    }
}

/// A probed server: its settings, its latest health, its history and its
/// running prober. Dropping the last handle stops the prober.
pub struct ServerHandle {
    /// The settings the prober runs with.
    pub server: Server,
    /// The latest result, written by the prober (and by hand in tests).
    latest: Arc<Slot>,
    /// State changes for the status page; written by the prober.
    pub history: Arc<History>,
    /// The task that runs the prober and restarts it if it fails; aborted
    /// on drop, which aborts the prober too.
    prober: AbortOnDrop,
}

impl ServerHandle {
    /// Starts probing `server` with its configured check. Its history goes
    /// on from `history` (a server kept over a reload, or read back from
    /// the state directory), else starts now; changes are also written to
    /// `journal`, if there is a state directory, and announced on
    /// `changes`, if given (notifications).
    pub fn spawn(
        server: Server,
        metrics: Arc<Metrics>,
        history: Option<Arc<History>>,
        journal: Option<Journal>,
        changes: Option<ChangeSender>,
    ) -> Arc<ServerHandle> {
        let probe = ServerProbe::new(&server);
        ServerHandle::spawn_probe(server, probe, metrics, history, journal, changes)
    }

    /// Starts probing `server` with `probe`, with a fresh history and no
    /// journal; tests hand in scripted probes. Must run inside a tokio
    /// runtime.
    pub fn spawn_with<P: Probe>(
        server: Server,
        probe: P,
        metrics: Arc<Metrics>,
        changes: Option<ChangeSender>,
    ) -> Arc<ServerHandle> {
        ServerHandle::spawn_probe(server, probe, metrics, None, None, changes)
    }

    fn spawn_probe<P: Probe>(
        server: Server,
        probe: P,
        metrics: Arc<Metrics>,
        history: Option<Arc<History>>,
        journal: Option<Journal>,
        changes: Option<ChangeSender>,
    ) -> Arc<ServerHandle> {
        let latest = Arc::new(Slot::default());
        metrics.set_state(&server.name, &State::NAMES, State::Unknown.as_str());
        let now = SystemTime::now();
        let history = history.unwrap_or_else(|| Arc::new(History::new(now)));
        // A new prober knows nothing yet, whatever the history last said.
        note(
            &history,
            journal.as_ref(),
            &server.name,
            now,
            State::Unknown,
        );
        let prober = Prober {
            name: server.name.clone(),
            check: server.check.clone(),
            probe: Arc::new(probe),
            tracker: Tracker::new(server.check.rise, server.check.fall),
            since: SystemTime::now(),
            latest: latest.clone(),
            metrics,
            history: history.clone(),
            journal,
            changes,
        };
        Arc::new(ServerHandle {
            server,
            latest,
            history,
            prober: AbortOnDrop(tokio::spawn(prober.supervise())),
        })
    }

    /// Stops the prober now rather than when the last handle goes: a new
    /// prober that took over the history must be its only writer. The last
    /// result stays, and expires as usual.
    pub fn stop_probing(&self) {
        self.prober.0.abort();
    }

    /// The latest result, if the first probe has ended.
    pub fn health(&self) -> Option<Arc<Health>> {
        self.latest.load()
    }

    /// The state to route by at `now`: `None` before the first result;
    /// unknown once the latest result has expired.
    pub fn state(&self, now: Instant) -> Option<State> {
        self.latest.value.load().as_ref().map(|h| h.state_at(now))
    }

    /// Whether the first probe has ended.
    pub fn is_ready(&self) -> bool {
        self.latest.value.load().is_some()
    }

    /// Waits until the first probe has ended, at most until `deadline`.
    pub async fn wait_ready(&self, deadline: Instant) {
        loop {
            // Registered before the check, so a publication in between
            // still wakes it.
            let published = self.latest.published.notified();
            if self.is_ready() {
                return;
            }
            if tokio::time::timeout_at(deadline, published).await.is_err() {
                return;
            }
        }
    }

    /// Publishes `health` as the latest result.
    pub(super) fn publish(&self, health: Option<Health>) {
        self.latest.publish(health.map(Arc::new));
    }
}

/// The loop that probes one server.
struct Prober<P> {
    /// Server name, for logs and metrics.
    name: String,
    /// Timings and thresholds.
    check: Check,
    /// What a probe does; shared with the prober that takes over after a
    /// failure.
    probe: Arc<P>,
    /// The up/down hysteresis; owned here, so it has one writer.
    tracker: Tracker,
    /// When the state last changed.
    since: SystemTime,
    /// Where results are published for every reader.
    latest: Arc<Slot>,
    /// Probe counts and durations.
    metrics: Arc<Metrics>,
    /// Where state changes are kept for the status page.
    history: Arc<History>,
    /// Where state changes are announced (notifications), if anywhere.
    changes: Option<ChangeSender>,
    /// Where state changes are written to disk, with `--state-dir`.
    journal: Option<Journal>,
}

/// Records a change in `history` and, if it was one, in `journal`.
fn note(history: &History, journal: Option<&Journal>, name: &str, at: SystemTime, state: State) {
    if history.record(at, state) {
        if let Some(journal) = journal {
            journal.record(name, at, state);
        }
    }
}

impl<P: Probe> Prober<P> {
    /// Runs the prober in a task of its own and, should it ever end (a
    /// panic in a probe or in the code around it), logs why and starts a
    /// new one after [`RESTART_PAUSE`], in the same slot. The new one goes
    /// on from the last published state, so a restart alone does not flip
    /// a server. Never returns; aborting this task aborts the prober.
    async fn supervise(self) {
        let what = format!("{}: the prober", self.name);
        super::supervise(&what, RESTART_PAUSE, move || self.again().run()).await
    }

    /// A prober for the same server and slot, whose state goes on from
    /// the last published result.
    fn again(&self) -> Prober<P> {
        let latest = self.latest.load();
        let mut tracker = Tracker::new(self.check.rise, self.check.fall);
        if let Some(health) = &latest {
            // A first result decides directly: this sets the state as
            // published, with no change under way.
            tracker.record(health.state == State::Up);
        }
        Prober {
            name: self.name.clone(),
            check: self.check.clone(),
            probe: self.probe.clone(),
            tracker,
            since: latest.as_ref().map_or_else(SystemTime::now, |h| h.since),
            latest: self.latest.clone(),
            metrics: self.metrics.clone(),
            history: self.history.clone(),
            changes: self.changes.clone(),
            journal: self.journal.clone(),
        }
    }

    async fn run(mut self) {
        loop {
            let started = Instant::now();
            let limit = self.check.timeout + TERMINATE_BUDGET + PROBE_GRACE;
            let outcome = match tokio::time::timeout(limit, self.probe.probe()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(ProbeError::new("the probe did not end in time")),
            };
            // A success's own latency leaves out the session's end.
            let took = outcome.as_ref().map_or_else(|_| started.elapsed(), |l| *l);
            self.record(outcome.map(|_| ()), took);
            // Once a change is under way, confirm or refute it quickly.
            let pause = if self.tracker.confirming() {
                self.check.fast_interval
            } else {
                self.check.interval
            };
            tokio::time::sleep(pause).await;
        }
    }

    fn record(&mut self, outcome: Result<(), ProbeError>, took: Duration) {
        let labels = ServerLabels {
            server: self.name.clone(),
        };
        self.metrics
            .probe_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        let result = if outcome.is_ok() {
            "success"
        } else {
            "failure"
        };
        self.metrics
            .probes
            .get_or_create(&ProbeLabels {
                server: self.name.clone(),
                result,
            })
            .inc();

        let before = self.tracker.state();
        let changed = self.tracker.record(outcome.is_ok());
        let now = SystemTime::now();
        self.log(before, changed, &outcome, took);
        let from_since = self.since;
        if let Some(state) = changed {
            self.since = now;
            self.metrics
                .set_state(&self.name, &State::NAMES, state.as_str());
            self.metrics.state_changes.get_or_create(&labels).inc();
            note(&self.history, self.journal.as_ref(), &self.name, now, state);
        }
        let health = Health {
            state: self.tracker.state(),
            since: self.since,
            last_check: now,
            latency: outcome.is_ok().then_some(took),
            error: outcome.err().map(ProbeError::into_string),
            expires: Instant::now() + self.check.interval * TTL_INTERVALS + self.check.timeout,
        };
        let error = health.error.clone();
        self.latest.publish(Some(Arc::new(health)));
        if let (Some(to), Some(changes)) = (changed, &self.changes) {
            let change = Change {
                server: self.name.clone(),
                from: before,
                to,
                at: now,
                from_since,
                error,
            };
            // Never waits: a prober must not slow down for notifications.
            if let Err(tokio::sync::mpsc::error::TrySendError::Full(_)) = changes.try_send(change) {
                tracing::warn!(
                    "{}: the change to {} is not announced: too many changes are waiting to be sent",
                    self.name,
                    to.as_str()
                );
            }
        }
    }

    /// One line per state change with its reason; failed probes that start
    /// or continue a change are worth a line too, since they explain it.
    fn log(
        &self,
        before: State,
        changed: Option<State>,
        outcome: &Result<(), ProbeError>,
        took: Duration,
    ) {
        let name = &self.name;
        let ms = took.as_millis();
        let needed = match before {
            State::Up => self.check.fall,
            _ => self.check.rise,
        };
        match (changed, outcome) {
            (Some(State::Up), _) if before == State::Unknown => {
                tracing::info!("{name} up: first probe succeeded in {ms} ms")
            }
            (Some(_), Err(e)) if before == State::Unknown => {
                tracing::warn!("{name} down: {e} (first probe)")
            }
            (Some(State::Up), _) => {
                tracing::info!(
                    "{name} up: probe succeeded in {ms} ms ({needed}/{needed} successes)"
                )
            }
            (Some(_), Err(e)) => tracing::warn!("{name} down: {e} ({needed}/{needed} failures)"),
            (None, Err(e)) if self.tracker.confirming() => {
                let n = self.tracker.streak();
                tracing::info!("{name} probe failed: {e} ({n}/{needed} failures)")
            }
            (None, Ok(())) if self.tracker.confirming() => {
                let n = self.tracker.streak();
                tracing::info!("{name} probe succeeded ({n}/{needed} successes)")
            }
            (None, Err(e)) => tracing::debug!("{name} probe failed: {e}"),
            _ => tracing::debug!("{name} probe succeeded in {ms} ms"),
        }
    }
}

#[cfg(test)]
mod tests;
