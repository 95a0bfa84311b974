//! Notifications: telling people where they read (a Matrix room, a
//! Telegram channel, a webhook) that a server went down or came back, and
//! where its rooms go now.
//!
//! The path of a change: a prober reports it after the hysteresis (a
//! [`crate::health::Change`], never one per probe); the gateway's announcer
//! task turns it into an [`Event`] with [`describe`], reading the config and
//! every server's state from the snapshot in force; the [`Notifier`] queues
//! it for each target, whose own task delivers it ([`send`]) with retries
//! ([`queue`]). Probers and requests never wait for any of it.
//!
//! - `event.rs`: what a change means for the rooms, and its JSON;
//! - `text.rs`: the message people read, in the site's language;
//! - `send.rs`: one HTTP attempt per target kind, and what an answer means;
//! - `queue.rs`: a bounded queue and a worker per target: backoff, jitter,
//!   the waits targets ask for, and what is given up.

mod event;
mod queue;
mod send;
mod text;

pub use event::{describe, test_event, Event, Moved, ServerInfo, EVENT_VERSION};
pub use queue::{FIRST_BACKOFF, MAX_AGE, MAX_ATTEMPTS, MAX_BACKOFF, QUEUE};
pub use send::{Client, Deliver, Outcome};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{Config, Notify};
use crate::metrics::Metrics;
use queue::{Message, Queue};

/// Numbers the messages of this process, for ids that never repeat.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// The targets of one `notify:` section, each with its queue and worker.
/// Swapped with the config on reload when the section changed; the old
/// workers finish what they hold and end.
pub struct Notifier {
    /// The section it was built from, to tell whether a reload changed it.
    pub config: Notify,
    /// One per target, in config order.
    queues: Vec<Queue>,
}

impl Notifier {
    /// Starts a worker per target. Must run inside a tokio runtime.
    pub fn start(config: &Notify, metrics: &Arc<Metrics>) -> Notifier {
        let queues = config
            .targets
            .iter()
            .map(|t| {
                let client = Client::new(t.clone(), config.timeout);
                Queue::start(t.name.clone(), client, metrics.clone())
            })
            .collect();
        Notifier {
            config: config.clone(),
            queues,
        }
    }

    /// Queues `event` for every target; never waits.
    pub fn notify(&self, event: Event) {
        if self.queues.is_empty() {
            return;
        }
        let event = Arc::new(event);
        let id = message_id();
        let made = tokio::time::Instant::now();
        for queue in &self.queues {
            queue.push(Message {
                event: event.clone(),
                id: id.clone(),
                made,
            });
        }
    }
}

/// A message id unique across restarts: the wall clock in milliseconds
/// and this process's sequence number.
fn message_id() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    format!(
        "roomgate-{now}-{}",
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    )
}

/// `roomgate notify-test`: the test message to every target of `config`,
/// one attempt each (no retries, so that a bad token shows at once), all
/// at the same time; each outcome and how long it took, in target order.
pub async fn send_test(config: &Config) -> Vec<(Outcome, std::time::Duration)> {
    let event = Arc::new(test_event(config));
    let id = format!("{}-test", message_id());
    let running: Vec<_> = config
        .notify
        .targets
        .iter()
        .map(|target| {
            let client = Client::new(target.clone(), config.notify.timeout);
            let (event, id) = (event.clone(), id.clone());
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                let outcome = client.deliver(&event, &id).await;
                (outcome, started.elapsed())
            })
        })
        .collect();
    let mut results = Vec::with_capacity(running.len());
    for task in running {
        results.push(task.await.unwrap_or_else(|e| {
            let why = format!("the attempt failed: {e}");
            (Outcome::Failed { why }, std::time::Duration::ZERO)
        }));
    }
    results
}
