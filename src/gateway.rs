//! The live gateway: the current snapshot (config, routes, probed servers,
//! occupancy pollers), and reloads that swap it whole without losing health
//! state or counts.
//!
//! Requests read the snapshot through `arc-swap`, which costs no lock, and a
//! reload builds a complete new snapshot before swapping it in, so a request
//! sees either the old config or the new one, never a mix.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::config::{Config, ConfigError};
use crate::decision::{self, Choice};
use crate::health::journal::{Journal, Opened};
use crate::health::{Change, ChangeSender, Health, ServerHandle, State};
use crate::metrics::Metrics;
use crate::notify::{self, Notifier};
use crate::occupancy::{self, OccupancyHandle, Seen};
use crate::routes::{RouteRoom, RouteTarget, Routes};

/// How long a request waits at cold start for the first probe of its
/// servers before it treats them as unknown. Short: a slow first probe must
/// not make the first visitors wait for the full check timeout.
pub const COLD_START_WAIT: Duration = Duration::from_millis(1500);

/// State changes that may wait to be announced. Changes come at most one
/// per server and `fast_interval`, and are handled at once; this only
/// bounds a burst.
const CHANGES_WAITING: usize = 256;

/// Where the running config came from, and so what a reload reads.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A file; reloads read it again.
    File(PathBuf),
    /// The built-in routes, because the default file did not exist; a reload
    /// switches to that file once it does.
    Builtin(PathBuf),
}

/// Everything a request needs, swapped as one on reload.
pub struct Snapshot {
    /// The validated config.
    pub config: Config,
    /// Its compiled route table.
    pub routes: Routes,
    /// One probed server per `config.servers` entry, same order.
    pub servers: Vec<Arc<ServerHandle>>,
    /// The occupancy poller of each server, same order; `None` where
    /// occupancy is off.
    pub occupancy: Vec<Option<Arc<OccupancyHandle>>>,
    /// The targets of `config.notify`, with their queues.
    pub notifier: Arc<Notifier>,
}

impl Snapshot {
    /// Where a room whose servers are `servers` (indices into
    /// [`Snapshot::servers`], in preference order) goes now.
    ///
    /// In steady state this reads each server's latest result once and does
    /// not wait. Only while a server that could decide the answer has no
    /// first result yet (cold start) does it wait for it, at most
    /// [`COLD_START_WAIT`]; then it counts as unknown.
    pub async fn choose(&self, servers: impl Iterator<Item = usize> + Clone) -> Choice {
        let mut not_ready = false;
        let now = Instant::now();
        let choice = decision::choose(
            servers.clone().map(|i| {
                self.servers[i].state(now).unwrap_or_else(|| {
                    not_ready = true;
                    State::Unknown
                })
            }),
            self.routes.when_all_down,
        );
        if !not_ready {
            return choice;
        }
        self.wait_ready(servers.clone(), now + COLD_START_WAIT)
            .await;
        let now = Instant::now();
        let health = servers.map(|i| self.servers[i].state(now).unwrap_or(State::Unknown));
        decision::choose(health, self.routes.when_all_down)
    }

    /// Where a room whose servers are `servers` goes at `now`, from each
    /// server's latest result, never waiting: unknown before the first.
    pub fn choose_now(&self, servers: impl Iterator<Item = usize>, now: Instant) -> Choice {
        let states = servers.map(|i| self.servers[i].state(now).unwrap_or(State::Unknown));
        decision::choose(states, self.routes.when_all_down)
    }

    /// The people in `target`'s room on its server at `now`; `None` when
    /// unknown or not counted there.
    pub fn occupants(&self, target: &RouteTarget, now: Instant) -> Option<Seen> {
        let handle = self.occupancy.get(target.server)?.as_ref()?;
        handle.people(&target.room, now)
    }

    /// The people in `room` on the server it redirects to under `choice`.
    pub fn occupants_of(&self, room: &RouteRoom, choice: Choice, now: Instant) -> Option<Seen> {
        match choice {
            Choice::Target(i) => self.occupants(room.targets.get(i)?, now),
            Choice::AllDownPage => None,
        }
    }

    /// Every listed room with its people now (on the server it redirects
    /// to now, never waiting), for `/metrics`.
    pub fn occupants_now(&self) -> impl Iterator<Item = (&str, Option<u32>)> {
        let now = Instant::now();
        self.routes.rooms.iter().map(move |room| {
            let choice = self.choose_now(room.servers(), now);
            let people = self.occupants_of(room, choice, now).map(|s| s.people);
            (room.name.as_str(), people)
        })
    }

    /// Waits until each of `servers` has its first result, at most until
    /// `deadline`.
    pub async fn wait_ready(&self, servers: impl Iterator<Item = usize>, deadline: Instant) {
        for i in servers {
            self.servers[i].wait_ready(deadline).await;
        }
    }

    /// Every server's latest result, read once, in config order: what an
    /// answer about several servers (the status page) is decided from, so
    /// that it never mixes two moments.
    pub fn health(&self) -> Vec<Option<Arc<Health>>> {
        self.servers.iter().map(|s| s.health()).collect()
    }

    /// Whether every server has its first result.
    pub fn is_ready(&self) -> bool {
        self.servers.iter().all(|s| s.is_ready())
    }

    /// Announces `change` to the notification targets, if it is news (see
    /// [`notify::describe`]); reads every other server's state now.
    fn announce(&self, change: &Change) {
        let now = Instant::now();
        let states: Vec<State> = self
            .servers
            .iter()
            .map(|s| s.state(now).unwrap_or(State::Unknown))
            .collect();
        if let Some(event) = notify::describe(change, &self.config, &states) {
            self.notifier.notify(event);
        }
    }
}

/// The running gateway.
pub struct Gateway {
    /// The config in force.
    current: ArcSwap<Snapshot>,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
    /// What reloads read.
    source: std::sync::Mutex<ConfigSource>,
    /// Given to every prober, for its state changes.
    changes: ChangeSender,
    /// Where state changes are written, with `--state-dir`.
    journal: Option<Journal>,
}

impl Gateway {
    /// Starts probing every server of `config`, with histories in memory
    /// only. Must run inside a tokio runtime.
    pub fn start(config: Config, source: ConfigSource) -> Arc<Gateway> {
        Gateway::start_with(config, source, None)
    }

    /// Starts probing every server of `config`; with `state`, each server's
    /// history goes on from the one read back, and changes are written
    /// there. Must run inside a tokio runtime.
    pub fn start_with(config: Config, source: ConfigSource, state: Option<Opened>) -> Arc<Gateway> {
        let metrics = Arc::new(Metrics::new());
        let (changes, received) = tokio::sync::mpsc::channel(CHANGES_WAITING);
        let (journal, mut histories) = match state {
            Some(opened) => (Some(opened.journal), opened.histories),
            None => (None, Default::default()),
        };
        let servers = config
            .servers
            .iter()
            .map(|s| {
                let history = histories.remove(&s.name).map(Arc::new);
                let (journal, changes) = (journal.clone(), Some(changes.clone()));
                ServerHandle::spawn(s.clone(), metrics.clone(), history, journal, changes)
            })
            .collect();
        let routes = Routes::compile(&config, &metrics);
        let occupancy = occupancy_pollers(&config, &[], &metrics);
        let notifier = Arc::new(Notifier::start(&config.notify, &metrics));
        let gateway = Arc::new(Gateway {
            current: ArcSwap::from_pointee(Snapshot {
                config,
                routes,
                servers,
                occupancy,
                notifier,
            }),
            metrics,
            source: std::sync::Mutex::new(source),
            changes,
            journal,
        });
        tokio::spawn(announcer(Arc::downgrade(&gateway), received));
        gateway
    }

    /// Ends the run in the state directory (its `stop` record), if there
    /// is one; call it once serving has ended.
    pub fn close(&self) {
        if let Some(journal) = &self.journal {
            journal.close();
        }
    }

    /// The snapshot in force; cheap, lock-free.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Whether every server has its first probe result (`/readyz`).
    pub fn is_ready(&self) -> bool {
        self.snapshot().is_ready()
    }

    /// Reads the config source again and applies it. On error the running
    /// config stays and the error (with its position) is returned.
    ///
    /// Reading and parsing run on a blocking thread, never on the
    /// runtime's workers: whatever the file is or holds, probers and
    /// requests go on meanwhile (`Config::load` bounds the work itself).
    pub async fn reload(&self) -> Result<(), ConfigError> {
        let source = self.lock_source().clone();
        let shown = match &source {
            ConfigSource::File(path) | ConfigSource::Builtin(path) => path.display().to_string(),
        };
        let loading = tokio::task::spawn_blocking(move || match &source {
            ConfigSource::File(path) => Config::load(path).map(|c| Some((c, None))),
            ConfigSource::Builtin(path) if path.exists() => {
                Config::load(path).map(|c| Some((c, Some(ConfigSource::File(path.clone())))))
            }
            ConfigSource::Builtin(_) => Ok(None),
        });
        let loaded = loading.await.unwrap_or_else(|e| {
            // Only a bug in parsing gets here; the running config stays.
            Err(ConfigError::Read {
                file: shown.clone(),
                reason: std::io::Error::other(format!("reading the config failed: {e}")),
            })
        });
        match loaded {
            Ok(Some((config, new_source))) => {
                if let Some(new_source) = new_source {
                    *self.lock_source() = new_source;
                }
                self.apply(config);
                self.metrics.reload(true);
                Ok(())
            }
            Ok(None) => {
                tracing::info!("reload: {shown} still does not exist; keeping the built-in routes");
                self.metrics.reload(true);
                Ok(())
            }
            Err(e) => {
                self.metrics.reload(false);
                Err(e)
            }
        }
    }

    fn lock_source(&self) -> std::sync::MutexGuard<'_, ConfigSource> {
        // The source is plain data; a panic elsewhere cannot leave it torn.
        self.source.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Swaps in `config`. Servers probed as before (see
    /// [`crate::config::Server::probed_alike`]) keep their prober and so
    /// their health state; the others start afresh, but a
    /// server of the same name keeps its history (unknown from now until
    /// its first probe). The same for occupancy pollers, whose rooms must
    /// not have changed either.
    pub fn apply(&self, config: Config) {
        let old = self.snapshot();
        let mut kept = 0;
        let servers: Vec<Arc<ServerHandle>> = config
            .servers
            .iter()
            .map(
                |server| match old.servers.iter().find(|h| h.server.probed_alike(server)) {
                    Some(handle) => {
                        kept += 1;
                        handle.clone()
                    }
                    None => {
                        let predecessor = old.servers.iter().find(|h| h.server.name == server.name);
                        if let Some(old) = predecessor {
                            old.stop_probing();
                        }
                        let history = predecessor.map(|h| h.history.clone());
                        ServerHandle::spawn(
                            server.clone(),
                            self.metrics.clone(),
                            history,
                            self.journal.clone(),
                            Some(self.changes.clone()),
                        )
                    }
                },
            )
            .collect();
        if let Some(journal) = &self.journal {
            journal.set_names(config.servers.iter().map(|s| s.name.clone()).collect());
        }
        let routes = Routes::compile(&config, &self.metrics);
        let occupancy = occupancy_pollers(&config, &old.occupancy, &self.metrics);
        // Unchanged targets keep their queues, and what waits in them.
        let notifier = if old.notifier.config == config.notify {
            old.notifier.clone()
        } else {
            Arc::new(Notifier::start(&config.notify, &self.metrics))
        };
        tracing::info!(
            "config reloaded: {} servers ({} kept their health state), {} rooms",
            config.servers.len(),
            kept,
            config.rooms.len()
        );
        self.current.store(Arc::new(Snapshot {
            config,
            routes,
            servers,
            occupancy,
            notifier,
        }));
        // Probers of servers that are gone stop when the last request that
        // still holds the old snapshot is done with it.
    }
}

/// Announces each state change that probers report, with the snapshot in
/// force when it arrives. Ends with the gateway.
async fn announcer(gateway: Weak<Gateway>, mut changes: tokio::sync::mpsc::Receiver<Change>) {
    while let Some(change) = changes.recv().await {
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        gateway.snapshot().announce(&change);
    }
}

/// An occupancy poller for each server of `config` that has occupancy on:
/// one of `old` where it counts the same rooms with the same settings, else
/// a new one.
fn occupancy_pollers(
    config: &Config,
    old: &[Option<Arc<OccupancyHandle>>],
    metrics: &Arc<Metrics>,
) -> Vec<Option<Arc<OccupancyHandle>>> {
    config
        .servers
        .iter()
        .enumerate()
        .map(|(i, server)| {
            server.occupancy.as_ref()?;
            let rooms = occupancy::rooms_on(config, i);
            let kept = old.iter().flatten().find(|h| h.fits(server, &rooms));
            match kept {
                Some(handle) => Some(handle.clone()),
                None => OccupancyHandle::spawn(server, rooms, metrics),
            }
        })
        .collect()
}

/// Snapshots with scripted probes and occupancy sources, for the unit tests
/// of everything that reads one.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::health::{Probe, ProbeError};
    use crate::occupancy::{Occupancy, OccupancySource};

    /// A probe that succeeds while its switch is on.
    #[derive(Clone)]
    pub(crate) struct Switch(pub(crate) Arc<AtomicBool>);

    impl Switch {
        pub(crate) fn new(up: bool) -> Switch {
            Switch(Arc::new(AtomicBool::new(up)))
        }
        pub(crate) fn set(&self, up: bool) {
            self.0.store(up, Ordering::SeqCst);
        }
    }

    impl Probe for Switch {
        async fn probe(&self) -> Result<Duration, ProbeError> {
            if self.0.load(Ordering::SeqCst) {
                Ok(Duration::from_millis(1))
            } else {
                Err(ProbeError::new("BOSH answered 502"))
            }
        }
    }

    /// A source that always answers the same.
    pub(crate) struct Fixed(pub(crate) Vec<Occupancy>);

    impl OccupancySource for Fixed {
        async fn occupants(&self, _: &[String]) -> Result<Vec<Occupancy>, ProbeError> {
            Ok(self.0.clone())
        }
    }

    impl Snapshot {
        /// A snapshot of `config` whose server `i` is probed by `probes[i]`
        /// and, where occupancy is on, counted by `sources[i]`.
        pub(crate) fn scripted(
            config: Config,
            probes: Vec<Switch>,
            sources: Vec<Fixed>,
        ) -> Snapshot {
            let metrics = Arc::new(Metrics::new());
            let servers = config
                .servers
                .iter()
                .zip(probes)
                .map(|(s, p)| ServerHandle::spawn_with(s.clone(), p, metrics.clone(), None))
                .collect();
            let occupancy = config
                .servers
                .iter()
                .zip(sources)
                .enumerate()
                .map(|(i, (s, source))| {
                    s.occupancy.as_ref()?;
                    let rooms = occupancy::rooms_on(&config, i);
                    Some(OccupancyHandle::spawn_with(s, rooms, source, &metrics))
                })
                .collect();
            Snapshot {
                routes: Routes::compile(&config, &metrics),
                notifier: Arc::new(Notifier::start(&config.notify, &metrics)),
                config,
                servers,
                occupancy,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        Config::parse(yaml, "t", std::path::Path::new(".")).unwrap()
    }

    #[tokio::test]
    async fn a_reload_keeps_a_poller_that_counts_the_same_rooms_the_same_way() {
        let metrics = Arc::new(Metrics::new());
        let servers = "servers:\n  a: { url: 'http://127.0.0.1:1', occupancy: true }\n  \
                       b: { url: 'http://127.0.0.1:2' }\n";
        let first = config(&format!("{servers}rooms:\n  Lounge: {{}}\n"));
        let old = occupancy_pollers(&first, &[], &metrics);
        assert!(old[0].is_some() && old[1].is_none());
        let same = |new: &[Option<Arc<OccupancyHandle>>]| match (&old[0], &new[0]) {
            (Some(old), Some(new)) => Arc::ptr_eq(old, new),
            _ => false,
        };
        // A new description changes nothing that is asked.
        let kept = config(&format!(
            "{servers}rooms:\n  Lounge: {{ description: Hi }}\n"
        ));
        assert!(same(&occupancy_pollers(&kept, &old, &metrics)));
        // Nor does a new label.
        let relabelled = config(&format!(
            "{}rooms:\n  Lounge: {{}}\n",
            servers.replace("occupancy: true", "occupancy: true, label: A")
        ));
        assert!(same(&occupancy_pollers(&relabelled, &old, &metrics)));
        // Another room, another interval, occupancy off: a new poller or none.
        let more = config(&format!("{servers}rooms:\n  Lounge: {{}}\n  Cave: {{}}\n"));
        assert!(!same(&occupancy_pollers(&more, &old, &metrics)));
        let slower = config(&format!(
            "{}rooms:\n  Lounge: {{}}\n",
            servers.replace("occupancy: true", "occupancy: { interval: 1m }")
        ));
        assert!(!same(&occupancy_pollers(&slower, &old, &metrics)));
        let off = config(&format!(
            "{}rooms:\n  Lounge: {{}}\n",
            servers.replace("occupancy: true", "occupancy: false")
        ));
        assert!(occupancy_pollers(&off, &old, &metrics)[0].is_none());
    }
}
