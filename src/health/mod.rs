//! Server health: the up/down state machine, the probes, and the prober task
//! per server that publishes each result in the one place every reader
//! looks.
//!
//! Health is per server, not per room: every room on a server shares it.
//! Each server's state changes make its [`History`]; with a state directory
//! the [`journal`] also writes them to the [`store`], so that the history
//! outlives the process.

pub mod history;
pub mod journal;
mod manual;
mod monitor;
mod probe;
mod resolve;
pub mod store;

pub use history::History;
pub use monitor::ServerHandle;
pub use probe::{connector, xml, Conn, Probe, ProbeError, ServerProbe, MAX_ERROR_CHARS};
pub(crate) use resolve::Resolver;

use std::future::Future;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use serde::Serialize;

/// Aborts a task when dropped: a prober with its handle, a probe's
/// connection driver with its probe, an occupancy poller with its handle.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the task that `start` makes and, should it ever end (a panic in
/// it), logs why and starts another after `pause`: a prober or a poller
/// keeps working whatever one probe or query does. `start` is called anew
/// for each run, so a new run can go on from what the last one published.
/// Never returns; aborting the task that runs this aborts the run too.
pub(crate) async fn supervise<F, T>(what: &str, pause: Duration, mut start: F)
where
    F: FnMut() -> T,
    T: Future<Output = ()> + Send + 'static,
{
    loop {
        let mut running = AbortOnDrop(tokio::spawn(start()));
        let why = match (&mut running.0).await {
            Err(e) if e.is_panic() => format!("it panicked: {}", panic_text(e.into_panic())),
            Err(e) => format!("it failed: {e}"),
            Ok(()) => "it stopped".to_owned(),
        };
        tracing::error!(
            "{what} stopped ({why}); starting it again in {}",
            humantime::format_duration(pause)
        );
        tokio::time::sleep(pause).await;
    }
}

/// The message of a panic, for the log line.
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map_or_else(|| "no message".to_owned(), |s| (*s).to_owned()),
    }
}

/// Log lines written during one test, on its thread.
#[cfg(test)]
pub(crate) mod test_log {
    use std::sync::{Arc, Mutex};

    /// What was logged.
    #[derive(Clone, Default)]
    pub(crate) struct Log(Arc<Mutex<Vec<u8>>>);

    impl Log {
        /// Starts capturing this thread's log lines, until the guard drops.
        pub(crate) fn capture() -> (Log, tracing::subscriber::DefaultGuard) {
            let log = Log::default();
            let sink = log.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || sink.clone())
                .with_ansi(false)
                .finish();
            (log, tracing::subscriber::set_default(subscriber))
        }

        /// Everything logged so far.
        pub(crate) fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    impl std::io::Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}

/// What the gateway believes about a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// No result yet, or the last one is older than its time to live.
    Unknown,
    /// The server can host a meeting.
    Up,
    /// The server failed `fall` probes in a row (or its first one).
    Down,
}

impl State {
    /// Every state's name, for metrics that show one of them as current.
    pub const NAMES: [&'static str; 3] = ["unknown", "up", "down"];

    /// The lowercase name used in logs, JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Up => "up",
            State::Down => "down",
        }
    }
}

/// One published probe outcome with the state it led to: what every reader
/// (redirects, status page, metrics) sees of a server.
#[derive(Debug, Clone)]
pub struct Health {
    /// State after this result.
    pub state: State,
    /// When the state last changed.
    pub since: SystemTime,
    /// When this probe finished.
    pub last_check: SystemTime,
    /// How long the probe took; `None` when it failed.
    pub latency: Option<Duration>,
    /// Why the probe failed; `None` when it succeeded.
    pub error: Option<String>,
    /// Until when this result may be trusted; from then on the server is
    /// unknown, so a stuck prober can never keep a server "up".
    pub expires: Instant,
}

impl Health {
    /// The state to route by at `now`: this result's, or unknown once it
    /// has expired.
    pub fn state_at(&self, now: Instant) -> State {
        if now < self.expires {
            self.state
        } else {
            State::Unknown
        }
    }
}

/// A server's state change after the hysteresis (never one per probe):
/// what notifications announce.
#[derive(Debug, Clone)]
pub struct Change {
    /// Server name from routes.yaml.
    pub server: String,
    /// The state before; `Unknown` for the first result after start or
    /// reload.
    pub from: State,
    /// The state now.
    pub to: State,
    /// When it changed.
    pub at: SystemTime,
    /// When the state `from` began, for how long it lasted.
    pub from_since: SystemTime,
    /// Why the probe that made it failed, if it did (escaped and bounded
    /// like every probe error).
    pub error: Option<String>,
}

/// Where probers report their [`Change`]s. Bounded, and probers never wait
/// on it: a change that does not fit is logged and dropped.
pub type ChangeSender = tokio::sync::mpsc::Sender<Change>;

/// The up/down hysteresis of one server, as a pure state machine.
///
/// The first result decides directly, so a fresh gateway is useful at once.
/// After that `fall` consecutive failures turn up into down and `rise`
/// consecutive successes turn down into up; a single contrary result in
/// between resets the streak (as in HAProxy and pingora).
#[derive(Debug, Clone)]
pub struct Tracker {
    /// Current state.
    state: State,
    /// Consecutive results that contradict `state`.
    streak: u32,
    /// Successes needed to go down -> up.
    rise: u32,
    /// Failures needed to go up -> down.
    fall: u32,
}

impl Tracker {
    /// A tracker in state unknown. `rise` and `fall` are at least 1 (config
    /// validation guarantees it; 0 is treated as 1).
    pub fn new(rise: u32, fall: u32) -> Tracker {
        Tracker {
            state: State::Unknown,
            streak: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Contrary results so far while a change is being confirmed.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Results needed to confirm a change away from the current state.
    pub fn needed(&self) -> u32 {
        match self.state {
            State::Up => self.fall,
            State::Down => self.rise,
            State::Unknown => 1,
        }
    }

    /// Whether a change is being confirmed, which calls for `fast_interval`.
    pub fn confirming(&self) -> bool {
        self.streak > 0
    }

    /// Feeds one probe result; returns the new state when it changed.
    pub fn record(&mut self, success: bool) -> Option<State> {
        let target = if success { State::Up } else { State::Down };
        if self.state == target {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.state == State::Unknown || self.streak >= self.needed() {
            self.state = target;
            self.streak = 0;
            return Some(target);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_result_decides_directly() {
        let mut up = Tracker::new(2, 2);
        assert_eq!(up.record(true), Some(State::Up));
        let mut down = Tracker::new(2, 2);
        assert_eq!(down.record(false), Some(State::Down));
        assert!(!down.confirming());
    }

    #[test]
    fn fall_failures_turn_up_into_down() {
        let mut t = Tracker::new(2, 3);
        t.record(true);
        assert_eq!(t.record(false), None);
        assert!(t.confirming());
        assert_eq!(t.record(false), None);
        assert_eq!(t.streak(), 2);
        assert_eq!(t.record(false), Some(State::Down));
        assert!(!t.confirming());
    }

    #[test]
    fn rise_successes_turn_down_into_up() {
        let mut t = Tracker::new(2, 1);
        t.record(false);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(State::Up));
    }

    #[test]
    fn a_contrary_result_resets_the_streak() {
        let mut t = Tracker::new(2, 2);
        t.record(true);
        t.record(false);
        assert_eq!(t.record(true), None);
        assert!(!t.confirming());
        assert_eq!(t.record(false), None);
        assert_eq!(t.state(), State::Up);
    }

    #[test]
    fn flapping_every_probe_holds_the_state() {
        let mut t = Tracker::new(2, 2);
        t.record(true);
        for i in 0..100 {
            assert_eq!(t.record(i % 2 == 0), None);
        }
        assert_eq!(t.state(), State::Up);
    }

    proptest! {
        /// Against a straightforward model: the state changes exactly when the
        /// last `rise`/`fall` results all contradict it.
        #[test]
        fn matches_the_model(rise in 1u32..5, fall in 1u32..5, results in proptest::collection::vec(any::<bool>(), 0..60)) {
            let mut t = Tracker::new(rise, fall);
            let mut state = State::Unknown;
            let mut run: u32 = 0;
            for ok in results {
                let changed = t.record(ok);
                let target = if ok { State::Up } else { State::Down };
                let expect = if state == State::Unknown {
                    state = target;
                    run = 0;
                    Some(target)
                } else if state == target {
                    run = 0;
                    None
                } else {
                    run += 1;
                    let needed = if state == State::Up { fall } else { rise };
                    if run >= needed { state = target; run = 0; Some(target) } else { None }
                };
                prop_assert_eq!(changed, expect);
                prop_assert_eq!(t.state(), state);
            }
        }
    }
}
