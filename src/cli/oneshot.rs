//! The commands that run once and report: `check` (what a file means),
//! `probe` (every server's check, now) and `notify-test` (a message to
//! every target).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use super::{env_config, load_for_serving, DEFAULT_CONFIG};
use crate::config::{CheckKind, Config, Depth, TargetKind, WhenAllDown};
use crate::health::{Probe, ServerProbe};

pub(super) fn run_check(file: Option<PathBuf>) -> ExitCode {
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
pub(super) async fn run_notify_test(file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
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

pub(super) async fn run_probe(file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
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
}
