//! `--state-dir`: the 24-hour history outlives restarts, crashes and
//! reloads, with the real binary against stand-in Jitsi servers; damaged,
//! foreign and future files, and directories roomgate cannot use.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::gate::{healthy_pair, two_server_yaml, GateProcess};
use crate::support::standin::{Mode, StandIn};
use crate::support::tools::as_nobody;
use crate::support::*;

/// How long roomgate may take to start, probe, or stop.
const BOUND: Duration = Duration::from_secs(15);

/// `roomgate serve --state-dir <state>` for `config`, waited for until it
/// listens.
async fn start(config: &Path, state: &Path) -> GateProcess {
    let dir = config.parent().unwrap();
    let state = state.to_str().unwrap();
    GateProcess::start_via(&[], config, dir, &["--state-dir", state], "info").await
}

/// Runs `roomgate serve` with `args` after `serve` and expects it to exit
/// non-zero, with a line containing `needle`; returns the log.
async fn fails_to_start(wrapper: &[&str], config: &Path, args: &[&str], needle: &str) -> String {
    let dir = config.parent().unwrap();
    let mut command = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut c = tokio::process::Command::new(program);
            c.args(rest).arg(env!("CARGO_BIN_EXE_roomgate"));
            c
        }
        None => tokio::process::Command::new(env!("CARGO_BIN_EXE_roomgate")),
    };
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .args(args)
        .current_dir(dir)
        .env_remove("ROOMGATE_STATE_DIR");
    let mut gate = GateProcess::spawn_command(command);
    let status = gate.wait_exit(BOUND).await.expect("roomgate exits");
    let log = gate.log_text();
    assert!(!status.success(), "started anyway:\n{log}");
    assert_eq!(
        status.code(),
        Some(1),
        "an error exit, not a crash: {status}\n{log}"
    );
    assert!(log.contains(needle), "no {needle:?} in:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(gate.count_log("listening on"), 0, "{log}");
    log
}

/// The `uptime` of server `name` in `status`.
fn uptime<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    &server(status, name)["uptime"]
}

/// The states of `uptime`'s segments, in order.
fn states(uptime: &serde_json::Value) -> Vec<String> {
    uptime["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .map(|s| s["state"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls until `primary` has been up for at least `secs` seconds of its
/// window; returns that status.
async fn wait_up_s(url: &str, secs: u64) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let status = status_json(url).await;
        if uptime(&status, "primary")["up_s"].as_u64().unwrap() >= secs {
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The history file's records, each line checked against its CRC-32.
/// Every line but the last must be whole and sound; the last may be cut
/// short (no newline). Returns the sound records' bodies, and whether the
/// last one was cut.
fn records(state: &Path) -> (Vec<String>, bool) {
    let bytes = std::fs::read(state.join("history")).expect("history file");
    let text = String::from_utf8(bytes).expect("UTF-8");
    let torn = !text.ends_with('\n');
    let mut lines: Vec<&str> = text.split('\n').collect();
    lines.pop();
    assert_eq!(lines.first(), Some(&"roomgate-history 1"), "{text}");
    let mut out = Vec::new();
    for line in &lines[1..] {
        let (sum, body) = line.split_once(' ').expect("checksum and body");
        let sum = u32::from_str_radix(sum, 16).expect("hex checksum");
        assert_eq!(
            sum,
            crc32fast::hash(body.as_bytes()),
            "bad record {line:?} in\n{text}"
        );
        out.push(body.to_owned());
    }
    (out, torn)
}

/// The `up`/`down` records of server `name`: (unix ms, state).
fn changes_of(records: &[String], name: &str) -> Vec<(u64, String)> {
    records
        .iter()
        .filter_map(|r| {
            let words: Vec<&str> = r.split(' ').collect();
            match words[..] {
                [ms, state @ ("up" | "down"), n] if n == name => {
                    Some((ms.parse().unwrap(), state.to_owned()))
                }
                _ => None,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_history_and_the_time_down_is_unknown() {
    let (primary, backup, dir, config) = healthy_pair().await;
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();

    let mut gate = start(&config, &state).await;
    let before = wait_up_s(&gate.url("/status.json"), 2).await;
    let before = uptime(&before, "primary").clone();
    gate.signal("TERM");
    assert!(gate.wait_exit(BOUND).await.unwrap().success());
    let (records, torn) = records(&state);
    assert!(!torn);
    assert!(records.last().unwrap().ends_with(" stop"), "{records:?}");
    // Down for a while: at least one whole second, which the JSON shows.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let gate = start(&config, &state).await;
    let url = gate.url("/status.json");
    wait_state(&url, "primary", "up", BOUND).await;
    let after = wait_up_s(&url, before["up_s"].as_u64().unwrap() + 1).await;
    let after = uptime(&after, "primary");
    eprintln!("before the restart: {before:#}\nafter the restart: {after:#}");
    // The window starts where it did, with the first run.
    assert_eq!(after["from"], before["from"], "{before}\n{after}");
    assert!(after["up_s"].as_u64() > before["up_s"].as_u64());
    assert_eq!(after["availability_percent"], 100.0, "{after}");
    // Unknown until the first probe, up in the first run, unknown while
    // stopped, up again.
    assert_eq!(states(after), ["unknown", "up", "unknown", "up"], "{after}");
    let gap = &after["segments"][2];
    assert!(gap["to"].as_str() > gap["from"].as_str(), "{after}");
    assert_eq!(
        after["segments"][0]["from"], before["segments"][0]["from"],
        "{before}\n{after}"
    );
    // Every segment follows the one before.
    let list = after["segments"].as_array().unwrap();
    for pair in list.windows(2) {
        assert_eq!(pair[0]["to"], pair[1]["from"], "{after}");
    }

    // A reload that changes only the primary's label keeps its prober:
    // no new stretch of unknown.
    let reload = |yaml: String| {
        std::fs::write(&config, yaml).unwrap();
        let lines = gate.log_len();
        gate.signal("HUP");
        gate.wait_log_after(lines, "config reloaded", BOUND)
    };
    let yaml = two_server_yaml(&primary.url(), &backup.url(), "    label: Primär");
    reload(yaml).await.expect("reloaded");
    let status = wait_state(&url, "primary", "up", BOUND).await;
    let relabelled = uptime(&status, "primary");
    assert_eq!(
        states(relabelled),
        ["unknown", "up", "unknown", "up"],
        "{relabelled}"
    );

    // One that changes how it is probed (another timeout) starts a new
    // prober, and the history still goes on.
    let check = "interval: 300ms, fast_interval: 100ms, timeout: 250ms, rise: 2, fall: 2, \
                 xmpp_domain: localhost";
    let yaml = crate::support::faults::yaml_with_check(&primary.url(), check, &backup.url());
    reload(yaml).await.expect("reloaded");
    let status = wait_state(&url, "primary", "up", BOUND).await;
    let reloaded = uptime(&status, "primary");
    assert_eq!(reloaded["from"], before["from"], "{reloaded}");
    // Unknown from the reload to the first probe with the new settings.
    assert_eq!(
        states(reloaded),
        ["unknown", "up", "unknown", "up", "unknown", "up"],
        "{reloaded}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_a_server_flaps_loses_at_most_the_record_being_written() {
    let primary = StandIn::http(Mode::Flapping).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let flap = "{ interval: 60ms, fast_interval: 60ms, timeout: 50ms, rise: 1, fall: 1, xmpp_domain: localhost }";
    let yaml = format!(
        "servers:\n  primary:\n    url: {}\n    check: {flap}\n  backup:\n    url: {}\n    check: {}\n\
         defaults:\n  servers: [primary, backup]\nrooms:\n  Lounge: {{}}\n",
        primary.url(),
        backup.url(),
        crate::support::gate::FAST_CHECK
    );
    let config = write_file(dir.path(), "routes.yaml", &yaml);
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();

    // Moments to kill at, spread over a flap or two, not known in advance.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut kept: Vec<(u64, String)> = Vec::new();
    let mut first_from = None;
    for round in 0..5u64 {
        let gate = start(&config, &state).await;
        let url = gate.url("/status.json");
        if round > 0 {
            // Everything the earlier runs wrote was read back.
            let (records, _) = records(&state);
            let now = changes_of(&records, "primary");
            for change in &kept {
                assert!(now.contains(change), "{change:?} lost after round {round}");
            }
        }
        // Let it flap a little, then kill it at an arbitrary moment.
        let wait = 300 + (seed.wrapping_mul(round + 7919) % 400);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let status = status_json(&url).await;
        let from = uptime(&status, "primary")["from"].clone();
        assert_eq!(*first_from.get_or_insert(from.clone()), from, "{status}");
        gate.signal("KILL");
        let mut gate = gate;
        gate.wait_exit(BOUND).await.expect("killed");

        let (records, torn) = records(&state);
        if torn {
            eprintln!("round {round}: killed while writing a record; its start is skipped");
        }
        kept = changes_of(&records, "primary");
        assert!(kept.len() >= 2, "the server flapped: {records:?}");
        // No stop: the run ended at its last record.
        assert!(!records.last().unwrap().ends_with(" stop"));
    }
    // Changes of the server written in the last run are all back.
    let gate = start(&config, &state).await;
    let (records, _) = records(&state);
    let now = changes_of(&records, "primary");
    for change in &kept {
        assert!(now.contains(change), "{change:?} lost");
    }
    let size = std::fs::metadata(state.join("history")).unwrap().len();
    eprintln!(
        "after 5 kills: {} changes of primary kept, file {size} bytes",
        now.len()
    );
    assert!(gate.count_log("panicked") == 0, "{}", gate.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_file_is_read_around_with_a_warning() {
    let (_primary, _backup, dir, config) = healthy_pair().await;
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 3_600_000;
    let line = |body: String| format!("{:08x} {body}\n", crc32fast::hash(body.as_bytes()));
    let mut text = String::from("roomgate-history 1\n");
    text += &line(format!("{hour_ago} start"));
    text += &line(format!("{} up primary", hour_ago + 1000));
    // A bit flipped in a record, then garbage, then a record cut short.
    let damaged = line(format!("{} down primary", hour_ago + 2000)).replace("down", "dowm");
    text += &damaged;
    text += "\u{0}\u{0}\u{0} not a record\n";
    text += &line(format!("{} alive", hour_ago + 1_800_000));
    text += &line(format!("{} down primary", hour_ago + 1_900_000))[..20];
    std::fs::write(state.join("history"), &text).unwrap();

    let gate = start(&config, &state).await;
    let skipped = gate
        .wait_log("skipped 2 damaged records (lines 4, 5)", BOUND)
        .await;
    assert!(
        skipped.is_some_and(|l| l.contains("WARN")),
        "{}",
        gate.log_text()
    );
    assert!(gate.wait_log("was cut short", BOUND).await.is_some());
    let status = wait_state(&gate.url("/status.json"), "primary", "up", BOUND).await;
    let up = uptime(&status, "primary");
    // Unknown until the first probe of that run, up for the half hour the
    // sound records tell, unknown since, up again now.
    assert_eq!(states(up), ["unknown", "up", "unknown", "up"], "{up}");
    let up_s = up["up_s"].as_u64().unwrap();
    assert!((1799..=1801).contains(&up_s), "{up}");
    // The file was rewritten sound.
    let (records, torn) = records(&state);
    assert!(
        !torn && records.iter().all(|r| !r.contains("dowm")),
        "{records:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_or_foreign_file_stops_the_start_and_is_left_untouched() {
    let (_primary, _backup, dir, config) = healthy_pair().await;
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let arg = state.to_str().unwrap();
    for (text, needle) in [
        (
            "roomgate-history 2\nsomething newer\n",
            "history format version 2, but this roomgate reads version 1",
        ),
        ("PK\u{3}\u{4} a zip file\n", "not a roomgate history file"),
    ] {
        std::fs::write(state.join("history"), text).unwrap();
        fails_to_start(&[], &config, &["--state-dir", arg], needle).await;
        assert_eq!(
            std::fs::read_to_string(state.join("history")).unwrap(),
            text
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_shared_directory_stops_the_start() {
    let (_primary, _backup, dir, config) = healthy_pair().await;
    let missing = dir.path().join("missing");
    let log = fails_to_start(
        &[],
        &config,
        &["--state-dir", missing.to_str().unwrap()],
        "does not exist",
    )
    .await;
    assert!(log.contains(missing.to_str().unwrap()), "{log}");
    // ROOMGATE_STATE_DIR works as the flag does.
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_roomgate"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("ROOMGATE_STATE_DIR", &missing);
    let mut gate = GateProcess::spawn_command(command);
    assert_eq!(gate.wait_exit(BOUND).await.unwrap().code(), Some(1));
    assert!(
        gate.log_text().contains("does not exist"),
        "{}",
        gate.log_text()
    );

    // Two instances, one directory: the second is refused.
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let first = start(&config, &state).await;
    fails_to_start(
        &[],
        &config,
        &["--state-dir", state.to_str().unwrap()],
        "in use by another roomgate",
    )
    .await;
    // The first goes on serving.
    assert_eq!(get(&first.url("/healthz"), &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_directory_stops_the_start() {
    use std::os::unix::fs::PermissionsExt as _;
    let (_primary, _backup, dir, config) = healthy_pair().await;
    // Root writes anywhere: then roomgate runs as nobody, as a service
    // would, and the permission check is the kernel's.
    let Some(wrapper) = as_nobody() else {
        return;
    };
    if !wrapper.is_empty() {
        crate::support::nginx::open_dir(dir.path());
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let state: PathBuf = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o555)).unwrap();
    fails_to_start(
        wrapper,
        &config,
        &["--state-dir", state.to_str().unwrap()],
        "cannot use the state directory",
    )
    .await;
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);
}
