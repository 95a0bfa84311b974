//! The live gateway: the current config snapshot, the health monitor, and
//! reloads that swap one for the other without losing health state.
//!
//! Requests read the snapshot through `arc-swap`, which costs no lock, and a
//! reload builds a complete new snapshot before swapping it in, so a request
//! sees either the old config or the new one, never a mix.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::{Config, ConfigError};
use crate::decision::{choose, Choice};
use crate::health::{Monitor, ServerHandle, State};
use crate::metrics::Metrics;
use crate::routes::Routes;

/// How long a request waits at cold start for the first probe of its
/// servers before it treats them as unknown. Short: a slow first probe must
/// not make the first visitors wait for the full check timeout.
pub const COLD_START_WAIT: Duration = Duration::from_millis(1500);

/// Rooms with up to this many servers are resolved without allocating.
const INLINE_TARGETS: usize = 8;

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
}

/// The running gateway.
pub struct Gateway {
    /// The config in force.
    current: ArcSwap<Snapshot>,
    /// Probers and their shared results.
    monitor: Monitor,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
    /// What reloads read.
    source: std::sync::Mutex<ConfigSource>,
}

impl Gateway {
    /// Starts probing every server of `config`. Must run inside a tokio
    /// runtime.
    pub fn start(config: Config, source: ConfigSource) -> Arc<Gateway> {
        let metrics = Arc::new(Metrics::new());
        let monitor = Monitor::new(metrics.clone());
        let servers = config
            .servers
            .iter()
            .map(|s| monitor.watch(s.clone()))
            .collect();
        let routes = Routes::compile(&config, &metrics);
        Arc::new(Gateway {
            current: ArcSwap::from_pointee(Snapshot {
                config,
                routes,
                servers,
            }),
            monitor,
            metrics,
            source: std::sync::Mutex::new(source),
        })
    }

    /// The snapshot in force; cheap, lock-free.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The health monitor.
    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// Whether every server has its first probe result.
    pub fn is_ready(&self) -> bool {
        self.snapshot().servers.iter().all(|s| s.is_ready())
    }

    /// Reads the config source again and applies it. On error the running
    /// config stays and the error (with its position) is returned.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let source = self.lock_source().clone();
        let loaded = match &source {
            ConfigSource::File(path) => Config::load(path).map(|c| (c, None)),
            ConfigSource::Builtin(path) if path.exists() => {
                Config::load(path).map(|c| (c, Some(ConfigSource::File(path.clone()))))
            }
            ConfigSource::Builtin(path) => {
                tracing::info!(
                    "reload: {} still does not exist; keeping the built-in routes",
                    path.display()
                );
                self.metrics.reload(true);
                return Ok(());
            }
        };
        match loaded {
            Ok((config, new_source)) => {
                if let Some(new_source) = new_source {
                    *self.lock_source() = new_source;
                }
                self.apply(config);
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

    /// Swaps in `config`. Servers whose settings did not change keep their
    /// prober and so their health state; the others start afresh.
    pub fn apply(&self, config: Config) {
        let old = self.snapshot();
        let mut kept = 0;
        let servers: Vec<Arc<ServerHandle>> = config
            .servers
            .iter()
            .map(
                |server| match old.servers.iter().find(|h| h.server == *server) {
                    Some(handle) => {
                        kept += 1;
                        handle.clone()
                    }
                    None => self.monitor.watch(server.clone()),
                },
            )
            .collect();
        let routes = Routes::compile(&config, &self.metrics);
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
        }));
        // Probers of servers that are gone stop when the last request that
        // still holds the old snapshot is done with it.
    }

    /// Decides where a room with these servers goes now.
    ///
    /// In steady state every server has a result and this does not wait: it
    /// reads one atomic word per server and decides, with no lock and no
    /// allocation. Only at cold start does it wait (see [`COLD_START_WAIT`]).
    pub async fn choose(
        &self,
        snap: &Snapshot,
        servers: impl ExactSizeIterator<Item = usize> + Clone,
    ) -> Choice {
        if let Some(choice) = self.choose_now(snap, servers.clone()) {
            return choice;
        }
        self.wait_ready(snap, servers.clone()).await;
        decide(snap, servers)
    }

    /// [`Gateway::choose`] without waiting: `None` while one of `servers`
    /// has no probe result yet (cold start), when the caller should wait
    /// with [`Gateway::wait_ready`] and then use [`Gateway::decide`].
    pub fn choose_now(
        &self,
        snap: &Snapshot,
        servers: impl ExactSizeIterator<Item = usize> + Clone,
    ) -> Option<Choice> {
        if servers.clone().all(|i| snap.servers[i].is_ready()) {
            Some(decide(snap, servers))
        } else {
            None
        }
    }

    /// Waits at most [`COLD_START_WAIT`] for the first probe results of
    /// `servers`.
    pub async fn wait_ready(&self, snap: &Snapshot, servers: impl Iterator<Item = usize>) {
        wait_ready(snap, servers, tokio::time::Instant::now() + COLD_START_WAIT).await;
    }

    /// Decides from the route states now, whether or not every server has
    /// its first result (those without are unknown).
    pub fn decide(&self, snap: &Snapshot, servers: impl ExactSizeIterator<Item = usize>) -> Choice {
        decide(snap, servers)
    }

    /// Like [`Gateway::choose`], waiting at cold start at most until
    /// `deadline`, so a request that resolves many rooms waits once.
    pub async fn choose_by(
        &self,
        snap: &Snapshot,
        servers: impl ExactSizeIterator<Item = usize> + Clone,
        deadline: tokio::time::Instant,
    ) -> Choice {
        wait_ready(snap, servers.clone(), deadline).await;
        decide(snap, servers)
    }
}

/// Waits until each of `servers` has its first probe result, at most until
/// `deadline`.
async fn wait_ready(
    snap: &Snapshot,
    servers: impl Iterator<Item = usize>,
    deadline: tokio::time::Instant,
) {
    for i in servers {
        let handle = &snap.servers[i];
        if !handle.is_ready() {
            handle.wait_ready(deadline).await;
        }
    }
}

/// The decision from the route states of `servers` now, held on the stack
/// for rooms of up to [`INLINE_TARGETS`] servers.
fn decide(snap: &Snapshot, servers: impl ExactSizeIterator<Item = usize>) -> Choice {
    let n = servers.len();
    let mut inline = [State::Unknown; INLINE_TARGETS];
    let mut heap = Vec::new();
    let states: &mut [State] = if n <= INLINE_TARGETS {
        &mut inline[..n]
    } else {
        heap.resize(n, State::Unknown);
        &mut heap
    };
    read_states(snap, servers, states);
    choose(states, snap.routes.when_all_down)
}

/// The route state of each of `servers` now, written into `states`.
fn read_states(snap: &Snapshot, servers: impl Iterator<Item = usize>, states: &mut [State]) {
    let now = tokio::time::Instant::now();
    for (slot, i) in states.iter_mut().zip(servers) {
        *slot = snap.servers[i].route_state(now);
    }
}
