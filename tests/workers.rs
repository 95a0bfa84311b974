//! HTTP workers: one thread per `--workers`, each on its own `SO_REUSEPORT`
//! socket, and still no sharing a port with another process by accident.

mod support;

use std::time::Duration;

use support::{get, healthy_pair, GateProcess};

const EXIT_BOUND: Duration = Duration::from_secs(15);

/// Names of the threads of `pid` that serve HTTP.
fn http_threads(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task list")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .filter(|n| n.starts_with("roomgate-http-"))
        .collect();
    names.sort();
    names
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
async fn each_worker_listens_on_its_own_socket_and_all_of_them_answer() {
    let (primary, _backup, dir, config) = healthy_pair().await;
    let mut gate =
        GateProcess::start_via(&[], &config, dir.path(), &["--workers", "3"], "info").await;
    let base = gate.base.clone();
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let pid = gate.pid().expect("running");

    // Bounded wait: the workers bind their sockets as they start.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while listening_sockets(port) < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        http_threads(pid),
        ["roomgate-http-0", "roomgate-http-1", "roomgate-http-2"]
    );
    assert_eq!(listening_sockets(port), 3, "one socket per worker");

    // New connections land on all sockets; every one of them answers.
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
    // A first roomgate on a fixed port: SO_REUSEPORT sockets, which a
    // second process of the same user could join if it only set the option.
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
