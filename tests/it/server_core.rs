//! The server core: one runtime whose worker threads `--workers` sets, one
//! listening socket, no sharing a port with another process by accident,
//! and the write timeout that closes clients who never read their answers.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::support::{get, healthy_pair, Gate, GateProcess};

const EXIT_BOUND: Duration = Duration::from_secs(15);

/// How many threads of `pid` belong to the runtime: its workers, and the
/// blocking threads that it starts for DNS lookups.
fn worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task list")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|n| n.trim() == "roomgate-worker")
        .count()
}

/// The listening TCP sockets on `port`, from /proc/net/tcp (state 0A).
fn listening_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3 && cols[1].ends_with(&local) && cols[3] == "0A"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_sets_the_runtime_threads_behind_one_socket() {
    let (primary, _backup, dir, config) = healthy_pair().await;
    let mut gate =
        GateProcess::start_via(&[], &config, dir.path(), &["--workers", "3"], "info").await;
    let base = gate.base.clone();
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let pid = gate.pid().expect("running");
    let threads = worker_threads(pid);
    assert!(threads >= 3, "--workers 3, but {threads} runtime threads");
    assert_eq!(listening_sockets(port), 1, "one listening socket");

    // Every connection is answered.
    for _ in 0..60 {
        let resp = get(&format!("{base}/Lounge"), &[("connection", "close")]).await;
        assert_eq!(resp.status, 302);
        assert_eq!(
            resp.header("location").unwrap(),
            format!("{}/Lounge", primary.url())
        );
    }
    gate.signal("TERM");
    assert!(gate.wait_exit(EXIT_BOUND).await.expect("exits").success());
    assert!(gate.log_text().contains("all connections closed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_another_process_listens_on_is_refused() {
    let (_primary, _backup, dir, config) = healthy_pair().await;
    // A first roomgate on a fixed port; a second one must not share it.
    let first = GateProcess::start(&config, dir.path()).await;
    let addr = first.base.trim_start_matches("http://").to_owned();
    let mut second = GateProcess::spawn(&config, dir.path(), &addr);
    let exit = second.wait_exit(EXIT_BOUND).await.expect("exits");
    assert!(!exit.success(), "a second roomgate shared {addr}");
    assert!(
        second.log_text().to_lowercase().contains("in use"),
        "unclear error:\n{}",
        second.log_text()
    );
    // The first one still answers.
    let resp = get(&format!("{}/Lounge", first.base), &[]).await;
    assert_eq!(resp.status, 302);

    // A plain (non-roomgate) listener blocks the port just the same.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = plain.local_addr().unwrap().to_string();
    let mut third = GateProcess::spawn(&config, dir.path(), &taken);
    assert!(!third.wait_exit(EXIT_BOUND).await.expect("exits").success());
}

#[tokio::test]
async fn workers_must_be_at_least_one() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_roomgate"))
        .args(["serve", "--workers", "0"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--workers"), "{err}");
}

/// A client that sends requests and never reads the answers is closed once
/// an answer has waited [`WRITE_TIMEOUT`] to be written, and everyone else
/// is answered meanwhile.
///
/// [`WRITE_TIMEOUT`]: roomgate::server::WRITE_TIMEOUT
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_after_the_write_timeout() {
    let (primary, _backup, dir, config) = healthy_pair().await;
    let gate = Gate::start_in(dir, &std::fs::read_to_string(&config).unwrap()).await;
    let addr = gate.base.trim_start_matches("http://").parse().unwrap();
    // A small receive window, so that answers pile up quickly.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut greedy = socket.connect(addr).await.unwrap();
    let request = b"GET /Lounge HTTP/1.1\r\nHost: gate\r\n\r\n".repeat(64);
    // Writes until the server stops reading (its answers cannot go out),
    // then until the server closes the connection.
    let writer = tokio::spawn(async move {
        let mut last_progress = Instant::now();
        loop {
            match tokio::time::timeout(Duration::from_millis(200), greedy.write_all(&request)).await
            {
                Ok(Ok(())) => last_progress = Instant::now(),
                Ok(Err(_)) => return last_progress,
                Err(_) => {}
            }
            assert!(
                last_progress.elapsed() < roomgate::server::WRITE_TIMEOUT * 3,
                "the connection of a client that never reads stayed open"
            );
        }
    });
    // Meanwhile, other clients are answered.
    let open = |gate: &Gate| {
        let gw = gate.gw.clone();
        move || gw.metrics.open_connections.get()
    };
    let open_now = open(&gate);
    for _ in 0..5 {
        let resp = get(&gate.url("/Lounge"), &[("connection", "close")]).await;
        assert_eq!(resp.status, 302);
        assert_eq!(
            resp.header("location").unwrap(),
            format!("{}/Lounge", primary.url())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stalled_since = writer.await.expect("writer");
    let closed_after = stalled_since.elapsed();
    assert!(
        closed_after <= roomgate::server::WRITE_TIMEOUT + Duration::from_secs(3),
        "closed {closed_after:?} after the client stopped reading"
    );
    // The server let go of it.
    let deadline = Instant::now() + Duration::from_secs(2);
    while open_now() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(open_now(), 0, "connections still open");
    gate.stop().await;
}
