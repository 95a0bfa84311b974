//! The systemd unit in `deploy/systemd` run the way systemd runs it, as far
//! as a test can without systemd: the real binary, started by the unit's
//! ExecStart (paths moved into a temp directory), under a seccomp filter
//! built from the unit's own `SystemCallFilter=` lines (sets expanded by
//! `systemd-analyze syscall-filter`; a denied call kills the process with
//! SIGSYS, as in the unit, which has no `SystemCallErrorNumber=`), and with
//! the unit's other settings that one process can apply to itself: open
//! file limit, umask, environment, user and capabilities, address
//! families, namespaces, W^X memory, personality. The launcher that sets
//! this up and then execs roomgate is `support/systemd_sandbox.py` (it
//! needs Debian's python3-seccomp).
//!
//! On TCP and on the unit's unix socket, each test checks that roomgate
//! starts without a warning, serves a redirect, takes ExecReload's SIGHUP
//! (a room added to routes.yaml is served afterwards) and stops on
//! KillSignal with exit status 0 within TimeoutStopSec; started again, it
//! reads back the uptime history it wrote to its StateDirectory.
//!
//! A third test shows that the sandbox bites: under it, a call the unit
//! denies kills the process.
//!
//! Every `[Service]` setting of the unit is in one of [`APPLIED`],
//! [`COVERED_BY_THE_FILTER`] (checked) or [`SYSTEMD_ONLY`] (with the
//! reason), so a setting added to the unit fails these tests until someone
//! decides which it is.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::nginx::{deploy_file, free_port, open_dir};
use crate::support::tools::{PYTHON3_SECCOMP, SYSTEMD_ANALYZE};
use crate::support::*;

const UNIT: &str = "systemd/roomgate.service";

/// Where the unit expects the binary; the tests run the built one.
const UNIT_BINARY: &str = "/usr/local/bin/roomgate";

/// Where Debian puts systemd-analyze (`.ci/run` installs systemd).
const SYSTEMD_ANALYZE_PATH: &str = "/usr/bin/systemd-analyze";

/// Debian's Python, which python3-seccomp installs into (a `python3` found
/// first on the PATH may be another one).
const DEBIAN_PYTHON: &str = "/usr/bin/python3";

/// The signal a seccomp filter kills with.
const SIGSYS: i32 = 31;

/// Stand-in for `DynamicUser=` when the tests run as root: nobody/nogroup.
const NOBODY: u32 = 65534;

/// How long roomgate may take to start and answer.
const BOUND: Duration = Duration::from_secs(15);

/// The settings [`Sandbox`] applies or the test acts out.
const APPLIED: &[&str] = &[
    "ExecStart",
    "ExecReload",
    "KillSignal",
    "TimeoutStopSec",
    "Environment",
    "DynamicUser",
    "RuntimeDirectory",
    "RuntimeDirectoryMode",
    "ConfigurationDirectory",
    "StateDirectory",
    "NoNewPrivileges",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "UMask",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "LimitNOFILE",
];

/// `[Service]` settings that only systemd itself can apply (or that need
/// no applying for the test), with why. Everything else in the unit's
/// `[Service]` section is applied by [`Sandbox`] or checked by the test.
const SYSTEMD_ONLY: &[(&str, &str)] = &[
    ("Type", "exec: systemd's bookkeeping of the start"),
    (
        "Restart",
        "systemd restarts on failure; the test checks that a stop exits 0",
    ),
    ("RestartSec", "see Restart"),
    ("ProtectSystem", "a read-only mount namespace"),
    ("ProtectHome", "a mount namespace"),
    ("PrivateTmp", "a mount namespace"),
    (
        "PrivateDevices",
        "a mount namespace (its @raw-io part is in ~@privileged)",
    ),
    ("PrivateUsers", "a user namespace"),
    (
        "ProtectKernelTunables",
        "read-only /proc/sys and /sys mounts",
    ),
    ("ProtectControlGroups", "a read-only /sys/fs/cgroup mount"),
    ("ProtectProc", "a /proc mount option"),
    ("ProcSubset", "a /proc mount option"),
    ("RemoveIPC", "clean-up when the service's user goes away"),
    (
        "RestrictSUIDSGID",
        "roomgate sets no setuid/setgid bits; the socket mode is checked",
    ),
];

/// Settings whose seccomp part the unit's `~@privileged @resources`
/// already denies with a kill (the stricter action wins in the kernel),
/// with the calls that must be outside the allow list for that to hold;
/// their mount or namespace parts are systemd's.
const COVERED_BY_THE_FILTER: &[(&str, &[&str])] = &[
    ("ProtectClock", &["@clock"]),
    ("ProtectKernelModules", &["@module"]),
    ("ProtectKernelLogs", &["syslog"]),
    ("ProtectHostname", &["sethostname", "setdomainname"]),
    ("RestrictRealtime", &["sched_setscheduler", "sched_setattr"]),
];

/// The `[Service]` section of a unit as (key, value) pairs, in order; a
/// key may repeat (`SystemCallFilter=`).
fn service_settings(unit: &str) -> Vec<(String, String)> {
    let mut section = "";
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "continued lines are not read: {line}"
        );
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line}"));
        if section == "[Service]" {
            out.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    out
}

/// The values of `key`, in order.
fn all<'a>(settings: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The value of `key`, which is set at most once.
fn maybe<'a>(settings: &'a [(String, String)], key: &str) -> Option<&'a str> {
    let values = all(settings, key);
    assert!(values.len() <= 1, "{key}= set {} times", values.len());
    values.first().copied()
}

/// The value of `key`, which is set exactly once.
fn one<'a>(settings: &'a [(String, String)], key: &str) -> &'a str {
    maybe(settings, key).unwrap_or_else(|| panic!("no {key}= in the unit"))
}

fn yes(settings: &[(String, String)], key: &str) -> bool {
    match maybe(settings, key) {
        None | Some("no") => false,
        Some("yes") => true,
        Some(other) => panic!("{key}={other}: the test knows yes and no only"),
    }
}

/// System calls by set, expanded with `systemd-analyze syscall-filter`.
#[derive(Default)]
struct SyscallSets(BTreeMap<String, BTreeSet<String>>);

impl SyscallSets {
    /// The calls `name` stands for: itself, or every call of the set
    /// `@name`, nested sets included.
    fn expand(&mut self, name: &str) -> BTreeSet<String> {
        if !name.starts_with('@') {
            return BTreeSet::from([name.to_owned()]);
        }
        if let Some(calls) = self.0.get(name) {
            return calls.clone();
        }
        let out = std::process::Command::new(SYSTEMD_ANALYZE_PATH)
            .args(["syscall-filter", "--no-pager", name])
            .output()
            .expect("run systemd-analyze syscall-filter");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "systemd-analyze syscall-filter {name}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The set's name, then one member a line; `#` lines describe.
        let mut calls = BTreeSet::new();
        for member in text.lines().skip(1).map(str::trim) {
            if !member.is_empty() && !member.starts_with('#') {
                calls.extend(self.expand(member));
            }
        }
        assert!(!calls.is_empty(), "{name} is empty: {text}");
        self.0.insert(name.to_owned(), calls.clone());
        calls
    }

    /// The calls the unit's `SystemCallFilter=` lines allow, read as
    /// systemd reads them: the first line decides; without `~` it is an
    /// allow list, which always holds `@default`; a later `~` line takes
    /// its calls out.
    fn allowed_by(&mut self, settings: &[(String, String)]) -> BTreeSet<String> {
        let lines = all(settings, "SystemCallFilter");
        assert!(
            lines.first().is_some_and(|l| !l.starts_with('~')),
            "the test reads an allow list first, not {lines:?}"
        );
        assert!(
            maybe(settings, "SystemCallErrorNumber").is_none(),
            "the test kills on a denied call, as systemd does without SystemCallErrorNumber="
        );
        let mut allowed = self.expand("@default");
        for line in lines {
            let (deny, names) = match line.strip_prefix('~') {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            for name in names.split_whitespace() {
                assert!(!name.contains(':'), "per-call errno {name} is not read");
                let calls = self.expand(name);
                if deny {
                    allowed.retain(|c| !calls.contains(c));
                } else {
                    allowed.extend(calls);
                }
            }
        }
        allowed
    }
}

/// What the launcher applies (its SPEC.json), made from the unit.
struct Sandbox {
    spec: serde_json::Value,
    /// The user roomgate runs as, if not the test's.
    user: Option<u32>,
    /// `RuntimeDirectoryMode=`.
    runtime_mode: u32,
}

impl Sandbox {
    /// The sandbox of the unit `settings`, or `None` after a skip (see
    /// `support::tools`) when systemd-analyze or python3-seccomp is missing.
    fn of(settings: &[(String, String)]) -> Option<Sandbox> {
        if !SYSTEMD_ANALYZE.installed(SYSTEMD_ANALYZE_PATH) {
            return None;
        }
        let seccomp = std::process::Command::new(DEBIAN_PYTHON)
            .args(["-c", "import seccomp"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !PYTHON3_SECCOMP.found(seccomp) {
            return None;
        }

        for (key, _) in settings {
            let known = SYSTEMD_ONLY.iter().any(|(k, _)| k == key)
                || COVERED_BY_THE_FILTER.iter().any(|(k, _)| k == key)
                || APPLIED.contains(&key.as_str());
            assert!(
                known,
                "the unit sets {key}=, which this test neither applies nor lists as \
                 systemd's own; add it to one of them"
            );
        }

        let mut sets = SyscallSets::default();
        let allowed = sets.allowed_by(settings);
        for call in ["execve", "exit_group", "rt_sigreturn"] {
            assert!(allowed.contains(call), "{call} must be allowed");
        }
        for (key, calls) in COVERED_BY_THE_FILTER {
            if yes(settings, key) || maybe(settings, key) == Some("strict") {
                for name in *calls {
                    let open: Vec<_> = sets.expand(name).intersection(&allowed).cloned().collect();
                    assert!(
                        open.is_empty(),
                        "{key}= relies on the filter, which allows {open:?}"
                    );
                }
            }
        }

        assert_eq!(one(settings, "SystemCallArchitectures"), "native");
        assert!(
            yes(settings, "NoNewPrivileges"),
            "comes with the filter anyway"
        );
        let nofile: u64 = one(settings, "LimitNOFILE")
            .parse()
            .expect("LimitNOFILE= a number");
        let umask = u32::from_str_radix(one(settings, "UMask"), 8).expect("UMask= octal");
        let root = crate::support::tools::is_root();
        // Without root neither a user change nor a bounding set is ours to
        // give up; an unprivileged test process has no capabilities anyway.
        let user = (yes(settings, "DynamicUser") && root).then_some(NOBODY);
        let drop_caps = maybe(settings, "CapabilityBoundingSet") == Some("") && root;
        assert_eq!(
            maybe(settings, "AmbientCapabilities"),
            Some(""),
            "none, the default"
        );
        let families: Option<Vec<&str>> =
            maybe(settings, "RestrictAddressFamilies").map(|f| f.split_whitespace().collect());
        let runtime_mode = u32::from_str_radix(one(settings, "RuntimeDirectoryMode"), 8)
            .expect("RuntimeDirectoryMode= octal");
        Some(Sandbox {
            spec: serde_json::json!({
                "nofile": nofile,
                "umask": umask,
                "drop_caps": drop_caps,
                "user": user.map(|u| [u, u]),
                "families": families,
                "namespaces": yes(settings, "RestrictNamespaces"),
                "mdwe": yes(settings, "MemoryDenyWriteExecute"),
                "personality": yes(settings, "LockPersonality"),
                "allow": allowed,
            }),
            user,
            runtime_mode,
        })
    }

    /// `argv` run in the sandbox by the launcher, which reads the spec from
    /// `spec` (see [`Sandbox::spec`]), with the environment and working
    /// directory systemd gives a service: only `PATH` and the unit's
    /// `Environment=`, and `/`.
    fn command(
        &self,
        settings: &[(String, String)],
        spec: &Path,
        argv: &[String],
    ) -> tokio::process::Command {
        let launcher =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/systemd_sandbox.py");
        let mut command = tokio::process::Command::new(DEBIAN_PYTHON);
        command
            .arg(&launcher)
            .arg(spec)
            .args(argv)
            .current_dir("/")
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin");
        for assignment in all(settings, "Environment") {
            for pair in assignment.split_whitespace() {
                let (name, value) = pair.split_once('=').expect("Environment=NAME=VALUE");
                command.env(name, value);
            }
        }
        command
    }

    /// Checks in /proc that process `pid` runs in the sandbox: the filter
    /// loaded, no new privileges, the limit, the user and capabilities.
    fn assert_applied(&self, pid: u32) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert_eq!(field("Seccomp"), ["2"], "a seccomp filter");
        assert_eq!(field("NoNewPrivs"), ["1"]);
        if let Some(user) = self.user {
            let user = user.to_string();
            assert_eq!(field("Uid"), [&*user; 4]);
            assert_eq!(field("Gid"), [&*user; 4]);
            assert_eq!(field("Groups"), Vec::<&str>::new());
        }
        if self.spec["drop_caps"] == true {
            assert_eq!(field("CapBnd"), ["0000000000000000"]);
        }
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let nofile = self.spec["nofile"].to_string();
        let open_files: Vec<&str> = limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .expect("open files limit")
            .split_whitespace()
            .collect();
        assert_eq!(open_files[..2], [&*nofile; 2], "LimitNOFILE=");
    }
}

/// Where the test reaches roomgate.
enum Endpoint {
    /// `http://127.0.0.1:PORT`.
    Tcp(String),
    Unix(PathBuf),
}

impl Endpoint {
    async fn try_get(&self, path: &str) -> Result<Resp, FetchError> {
        match self {
            Endpoint::Tcp(base) => Req::get(&format!("{base}{path}")).send().await,
            Endpoint::Unix(socket) => unix_get(socket, path).await,
        }
    }

    async fn get(&self, path: &str) -> Resp {
        self.try_get(path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }
}

/// What a test asks of the exit: status 0, and a clear message when a
/// seccomp filter killed the process.
fn assert_clean_exit(status: std::process::ExitStatus, gate: &GateProcess) {
    assert!(
        status.signal() != Some(SIGSYS),
        "killed by SIGSYS: roomgate made a system call the unit's SystemCallFilter= \
         denies ({status}); under systemd the service dies at that call, and \
         Restart=on-failure loops\n{}",
        gate.log_text()
    );
    assert_eq!(status.code(), Some(0), "{status}\n{}", gate.log_text());
}

/// Waits until roomgate answers `/readyz` with 200; fails at once, with the
/// exit status, if it exits first.
async fn wait_ready(gate: &mut GateProcess, endpoint: &Endpoint) {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        if let Some(status) = gate.try_exit() {
            gate.wait_exit(BOUND).await;
            assert_clean_exit(status, gate);
            panic!(
                "exited before it was ready ({status}):\n{}",
                gate.log_text()
            );
        }
        if endpoint
            .try_get("/readyz")
            .await
            .is_ok_and(|r| r.status == 200)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready within {BOUND:?}:\n{}",
            gate.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lines logged at WARN or ERROR (the level is the second field).
fn warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| matches!(l.split_whitespace().nth(1), Some("WARN" | "ERROR")))
        .collect()
}

/// The unit, run on the unix socket of its ExecStart (`tcp: false`) or on
/// TCP (`tcp: true`, as the unit's comment says: `--listen` changed to a
/// port on 127.0.0.1, here a free one).
async fn run_the_unit(tcp: bool) {
    let unit = deploy_file(UNIT);
    let settings = service_settings(&unit);
    let Some(sandbox) = Sandbox::of(&settings) else {
        return;
    };

    let (primary, _backup, dir, config) = healthy_pair().await;
    // The service's user reads the config and owns its runtime directory.
    open_dir(dir.path());
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(sandbox.runtime_mode))
            .unwrap();
        // StateDirectory=, as systemd makes it: mode 0700, the user's.
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        if let Some(user) = sandbox.user {
            std::os::unix::fs::chown(&run, Some(user), Some(user)).unwrap();
            std::os::unix::fs::chown(&state, Some(user), Some(user)).unwrap();
        }
    }
    let spec = write_file(dir.path(), "sandbox.json", &sandbox.spec.to_string());

    // ExecStart, with the paths moved: the binary, the config in its
    // ConfigurationDirectory, the socket in its RuntimeDirectory.
    let exec: Vec<String> = one(&settings, "ExecStart")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(exec[0], UNIT_BINARY);
    assert!(
        !exec.iter().any(|a| a.starts_with("--workers")),
        "the unit runs the default --workers"
    );
    let etc = format!("/etc/{}/", one(&settings, "ConfigurationDirectory"));
    let runtime = format!("unix:/run/{}/", one(&settings, "RuntimeDirectory"));
    let state = format!("/var/lib/{}", one(&settings, "StateDirectory"));
    let port = tcp.then(free_port);
    let mut argv = vec![env!("CARGO_BIN_EXE_roomgate").to_owned()];
    let (mut socket, mut socket_mode) = (None, None);
    let mut words = exec[1..].iter();
    while let Some(word) = words.next() {
        argv.push(word.clone());
        let value = match word.as_str() {
            "--config" | "--listen" | "--socket-mode" | "--state-dir" => {
                words.next().expect("a value")
            }
            _ => continue,
        };
        argv.push(match word.as_str() {
            "--config" => {
                assert!(value.starts_with(&etc), "{value} outside {etc}");
                config.display().to_string()
            }
            "--listen" => {
                let name = value
                    .strip_prefix(&runtime)
                    .unwrap_or_else(|| panic!("{value}: not a socket in {runtime}"));
                let path = dir.path().join("run").join(name);
                socket = Some(path.clone());
                match port {
                    Some(port) => format!("127.0.0.1:{port}"),
                    None => format!("unix:{}", path.display()),
                }
            }
            "--state-dir" => {
                assert_eq!(*value, state, "--state-dir is the StateDirectory=");
                dir.path().join("state").display().to_string()
            }
            _ => {
                socket_mode = Some(u32::from_str_radix(value, 8).expect("octal"));
                value.clone()
            }
        });
    }
    let socket = socket.expect("--listen in ExecStart");
    let endpoint = match port {
        Some(port) => Endpoint::Tcp(format!("http://127.0.0.1:{port}")),
        None => Endpoint::Unix(socket.clone()),
    };

    let mut gate = GateProcess::spawn_command(sandbox.command(&settings, &spec, &argv));
    wait_ready(&mut gate, &endpoint).await;
    sandbox.assert_applied(gate.pid().expect("running"));

    // LimitNOFILE= leaves room for the connection cap: nothing to warn about.
    let log = gate.log_text();
    assert_eq!(
        warnings(&log),
        Vec::<&str>::new(),
        "warnings at start:\n{log}"
    );
    if !tcp {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
        let want = socket_mode.expect("--socket-mode in ExecStart");
        assert_eq!(mode & 0o777, want, "--socket-mode, despite UMask=");
    }
    let r = endpoint.get("/Lounge").await;
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(&*format!("{}/Lounge", primary.url()))
    );
    assert_eq!(endpoint.get("/Kitchen").await.status, 404);

    // ExecReload, $MAINPID filled in as systemd does: a room added to
    // routes.yaml is served afterwards.
    let yaml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{yaml}  Kitchen: {{}}\n")).unwrap();
    let reload =
        one(&settings, "ExecReload").replace("$MAINPID", &gate.pid().expect("running").to_string());
    let mut words = reload.split_whitespace();
    let status = std::process::Command::new(words.next().unwrap())
        .args(words)
        .status()
        .expect("run ExecReload");
    assert!(status.success(), "ExecReload: {status}");
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let r = endpoint.get("/Kitchen").await;
        if r.status == 302 {
            assert_eq!(
                r.header("location"),
                Some(&*format!("{}/Kitchen", primary.url()))
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/Kitchen not served after ExecReload: {r:?}\n{}",
            gate.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = endpoint.get("/metrics").await.body;
    assert_eq!(reloads(&metrics, "success"), 1, "{metrics}");
    assert_eq!(reloads(&metrics, "failure"), 0, "{metrics}");
    let uptime = |body: &str| {
        let status: serde_json::Value = serde_json::from_str(body).expect("JSON");
        server(&status, "primary")["uptime"].clone()
    };
    let before = uptime(&endpoint.get("/status.json").await.body);

    // KillSignal ends it with status 0 within TimeoutStopSec (so
    // Restart=on-failure does not start it again), the socket gone too.
    let signal = one(&settings, "KillSignal");
    gate.signal(signal.strip_prefix("SIG").expect("a signal name"));
    let stop = humantime::parse_duration(one(&settings, "TimeoutStopSec")).expect("a duration");
    let status = gate.wait_exit(stop).await.unwrap_or_else(|| {
        panic!(
            "still running {stop:?} after {signal}:\n{}",
            gate.log_text()
        )
    });
    assert_clean_exit(status, &gate);
    if !tcp {
        assert!(!socket.exists(), "socket left behind");
    }

    // Started again, it goes on with the history in its StateDirectory=:
    // the window starts with the first run, then up, unknown while it was
    // stopped, up again.
    let mut gate = GateProcess::spawn_command(sandbox.command(&settings, &spec, &argv));
    wait_ready(&mut gate, &endpoint).await;
    let after = uptime(&endpoint.get("/status.json").await.body);
    assert_eq!(after["from"], before["from"], "{before}\n{after}");
    let states: Vec<&str> = after["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert!(
        states.windows(3).any(|w| w == ["up", "unknown", "up"]),
        "{after}"
    );
    gate.signal(signal.strip_prefix("SIG").unwrap());
    let status = gate.wait_exit(stop).await.expect("stops again");
    assert_clean_exit(status, &gate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unit_serves_reloads_and_stops_on_its_unix_socket_under_its_sandbox() {
    run_the_unit(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unit_serves_reloads_and_stops_on_tcp_under_its_sandbox() {
    run_the_unit(true).await;
}

/// The sandbox is the unit's: a call the unit denies kills the process
/// with SIGSYS (here `sched_setaffinity`, of `~@resources`, which CPU
/// pinning needs), and a socket of a family the unit does not allow fails
/// with EAFNOSUPPORT. Shown with Python under the same launcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_kills_on_a_call_the_unit_denies() {
    let settings = service_settings(&deploy_file(UNIT));
    let Some(sandbox) = Sandbox::of(&settings) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(dir.path(), "sandbox.json", &sandbox.spec.to_string());
    let script = "import errno, os, socket, sys\n\
                  try:\n    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)\n\
                  except OSError as e:\n    print(errno.errorcode[e.errno], flush=True)\n\
                  os.sched_setaffinity(0, os.sched_getaffinity(0))\n\
                  print('still alive', flush=True)\n";
    let argv = [DEBIAN_PYTHON.to_owned(), "-c".to_owned(), script.to_owned()];
    let out = sandbox
        .command(&settings, &spec, &argv)
        .output()
        .await
        .expect("run the launcher");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "EAFNOSUPPORT\n",
        "{said}"
    );
    assert_eq!(out.status.signal(), Some(SIGSYS), "{}: {said}", out.status);
}
