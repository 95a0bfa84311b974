//! The systemd unit and the Kubernetes manifests in `deploy/`, checked with
//! the tools that would judge them in production (`systemd-analyze verify`,
//! `kubernetes-validate`) and by running the command lines they hold
//! against the real binary. The unit's command lines run under its sandbox
//! in `systemd_sandbox.rs`; the nginx files are tested in `nginx.rs`; the
//! last test here makes sure no file in `deploy/` goes untested.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::nginx::{deploy_file, substitute};
use crate::support::tools::{KUBERNETES_VALIDATE, SYSTEMD_ANALYZE as SYSTEMD_ANALYZE_TOOL};
use crate::support::*;

/// Where Debian puts systemd-analyze (`.ci/run` installs systemd).
const SYSTEMD_ANALYZE: &str = "/usr/bin/systemd-analyze";

/// The Kubernetes version the manifests are validated against: a version
/// still in support, whose schemas ship with kubernetes-validate.
const KUBERNETES_VERSION: &str = "1.33.0";

/// Where the unit expects the binary; the tests put the built one there.
const UNIT_BINARY: &str = "/usr/local/bin/roomgate";

const BOUND: Duration = Duration::from_secs(15);

/// Runs `systemd-analyze verify` on `unit` saved as `roomgate.service`;
/// returns whether it passed and what it said about the unit.
fn verify_unit(unit: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "roomgate.service", unit);
    let out = std::process::Command::new(SYSTEMD_ANALYZE)
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    // Complaints about other units of the machine are not ours.
    let said: Vec<&str> = std::str::from_utf8(&out.stderr)
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains("roomgate"))
        .collect();
    (out.status.success() && said.is_empty(), said.join("\n"))
}

/// The unit with the binary path pointed at the built binary (verify checks
/// that ExecStart's program exists); nothing else changes.
fn unit_for_verify() -> String {
    substitute(
        &deploy_file("systemd/roomgate.service"),
        &[(UNIT_BINARY, env!("CARGO_BIN_EXE_roomgate"))],
    )
}

#[test]
fn systemd_unit_passes_verify() {
    if !SYSTEMD_ANALYZE_TOOL.installed(SYSTEMD_ANALYZE) {
        return;
    }
    let (ok, said) = verify_unit(&unit_for_verify());
    assert!(ok, "systemd-analyze verify failed:\n{said}");

    // The check can fail: a misspelt hardening key is reported.
    let typo = unit_for_verify().replace("ProtectSystem=strict", "ProtectSystm=strict");
    let (ok, said) = verify_unit(&typo);
    assert!(!ok && said.contains("ProtectSystm"), "{said}");

    // The hardening the issue asks for is all there.
    let unit = deploy_file("systemd/roomgate.service");
    for line in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "RuntimeDirectory=roomgate",
        "StateDirectory=roomgate",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
    ] {
        assert!(unit.contains(line), "the unit lacks {line:?}");
    }
}

/// Splits a `serve` command line as the unit or the Deployment holds it
/// into (listen, config, other arguments); `--state-dir` is left out (see
/// [`state_dir`]).
fn serve_args(args: &[String]) -> (String, String, Vec<String>) {
    assert_eq!(args.first().map(String::as_str), Some("serve"), "{args:?}");
    let (mut listen, mut config, mut rest) = (None, None, Vec::new());
    let mut it = args[1..].iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--listen" => listen = it.next().cloned(),
            "--config" => config = it.next().cloned(),
            "--state-dir" => {
                it.next();
            }
            _ => rest.push(arg.clone()),
        }
    }
    (
        listen.expect("--listen in the command line"),
        config.expect("--config in the command line"),
        rest,
    )
}

/// The `--state-dir` of a `serve` command line.
fn state_dir(args: &[String]) -> Option<&str> {
    args.windows(2)
        .find(|w| w[0] == "--state-dir")
        .map(|w| w[1].as_str())
}

/// Whether `python3 -m kubernetes_validate` works; see `support::tools`.
fn kubernetes_validate_available() -> bool {
    let works = std::process::Command::new("python3")
        .args(["-m", "kubernetes_validate", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    KUBERNETES_VALIDATE.found(works)
}

/// `kubernetes-validate --strict` on `files`; (passed, output).
fn kubernetes_validate(files: &[PathBuf]) -> (bool, String) {
    let out = std::process::Command::new("python3")
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "-k",
            KUBERNETES_VERSION,
        ])
        .args(files)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn kubernetes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

const MANIFESTS: [&str; 3] = [
    "kubernetes/configmap.yaml",
    "kubernetes/deployment.yaml",
    "kubernetes/service.yaml",
];

#[test]
fn kubernetes_manifests_validate_offline() {
    if !kubernetes_validate_available() {
        return;
    }
    let files: Vec<PathBuf> = MANIFESTS
        .iter()
        .map(|m| kubernetes_dir().join(m.trim_start_matches("kubernetes/")))
        .collect();
    let (ok, said) = kubernetes_validate(&files);
    assert!(ok, "{said}");
    for resource in [
        "configmap/roomgate-routes",
        "deployment/roomgate",
        "service/roomgate",
    ] {
        assert!(
            said.contains(&format!("passed for resource {resource}")),
            "{said}"
        );
    }

    // The check can fail: a misspelt field is rejected in strict mode.
    let dir = tempfile::tempdir().unwrap();
    let bad = write_file(
        dir.path(),
        "deployment.yaml",
        &deploy_file("kubernetes/deployment.yaml").replace("replicas: 2", "replicaz: 2"),
    );
    let (ok, said) = kubernetes_validate(&[bad]);
    assert!(!ok && said.contains("replicaz"), "{said}");
}

/// The manifests parsed as YAML documents.
fn manifest(name: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&deploy_file(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn deployment_shape_and_configmap_routes_are_valid() {
    let deployment = manifest("kubernetes/deployment.yaml");
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(2));
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert!(container["resources"]["requests"]["memory"].is_string());

    // The ConfigMap is what the Deployment mounts, at the path it names.
    let configmap = manifest("kubernetes/configmap.yaml");
    let name = configmap["metadata"]["name"].as_str().unwrap();
    assert_eq!(pod["volumes"][0]["configMap"]["name"].as_str(), Some(name));
    let mount = container["volumeMounts"][0]["mountPath"].as_str().unwrap();
    let args: Vec<String> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let (listen, config, extra) = serve_args(&args);
    assert_eq!(config, format!("{mount}/routes.yaml"));
    // The connection cap that fits the memory limit (see
    // deployment_connection_cap_fits_its_memory_limit), and nothing else.
    assert_eq!(extra, ["--max-connections", "2500"], "{extra:?}");
    assert_eq!(listen, "0.0.0.0:8080");
    // The state directory is a writable volume of the pod's own (the root
    // file system is read-only).
    let state = state_dir(&args).expect("--state-dir");
    let mounts = container["volumeMounts"].as_sequence().unwrap();
    let mount = mounts
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(state))
        .unwrap_or_else(|| panic!("nothing mounted at {state}"));
    assert!(mount["readOnly"].as_bool() != Some(true), "{mount:?}");
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    assert!(volume["emptyDir"].is_mapping(), "{volume:?}");

    // The Service reaches the container port.
    let service = manifest("kubernetes/service.yaml");
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"].as_str(),
        container["ports"][0]["name"].as_str()
    );
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    // routes.yaml from the ConfigMap passes `roomgate check`.
    let routes = configmap["data"]["routes.yaml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "routes.yaml", routes);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roomgate"))
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "roomgate check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("/Lounge"));
}

/// The container's command line runs, and answers its probes' paths (with
/// a test routes.yaml: the ConfigMap's names real Jitsi servers, which a
/// test must not probe; and 127.0.0.1 port 0 for the container's
/// 0.0.0.0:8080).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_command_line_serves_its_probes() {
    let deployment = manifest("kubernetes/deployment.yaml");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let (_, _, extra) = serve_args(&args);
    let (_primary, _backup, dir, config) = healthy_pair().await;
    // The state directory, an empty volume, moved into the test's.
    assert!(state_dir(&args).is_some());
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let mut extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    extra.extend(["--state-dir", state.to_str().unwrap()]);
    let gate = GateProcess::spawn_with(&config, dir.path(), "127.0.0.1:0", &extra, "info");
    let line = gate
        .wait_log("listening on http://", BOUND)
        .await
        .unwrap_or_else(|| panic!("{}", gate.log_text()));
    let base = line[line.find("http://").unwrap()..].trim().to_owned();
    assert!(state.join("history").exists());
    for probe in ["readinessProbe", "livenessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().unwrap();
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            let r = get(&format!("{base}{path}"), &[]).await;
            if r.status == 200 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{probe} {path}: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Bytes in a Kubernetes memory quantity such as `64Mi` or `100M`.
fn quantity_bytes(q: &str) -> u64 {
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (digits, unit) = q.split_at(split);
    let n: u64 = digits
        .parse()
        .unwrap_or_else(|e| panic!("quantity {q}: {e}"));
    let scale = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => panic!("quantity {q}: unit {unit:?}"),
    };
    n * scale
}

/// Resident memory of `pid` in bytes, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// A connection to `addr` that has made one request (`GET /Lounge`) and
/// read the whole answer: what an idle keep-alive client leaves behind.
async fn after_one_request(addr: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(b"GET /Lounge HTTP/1.1\r\nHost: rooms.example\r\n\r\n")
        .await
        .expect("send");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some(end) = text.find("\r\n\r\n") {
            assert!(text.starts_with("HTTP/1.1 302 "), "{text}");
            let length: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .expect("content-length");
            if answer.len() >= end + 4 + length {
                return conn;
            }
        }
    }
}

/// The Deployment's connection cap fits its memory limit: the command line
/// the container runs, holding idle keep-alive connections that each made
/// one request (this binary is the debug build, whose connections cost a
/// little more than the release build's), up to the cap or 3,000. At the
/// cap the process must fit the limit, and the connections alone must take
/// at most two thirds of it: the rest is the process itself and busy
/// connections. One connection more gets the cap's 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_connection_cap_fits_its_memory_limit() {
    const SAMPLE: usize = 3_000;
    let deployment = manifest("kubernetes/deployment.yaml");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let (_, _, extra) = serve_args(&args);
    let cap = extra
        .windows(2)
        .find(|w| w[0] == "--max-connections")
        .map(|w| w[1].parse::<u64>().expect("a number"))
        .unwrap_or(roomgate::server::MAX_CONNECTIONS as u64);
    let limit = quantity_bytes(
        container["resources"]["limits"]["memory"]
            .as_str()
            .expect("a memory limit"),
    );
    let held = cap.min(SAMPLE as u64);
    let fds = rlimit::increase_nofile_limit(u64::MAX).expect("raise RLIMIT_NOFILE");
    assert!(fds > held + 100, "open file limit {fds} is too low");

    let (_primary, _backup, dir, config) = healthy_pair().await;
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let gate = GateProcess::spawn_with(&config, dir.path(), "127.0.0.1:0", &extra, "info");
    let line = gate
        .wait_log("listening on http://", BOUND)
        .await
        .unwrap_or_else(|| panic!("{}", gate.log_text()));
    let addr = line[line.find("http://").unwrap() + "http://".len()..]
        .trim()
        .to_owned();
    let pid = gate.pid().expect("running");
    // Warm up: the first requests wait for the first probes.
    for _ in 0..3 {
        drop(after_one_request(&addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_bytes(pid);
    let mut conns = Vec::new();
    for _ in 0..held {
        conns.push(after_one_request(&addr).await);
    }
    // Well within the 10 s header read timeout that closes idle ones.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = rss_bytes(pid);
    let per_connection = after.saturating_sub(before) / held;
    let at_cap = after + (cap - held) * per_connection;
    let connections = cap * per_connection;
    println!(
        "{held} idle connections: RSS {} kB -> {} kB, {per_connection} bytes each; \
         at the cap of {cap}: {} kB, connections {} kB, limit {} kB",
        before / 1024,
        after / 1024,
        at_cap / 1024,
        connections / 1024,
        limit / 1024
    );
    assert!(
        at_cap <= limit,
        "at the cap of {cap} connections roomgate needs {} kB, over the limit of {} kB",
        at_cap / 1024,
        limit / 1024
    );
    assert!(
        connections <= limit * 2 / 3,
        "{cap} connections take {} kB, more than two thirds of the limit of {} kB",
        connections / 1024,
        limit / 1024
    );

    if held == cap {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let _ = conn
            .write_all(b"GET /Lounge HTTP/1.1\r\nHost: rooms.example\r\n\r\n")
            .await;
        let mut answer = Vec::new();
        tokio::time::timeout(BOUND, conn.read_to_end(&mut answer))
            .await
            .expect("answered and closed in time")
            .expect("read");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
    }
    // All of them were still open: none was closed to make room.
    let closed = conns
        .iter()
        .filter(|c| {
            let mut buf = [0u8; 1];
            !matches!(c.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    assert_eq!(closed, 0, "idle connections closed early");
}

/// Every file in deploy/ is named by a test (this file or tests/nginx.rs),
/// or by tests/container.rs, so nothing ships untested, and described in
/// deploy/README.md, so nothing ships unexplained.
#[test]
fn every_deploy_file_is_exercised() {
    let tests = [
        include_str!("nginx.rs"),
        include_str!("deploy.rs"),
        include_str!("container.rs"),
    ]
    .concat();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 8, "{files:?}");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("deploy/README.md");
    for file in files {
        let name = file.strip_prefix(&root).unwrap().display().to_string();
        if name == "README.md" {
            continue;
        }
        assert!(
            readme.contains(&format!("`{name}`")),
            "deploy/README.md does not describe deploy/{name}"
        );
        assert!(
            tests.contains(&format!("\"{name}\"")),
            "deploy/{name} is not used by any test"
        );
    }
}
