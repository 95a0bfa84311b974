//! The container image of `deploy/container/`, built and run the way an
//! admin does: `build.sh` compiles the static musl binary, builds the image
//! `FROM scratch` with buildah and exports it as an OCI archive; the test
//! loads that archive with podman and runs it (runc, host networking, a
//! read-only root file system, routes.yaml mounted read-only) against
//! stand-in Jitsi servers whose host names only the container's /etc/hosts
//! knows.
//!
//! Nothing goes to the machine's container storage: buildah's and podman's
//! storage and state live in a temporary directory, named by the
//! `containers.conf` and `storage.conf` that `CONTAINERS_CONF` and
//! `CONTAINERS_STORAGE_CONF` point to. (Only containers/image's blob-info
//! cache, a small file of digests, always goes to /var/lib/containers/cache
//! for root; no option of buildah 1.28 or podman 4.3 moves it.)
//!
//! The musl build goes to `container/` in the target directory: a cargo of
//! its own there does not wait for the lock of the cargo running the tests,
//! and it is reused between runs. `.ci/run` builds it before the tests, so
//! that the tests do not share the CPU with a release build.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::faults::location;
use crate::support::nginx::deploy_file;
use crate::support::tools::{BUILDAH, MUSL_GCC, MUSL_TARGET, PODMAN, RUNC};
use crate::support::*;

/// The name `build.sh` gives the image by default, and the one
/// `deploy/kubernetes/deployment.yaml` runs.
const IMAGE: &str = "localhost/roomgate:latest";
const TARGET: &str = "x86_64-unknown-linux-musl";
/// The user the image runs as, and the Deployment's `runAsUser`.
const USER: &str = "65532:65532";

/// Host names that only the container's /etc/hosts knows (`--add-host`),
/// so roomgate resolves them through the file the runtime provides. Not
/// `.invalid`, which roomgate refuses to look up (RFC 6761); `.test` is
/// reserved for tests by the same RFC.
const PRIMARY_HOST: &str = "jitsi-primary.roomgate.test";
const BACKUP_HOST: &str = "jitsi-backup.roomgate.test";

/// A cold release build (LTO, one codegen unit) took 5 minutes on two busy
/// cores; `.ci/run` does it before the tests, and a warm one takes a second.
const BUILD_BOUND: Duration = Duration::from_secs(30 * 60);
/// Any one podman command, and the container's start.
const PODMAN_BOUND: Duration = Duration::from_secs(60);
/// A server's state change with the test's quick checks (FAST_CHECK).
const STATE_BOUND: Duration = Duration::from_secs(10);
/// `podman stop --time`: SIGTERM, then SIGKILL after this many seconds.
const GRACE_SECONDS: u64 = 10;
/// What an idle roomgate needs to stop after SIGTERM, plus podman's own
/// time: measured at about 0.1 s.
const STOP_BOUND: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_builds_loads_and_serves_as_pid_1() {
    if !tools_present() {
        return;
    }
    let containerfile = deploy_file("container/Containerfile");
    for line in ["FROM scratch\n", &format!("USER {USER}\n")] {
        assert!(
            containerfile.contains(line),
            "the Containerfile lacks {line:?}"
        );
    }
    let podman = Podman::new();
    let archive = podman.dir.path().join("roomgate-image.tar");

    // The admin's build, from the repository.
    let started = Instant::now();
    let mut build = podman.command(deploy_path("container/build.sh"));
    build
        .arg(IMAGE)
        .arg(&archive)
        .env("CARGO_TARGET_DIR", musl_target_dir())
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    // What cargo sets for this test process describes the test, not the
    // build: ring's build script reruns when CARGO_MANIFEST_DIR or
    // CARGO_PKG_NAME differ from the build before (`rerun-if-env-changed`),
    // which made the build .ci/run did beforehand a 2-minute rebuild here.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&name.as_ref())
        {
            build.env_remove(name.as_ref());
        }
    }
    let built = succeed(run(build, BUILD_BOUND).await, "deploy/container/build.sh");
    let build_took = started.elapsed();

    // Static: no program interpreter to look for in an image of one file
    // (the check can fail: the test's own build links glibc dynamically).
    let binary = musl_target_dir().join(TARGET).join("release/roomgate");
    let elf = std::fs::read(&binary).unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
    assert!(!has_interpreter(&elf), "{} is not static", binary.display());
    let own = std::fs::read(env!("CARGO_BIN_EXE_roomgate")).unwrap();
    assert!(has_interpreter(&own), "the glibc build should be dynamic");

    // Loaded from the archive, as on the machine that runs it.
    podman.ok(&["rmi", IMAGE]).await;
    let loaded = podman.ok(&["load", "--input", path_str(&archive)]).await;
    assert!(loaded.contains(IMAGE), "podman load: {loaded}");
    let archive_bytes = std::fs::metadata(&archive).unwrap().len();

    // What the Containerfile promises, and what the Deployment relies on.
    let inspect: serde_json::Value =
        serde_json::from_str(&podman.ok(&["image", "inspect", IMAGE]).await).unwrap();
    let image = &inspect[0];
    let config = &image["Config"];
    assert_eq!(config["User"], USER, "{config}");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/roomgate"])
    );
    assert_eq!(config["Cmd"], serde_json::json!(["serve"]));
    let env: Vec<&str> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for var in [
        "ROOMGATE_CONFIG=/etc/roomgate/routes.yaml",
        "ROOMGATE_LISTEN=0.0.0.0:8080",
    ] {
        assert!(env.contains(&var), "{var} not in {env:?}");
    }
    assert_eq!(
        image["RootFS"]["Layers"].as_array().map(Vec::len),
        Some(1),
        "one layer, the binary: {image}"
    );
    let image_bytes = image["Size"].as_u64().expect("image size");
    assert!(image_bytes < 16 << 20, "image of {image_bytes} bytes");
    let deployment: serde_yaml::Value =
        serde_yaml::from_str(&deploy_file("kubernetes/deployment.yaml")).unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"].as_str(), Some(IMAGE));
    assert_eq!(
        format!(
            "{}:{}",
            pod["securityContext"]["runAsUser"].as_u64().unwrap(),
            pod["securityContext"]["runAsGroup"].as_u64().unwrap()
        ),
        USER
    );

    // Two stand-ins on the host's loopback, named as only the container knows.
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let primary_url = format!("http://{PRIMARY_HOST}:{}", primary.port());
    let backup_url = format!("http://{BACKUP_HOST}:{}", backup.port());
    let routes = write_file(
        podman.dir.path(),
        "routes.yaml",
        &two_server_yaml(&primary_url, &backup_url, ""),
    );
    // The container's user is not the file's owner.
    std::fs::set_permissions(&routes, std::fs::Permissions::from_mode(0o644)).unwrap();

    // The image's own command, with the listen address moved to a free
    // port of the host's loopback (host networking: 0.0.0.0:8080 would be
    // the host's port 8080). No writable directory at all, not even the
    // tmpfs podman adds to a read-only root by default; no capabilities.
    let name = format!("roomgate-test-{}", std::process::id());
    let container = Container {
        podman: &podman,
        name: name.clone(),
    };
    let mut command = podman.command("podman");
    command
        .args(["run", "--name", &name, "--network", "host"])
        .args(["--read-only", "--read-only-tmpfs=false"])
        .args(["--cap-drop", "all", "--security-opt", "no-new-privileges"])
        .arg(format!("--add-host={PRIMARY_HOST}:127.0.0.1"))
        .arg(format!("--add-host={BACKUP_HOST}:127.0.0.1"))
        .arg(format!(
            "--volume={}:/etc/roomgate/routes.yaml:ro",
            routes.display()
        ))
        .args(["--env", "ROOMGATE_LISTEN=127.0.0.1:0", IMAGE]);
    // Attached: podman's stderr is the container's, and its exit status
    // the container's.
    let mut gate = GateProcess::spawn_command(command);
    let line = gate
        .wait_log("listening on http://", PODMAN_BOUND)
        .await
        .unwrap_or_else(|| panic!("the container did not start:\n{}", gate.log_text()));
    let base = line[line.find("http://").unwrap()..].trim().to_owned();

    let healthz = get(&format!("{base}/healthz"), &[]).await;
    assert_eq!(healthz.status, 200, "{}", healthz.body);
    // roomgate is PID 1, as the image's user.
    let top = podman.ok(&["top", &name, "pid", "user", "args"]).await;
    assert!(
        top.lines().any(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.starts_with(&["1", "65532", "/usr/local/bin/roomgate", "serve"])
        }),
        "podman top:\n{top}"
    );

    // The redirect follows the primary's health, probed by its name.
    let status = format!("{base}/status.json");
    let lounge = format!("{base}/Lounge");
    wait_state(&status, "backup", "up", STATE_BOUND).await;
    wait_state(&status, "primary", "up", STATE_BOUND).await;
    assert_eq!(location(&lounge).await, format!("{primary_url}/Lounge"));
    primary.set_mode(Mode::Refusing).await;
    wait_state(&status, "primary", "down", STATE_BOUND).await;
    assert_eq!(location(&lounge).await, format!("{backup_url}/Lounge"));
    primary.set_mode(Mode::Healthy).await;
    wait_state(&status, "primary", "up", STATE_BOUND).await;
    assert_eq!(location(&lounge).await, format!("{primary_url}/Lounge"));

    // SIGTERM to PID 1 stops it, well within the grace period, with exit 0
    // (143 would be an unhandled SIGTERM, 137 podman's SIGKILL).
    let grace = GRACE_SECONDS.to_string();
    let stop_started = Instant::now();
    podman.ok(&["stop", "--time", &grace, &name]).await;
    let stop_took = stop_started.elapsed();
    let exit = gate
        .wait_exit(PODMAN_BOUND)
        .await
        .unwrap_or_else(|| panic!("podman run did not end:\n{}", gate.log_text()));
    assert!(exit.success(), "{exit}:\n{}", gate.log_text());
    let code = podman
        .ok(&["inspect", "--format", "{{.State.ExitCode}}", &name])
        .await;
    assert_eq!(code.trim(), "0", "{}", gate.log_text());
    assert_eq!(gate.count_log("SIGTERM received"), 1, "{}", gate.log_text());
    assert!(
        stop_took < STOP_BOUND,
        "podman stop took {stop_took:?}:\n{}",
        gate.log_text()
    );
    drop(container);

    // With a volume named by ROOMGATE_STATE_DIR (as deploy/README.md says),
    // the history outlives the container: a second container finds the
    // first one's.
    let state = podman.dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&state, Some(65532), Some(65532)).unwrap();
    let mut froms = Vec::new();
    for run in 0..2 {
        let name = format!("roomgate-test-state-{}-{run}", std::process::id());
        let container = Container {
            podman: &podman,
            name: name.clone(),
        };
        let mut command = podman.command("podman");
        command
            .args(["run", "--name", &name, "--network", "host"])
            .args([
                "--read-only",
                "--read-only-tmpfs=false",
                "--cap-drop",
                "all",
            ])
            .arg(format!("--add-host={PRIMARY_HOST}:127.0.0.1"))
            .arg(format!("--add-host={BACKUP_HOST}:127.0.0.1"))
            .arg(format!(
                "--volume={}:/etc/roomgate/routes.yaml:ro",
                routes.display()
            ))
            .arg(format!("--volume={}:/var/lib/roomgate", state.display()))
            .args(["--env", "ROOMGATE_STATE_DIR=/var/lib/roomgate"])
            .args(["--env", "ROOMGATE_LISTEN=127.0.0.1:0", IMAGE]);
        let mut gate = GateProcess::spawn_command(command);
        let line = gate
            .wait_log("listening on http://", PODMAN_BOUND)
            .await
            .unwrap_or_else(|| panic!("the container did not start:\n{}", gate.log_text()));
        let status = format!(
            "{}/status.json",
            line[line.find("http://").unwrap()..].trim()
        );
        let json = wait_state(&status, "primary", "up", STATE_BOUND).await;
        froms.push(server(&json, "primary")["uptime"]["from"].clone());
        podman.ok(&["stop", "--time", &grace, &name]).await;
        let exit = gate.wait_exit(PODMAN_BOUND).await.expect("podman run ends");
        assert!(exit.success(), "{exit}:\n{}", gate.log_text());
        drop(container);
    }
    assert_eq!(
        froms[0], froms[1],
        "the second container goes on with the history"
    );
    assert!(state.join("history").exists());

    let summary: Vec<&str> = built.lines().collect();
    report(&format!(
        "image {IMAGE}: {:.1} MB, OCI archive {:.1} MB; build.sh took {:.1} s ({}); podman stop took {} ms",
        image_bytes as f64 / 1e6,
        archive_bytes as f64 / 1e6,
        build_took.as_secs_f64(),
        summary.join("; "),
        stop_took.as_millis()
    ));
}

/// Whether every tool the test drives is here; see `support::tools`.
fn tools_present() -> bool {
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
    };
    // The standard library for the target, in the toolchain that builds.
    let musl_std = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .is_some_and(|sysroot| {
            Path::new(&sysroot)
                .join("lib/rustlib")
                .join(TARGET)
                .is_dir()
        });
    // /proc/self belongs to the effective user.
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    BUILDAH.found(on_path("buildah"))
        && PODMAN.found(on_path("podman"))
        && PODMAN.usable(root, "this test runs podman as root")
        && RUNC.found(on_path("runc"))
        && MUSL_GCC.found(on_path("musl-gcc"))
        && MUSL_TARGET.found(musl_std)
}

/// Where the musl build goes: `container/` in the target directory of the
/// test binary (`<target dir>/<profile>/roomgate`).
fn musl_target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_roomgate"))
        .parent()
        .and_then(Path::parent)
        .expect("the binary is in <target dir>/<profile>/")
        .join("container")
}

fn deploy_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// Whether a 64-bit little-endian ELF file names a program interpreter
/// (a `PT_INTERP` program header): every dynamically linked executable
/// does, a static or static-pie one does not.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    assert!(elf.starts_with(b"\x7fELF\x02\x01"), "not an ELF64 LE file");
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([elf[at], elf[at + 1]]));
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let at = phoff + i * size;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == PT_INTERP
    })
}

/// buildah and podman with their storage and state in a temporary
/// directory, and the settings these machines need: runc (crun rejects the
/// cgroup layout), cgroupfs (no systemd to ask), ulimits at or under the
/// host's hard limits, and files instead of journald for logs and events.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name).display().to_string();
        write_file(
            dir.path(),
            "containers.conf",
            &format!(
                r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{}"
lock_type = "file"
"#,
                at("tmp")
            ),
        );
        write_file(
            dir.path(),
            "storage.conf",
            &format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                at("root"),
                at("runroot")
            ),
        );
        Podman { dir }
    }

    /// `program` with this storage and these settings.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program);
        command
            .env("CONTAINERS_CONF", self.dir.path().join("containers.conf"))
            .env(
                "CONTAINERS_STORAGE_CONF",
                self.dir.path().join("storage.conf"),
            );
        command
    }

    /// `podman args...`, which must succeed; its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let mut command = self.command("podman");
        command.args(args);
        succeed(
            run(command, PODMAN_BOUND).await,
            &format!("podman {}", args.join(" ")),
        )
    }
}

/// Removes the container however the test ends; a killed `podman run`
/// leaves it running.
struct Container<'a> {
    podman: &'a Podman,
    name: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let dir = self.podman.dir.path();
        let _ = std::process::Command::new("podman")
            .env("CONTAINERS_CONF", dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf"))
            .args(["rm", "--force", "--time", "0", &self.name])
            .stdin(Stdio::null())
            .output();
    }
}

/// Runs `command` to its end within `bound` (killed after it).
async fn run(mut command: tokio::process::Command, bound: Duration) -> Output {
    let what = format!("{:?}", command.as_std());
    command.stdin(Stdio::null()).kill_on_drop(true);
    match tokio::time::timeout(bound, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what}: not done within {bound:?}"),
    }
}

/// The stdout of `output`, which must be a success.
fn succeed(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A line on the process's raw stderr, where `cargo test` shows it (as the
/// skip lines of `support::tools` do).
fn report(text: &str) {
    let line = format!("\ncontainer: {text}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
