//! The command line: `serve` (the default), `check`, `probe` and
//! `notify-test`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::config::{CheckKind, Config, Depth, TargetKind, WhenAllDown};
use crate::gateway::{ConfigSource, Gateway};
use crate::health::{Probe, ServerProbe};
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
            Some(Command::Check { file }) => Ok(run_check(file)),
            Some(Command::Probe { file }) => runtime.block_on(run_probe(file)),
            Some(Command::NotifyTest { file }) => runtime.block_on(run_notify_test(file)),
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
    let max_connections = crate::limits::fit_connection_cap(args.max_connections);
    let listener = Listener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    listener
        .set_socket_mode(args.socket_mode)
        .with_context(|| format!("cannot set the mode of {}", listener.describe()))?;
    let gw = Gateway::start_with(config, source, state);
    tracing::info!("listening on {}", listener.describe());

    let mut hangup = signal(tokio::signal::unix::SignalKind::hangup())?;
    let reloader = gw.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config");
            if let Err(e) = reloader.reload().await {
                tracing::error!("reload failed, keeping the running config: {e}");
            }
        }
    });
    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
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

fn run_check(file: Option<PathBuf>) -> ExitCode {
    let path = file
        .or_else(env_config)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    match Config::load(&path) {
        Ok(config) => {
            print!("{}", summary(&path, &config));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// What `check` prints for a valid file.
fn summary(path: &Path, config: &Config) -> String {
    use std::fmt::Write as _;
    let mut out = format!("{}: valid\n\nservers:\n", path.display());
    for s in &config.servers {
        let kind = match &s.check.kind {
            CheckKind::Jitsi {
                xmpp_domain,
                depth,
                guest_domain,
            } => {
                let mut text = format!("jitsi, domain {xmpp_domain}, depth {}", depth.as_str());
                if let Some(guest) = guest_domain {
                    let _ = write!(text, ", guests at {guest}");
                }
                if let Depth::Focus { focus_domain } = depth {
                    let _ = write!(text, ", focus {focus_domain}");
                }
                text
            }
            CheckKind::Http {
                path,
                expect_status,
                ..
            } => format!("http {path} -> {expect_status}"),
        };
        let _ = writeln!(
            out,
            "  {:<12} {}  ({kind}; every {}, {} while confirming, timeout {}, rise {}, fall {})",
            s.name,
            s.url,
            humantime::format_duration(s.check.interval),
            humantime::format_duration(s.check.fast_interval),
            humantime::format_duration(s.check.timeout),
            s.check.rise,
            s.check.fall
        );
        if let Some(o) = &s.occupancy {
            let _ = writeln!(
                out,
                "  {:<12} occupancy: counted every {} in {}, {} occupant(s) of a live room not counted",
                "",
                humantime::format_duration(o.interval),
                o.muc_domain,
                o.exclude
            );
        }
    }
    out.push_str("\nrooms:\n");
    let names = |targets: &[crate::config::Target]| {
        targets
            .iter()
            .map(|t| {
                let server = &config.servers[t.server].name;
                if t.room.is_empty() {
                    server.clone()
                } else {
                    format!("{server}/{}", t.room)
                }
            })
            .collect::<Vec<_>>()
            .join(" -> ")
    };
    for room in &config.rooms {
        let aliases = if room.aliases.is_empty() {
            String::new()
        } else {
            format!(" (aliases: {})", room.aliases.join(", "))
        };
        let _ = writeln!(out, "  /{}{aliases}: {}", room.name, names(&room.targets));
    }
    // As routes.yaml spells it, not as the Rust enum is named.
    let when_all_down = match config.defaults.when_all_down {
        WhenAllDown::First => "first",
        WhenAllDown::Page => "page",
    };
    let _ = writeln!(
        out,
        "\nredirect status {}; when all servers are down: {when_all_down}",
        config.defaults.redirect_status
    );
    if config.unlisted.allow {
        let _ = writeln!(
            out,
            "unlisted rooms: forwarded to {}",
            names(&config.unlisted.servers)
        );
    } else {
        out.push_str("unlisted rooms: 404\n");
    }
    notify_summary(&mut out, config);
    out
}

/// The `notify:` part of `check`'s summary: where messages go and where
/// each token comes from, never the token.
fn notify_summary(out: &mut String, config: &Config) {
    use std::fmt::Write as _;
    let notify = &config.notify;
    if notify.targets.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nnotifications (timeout {}{}):",
        humantime::format_duration(notify.timeout),
        if notify.on_start {
            ", first results after start too"
        } else {
            ""
        }
    );
    for target in &notify.targets {
        let place = match &target.kind {
            TargetKind::Webhook { url, .. } => url.clone(),
            TargetKind::Matrix {
                homeserver, room, ..
            } => format!("{room} on {homeserver}"),
            TargetKind::Telegram { api, chat, .. } => format!("chat {chat} via {api}"),
        };
        let token = target.kind.token().map_or_else(
            || "no token".to_owned(),
            |t| format!("token from {}", t.source()),
        );
        let _ = writeln!(
            out,
            "  {:<12} {} {place}  ({token})",
            target.name,
            target.kind.as_str()
        );
    }
}

/// `notify-test`: one test message to every target, one attempt each, all
/// at once; a table of the results.
async fn run_notify_test(file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use crate::notify::Outcome;
    let path = file
        .or_else(env_config)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let config = Config::load(&path)?;
    if config.notify.targets.is_empty() {
        println!("{}: no notify targets to test", path.display());
        return Ok(ExitCode::FAILURE);
    }
    let results = crate::notify::send_test(&config).await;
    println!(
        "{:<12} {:<9} {:<7} {:>8}  DETAIL",
        "TARGET", "KIND", "RESULT", "TIME"
    );
    let mut all_sent = true;
    for (target, (outcome, took)) in config.notify.targets.iter().zip(results) {
        let (result, detail) = match outcome {
            Outcome::Sent => ("sent", "ok".to_owned()),
            Outcome::Retry { why, after } => {
                all_sent = false;
                let wait = after.map_or_else(String::new, |a| {
                    format!(" (asks to wait {})", humantime::format_duration(a))
                });
                (
                    "failed",
                    format!("{why}{wait}; a real message would be retried"),
                )
            }
            Outcome::Failed { why } => {
                all_sent = false;
                ("failed", why)
            }
        };
        println!(
            "{:<12} {:<9} {:<7} {:>6}ms  {detail}",
            target.name,
            target.kind.as_str(),
            result,
            took.as_millis()
        );
    }
    Ok(if all_sent {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run_probe(file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (config, _) = load_for_serving(file.or_else(env_config))?;
    // All servers at once, so the whole run takes one timeout at most;
    // awaiting the handles in order keeps the table in config order.
    let running: Vec<_> = config
        .servers
        .iter()
        .map(|server| {
            let probe = ServerProbe::new(server);
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                let outcome = probe.probe().await;
                (outcome, started.elapsed())
            })
        })
        .collect();
    let mut results = Vec::with_capacity(running.len());
    for task in running {
        results.push(task.await.context("a probe task failed")?);
    }

    // Columns as wide as their longest entry, so long names keep them aligned.
    let name_width = config
        .servers
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(6);
    let url_width = config
        .servers
        .iter()
        .map(|s| s.url.chars().count())
        .max()
        .unwrap_or(0)
        .max(3);
    println!(
        "{:<name_width$} {:<url_width$} {:<5} {:>8}  DETAIL",
        "SERVER", "URL", "STATE", "TIME"
    );
    let mut all_up = true;
    for (server, (outcome, took)) in config.servers.iter().zip(results) {
        let (state, detail, took) = match outcome {
            Ok(latency) => ("up", "ok".to_owned(), latency),
            Err(e) => {
                all_up = false;
                ("down", e.into_string(), took)
            }
        };
        println!(
            "{:<name_width$} {:<url_width$} {:<5} {:>6}ms  {detail}",
            server.name,
            server.url,
            state,
            took.as_millis()
        );
    }
    Ok(if all_up {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_says_which_servers_count_their_rooms() {
        let config = Config::parse(
            "servers:\n  a: { url: 'https://a.example', occupancy: { interval: 1m } }\n  \
             b: { url: 'https://b.example' }\n",
            "t",
            Path::new("."),
        )
        .unwrap();
        let text = summary(Path::new("routes.yaml"), &config);
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("occupancy")).collect();
        assert_eq!(
            lines,
            ["               occupancy: counted every 1m in conference.a.example, 1 occupant(s) of a live room not counted"]
        );
    }

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
