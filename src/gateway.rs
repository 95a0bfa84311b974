//! The live gateway: the current snapshot (config, routes, probed servers),
//! and reloads that swap it whole without losing health state.
//!
//! Requests read the snapshot through `arc-swap`, which costs no lock, and a
//! reload builds a complete new snapshot before swapping it in, so a request
//! sees either the old config or the new one, never a mix.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::config::{Config, ConfigError};
use crate::decision::{self, Choice};
use crate::health::journal::{Journal, Opened};
use crate::health::{Health, ServerHandle, State};
use crate::metrics::Metrics;
use crate::routes::Routes;

/// How long a request waits at cold start for the first probe of its
/// servers before it treats them as unknown. Short: a slow first probe must
/// not make the first visitors wait for the full check timeout.
pub const COLD_START_WAIT: Duration = Duration::from_millis(1500);

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
}

/// The running gateway.
pub struct Gateway {
    /// The config in force.
    current: ArcSwap<Snapshot>,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
    /// What reloads read.
    source: std::sync::Mutex<ConfigSource>,
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
        let (journal, mut histories) = match state {
            Some(opened) => (Some(opened.journal), opened.histories),
            None => (None, Default::default()),
        };
        let servers = config
            .servers
            .iter()
            .map(|s| {
                let history = histories.remove(&s.name).map(Arc::new);
                ServerHandle::spawn(s.clone(), metrics.clone(), history, journal.clone())
            })
            .collect();
        let routes = Routes::compile(&config, &metrics);
        Arc::new(Gateway {
            current: ArcSwap::from_pointee(Snapshot {
                config,
                routes,
                servers,
            }),
            metrics,
            source: std::sync::Mutex::new(source),
            journal,
        })
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

    /// Swaps in `config`. Servers whose settings did not change keep their
    /// prober and so their health state; the others start afresh, but a
    /// server of the same name keeps its history (unknown from now until
    /// its first probe).
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
                        )
                    }
                },
            )
            .collect();
        if let Some(journal) = &self.journal {
            journal.set_names(config.servers.iter().map(|s| s.name.clone()).collect());
        }
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
}
