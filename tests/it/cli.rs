//! The command line of the real binary: `check`, `probe`, and how `serve`
//! finds its config and its listen address.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_roomgate");

/// A command for the binary in `cwd`, with none of our env leaking in.
fn roomgate(cwd: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(BIN);
    cmd.current_dir(cwd)
        .env("RUST_LOG", "info")
        .env_remove("ROOMGATE_CONFIG")
        .env_remove("ROOMGATE_LISTEN")
        .stdin(Stdio::null());
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A valid config whose servers are on loopback ports nobody listens on
/// (`check` never contacts them).
const VALID: &str = "servers:
  primary:
    url: http://127.0.0.1:9
  backup:
    url: http://127.0.0.1:10
    check: { kind: http, path: /config.js }
rooms:
  Lounge:
    aliases: [treff]
  Cave:
    servers: [backup]
";

#[test]
fn check_accepts_a_valid_file_and_summarises_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "routes.yaml", VALID);
    let out = roomgate(dir.path())
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for needle in ["valid", "primary", "backup", "/Lounge", "treff", "/Cave"] {
        assert!(stdout.contains(needle), "no {needle:?} in:\n{stdout}");
    }
}

#[test]
fn check_rejects_an_invalid_file_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let bad = "servers:\n  primary:\n    url: http://127.0.0.1:9\n    colour: red\nrooms:\n  Lounge: {}\n";
    let file = write_file(dir.path(), "routes.yaml", bad);
    let out = roomgate(dir.path())
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // The unknown key is on line 4, column 5.
    let want = format!("{}:4:5: ", file.display());
    assert!(stderr.starts_with(&want), "want {want:?}, got:\n{stderr}");
    assert!(stderr.contains("colour"), "{stderr}");
}

#[test]
fn check_names_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = roomgate(dir.path())
        .args(["check", "no-such-routes.yaml"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no-such-routes.yaml"), "{stderr}");
}

#[test]
fn check_reads_roomgate_config_when_no_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let file = write_file(elsewhere.path(), "mine.yaml", VALID);
    // The cwd has no routes.yaml, so only the env can name the file.
    let out = roomgate(dir.path())
        .arg("check")
        .env("ROOMGATE_CONFIG", &file)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains(&file.display().to_string()), "{stdout}");
    assert!(stdout.contains("/Lounge"), "{stdout}");
}

#[test]
fn check_accepts_the_repository_routes() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.yaml");
    let dir = tempfile::tempdir().unwrap();
    let out = roomgate(dir.path())
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for needle in [
        "chaosdorf",
        "ffmuc",
        "Lounge",
        "Hackcenter",
        "Cave",
        "Freitagsfoo",
    ] {
        assert!(stdout.contains(needle), "no {needle:?} in:\n{stdout}");
    }
}

/// The table row of server `name`.
fn row<'a>(table: &'a str, name: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{table}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_prints_a_table_and_fails_when_a_server_is_down() {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::BoshDown).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "routes.yaml",
        &two_server_yaml(&primary.url(), &backup.url(), ""),
    );
    let out = run_probe(&file).await;
    let table = text(&out.stdout);
    println!("{table}");
    assert_eq!(out.status.code(), Some(1), "{table}{}", text(&out.stderr));
    let up = row(&table, "primary");
    assert!(up.split_whitespace().any(|w| w == "up"), "{up}");
    let down = row(&table, "backup");
    assert!(down.split_whitespace().any(|w| w == "down"), "{down}");
    assert!(down.contains("BOSH answered 502"), "{down}");
    // One probe each, nothing more.
    assert_eq!(primary.counts().bosh_creates, 1);
    assert_eq!(backup.counts().bosh_creates, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_succeeds_when_all_servers_are_up() {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "routes.yaml",
        &two_server_yaml(&primary.url(), &backup.url(), ""),
    );
    let out = run_probe(&file).await;
    let table = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}{}", text(&out.stderr));
    for name in ["primary", "backup"] {
        let r = row(&table, name);
        assert!(r.split_whitespace().any(|w| w == "up"), "{r}");
    }
}

/// Columns stay aligned whatever the names' lengths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_aligns_long_server_names() {
    let up = StandIn::http(Mode::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "servers:\n  a-rather-long-server-name-of-40-characters:\n    url: {url}\n    \
         check: {FAST_CHECK}\n  b:\n    url: {url}/with/a/longer/path/prefix\n    \
         check: {{ kind: http, timeout: 1s }}\nrooms:\n  Lounge: {{}}\n",
        url = up.url()
    );
    let file = write_file(dir.path(), "routes.yaml", &yaml);
    let table = text(&run_probe(&file).await.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    let state_column = |line: &str| {
        line.find(" up ")
            .or_else(|| line.find(" STATE "))
            .or_else(|| line.find(" down "))
    };
    let columns: Vec<_> = lines.iter().map(|l| state_column(l)).collect();
    assert!(columns[0].is_some(), "{table}");
    assert!(
        columns.iter().all(|c| *c == columns[0]),
        "{columns:?}\n{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_runs_the_servers_at_once() {
    // Two servers that never answer, 1 s timeout each: one after the other
    // would take 2 s.
    let a = StandIn::http(Mode::BlackHole).await;
    let b = StandIn::http(Mode::BlackHole).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "servers:
  a:
    url: {}
    check: {{ timeout: 1s, xmpp_domain: localhost }}
  b:
    url: {}
    check: {{ timeout: 1s, xmpp_domain: localhost }}
rooms:
  Lounge: {{}}
",
        a.url(),
        b.url()
    );
    let file = write_file(dir.path(), "routes.yaml", &yaml);
    let start = Instant::now();
    let out = run_probe(&file).await;
    let took = start.elapsed();
    let table = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(
        took < Duration::from_millis(1800),
        "took {took:?}:\n{table}"
    );
    // Rows keep the config order.
    let names: Vec<_> = table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["a", "b"], "{table}");
    assert!(row(&table, "a").contains("no answer within 1s"), "{table}");
}

#[test]
fn serve_without_a_config_picks_the_builtin_routes() {
    // Serving the built-in routes would probe virtual.chaosdorf.space and
    // meet.ffmuc.net, and this machine's resolver is not on loopback: no
    // DNS may leave it. So the listen address is taken, which stops the
    // start after the config is chosen and before any prober runs.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = roomgate(dir.path())
        .args(["--listen", &addr])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("serving the built-in Chaosdorf routes"),
        "{stderr}"
    );
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
}

#[test]
fn a_bad_listen_address_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "routes.yaml", VALID);
    for (how, bad) in [("flag", "nonsense"), ("flag", "unix:"), ("env", "8080")] {
        let mut cmd = roomgate(dir.path());
        cmd.arg("serve").arg("--config").arg(&file);
        if how == "flag" {
            cmd.args(["--listen", bad]);
        } else {
            cmd.env("ROOMGATE_LISTEN", bad);
        }
        let out = cmd.output().unwrap();
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{how} {bad}: {stderr}");
        assert!(stderr.contains("--listen"), "{how} {bad}: {stderr}");
        let hint = if bad.starts_with("unix:") {
            "socket path"
        } else {
            "HOST:PORT"
        };
        assert!(stderr.contains(hint), "{how} {bad}: {stderr}");
    }
}

/// Waits until a stderr line of a served process contains `needle`.
async fn wait_line(log: &Mutex<Vec<String>>, needle: &str, bound: Duration) -> Option<String> {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if let Some(l) = log.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return Some(l.clone());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_config_and_listen_address_from_the_env() {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "elsewhere.yaml",
        &two_server_yaml(&primary.url(), &backup.url(), ""),
    );
    // No arguments at all: both come from the env.
    let mut child = tokio::process::Command::new(BIN)
        .current_dir(cwd.path())
        .env("RUST_LOG", "info")
        .env("ROOMGATE_CONFIG", &file)
        .env("ROOMGATE_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    let line = wait_line(
        &log,
        "listening on http://127.0.0.1:",
        Duration::from_secs(10),
    )
    .await
    .unwrap_or_else(|| panic!("not listening:\n{}", log.lock().unwrap().join("\n")));
    let base = line[line.find("http://").unwrap()..].trim().to_owned();
    assert!(log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("elsewhere.yaml")));
    let r = get(&format!("{base}/Lounge"), &[]).await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location").unwrap(),
        format!("{}/Lounge", primary.url())
    );

    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let exit = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(exit.success());
}

#[test]
fn rust_log_takes_levels_and_targets_and_a_bad_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "routes.yaml", VALID);
    // `check` logs nothing itself, so serve for a moment under each filter,
    // until a line with `until`: a bad filter is named and logging stays at
    // info. VALID's servers refuse, so each logs a warning at its first
    // probe.
    let run = |filter: &str, until: &str| {
        let mut child = roomgate(dir.path())
            .env("RUST_LOG", filter)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&file)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // Lines come through a channel, so that the wait for them is
        // bounded (15 s) and the child is killed here, by its handle.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut seen = Vec::new();
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            let done = line.contains(until);
            seen.push(line);
            if done {
                break;
            }
        }
        child.kill().expect("kill roomgate");
        child.wait().expect("wait for roomgate");
        reader.join().expect("stderr reader");
        seen.join("\n")
    };
    let bad = run("roomgate=loud", "listening on");
    assert!(
        bad.contains("RUST_LOG=\"roomgate=loud\" is not a log filter"),
        "{bad}"
    );
    assert!(bad.contains("listening on"), "{bad}");
    // Warnings only: the info lines are gone, startup still works.
    let quiet = run("warn", "backup down");
    assert!(!quiet.contains("INFO"), "{quiet}");
    assert!(quiet.contains("WARN"), "{quiet}");
    // Per-target directives work as with EnvFilter.
    let mixed = run("warn,roomgate=info", "listening on");
    assert!(mixed.contains("INFO"), "{mixed}");
}

/// Runs `roomgate check FILE`, killing it if it has not ended within 10 s
/// (a FIFO used to block it for good); returns the exit code and stderr.
fn check_bounded(file: &Path) -> (Option<i32>, String) {
    let mut child = roomgate(file.parent().unwrap())
        .arg("check")
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("`roomgate check {}` did not end in 10 s", file.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), text(&out.stderr))
}

#[test]
fn check_refuses_a_fifo_an_oversized_file_and_deep_nesting_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let (code, stderr) = check_bounded(&fifo);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("{}: ", fifo.display())) && stderr.contains("is a FIFO"),
        "{stderr}"
    );

    // Over 256 KiB of comment lines after a valid file.
    let big = format!(
        "{VALID}{}",
        "# padding padding padding padding\n".repeat(31_000)
    );
    assert!(big.len() > 256 << 10);
    let big = write_file(dir.path(), "big.yaml", &big);
    let (code, stderr) = check_bounded(&big);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("{}: ", big.display())) && stderr.contains("256 KiB"),
        "{stderr}"
    );

    // 200 KB of nested `[`: refused at once, at the first `[` too deep.
    let deep = write_file(
        dir.path(),
        "deep.yaml",
        &format!("servers: {}\n", "[".repeat(200_000)),
    );
    let started = Instant::now();
    let (code, stderr) = check_bounded(&deep);
    println!("check of a deep file: {:?}", started.elapsed());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("{}:1:41: ", deep.display()))
            && stderr.contains("nested deeper than 32 levels"),
        "{stderr}"
    );
}
