//! Uptime history of one server: its state changes with their times, kept in
//! memory and bounded, and the summary the status page draws from them (a
//! 24-hour bar and an availability figure).
//!
//! The prober is the only writer and records only changes, so the history
//! costs nothing per probe; readers (`/`, `/status.json`) take a short lock.
//! Times are passed in, which keeps the arithmetic testable without a clock.
//! With `--state-dir` the prober also hands each change to the journal, and
//! the history starts from the one read back (see [`super::journal`]).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::State;

/// How far back the page and the JSON look.
pub const WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// Changes kept at most. A server that flaps every probe (every 2 s at the
/// fastest) would fill 24 hours with far more; past this bound the oldest
/// changes go, and the time before the oldest one kept counts as unknown.
pub const MAX_CHANGES: usize = 2048;

/// The state changes of one server.
#[derive(Debug)]
pub struct History {
    /// Guarded by a plain mutex: one writer, rare readers, short sections.
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// When this history starts; the state before any change is unknown.
    start: SystemTime,
    /// Changes in time order: from `.0` on, the state was `.1`.
    changes: VecDeque<(SystemTime, State)>,
}

/// A stretch of time with one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Start of the stretch.
    pub from: SystemTime,
    /// End of the stretch (the summary's `now` for the last one).
    pub to: SystemTime,
    /// The state throughout.
    pub state: State,
}

/// The history of a window, ready to show.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Start of the window (or of the history, if that is later).
    pub from: SystemTime,
    /// End of the window: now.
    pub to: SystemTime,
    /// Consecutive stretches covering `from..to`, oldest first.
    pub segments: Vec<Segment>,
    /// Time up in the window.
    pub up: Duration,
    /// Time up or down in the window: the time the state was known.
    pub known: Duration,
}

impl Summary {
    /// Time up over time known, as a fraction in `0..=1`; `None` while
    /// nothing is known yet.
    pub fn availability(&self) -> Option<f64> {
        (!self.known.is_zero()).then(|| self.up.as_secs_f64() / self.known.as_secs_f64())
    }
}

impl History {
    /// An empty history that starts at `start` in state unknown.
    pub fn new(start: SystemTime) -> History {
        History {
            inner: Mutex::new(Inner {
                start,
                changes: VecDeque::new(),
            }),
        }
    }

    /// Notes that the state became `state` at `at`, and says whether that
    /// was a change. Repeats of the current state are ignored (before any
    /// change the state is unknown); changes that fell out of the window
    /// are dropped.
    pub fn record(&self, at: SystemTime, state: State) -> bool {
        let mut inner = self.lock();
        let current = inner.changes.back().map_or(State::Unknown, |&(_, s)| s);
        if current == state {
            return false;
        }
        inner.changes.push_back((at, state));
        inner.forget_before(at);
        if inner.changes.len() > MAX_CHANGES {
            inner.changes.pop_front();
            // What came before the oldest change kept is not known any
            // more; say so rather than extend a state backwards.
            if let Some(first) = inner.changes.front().map(|c| c.0) {
                inner.start = inner.start.max(first);
            }
        }
        true
    }

    /// Drops what lies wholly before the window that ends at `now`.
    pub fn forget_before(&self, now: SystemTime) {
        self.lock().forget_before(now);
    }

    /// When the history starts and its changes, oldest first: what the
    /// state file keeps of it.
    pub fn export(&self) -> (SystemTime, Vec<(SystemTime, State)>) {
        let inner = self.lock();
        (inner.start, inner.changes.iter().copied().collect())
    }

    /// The last `window` up to `now`.
    pub fn summary(&self, now: SystemTime, window: Duration) -> Summary {
        let inner = self.lock();
        let window_start = now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
        let from = window_start.max(inner.start).min(now);
        let mut segments: Vec<Segment> = Vec::with_capacity(inner.changes.len() + 1);
        let mut state = State::Unknown;
        let mut at = from;
        for &(when, next) in &inner.changes {
            if when <= from {
                state = next;
                continue;
            }
            if when >= now {
                break;
            }
            if when > at {
                segments.push(Segment {
                    from: at,
                    to: when,
                    state,
                });
            }
            state = next;
            at = when;
        }
        if now > at {
            segments.push(Segment {
                from: at,
                to: now,
                state,
            });
        }
        let mut up = Duration::ZERO;
        let mut known = Duration::ZERO;
        for s in &segments {
            let span = s.to.duration_since(s.from).unwrap_or_default();
            match s.state {
                State::Up => {
                    up += span;
                    known += span;
                }
                State::Down => known += span,
                State::Unknown => {}
            }
        }
        Summary {
            from,
            to: now,
            segments,
            up,
            known,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Plain data with no invariant a panic could break halfway.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// Drops the changes that the window ending at `now` no longer needs,
    /// but keeps the newest change before the window: it gives the state at
    /// the window's start.
    fn forget_before(&mut self, now: SystemTime) {
        let horizon = now.checked_sub(WINDOW).unwrap_or(SystemTime::UNIX_EPOCH);
        while self.changes.len() > 1 && self.changes[1].0 <= horizon {
            self.changes.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    const H: Duration = Duration::from_secs(3600);

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000 + secs)
    }

    fn states(s: &Summary) -> Vec<(u64, u64, State)> {
        let base = t(0);
        s.segments
            .iter()
            .map(|g| {
                (
                    g.from.duration_since(base).unwrap().as_secs(),
                    g.to.duration_since(base).unwrap().as_secs(),
                    g.state,
                )
            })
            .collect()
    }

    #[test]
    fn a_fresh_history_is_unknown_and_has_no_availability() {
        let h = History::new(t(0));
        let s = h.summary(t(60), WINDOW);
        assert_eq!(states(&s), [(0, 60, Unknown)]);
        assert_eq!(s.availability(), None);
    }

    #[test]
    fn availability_is_time_up_over_time_known() {
        let h = History::new(t(0));
        h.record(t(10), Up);
        h.record(t(70), Down);
        h.record(t(100), Up);
        let s = h.summary(t(130), WINDOW);
        assert_eq!(
            states(&s),
            [
                (0, 10, Unknown),
                (10, 70, Up),
                (70, 100, Down),
                (100, 130, Up)
            ]
        );
        assert_eq!(s.up, Duration::from_secs(90));
        assert_eq!(s.known, Duration::from_secs(120));
        assert_eq!(s.availability(), Some(0.75));
    }

    #[test]
    fn repeats_of_the_current_state_are_not_changes() {
        let h = History::new(t(0));
        h.record(t(0), Up);
        h.record(t(5), Up);
        h.record(t(9), Up);
        assert_eq!(states(&h.summary(t(10), WINDOW)), [(0, 10, Up)]);
    }

    #[test]
    fn the_window_cuts_old_time_but_keeps_the_state_at_its_start() {
        let h = History::new(t(0));
        h.record(t(0), Down);
        h.record(t(3600), Up);
        // 25 hours later: the window starts at 1 h, where it turned up.
        let now = t(25 * 3600);
        let s = h.summary(now, WINDOW);
        assert_eq!(states(&s), [(3600, 25 * 3600, Up)]);
        assert_eq!(s.availability(), Some(1.0));
        // 24.5 h: the first half hour of the window is still down.
        let s = h.summary(t(24 * 3600 + 1800), WINDOW);
        assert_eq!(
            states(&s),
            [(1800, 3600, Down), (3600, 24 * 3600 + 1800, Up)]
        );
        assert_eq!(s.known, WINDOW);
    }

    #[test]
    fn changes_older_than_the_window_are_dropped_on_record() {
        let h = History::new(t(0));
        for i in 0..10 {
            h.record(t(i * 60), if i % 2 == 0 { Up } else { Down });
        }
        // A day and more later: only the last old change survives, as the
        // state at the window's start (i = 9: down).
        h.record(t(48 * 3600), Up);
        assert_eq!(h.lock().changes.len(), 2);
        let s = h.summary(t(48 * 3600 + 60), WINDOW);
        assert_eq!(
            states(&s),
            [
                (24 * 3600 + 60, 48 * 3600, Down),
                (48 * 3600, 48 * 3600 + 60, Up)
            ]
        );
        assert_eq!(s.up, Duration::from_secs(60));
        assert_eq!(s.known, WINDOW);
    }

    #[test]
    fn the_number_of_changes_is_bounded_and_what_fell_out_is_unknown() {
        let h = History::new(t(0));
        let n = MAX_CHANGES as u64 + 100;
        for i in 0..n {
            h.record(t(i), if i % 2 == 0 { Up } else { Down });
        }
        assert_eq!(h.lock().changes.len(), MAX_CHANGES);
        let s = h.summary(t(n), 24 * H);
        // Nothing before the oldest change kept is claimed.
        assert_eq!(
            s.from.duration_since(t(0)).unwrap().as_secs(),
            n - MAX_CHANGES as u64
        );
        assert_eq!(s.known, Duration::from_secs(MAX_CHANGES as u64));
        assert_eq!(s.availability(), Some(0.5));
    }

    #[test]
    fn a_clock_that_went_backwards_does_not_panic() {
        let h = History::new(t(100));
        h.record(t(50), Up);
        let s = h.summary(t(10), WINDOW);
        assert!(s.segments.is_empty());
        assert_eq!(s.availability(), None);
    }
}
