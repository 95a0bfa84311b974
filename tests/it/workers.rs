//! HTTP workers: one thread per `--workers`, each on its own `SO_REUSEPORT`
//! socket, and still no sharing a port with another process by accident;
//! with one worker per CPU, each serves the connections that arrive on its
//! CPU, within a margin of balance.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::tools::TASKSET;
use crate::support::{get, healthy_pair, GateProcess};
use roomgate::steer::{self, Load};

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

/// Moves the calling thread onto `cpu` (with util-linux's `taskset`, which
/// needs no unsafe code here), and checks that it runs there.
fn pin_this_thread(cpu: usize) {
    let me = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    let tid = me.file_name().unwrap().to_str().unwrap().to_owned();
    let status = std::process::Command::new("taskset")
        .args(["-p", "-c", &cpu.to_string(), &tid])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("taskset");
    assert!(status.success(), "taskset -p -c {cpu} {tid}");
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Field 39, counted after the command name in parentheses.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let on: usize = after.split(' ').nth(36).unwrap().parse().unwrap();
    assert_eq!(on, cpu, "the thread runs on CPU {on}, not {cpu}");
}

/// One request on `stream`; returns the response head (lower-cased) after
/// reading the whole response.
fn exchange(stream: &mut BufReader<TcpStream>, close: bool) -> String {
    let connection = if close { "close" } else { "keep-alive" };
    write!(
        stream.get_mut(),
        "GET /Lounge HTTP/1.1\r\nHost: gate\r\nConnection: {connection}\r\n\r\n"
    )
    .unwrap();
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stream.read_line(&mut line).unwrap() > 0,
            "closed mid-answer"
        );
        if line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    assert!(head.starts_with("http/1.1 302"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("content-length");
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    head
}

fn connect(addr: &str) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    BufReader::new(stream)
}

/// Reads to the end: the server has closed, after it stopped counting the
/// connection as open.
fn until_closed(mut stream: BufReader<TcpStream>) {
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "unexpected bytes: {rest:?}");
}

/// Why CPU steering cannot be shown here, if it cannot.
fn steering_unsupported(cpus: &[usize]) -> Option<String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = numbers.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let minor: u32 = numbers.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    if (major, minor) < (6, 2) {
        return Some(format!(
            "Linux {major}.{minor} ignores SO_INCOMING_CPU in a SO_REUSEPORT group (6.2 and later honour it)"
        ));
    }
    if cpus.len() < 2 {
        return Some(format!("this process may run on one CPU only ({cpus:?})"));
    }
    None
}

/// With one worker per CPU, a connection that arrives on a CPU is served
/// by that CPU's worker; a burst from one CPU is spread once a worker
/// serves `steer::MARGIN` more than another; a kept-alive connection whose
/// client moved to another worker's CPU is closed after an answer (and the
/// client's next connection lands there), while one at home stays open.
/// The shutdown line's per-worker counts show where each went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_go_to_the_worker_of_their_cpu_within_a_margin() {
    let cpus = steer::allowed_cpus().expect("Cpus_allowed_list");
    if let Some(why) = steering_unsupported(&cpus) {
        eprintln!("!!! SKIPPED: {why}; this test proves nothing here");
        return;
    }
    if !TASKSET.installed("/usr/bin/taskset") {
        return;
    }
    let n = cpus.len();
    let (_primary, _backup, dir, config) = healthy_pair().await;
    let mut gate = GateProcess::start_via(
        &[],
        &config,
        dir.path(),
        &["--workers", &n.to_string()],
        "info",
    )
    .await;
    assert!(
        gate.log_text()
            .contains("each serving the connections that arrive on its CPU"),
        "{}",
        gate.log_text()
    );
    let addr = gate.base.trim_start_matches("http://").to_owned();
    // Each worker is kept on its CPU (bounded wait: they start after the
    // line above).
    let pid = gate.pid().expect("running");
    let pinned = |worker: usize, cpu: usize| {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .filter_map(|t| t.ok())
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim() == format!("roomgate-http-{worker}"))
            })
            .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
            .any(|status| status.contains(&format!("Cpus_allowed_list:\t{cpu}\n")))
    };
    for (worker, &cpu) in cpus.iter().enumerate() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !pinned(worker, cpu) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "worker {worker} is not kept on CPU {cpu}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Where each connection should go, worked out as the client goes.
    let expected = Load::new(n, cpus.clone());
    let client_cpus = cpus.clone();
    let client = std::thread::spawn(move || {
        let (mut served, mut handed) = (vec![0u64; n], 0);
        // 1. One connection at a time from each CPU: its own worker.
        for (worker, &cpu) in client_cpus.iter().enumerate() {
            pin_this_thread(cpu);
            for _ in 0..=worker {
                let mut c = connect(&addr);
                exchange(&mut c, true);
                until_closed(c);
                served[worker] += 1;
            }
        }
        // 2. A burst of 3 × MARGIN connections from the first CPU, all open
        // at once: the first worker keeps MARGIN, then spreads them.
        pin_this_thread(client_cpus[0]);
        let mut burst = Vec::new();
        for _ in 0..3 * steer::MARGIN {
            let mut c = connect(&addr);
            let head = exchange(&mut c, false);
            assert!(!head.contains("connection: close"), "{head}");
            let worker = expected.destination(0).unwrap_or(0);
            if worker != 0 {
                handed += 1;
            }
            expected.opened(worker);
            served[worker] += 1;
            burst.push((c, worker));
        }
        for (mut c, worker) in burst {
            exchange(&mut c, true);
            until_closed(c);
            expected.closed(worker);
        }
        // 3. A connection made from the last CPU, used from the first: the
        // server closes it after some answers; made again, it stays open.
        let last = n - 1;
        pin_this_thread(client_cpus[last]);
        let mut c = connect(&addr);
        exchange(&mut c, false);
        expected.opened(last);
        served[last] += 1;
        pin_this_thread(client_cpus[0]);
        let mut answers = 1;
        loop {
            let head = exchange(&mut c, false);
            answers += 1;
            if head.contains("connection: close") {
                until_closed(c);
                expected.closed(last);
                break;
            }
            assert!(answers < 200, "a moved client's connection stays open");
        }
        let mut c = connect(&addr);
        for _ in 0..answers + 50 {
            let head = exchange(&mut c, false);
            assert!(
                !head.contains("connection: close"),
                "closed at home: {head}"
            );
        }
        exchange(&mut c, true);
        until_closed(c);
        served[0] += 1;
        println!("a moved client's connection was closed after {answers} answers");
        (served, handed)
    });
    let (served, handed_over) = tokio::task::spawn_blocking(move || client.join())
        .await
        .unwrap()
        .expect("client thread");

    gate.signal("TERM");
    assert!(gate.wait_exit(EXIT_BOUND).await.expect("exits").success());
    let log = gate.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("served by worker"))
        .unwrap_or_else(|| panic!("no per-worker totals:\n{log}"));
    assert!(
        line.contains(&format!(
            "served by worker {served:?}, {handed_over} handed over, 1 closed to move"
        )),
        "expected {served:?} and {handed_over} handed over:\n{line}"
    );
    assert!(handed_over > 0);
}
