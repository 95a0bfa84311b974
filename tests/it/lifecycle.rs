//! The real binary's life: reloads on SIGHUP, graceful stops on SIGTERM and
//! SIGINT, and listening on a unix socket.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Bound on a clean exit after SIGTERM/SIGINT once nothing is in flight.
const EXIT_BOUND: Duration = Duration::from_secs(5);

async fn location(url: &str) -> String {
    let r = get(url, &[]).await;
    assert_eq!(r.status, 302, "GET {url}: {}", r.body);
    r.header("location").expect("Location").to_owned()
}

/// Whether `line` names `file` followed by `:LINE:COLUMN:`.
fn names_position(line: &str, file: &str) -> bool {
    let Some(at) = line.find(&format!("{file}:")) else {
        return false;
    };
    let mut parts = line[at + file.len() + 1..].splitn(3, ':');
    let (Some(l), Some(c), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    l.parse::<u32>().is_ok() && c.parse::<u32>().is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_keeps_the_running_config_on_error_and_the_health_state_on_success() {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = two_server_yaml(&primary.url(), &backup.url(), "");
    let config = write_file(dir.path(), "routes.yaml", &yaml);
    let mut gate = GateProcess::start(&config, dir.path()).await;
    let on_primary = format!("{}/Lounge", primary.url());
    assert_eq!(location(&gate.url("/Lounge")).await, on_primary);
    let before = status_json(&gate.url("/status.json")).await;
    let since = server(&before, "primary")["since"]
        .as_str()
        .expect("since")
        .to_owned();
    assert_eq!(server(&before, "primary")["state"], "up");
    // `since` has whole seconds; let the clock pass into the next one, so
    // that a prober started afresh would show a different `since`.
    let deadline = Instant::now() + Duration::from_secs(2);
    while humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string() == since {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A broken file: counted as a failed reload and logged with its
    // position; the running config stays.
    std::fs::write(&config, "servers:\n  primary: [unclosed\nrooms: {\n").unwrap();
    let skip = gate.log_len();
    gate.signal("HUP");
    wait_reloads(&gate.url("/metrics"), "failure", 1, Duration::from_secs(3)).await;
    let file = config.display().to_string();
    let line = gate
        .wait_log_after(skip, &format!("{file}:"), Duration::from_secs(3))
        .await
        .unwrap_or_else(|| panic!("the file is not named:\n{}", gate.log_text()));
    assert!(
        names_position(&line, &file),
        "no file:line:column in {line:?}"
    );
    assert_eq!(location(&gate.url("/Lounge")).await, on_primary);
    let after = status_json(&gate.url("/status.json")).await;
    assert_eq!(server(&after, "primary")["state"], "up", "{after}");
    assert_eq!(server(&after, "primary")["since"], since.as_str());

    // A valid file with one more room and the same servers.
    let changed = format!("{yaml}  Kitchen:\n    description: new\n");
    std::fs::write(&config, changed).unwrap();
    gate.signal("HUP");
    wait_reloads(&gate.url("/metrics"), "success", 1, Duration::from_secs(3)).await;
    assert_eq!(
        location(&gate.url("/Kitchen")).await,
        format!("{}/Kitchen", primary.url())
    );
    // Kept, not re-probed from unknown: same `since`, still up, and that
    // stays so over the next probes.
    let creates = primary.counts().bosh_creates;
    primary
        .wait_for_creates(creates + 2, Duration::from_secs(2))
        .await
        .expect("probes go on");
    let after = status_json(&gate.url("/status.json")).await;
    assert_eq!(server(&after, "primary")["state"], "up", "{after}");
    assert_eq!(
        server(&after, "primary")["since"],
        since.as_str(),
        "{after}"
    );
    assert_eq!(server(&after, "backup")["state"], "up", "{after}");

    gate.signal("TERM");
    let exit = gate.wait_exit(EXIT_BOUND).await.expect("exits");
    assert!(exit.success(), "{exit:?}");
}

/// `roomgate_open_connections` from /metrics (this request's own included).
async fn open_connections(gate: &GateProcess) -> u64 {
    let r = get(&gate.url("/metrics"), &[]).await;
    r.body
        .lines()
        .find_map(|l| l.strip_prefix("roomgate_open_connections "))
        .expect("open connections gauge")
        .trim()
        .parse()
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_request_in_flight_finish() {
    // The primary swallows probes, so the first request waits in the
    // cold-start wait (1.5 s) for a result that does not come in time: a
    // request in flight for as long as we need.
    let primary = StandIn::http(Mode::BlackHole).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "servers:
  primary:
    url: {}
    check: {{ interval: 20s, timeout: 10s, xmpp_domain: localhost }}
  backup:
    url: {}
    check: {{ xmpp_domain: localhost }}
rooms:
  Lounge: {{}}
",
        primary.url(),
        backup.url()
    );
    let config = write_file(dir.path(), "routes.yaml", &yaml);
    let mut gate = GateProcess::start(&config, dir.path()).await;
    let addr = gate.base.trim_start_matches("http://").to_owned();

    let started = Instant::now();
    // Connected before any other connection, so roomgate accepts it first.
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let in_flight = tokio::spawn(get_on(stream, "/Lounge"));
    // Wait until roomgate has accepted it: two open connections, the
    // waiting one and the one asking; then give it a moment to read the
    // request it already has in its buffer.
    while open_connections(&gate).await < 2 {
        assert!(started.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.signal("TERM");
    // New connections are refused (within a second) while the old request
    // is still running.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match tokio::net::TcpStream::connect(&addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            other => assert!(
                Instant::now() < deadline,
                "still connecting after SIGTERM: {other:?}\n{}",
                gate.log_text()
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !in_flight.is_finished(),
        "the request ended before the test could stop roomgate"
    );

    let (status, location) = in_flight.await.unwrap();
    assert_eq!(status, 302);
    assert_eq!(location.unwrap(), format!("{}/Lounge", backup.url()));
    let exit = gate
        .wait_exit(EXIT_BOUND)
        .await
        .expect("exits after draining");
    assert!(exit.success(), "{exit:?}\n{}", gate.log_text());
    println!(
        "request in flight answered and process exited {} ms after the request",
        started.elapsed().as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_cleanly() {
    let (primary, _backup, dir, config) = healthy_pair().await;
    let mut gate = GateProcess::start(&config, dir.path()).await;
    assert_eq!(
        location(&gate.url("/Lounge")).await,
        format!("{}/Lounge", primary.url())
    );
    gate.signal("INT");
    let exit = gate.wait_exit(EXIT_BOUND).await.expect("exits");
    // Handled: an unhandled SIGINT would end it by the signal, no code.
    assert_eq!(exit.code(), Some(0), "{}", gate.log_text());
}

/// GET `path` over the unix socket at `socket`; returns status and Location.
async fn get_unix(socket: &Path, path: &str) -> (u16, Option<String>) {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect to the unix socket");
    get_on(stream, path).await
}

/// GET `path` on an open connection; returns status and Location.
async fn get_on<IO>(stream: IO, path: &str) -> (u16, Option<String>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let driver = tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "roomgate.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("answer in time")
        .expect("response");
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    resp.into_body().collect().await.expect("body");
    drop(sender);
    let _ = driver.await;
    (status, location)
}

/// roomgate serving `config` on the unix socket `socket`, once it listens.
async fn serve_unix(config: &Path, socket: &Path) -> GateProcess {
    let gate = GateProcess::spawn(
        config,
        config.parent().unwrap(),
        &format!("unix:{}", socket.display()),
    );
    assert!(
        gate.wait_log("listening on unix:", Duration::from_secs(10))
            .await
            .is_some(),
        "{}",
        gate.log_text()
    );
    gate
}

async fn unix_setup() -> (StandIn, StandIn, tempfile::TempDir, PathBuf, PathBuf) {
    let (primary, backup, dir, config) = healthy_pair().await;
    let socket = dir.path().join("rg.sock");
    (primary, backup, dir, config, socket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_a_unix_socket_and_removes_it_on_exit() {
    let (primary, _backup, _dir, config, socket) = unix_setup().await;
    let mut gate = serve_unix(&config, &socket).await;
    let (status, location) = get_unix(&socket, "/Lounge").await;
    assert_eq!(status, 302);
    assert_eq!(location.unwrap(), format!("{}/Lounge", primary.url()));
    assert_eq!(get_unix(&socket, "/healthz").await.0, 200);

    gate.signal("TERM");
    assert!(gate.wait_exit(EXIT_BOUND).await.expect("exits").success());
    assert!(!socket.exists(), "socket file left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_unix_socket_is_replaced() {
    let (primary, _backup, _dir, config, socket) = unix_setup().await;
    // A socket file whose listener is gone, as a crash leaves it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let mut gate = serve_unix(&config, &socket).await;
    // Served on that path: the stale file was replaced.
    let (status, location) = get_unix(&socket, "/Lounge").await;
    assert_eq!(status, 302);
    assert_eq!(location.unwrap(), format!("{}/Lounge", primary.url()));
    gate.signal("TERM");
    assert!(gate.wait_exit(EXIT_BOUND).await.expect("exits").success());
    assert!(!socket.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_in_use_is_not_taken_over() {
    let (_primary, _backup, _dir, config, socket) = unix_setup().await;
    let _live = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let mut gate = GateProcess::spawn(
        &config,
        config.parent().unwrap(),
        &format!("unix:{}", socket.display()),
    );
    let exit = gate.wait_exit(EXIT_BOUND).await.expect("exits");
    assert!(!exit.success());
    assert!(
        gate.log_text().contains("in use"),
        "unclear error:\n{}",
        gate.log_text()
    );
    // The other process keeps its socket.
    assert!(socket.exists());
}

/// Runs `serve --listen unix:<path>` where something that is not a stale
/// stream socket is in the way: the process must exit non-zero at once,
/// with an error that names the path and `what` is there.
async fn refuses_to_replace(config: &Path, path: &Path, what: &str) {
    let mut gate = GateProcess::spawn(
        config,
        config.parent().unwrap(),
        &format!("unix:{}", path.display()),
    );
    let exit = gate.wait_exit(EXIT_BOUND).await;
    let log = gate.log_text();
    let exit = exit.unwrap_or_else(|| panic!("still running with {what} at the path:\n{log}"));
    assert!(!exit.success(), "started over {what}:\n{log}");
    assert!(
        log.contains(&path.display().to_string()) && log.contains(what),
        "the error names neither the path nor {what}:\n{log}"
    );
}

/// `--listen unix:PATH` replaces only a stale socket of its own kind: a
/// typo that names the config, a directory, a symlink (even to a stale
/// socket) and a live datagram socket (like `/dev/log`, which answers a
/// stream connect with EPROTOTYPE, not ECONNREFUSED) are errors, and each
/// is left exactly as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_listen_path_that_is_not_a_stale_socket_is_left_alone() {
    let (_primary, _backup, dir, config, _socket) = unix_setup().await;

    // `--listen unix:routes.yaml`: the config itself.
    let before = std::fs::read_to_string(&config).unwrap();
    refuses_to_replace(&config, &config, "regular file").await;
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);

    let subdir = dir.path().join("sub");
    std::fs::create_dir(&subdir).unwrap();
    refuses_to_replace(&config, &subdir, "directory").await;
    assert!(subdir.is_dir());

    // A symlink to a stale socket: neither the link nor its target goes.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let link = dir.path().join("link.sock");
    std::os::unix::fs::symlink(&stale, &link).unwrap();
    refuses_to_replace(&config, &link, "symbolic link").await;
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(stale.exists());

    // A live datagram socket keeps working for its owner.
    let dgram_path = dir.path().join("log.sock");
    let dgram = std::os::unix::net::UnixDatagram::bind(&dgram_path).unwrap();
    refuses_to_replace(&config, &dgram_path, "datagram").await;
    let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
    sender.send_to(b"still here", &dgram_path).unwrap();
    let mut buf = [0u8; 16];
    let n = dgram.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"still here");
}

/// At exit the socket file is removed only if it is still the one this
/// process bound: one that another process put at the path meanwhile stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_replaced_while_serving_is_left_at_exit() {
    let (_primary, _backup, _dir, config, socket) = unix_setup().await;
    let mut gate = serve_unix(&config, &socket).await;
    // Someone (a second instance, an operator) takes the path over.
    std::fs::remove_file(&socket).unwrap();
    let theirs = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    gate.signal("TERM");
    assert!(gate.wait_exit(EXIT_BOUND).await.expect("exits").success());
    assert!(socket.exists(), "the other process's socket was removed");
    let _client = std::os::unix::net::UnixStream::connect(&socket).expect("still served");
    drop(theirs);
}
