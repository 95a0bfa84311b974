//! The queue of one target and the task that empties it: one message at a
//! time, in order, each retried with exponential backoff and jitter.
//!
//! Bounds (docs/notifications.md repeats them):
//!
//! - [`QUEUE`] messages wait per target; one more is dropped, logged and
//!   counted (`result="dropped"`);
//! - a message gets at most [`MAX_ATTEMPTS`] attempts, each bounded by
//!   `notify.timeout`;
//! - between attempts: [`backoff`], 1 s doubling up to [`MAX_BACKOFF`],
//!   each pause drawn between half and all of it (jitter), or longer when
//!   the target asks for it (`Retry-After`, Telegram's `retry_after`,
//!   Matrix's `retry_after_ms`);
//! - a message is given up once its next attempt would start more than
//!   [`MAX_AGE`] after the change it tells of: late news misleads.
//!
//! Nothing here is awaited by a prober or a request: the queue is filled
//! with `try_send`, and a hanging target holds up only its own queue.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::event::Event;
use super::send::{Deliver, Outcome};
use crate::metrics::{Metrics, NotifyLabels};

/// Messages that may wait per target.
pub const QUEUE: usize = 32;

/// Attempts per message, the first one included.
pub const MAX_ATTEMPTS: u32 = 8;

/// The pause after the first failed attempt (before jitter).
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The longest pause between attempts that roomgate picks itself.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How old a message may get (from its change) before it is given up.
pub const MAX_AGE: Duration = Duration::from_secs(15 * 60);

/// One message waiting in a queue.
pub struct Message {
    /// What to send.
    pub event: Arc<Event>,
    /// The same for every attempt (Matrix's transaction id).
    pub id: String,
    /// When the message was made; [`MAX_AGE`] counts from here.
    pub made: Instant,
}

/// The sending side of one target's queue.
pub struct Queue {
    /// The target's name, for logs and metrics.
    name: String,
    /// Into the worker.
    tx: mpsc::Sender<Message>,
    /// Counts what is dropped here.
    metrics: Arc<Metrics>,
}

impl Queue {
    /// Starts the worker of target `name`, which delivers through
    /// `deliver`. The worker ends once the queue is dropped and emptied.
    pub fn start<D: Deliver>(name: String, deliver: D, metrics: Arc<Metrics>) -> Queue {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(work(name.clone(), deliver, rx, metrics.clone()));
        Queue { name, tx, metrics }
    }

    /// Queues `message`, never waiting; a full queue drops it.
    pub fn push(&self, message: Message) {
        if self.tx.try_send(message).is_err() {
            tracing::warn!(
                "notify {}: a message is dropped: {QUEUE} are waiting already",
                self.name
            );
            count(&self.metrics, &self.name, "dropped");
        }
    }
}

fn count(metrics: &Metrics, target: &str, result: &'static str) {
    metrics
        .notifications
        .get_or_create(&NotifyLabels {
            target: target.to_owned(),
            result,
        })
        .inc();
}

/// The pause after `failures` failed attempts (1, 2, ...), before any wait
/// the target asked for: `FIRST_BACKOFF * 2^(failures-1)`, at most
/// [`MAX_BACKOFF`], of which a random share between a half and all is
/// taken (`unit` in [0, 1) draws it), so that gateways that failed together
/// do not retry together.
pub fn backoff(failures: u32, unit: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let full = FIRST_BACKOFF.saturating_mul(1 << exp).min(MAX_BACKOFF);
    full.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// A random number in [0, 1); `RandomState` is seeded by the OS, which is
/// plenty for jitter and needs no other crate.
fn random_unit() -> f64 {
    (RandomState::new().hash_one(()) >> 11) as f64 / (1u64 << 53) as f64
}

async fn work<D: Deliver>(
    name: String,
    deliver: D,
    mut rx: mpsc::Receiver<Message>,
    metrics: Arc<Metrics>,
) {
    while let Some(message) = rx.recv().await {
        send(&name, &deliver, &message, &metrics).await;
    }
}

/// Delivers one message with its retries; returns when it was sent or
/// given up.
async fn send<D: Deliver>(name: &str, deliver: &D, message: &Message, metrics: &Metrics) {
    let what = match &message.event.server {
        Some(s) => format!("{} {}", s.name, message.event.kind),
        None => message.event.kind.to_owned(),
    };
    for attempt in 1..=MAX_ATTEMPTS {
        let started = Instant::now();
        let (why, asked) = match deliver.deliver(&message.event, &message.id).await {
            Outcome::Sent => {
                tracing::info!(
                    "notify {name}: sent ({what}) in {} ms, attempt {attempt}",
                    started.elapsed().as_millis()
                );
                count(metrics, name, "sent");
                return;
            }
            Outcome::Failed { why } => {
                tracing::warn!("notify {name}: refused ({what}): {why}; not retried");
                count(metrics, name, "failed");
                return;
            }
            Outcome::Retry { why, after } => (why, after),
        };
        let pause = backoff(attempt, random_unit()).max(asked.unwrap_or_default());
        let late = message.made.elapsed() + pause > MAX_AGE;
        if attempt == MAX_ATTEMPTS || late {
            let bound = if late {
                format!(
                    "the next try would be over {} late",
                    humantime::format_duration(MAX_AGE)
                )
            } else {
                format!("{MAX_ATTEMPTS} attempts")
            };
            tracing::warn!("notify {name}: given up ({what}) after {bound}: {why}");
            count(metrics, name, "failed");
            return;
        }
        tracing::info!(
            "notify {name}: attempt {attempt} failed ({what}): {why}; next in {} ms",
            pause.as_millis()
        );
        count(metrics, name, "retried");
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// Replays scripted outcomes (then `Sent`) and notes when it was called.
    #[derive(Clone, Default)]
    struct Scripted {
        outcomes: Arc<Mutex<VecDeque<Outcome>>>,
        calls: Arc<Mutex<Vec<Instant>>>,
    }

    impl Deliver for Scripted {
        async fn deliver(&self, _: &Event, _: &str) -> Outcome {
            self.calls.lock().unwrap().push(Instant::now());
            self.outcomes
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Outcome::Sent)
        }
    }

    fn retry(after: Option<Duration>) -> Outcome {
        Outcome::Retry {
            why: "answered 500".into(),
            after,
        }
    }

    fn message() -> Message {
        let config = crate::config::Config::builtin();
        Message {
            event: Arc::new(super::super::event::test_event(&config)),
            id: "1".into(),
            made: Instant::now(),
        }
    }

    fn counted(metrics: &Metrics, result: &'static str) -> u64 {
        metrics
            .notifications
            .get_or_create(&NotifyLabels {
                target: "t".into(),
                result,
            })
            .get()
    }

    /// Lets the worker run until it waits again.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    /// Steps the paused clock until `n` calls happened (at most `limit`).
    async fn until_calls(s: &Scripted, n: usize, limit: Duration) {
        let end = Instant::now() + limit;
        while s.calls.lock().unwrap().len() < n && Instant::now() < end {
            tokio::time::advance(Duration::from_millis(10)).await;
            settle().await;
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_bound_with_jitter() {
        assert_eq!(backoff(1, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(1, 0.999_999).as_millis(), 999);
        assert_eq!(backoff(2, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(3, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(7, 0.0), Duration::from_secs(30));
        assert_eq!(backoff(8, 0.0), Duration::from_secs(30));
        assert_eq!(backoff(100, 0.0), Duration::from_secs(30));
        for _ in 0..100 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_and_respect_retry_after() {
        let s = Scripted::default();
        s.outcomes.lock().unwrap().extend([
            retry(None),
            retry(Some(Duration::from_secs(20))),
            retry(None),
        ]);
        let metrics = Arc::new(Metrics::new());
        let q = Queue::start("t".into(), s.clone(), metrics.clone());
        let start = Instant::now();
        q.push(message());
        settle().await;
        until_calls(&s, 4, Duration::from_secs(60)).await;
        let at: Vec<Duration> = s.calls.lock().unwrap().iter().map(|t| *t - start).collect();
        assert_eq!(at.len(), 4, "{at:?}");
        assert_eq!(at[0], Duration::ZERO);
        // 0.5-1 s after the first failure.
        let first = at[1] - at[0];
        assert!(
            first >= Duration::from_millis(500) && first <= Duration::from_millis(1010),
            "{first:?}"
        );
        // The target asked for 20 s, longer than the backoff of 1-2 s.
        let second = at[2] - at[1];
        assert!(
            second >= Duration::from_secs(20) && second <= Duration::from_millis(20_010),
            "{second:?}"
        );
        let third = at[3] - at[2];
        assert!(
            third >= Duration::from_secs(2) && third <= Duration::from_millis(4010),
            "{third:?}"
        );
        settle().await;
        assert_eq!(counted(&metrics, "retried"), 3);
        assert_eq!(counted(&metrics, "sent"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts() {
        let s = Scripted::default();
        s.outcomes
            .lock()
            .unwrap()
            .extend((0..MAX_ATTEMPTS).map(|_| retry(None)));
        let metrics = Arc::new(Metrics::new());
        let q = Queue::start("t".into(), s.clone(), metrics.clone());
        q.push(message());
        until_calls(&s, MAX_ATTEMPTS as usize + 1, Duration::from_secs(600)).await;
        settle().await;
        assert_eq!(s.calls.lock().unwrap().len(), MAX_ATTEMPTS as usize);
        assert_eq!(counted(&metrics, "retried"), u64::from(MAX_ATTEMPTS - 1));
        assert_eq!(counted(&metrics, "failed"), 1);
        assert_eq!(counted(&metrics, "sent"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_max_age_gives_up_at_once() {
        let s = Scripted::default();
        s.outcomes
            .lock()
            .unwrap()
            .push_back(retry(Some(MAX_AGE + Duration::from_secs(1))));
        let metrics = Arc::new(Metrics::new());
        let q = Queue::start("t".into(), s.clone(), metrics.clone());
        q.push(message());
        settle().await;
        assert_eq!(counted(&metrics, "failed"), 1);
        assert_eq!(s.calls.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_not_retried_and_a_full_queue_drops() {
        /// Never answers: the queue behind it fills up.
        struct Hangs;
        impl Deliver for Hangs {
            async fn deliver(&self, _: &Event, _: &str) -> Outcome {
                std::future::pending().await
            }
        }
        let metrics = Arc::new(Metrics::new());
        let q = Queue::start("t".into(), Hangs, metrics.clone());
        // One in the worker, QUEUE waiting, then two dropped.
        for _ in 0..QUEUE + 3 {
            q.push(message());
            settle().await;
        }
        assert_eq!(counted(&metrics, "dropped"), 2);

        let s = Scripted::default();
        s.outcomes.lock().unwrap().push_back(Outcome::Failed {
            why: "answered 401".into(),
        });
        let q = Queue::start("t".into(), s.clone(), metrics.clone());
        q.push(message());
        tokio::time::advance(Duration::from_secs(120)).await;
        settle().await;
        assert_eq!(s.calls.lock().unwrap().len(), 1);
        assert_eq!(counted(&metrics, "failed"), 1);
    }
}
