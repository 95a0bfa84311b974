//! roomgate under test: in-process (fast, for most tests) or as the real
//! binary (for signals and the command line).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roomgate::config::Config;
use roomgate::gateway::{ConfigSource, Gateway};
use roomgate::server::{serve, ListenAddr, Listener};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::oneshot;

use super::standin::{Mode, StandIn};

/// A roomgate served in this process on 127.0.0.1 port 0.
pub struct Gate {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The live gateway, for looking inside (health, snapshot).
    pub gw: Arc<Gateway>,
    /// Directory holding routes.yaml (and whatever the test wrote beside it).
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Gate {
    /// Writes `yaml` as routes.yaml in a fresh directory and serves it.
    pub async fn start(yaml: &str) -> Gate {
        let dir = tempfile::tempdir().expect("temp dir");
        Gate::start_in(dir, yaml).await
    }

    /// Like [`Gate::start`], in a directory the test prepared (e.g. with a
    /// CA file that routes.yaml names relatively).
    pub async fn start_in(dir: tempfile::TempDir, yaml: &str) -> Gate {
        let path = super::write_file(dir.path(), "routes.yaml", yaml);
        let config = Config::load(&path).unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let listener = Listener::bind(&ListenAddr::Tcp("127.0.0.1:0".into()))
            .await
            .expect("bind 127.0.0.1:0");
        let base = listener.describe();
        let gw = Gateway::start(config, ConfigSource::File(path));
        let (stop, stopped) = oneshot::channel::<()>();
        let max = roomgate::server::MAX_CONNECTIONS;
        let task = tokio::spawn(serve(gw.clone(), listener, max, async {
            let _ = stopped.await;
        }));
        Gate {
            base,
            gw,
            dir,
            stop: Some(stop),
            task,
        }
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Path of the routes.yaml being served.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("routes.yaml")
    }

    /// Stops accepting, drains, and waits for the server to end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), &mut self.task).await;
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The real `roomgate` binary, running `serve` on 127.0.0.1 port 0.
pub struct GateProcess {
    /// `http://127.0.0.1:PORT`, read from the "listening on" log line.
    pub base: String,
    child: tokio::process::Child,
    /// Every stderr line so far.
    log: Arc<Mutex<Vec<String>>>,
    /// Collects stderr into `log`; ends when the process closes stderr.
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl GateProcess {
    /// Starts `roomgate serve --config <config> --listen 127.0.0.1:0` in
    /// `cwd`, and waits (bounded) until it listens.
    pub async fn start(config: &Path, cwd: &Path) -> GateProcess {
        GateProcess::start_with(config, cwd, "info").await
    }

    /// Like [`GateProcess::start`] with `RUST_LOG=rust_log`.
    pub async fn start_with(config: &Path, cwd: &Path, rust_log: &str) -> GateProcess {
        GateProcess::start_via(&[], config, cwd, &[], rust_log).await
    }

    /// Like [`GateProcess::start`], run through `wrapper` (a command and its
    /// arguments that execs the rest, e.g. `setpriv --reuid=...`), with
    /// `extra` arguments after `serve` and `RUST_LOG=rust_log`.
    pub async fn start_via(
        wrapper: &[&str],
        config: &Path,
        cwd: &Path,
        extra: &[&str],
        rust_log: &str,
    ) -> GateProcess {
        let mut gate = GateProcess::spawn_via(wrapper, config, cwd, "127.0.0.1:0", extra, rust_log);
        let line = gate
            .wait_log("listening on http://", Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("roomgate did not start:\n{}", gate.log_text()));
        let at = line.find("http://").expect("url in line");
        gate.base = line[at..].trim().to_owned();
        gate
    }

    /// Starts `roomgate serve --config <config> --listen <listen>` in `cwd`
    /// without waiting for anything; `base` stays empty.
    pub fn spawn(config: &Path, cwd: &Path, listen: &str) -> GateProcess {
        GateProcess::spawn_with(config, cwd, listen, &[], "info")
    }

    /// Like [`GateProcess::spawn`], with `extra` arguments after `serve` and
    /// `RUST_LOG=rust_log` (e.g. `debug` for the access lines).
    pub fn spawn_with(
        config: &Path,
        cwd: &Path,
        listen: &str,
        extra: &[&str],
        rust_log: &str,
    ) -> GateProcess {
        GateProcess::spawn_via(&[], config, cwd, listen, extra, rust_log)
    }

    /// Like [`GateProcess::spawn_with`], run through `wrapper` (see
    /// [`GateProcess::start_via`]).
    pub fn spawn_via(
        wrapper: &[&str],
        config: &Path,
        cwd: &Path,
        listen: &str,
        extra: &[&str],
        rust_log: &str,
    ) -> GateProcess {
        let bin = env!("CARGO_BIN_EXE_roomgate");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = tokio::process::Command::new(program);
                command.args(args).arg(bin);
                command
            }
            None => tokio::process::Command::new(bin),
        };
        command
            .args(["serve", "--listen", listen])
            .args(extra)
            .arg("--config")
            .arg(config)
            .current_dir(cwd)
            .env("RUST_LOG", rust_log)
            .env_remove("ROOMGATE_CONFIG")
            .env_remove("ROOMGATE_LISTEN")
            .env_remove("ROOMGATE_STATE_DIR");
        GateProcess::spawn_command(command)
    }

    /// Runs `command` (a roomgate, or something that execs one) as it is
    /// set up, with stdin and stdout closed and stderr collected; waits for
    /// nothing, and `base` stays empty.
    pub fn spawn_command(mut command: tokio::process::Command) -> GateProcess {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn roomgate");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        GateProcess {
            base: String::new(),
            child,
            log,
            reader: Some(reader),
        }
    }

    /// The absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a signal by name (`HUP`, `TERM`, `INT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    /// Waits until a stderr line contains `needle`; returns that line. Lines
    /// seen before are searched too.
    pub async fn wait_log(&self, needle: &str, bound: Duration) -> Option<String> {
        self.wait_log_after(0, needle, bound).await
    }

    /// Like [`GateProcess::wait_log`], among lines after the first `skip`.
    pub async fn wait_log_after(
        &self,
        skip: usize,
        needle: &str,
        bound: Duration,
    ) -> Option<String> {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            if let Some(line) = self
                .log
                .lock()
                .unwrap()
                .iter()
                .skip(skip)
                .find(|l| l.contains(needle))
            {
                return Some(line.clone());
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Number of stderr lines that contain `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Number of stderr lines so far.
    pub fn log_len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The whole log, for failure messages.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The exit status, if the process has exited.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait for roomgate")
    }

    /// Waits (bounded) for the process to exit, and for its last log lines.
    pub async fn wait_exit(&mut self, bound: Duration) -> Option<std::process::ExitStatus> {
        let status = tokio::time::timeout(bound, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)?;
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(bound, reader).await;
        }
        Some(status)
    }
}

/// The quick jitsi check of test servers: interval 300ms, fast_interval
/// 100ms, timeout 200ms, rise 2, fall 2, for the stand-in's XMPP domain.
pub const FAST_CHECK: &str =
    "{ interval: 300ms, fast_interval: 100ms, timeout: 200ms, rise: 2, fall: 2, xmpp_domain: localhost }";

/// A `servers:` section with `primary` and `backup` and their `check:`
/// mappings (flow style, e.g. [`FAST_CHECK`]).
pub fn servers_yaml(
    primary: &str,
    primary_check: &str,
    backup: &str,
    backup_check: &str,
) -> String {
    format!(
        "servers:
  primary:
    url: {primary}
    check: {primary_check}
  backup:
    url: {backup}
    check: {backup_check}
"
    )
}

/// Two healthy stand-ins, and a routes.yaml ([`two_server_yaml`]) for them
/// in a fresh temporary directory: the setup most end-to-end tests start from.
pub async fn healthy_pair() -> (StandIn, StandIn, tempfile::TempDir, PathBuf) {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let config = super::write_file(
        dir.path(),
        "routes.yaml",
        &two_server_yaml(&primary.url(), &backup.url(), ""),
    );
    (primary, backup, dir, config)
}

/// A routes.yaml with one room `Lounge` (alias `treff`) on `primary`, then
/// `backup`, both with [`FAST_CHECK`], and a room `Cave`.
/// `primary_extra` is spliced into the primary's server block (indent 4).
pub fn two_server_yaml(primary: &str, backup: &str, primary_extra: &str) -> String {
    format!(
        "servers:
  primary:
    url: {primary}
    check: {FAST_CHECK}
{primary_extra}
  backup:
    url: {backup}
    check: {FAST_CHECK}
defaults:
  servers: [primary, backup]
rooms:
  Lounge:
    description: Der allgemeine Treffpunkt
    aliases: [treff]
  Cave: {{}}
"
    )
}
