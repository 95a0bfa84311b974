//! Signals while requests flow, against the real binary: a SIGHUP every
//! 100 ms for 10 s fails no request, and at SIGTERM every connection that
//! roomgate accepted gets its answer.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What happened to one request on its own connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A complete 302 to the expected Location.
    Answered,
    /// `connect` failed (refused: the listener was closed); never accepted.
    Refused,
    /// Connected, but closed or reset before a single byte of an answer.
    Unanswered,
    /// Anything else: a wrong or cut-off answer.
    Broken,
}

/// One GET of `path` on a fresh connection, read to the end.
async fn request(addr: &str, path: &str, want: &str) -> Outcome {
    let mut conn = match TcpStream::connect(addr).await {
        Ok(conn) => conn,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Outcome::Refused,
        // Not established, so not accepted either; say what it was.
        Err(e) => {
            eprintln!("connect to {addr} failed: {e} ({:?})", e.kind());
            return Outcome::Refused;
        }
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let _ = conn.write_all(req.as_bytes()).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        let mut chunk = [0u8; 4096];
        loop {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no end of answer to {path}");
    if answer.is_empty() {
        return Outcome::Unanswered;
    }
    let text = String::from_utf8_lossy(&answer);
    // Complete: the whole body that Content-Length announced.
    let complete = text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
        head.lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.trim().parse::<usize>().ok())
            == Some(body.len())
    });
    if text.starts_with("HTTP/1.1 302 ")
        && text.contains(&format!("\r\nlocation: {want}\r\n"))
        && complete
    {
        Outcome::Answered
    } else {
        Outcome::Broken
    }
}

/// Counts of each [`Outcome`].
#[derive(Default)]
struct Counts {
    answered: AtomicU64,
    refused: AtomicU64,
    unanswered: AtomicU64,
    broken: AtomicU64,
}

impl Counts {
    fn add(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Answered => &self.answered,
            Outcome::Refused => &self.refused,
            Outcome::Unanswered => &self.unanswered,
            Outcome::Broken => &self.broken,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> [u64; 4] {
        [
            self.answered.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.unanswered.load(Ordering::Relaxed),
            self.broken.load(Ordering::Relaxed),
        ]
    }
}

/// A roomgate over a healthy primary with a ready config; the connections
/// the readiness polls made are counted in `counts`.
async fn setup(yaml: &str, counts: &Counts) -> (GateProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "routes.yaml", yaml);
    let gate = GateProcess::start(&file, dir.path()).await;
    let addr = gate.base.trim_start_matches("http://").to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    // Ready when /Lounge is answered by the primary (first probes done).
    loop {
        let r = Req::get(&gate.url("/readyz")).send().await.expect("readyz");
        counts.answered.fetch_add(1, Ordering::Relaxed);
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = addr;
    (gate, dir)
}

/// Replaces `file` atomically (write beside it, rename over it), so that a
/// reload never reads half a file.
fn replace(file: &Path, text: &str) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// `workers` tasks sending requests to `paths` (round robin) until `stop`
/// is set or their connection is refused; each pauses `gap` between its
/// requests.
fn spawn_workers(
    addr: &str,
    paths: &'static [&'static str],
    want: &str,
    workers: usize,
    gap: Duration,
    counts: &Arc<Counts>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|w| {
            let (addr, want) = (addr.to_owned(), want.to_owned());
            let (counts, stop) = (counts.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    let outcome = request(&addr, paths[i % paths.len()], &want).await;
                    counts.add(outcome);
                    if outcome == Outcome::Refused {
                        break;
                    }
                    i += 1;
                    tokio::time::sleep(gap).await;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_every_100ms_for_10s_fails_no_request() {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let a = two_server_yaml(&primary.url(), &backup.url(), "");
    // The other version renames an alias and a room description, so every
    // reload swaps in a different route table.
    let b = a
        .replace("aliases: [treff]", "aliases: [treff, hub]")
        .replace("Der allgemeine Treffpunkt", "Treffpunkt");
    let counts = Arc::new(Counts::default());
    let (gate, dir) = setup(&a, &counts).await;
    let file = dir.path().join("routes.yaml");
    let addr = gate.base.trim_start_matches("http://").to_owned();
    let want = format!("{}/Lounge", primary.url());
    let stop = Arc::new(AtomicBool::new(false));
    let workers = spawn_workers(
        &addr,
        &["/Lounge", "/treff", "/lounge/"],
        &want,
        4,
        Duration::from_millis(2),
        &counts,
        &stop,
    );

    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_secs(10) {
        replace(&file, if sent % 2 == 0 { &b } else { &a });
        gate.signal("HUP");
        sent += 1;
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            start + Duration::from_millis(100) * sent,
        ))
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    // Give the last reload time to finish.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metrics = get(&gate.url("/metrics"), &[]).await.body;
    let reloaded = reloads(&metrics, "success") as usize;
    let failed_reloads = reloads(&metrics, "failure");
    let [answered, refused, unanswered, broken] = counts.get();
    println!(
        "SIGHUP storm: {sent} SIGHUPs in {:.1} s, {reloaded} reloads, {failed_reloads} failed; \
         requests: {answered} answered, {refused} refused, {unanswered} unanswered, {broken} broken",
        start.elapsed().as_secs_f64()
    );
    assert_eq!([refused, unanswered, broken], [0, 0, 0]);
    assert!(answered > 1000, "only {answered} requests");
    assert_eq!(failed_reloads, 0, "{}", gate.log_text());
    // Signals that arrive while a reload runs are coalesced; most must
    // still have led to a reload.
    assert!(
        reloaded >= sent as usize * 3 / 4,
        "{reloaded} reloads for {sent} SIGHUPs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_every_accepted_request() {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let counts = Arc::new(Counts::default());
    let (mut gate, _dir) =
        setup(&two_server_yaml(&primary.url(), &backup.url(), ""), &counts).await;
    let addr = gate.base.trim_start_matches("http://").to_owned();
    let want = format!("{}/Lounge", primary.url());
    let stop = Arc::new(AtomicBool::new(false));
    // No pause: as many connections as possible in every state when the
    // signal comes (connecting, in the accept queue, accepted, answered).
    let workers = spawn_workers(
        &addr,
        &["/Lounge"],
        &want,
        16,
        Duration::ZERO,
        &counts,
        &stop,
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = counts.get()[0];
    gate.signal("TERM");
    for w in workers {
        tokio::time::timeout(Duration::from_secs(15), w)
            .await
            .expect("workers end once connections are refused")
            .expect("worker");
    }
    let exit = gate
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("exits");
    assert!(exit.success(), "{exit:?}");
    let line = gate
        .wait_log("accepted in all", Duration::from_secs(1))
        .await
        .unwrap_or_else(|| panic!("no shutdown totals:\n{}", gate.log_text()));
    let accepted: u64 = line
        .split('(')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line}"));
    let [answered, refused, unanswered, broken] = counts.get();
    println!(
        "SIGTERM under load: {answered} requests answered ({} of them after the signal), \
         {accepted} connections accepted by roomgate; {refused} refused and {unanswered} reset \
         from the accept queue (never accepted); {broken} broken",
        answered - before
    );
    println!("{line}");
    assert_eq!(broken, 0);
    // Every connection roomgate accepted was answered, and the
    // unanswered ones are exactly those it never accepted.
    assert_eq!(
        answered, accepted,
        "accepted {accepted}, answered {answered}"
    );
    assert!(refused >= 1, "the workers stop at a refused connect");
}
