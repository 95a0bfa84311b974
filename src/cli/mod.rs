//! The command line: `serve` (the default), `check`, `probe` and
//! `notify-test`.

mod oneshot;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::gateway::{ConfigSource, Gateway};
use crate::server::{serve, ListenAddr, Listener};

/// Config file used when none is named.
pub const DEFAULT_CONFIG: &str = "routes.yaml";

/// How long the exit waits for background work (such as a DNS lookup)
/// that outlived the server.
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(1);

/// Short, stable, health-aware links for Jitsi meeting rooms.
#[derive(Parser, Debug)]
#[command(
    name = "roomgate",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the rooms (the default).
    Serve(ServeArgs),
    /// Validate a routes file and print a summary; exit 1 on the first error.
    Check {
        /// The file to check [default: $ROOMGATE_CONFIG, else ./routes.yaml]
        file: Option<PathBuf>,
    },
    /// Probe every server once and print a table; exit 1 if any is down.
    Probe {
        /// The routes file [default: $ROOMGATE_CONFIG, else ./routes.yaml, else the built-in routes]
        file: Option<PathBuf>,
    },
    /// Send a test message to every notify target and print each result;
    /// exit 1 if any failed.
    NotifyTest {
        /// The routes file [default: $ROOMGATE_CONFIG, else ./routes.yaml]
        file: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Routes file [default: ./routes.yaml, else the built-in Chaosdorf routes]
    #[arg(long, env = "ROOMGATE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// HOST:PORT or unix:/path/to.sock
    #[arg(
        long,
        env = "ROOMGATE_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:8080"
    )]
    listen: ListenAddr,
    /// Connections served at once; more get 503 (lowered to fit the open file limit)
    #[arg(
        long,
        env = "ROOMGATE_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = crate::server::MAX_CONNECTIONS
    )]
    max_connections: usize,
    /// Permissions of a unix socket, in octal. The default 666 matches a TCP
    /// port on 127.0.0.1 (any local process may connect), so that nginx can
    /// use it out of the box; use 660 with a shared group to restrict it.
    #[arg(
        long,
        env = "ROOMGATE_SOCKET_MODE",
        value_name = "OCTAL",
        default_value = "666",
        value_parser = parse_socket_mode
    )]
    socket_mode: u32,
    /// Threads of the async runtime that serves requests and runs probes
    /// [default: one per core]
    #[arg(long, env = "ROOMGATE_WORKERS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: Option<u16>,
    /// Directory where the servers' state changes are kept, so that the
    /// 24-hour history outlives restarts (docs/state.md) [default: none,
    /// history in memory only]
    #[arg(long, env = "ROOMGATE_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

/// `--socket-mode`: octal permission bits such as `660` or `0660`.
fn parse_socket_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 && !digits.is_empty() => Ok(mode),
        _ => Err(format!(
            "`{text}` is not an octal file mode like 660 or 0666"
        )),
    }
}

impl Cli {
    /// Runs the command the user asked for.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        init_logging();
        // One runtime for everything: connections, probes, signals, reloads.
        let mut runtime = tokio::runtime::Builder::new_multi_thread();
        let workers = match &self.command {
            None => self.serve.workers,
            Some(Command::Serve(args)) => args.workers,
            // Probing and checking need little.
            Some(_) => Some(1),
        };
        if let Some(n) = workers {
            runtime.worker_threads(n.into());
        }
        let runtime = runtime
            .thread_name("roomgate-worker")
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let result = match self.command {
            None => runtime.block_on(run_serve(self.serve)),
            Some(Command::Serve(args)) => runtime.block_on(run_serve(args)),
            Some(Command::Check { file }) => Ok(oneshot::run_check(file)),
            Some(Command::Probe { file }) => runtime.block_on(oneshot::run_probe(file)),
            Some(Command::NotifyTest { file }) => runtime.block_on(oneshot::run_notify_test(file)),
        };
        // A DNS lookup of a probe runs on a blocking thread and cannot be
        // cancelled; do not let it hold up the exit after SIGTERM.
        runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
        result
    }
}

/// Logs to stderr at `info`, or as `RUST_LOG` says: a level (`debug`) or
/// `target=level` pairs (`info,roomgate::health=debug`). `Targets` rather than
/// `EnvFilter`: the same directives people use, without the regex engine
/// behind EnvFilter's span filters (240 KB of binary, resident in every
/// process).
fn init_logging() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let (filter, bad) = match spec.trim() {
        "" => (Targets::new().with_default(LevelFilter::INFO), None),
        spec => match spec.parse::<Targets>() {
            Ok(filter) => (filter, None),
            Err(e) => (Targets::new().with_default(LevelFilter::INFO), Some(e)),
        },
    };
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init();
    if let Some(e) = bad {
        tracing::warn!("RUST_LOG={spec:?} is not a log filter ({e}); logging at info");
    }
}

/// `ROOMGATE_CONFIG`, for the subcommands that take the file positionally.
fn env_config() -> Option<PathBuf> {
    std::env::var_os("ROOMGATE_CONFIG").map(PathBuf::from)
}

/// The config to serve: the named file, else `./routes.yaml`, else the
/// built-in routes.
fn load_for_serving(named: Option<PathBuf>) -> anyhow::Result<(Config, ConfigSource)> {
    match named {
        Some(path) => Ok((Config::load(&path)?, ConfigSource::File(path))),
        None => {
            let path = PathBuf::from(DEFAULT_CONFIG);
            if path.exists() {
                Ok((Config::load(&path)?, ConfigSource::File(path)))
            } else {
                tracing::info!(
                    "no ./{DEFAULT_CONFIG} here: serving the built-in Chaosdorf routes (SIGHUP loads ./{DEFAULT_CONFIG} once it exists)"
                );
                Ok((Config::builtin(), ConfigSource::Builtin(path)))
            }
        }
    }
}

async fn run_serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let (config, source) = load_for_serving(args.config)?;
    if let ConfigSource::File(path) = &source {
        tracing::info!(
            "loaded {}: {} servers, {} rooms",
            path.display(),
            config.servers.len(),
            config.rooms.len()
        );
    }
    let state = match &args.state_dir {
        Some(dir) => {
            let names: Vec<String> = config.servers.iter().map(|s| s.name.clone()).collect();
            Some(crate::health::journal::open(dir, &names)?)
        }
        None => None,
    };
    // Signals are ours before anything says "listening": a SIGTERM that
    // follows that line at once is a clean stop, not the default death.
    let mut hangup = signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
    let max_connections = crate::limits::fit_connection_cap(args.max_connections);
    let listener = Listener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    listener
        .set_socket_mode(args.socket_mode)
        .with_context(|| format!("cannot set the mode of {}", listener.describe()))?;
    let gw = Gateway::start_with(config, source, state);
    tracing::info!("listening on {}", listener.describe());

    let reloader = gw.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config");
            if let Err(e) = reloader.reload().await {
                tracing::error!("reload failed, keeping the running config: {e}");
            }
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
    };
    // Serving ends with the signal (exit 0) or with an error that waiting
    // cannot mend (exit 1, so that systemd or Kubernetes restart us).
    let served = serve(gw.clone(), listener, max_connections, shutdown).await;
    gw.close();
    served.context("serving stopped")?;
    Ok(ExitCode::SUCCESS)
}

fn signal(kind: tokio::signal::unix::SignalKind) -> anyhow::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind).context("installing a signal handler")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_modes_are_octal() {
        assert_eq!(parse_socket_mode("666"), Ok(0o666));
        assert_eq!(parse_socket_mode("0660"), Ok(0o660));
        assert_eq!(parse_socket_mode("0o600"), Ok(0o600));
        for bad in ["", "0o", "888", "1777", "rw-rw-rw-", "-1", "66 6"] {
            assert!(parse_socket_mode(bad).is_err(), "{bad:?}");
        }
    }
}
