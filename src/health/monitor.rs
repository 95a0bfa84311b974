//! The monitor: one prober task per server, its results shared through a
//! moka cache.
//!
//! The prober is the only writer of a server's health, so probes never
//! multiply with traffic: there is at most one probe per server in flight,
//! however many requests arrive. Readers never wait for a probe; they read the
//! last result from the cache, whose per-entry time to live makes a result
//! that is too old read as "unknown", never as "up".
//!
//! The redirect path reads the same result through [`ServerHandle::route_state`]:
//! with each cache entry the prober publishes its state and expiry in one
//! atomic word, so a request reads health without a lock, a hash or an
//! allocation, and with the same time to live.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant, SystemTime};

use moka::future::Cache;
use moka::Expiry;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Health, History, Probe, ServerProbe, State, Tracker};
use crate::config::{Check, Server};
use crate::metrics::{Metrics, ProbeLabels, ServerLabels};

/// Slack on top of a probe's own timeout before the prober gives up on it;
/// the probe is expected to bound itself.
const PROBE_GRACE: Duration = Duration::from_millis(250);

/// Results live for this many intervals (plus a timeout): long enough that a
/// probe that is merely late does not blank the state, short enough that a
/// stuck prober cannot keep a server "up".
const TTL_INTERVALS: u32 = 3;

/// Starts probers and hands out their shared results.
pub struct Monitor {
    /// Latest health of each prober, keyed by prober id.
    pub(super) cache: Cache<u64, Arc<Health>>,
    /// Source of prober ids; a server whose settings change on reload gets a
    /// new prober and id, so its old results can never be read for it.
    next_id: AtomicU64,
    /// Where probe outcomes are counted.
    metrics: Arc<Metrics>,
    /// What route-state expiries count from.
    epoch: Instant,
}

/// A probed server: its settings, its readiness and its running prober.
/// Dropping the last handle stops the prober.
pub struct ServerHandle {
    /// Key of this prober's results in the cache.
    pub id: u64,
    /// The settings the prober runs with.
    pub server: Server,
    /// The latest state and its expiry, for the redirect path.
    pub(super) route: Arc<RouteWord>,
    /// Turns true with the first probe result.
    ready: watch::Receiver<bool>,
    /// State changes for the status page; written by the prober.
    pub history: Arc<History>,
    /// The prober task, aborted on drop.
    _prober: AbortOnDrop,
}

/// A server's latest state and the moment it expires, in one atomic word:
/// the low two bits are the state (0: no result yet), the rest is the expiry
/// in milliseconds since the monitor's epoch. Written by the prober together
/// with the cache entry; read by every request.
pub(super) struct RouteWord {
    /// The packed state and expiry.
    word: AtomicU64,
    /// Whether any result was published (readiness without the watch lock).
    ready: AtomicBool,
    /// What expiries count from (the monitor's start, on tokio's clock, so
    /// that paused-clock tests see the time to live pass).
    epoch: Instant,
}

impl RouteWord {
    fn new(epoch: Instant) -> RouteWord {
        RouteWord {
            word: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            epoch,
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX >> 2)
    }

    pub(super) fn publish(&self, state: State, ttl: Duration) {
        let tag = match state {
            State::Unknown => 0,
            State::Up => 1,
            State::Down => 2,
        };
        let expires = self.millis(Instant::now() + ttl).min(u64::MAX >> 2);
        self.word.store(expires << 2 | tag, Ordering::Release);
        self.ready.store(true, Ordering::Release);
    }

    fn read(&self, now: Instant) -> State {
        let word = self.word.load(Ordering::Acquire);
        if word >> 2 <= self.millis(now) {
            return State::Unknown;
        }
        match word & 3 {
            1 => State::Up,
            2 => State::Down,
            _ => State::Unknown,
        }
    }
}

/// Per-entry expiry: each result carries its own time to live.
struct TtlPerEntry;

impl Expiry<u64, Arc<Health>> for TtlPerEntry {
    fn expire_after_create(&self, _: &u64, value: &Arc<Health>, _: StdInstant) -> Option<Duration> {
        Some(value.ttl)
    }
    fn expire_after_update(
        &self,
        _: &u64,
        value: &Arc<Health>,
        _: StdInstant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

impl Monitor {
    /// A monitor with no probers yet.
    pub fn new(metrics: Arc<Metrics>) -> Monitor {
        Monitor {
            cache: Cache::builder()
                .max_capacity(100_000)
                .expire_after(TtlPerEntry)
                .build(),
            next_id: AtomicU64::new(1),
            metrics,
            epoch: Instant::now(),
        }
    }

    /// Starts probing `server` with its configured check.
    pub fn watch(&self, server: Server) -> Arc<ServerHandle> {
        let probe = ServerProbe::new(&server);
        self.watch_with(server, probe)
    }

    /// Starts probing `server` with `probe`; tests hand in scripted probes.
    pub fn watch_with<P: Probe>(&self, server: Server, probe: P) -> Arc<ServerHandle> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (ready_tx, ready) = watch::channel(false);
        let route = Arc::new(RouteWord::new(self.epoch));
        self.metrics.set_state(&server.name, State::Unknown);
        let history = Arc::new(History::new(SystemTime::now()));
        let prober = Prober {
            history: history.clone(),
            id,
            name: server.name.clone(),
            check: server.check.clone(),
            probe,
            tracker: Tracker::new(server.check.rise, server.check.fall),
            since: SystemTime::now(),
            cache: self.cache.clone(),
            route: route.clone(),
            ready: ready_tx,
            metrics: self.metrics.clone(),
        };
        let task = tokio::spawn(prober.run());
        Arc::new(ServerHandle {
            id,
            server,
            route,
            ready,
            history,
            _prober: AbortOnDrop(task),
        })
    }

    /// The latest trusted result for `handle`, if there is one.
    pub async fn health(&self, handle: &ServerHandle) -> Option<Arc<Health>> {
        self.cache.get(&handle.id).await
    }

    /// The state to route by: unknown when there is no trusted result.
    pub async fn state(&self, handle: &ServerHandle) -> State {
        self.health(handle)
            .await
            .map_or(State::Unknown, |h| h.state)
    }
}

impl ServerHandle {
    /// Whether the first probe has finished.
    pub fn is_ready(&self) -> bool {
        self.route.ready.load(Ordering::Acquire)
    }

    /// The state to route by at `now`: the latest result's state, or unknown
    /// when there is none or it is older than its time to live. Lock-free;
    /// the same result and expiry as [`Monitor::state`].
    pub fn route_state(&self, now: Instant) -> State {
        self.route.read(now)
    }

    /// Waits until the first probe has finished, at most until `deadline`.
    pub async fn wait_ready(&self, deadline: Instant) {
        let mut ready = self.ready.clone();
        let _ = tokio::time::timeout_at(deadline, ready.wait_for(|r| *r)).await;
    }
}

/// The loop that probes one server.
struct Prober<P> {
    /// Key of the results in the cache.
    id: u64,
    /// Server name, for logs and metrics.
    name: String,
    /// Timings and thresholds.
    check: Check,
    /// What a probe does.
    probe: P,
    /// The up/down hysteresis; owned here, so it has one writer.
    tracker: Tracker,
    /// When the state last changed.
    since: SystemTime,
    /// Where results are published for every reader.
    cache: Cache<u64, Arc<Health>>,
    /// The same result's state and expiry, for the redirect path.
    route: Arc<RouteWord>,
    /// Turned true with the first result (readiness, cold-start waits).
    ready: watch::Sender<bool>,
    /// Probe counts and durations.
    metrics: Arc<Metrics>,
    /// Where state changes are kept for the status page.
    history: Arc<History>,
}

impl<P: Probe> Prober<P> {
    async fn run(mut self) {
        loop {
            let started = Instant::now();
            let outcome =
                match tokio::time::timeout(self.check.timeout + PROBE_GRACE, self.probe.probe())
                    .await
                {
                    Ok(outcome) => outcome,
                    Err(_) => Err(super::ProbeError(
                        "the probe did not end in time".to_owned(),
                    )),
                };
            let took = started.elapsed();
            self.record(outcome, took).await;
            // Once a change is under way, confirm or refute it quickly.
            let pause = if self.tracker.confirming() {
                self.check.fast_interval
            } else {
                self.check.interval
            };
            tokio::time::sleep(pause).await;
        }
    }

    async fn record(&mut self, outcome: Result<(), super::ProbeError>, took: Duration) {
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
        if let Some(state) = changed {
            self.since = now;
            self.metrics.set_state(&self.name, state);
            self.metrics.state_changes.get_or_create(&labels).inc();
            self.history.record(now, state);
        }
        let health = Health {
            state: self.tracker.state(),
            since: self.since,
            last_check: now,
            latency: outcome.is_ok().then_some(took),
            error: outcome.err().map(|e| e.0),
            ttl: self.check.interval * TTL_INTERVALS + self.check.timeout,
        };
        let (state, ttl) = (health.state, health.ttl);
        self.cache.insert(self.id, Arc::new(health)).await;
        self.route.publish(state, ttl);
        self.ready.send_replace(true);
    }

    /// One line per state change with its reason; failed probes that start
    /// or continue a change are worth a line too, since they explain it.
    fn log(
        &self,
        before: State,
        changed: Option<State>,
        outcome: &Result<(), super::ProbeError>,
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

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CheckKind;
    use crate::health::ProbeError;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// A probe that replays scripted results and notes when it was called.
    #[derive(Clone, Default)]
    struct Scripted {
        results: Arc<Mutex<VecDeque<bool>>>,
        calls: Arc<Mutex<Vec<Instant>>>,
    }

    impl Probe for Scripted {
        async fn probe(&self) -> Result<(), ProbeError> {
            self.calls.lock().unwrap().push(Instant::now());
            let ok = self.results.lock().unwrap().pop_front().unwrap_or(true);
            if ok {
                Ok(())
            } else {
                Err(ProbeError("BOSH answered 502".into()))
            }
        }
    }

    fn server() -> Server {
        Server {
            name: "primary".into(),
            url: "http://127.0.0.1:1".into(),
            label: "Primary".into(),
            check: Check {
                kind: CheckKind::Jitsi {
                    xmpp_domain: "localhost".into(),
                },
                interval: Duration::from_secs(30),
                fast_interval: Duration::from_secs(2),
                timeout: Duration::from_secs(3),
                rise: 2,
                fall: 2,
            },
            extra_roots: vec![],
        }
    }

    /// Lets the prober run until it sleeps again.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn probes_fast_while_a_change_is_confirmed() {
        let monitor = Monitor::new(Arc::new(Metrics::new()));
        let probe = Scripted::default();
        // up, then a failure streak that turns it down, then recovery.
        probe
            .results
            .lock()
            .unwrap()
            .extend([true, false, false, false, true, true, true]);
        let start = Instant::now();
        let handle = monitor.watch_with(server(), probe.clone());
        settle().await;
        assert!(handle.is_ready());
        assert_eq!(monitor.state(&handle).await, State::Up);

        let mut states = vec![];
        for _ in 0..6 {
            // Step time until the next probe has run.
            let before = probe.calls.lock().unwrap().len();
            while probe.calls.lock().unwrap().len() == before {
                tokio::time::advance(Duration::from_millis(500)).await;
                settle().await;
            }
            states.push(monitor.state(&handle).await);
        }
        let offsets: Vec<u64> = probe
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|t| (*t - start).as_secs())
            .collect();
        // 0 up; +30 fail (1/2); +2 fail -> down; +30 (settled) fail;
        // +30 ok (1/2); +2 ok -> up; +30.
        assert_eq!(offsets, vec![0, 30, 32, 62, 92, 94, 124]);
        use State::*;
        assert_eq!(states, vec![Up, Down, Down, Down, Up, Up]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_probe_is_cut_off_and_counts_as_failure() {
        struct Hangs;
        impl Probe for Hangs {
            async fn probe(&self) -> Result<(), ProbeError> {
                std::future::pending().await
            }
        }
        let monitor = Monitor::new(Arc::new(Metrics::new()));
        let handle = monitor.watch_with(server(), Hangs);
        settle().await;
        assert!(!handle.is_ready());
        tokio::time::advance(Duration::from_secs(3) + PROBE_GRACE).await;
        settle().await;
        assert!(handle.is_ready());
        let health = monitor.health(&handle).await.expect("a result");
        assert_eq!(health.state, State::Down);
        assert!(health.error.as_deref().unwrap().contains("did not end"));
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_handle_stops_the_prober() {
        let monitor = Monitor::new(Arc::new(Metrics::new()));
        let probe = Scripted::default();
        let handle = monitor.watch_with(server(), probe.clone());
        settle().await;
        drop(handle);
        tokio::time::advance(Duration::from_secs(300)).await;
        settle().await;
        assert_eq!(probe.calls.lock().unwrap().len(), 1);
    }
}
