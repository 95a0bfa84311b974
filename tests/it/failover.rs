//! Failover and recovery against stand-in Jitsi servers: every primary fault
//! turns into a redirect to the backup within the bound that the check
//! settings promise, and back again; probing stays cheap and off the
//! request path.

use std::time::{Duration, Instant};

use crate::support::faults::*;
use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_ca_in_ca_file_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let primary = StandIn::https(Mode::Healthy, &ca.localhost_leaf()).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let extra = format!("    ca_file: {}", ca.pem_path(dir.path()).display());
    let gate = Gate::start_in(dir, &two_server_yaml(&primary.url(), &backup.url(), &extra)).await;
    assert!(primary.url().starts_with("https://localhost:"));
    assert_eq!(
        location(&gate.url("/Lounge")).await,
        format!("{}/Lounge", primary.url())
    );
    wait_entry(&gate, "primary", "up", Duration::from_secs(2)).await;
    assert!(primary.counts().bosh_sessions >= 1);
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_do_not_wait_for_a_hanging_probe() {
    // Long probe timeout so that each probe hangs for a full second.
    let primary = StandIn::http(Mode::BlackHole).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let check = "interval: 1200ms, fast_interval: 500ms, timeout: 1s, rise: 2, fall: 2, xmpp_domain: localhost";
    let gate = Gate::start(&yaml_with_check(&primary.url(), check, &backup.url())).await;
    let lounge = gate.url("/Lounge");
    let on_backup = format!("{}/Lounge", backup.url());

    // After the first result (a timeout) the next probe connects and hangs.
    wait_entry(&gate, "primary", "down", Duration::from_secs(3)).await;
    let seen = primary.counts().connections;
    primary
        .wait_for(Duration::from_secs(3), |c| c.connections > seen)
        .await
        .expect("the next probe connects");
    let hang_started = Instant::now();

    let mut took = Vec::new();
    for _ in 0..50 {
        let start = Instant::now();
        assert_eq!(location(&lounge).await, on_backup);
        took.push(start.elapsed());
    }
    // All of them ran while that probe hung (it hangs for the 1 s timeout).
    let window = hang_started.elapsed();
    took.sort();
    let p50 = took[took.len() / 2];
    let max = *took.last().unwrap();
    println!(
        "during a hanging probe: 50 requests in {} ms, p50 {} us, max {} us",
        window.as_millis(),
        p50.as_micros(),
        max.as_micros()
    );
    assert!(
        window < Duration::from_secs(1),
        "requests took {window:?}, longer than the hang"
    );
    assert!(max < Duration::from_millis(100), "slowest request {max:?}");
    assert!(p50 < Duration::from_millis(20), "median request {p50:?}");
    gate.stop().await;
}

/// Sends `n` GETs of `path` on one kept-alive connection, paced `gap` apart;
/// returns the Locations seen. As HTTP clients do, it opens a new connection
/// should the server close one.
async fn keep_alive_burst(addr: &str, path: &str, n: usize, gap: Duration) -> Vec<String> {
    let open = || async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        (sender, tokio::spawn(conn))
    };
    let (mut sender, mut driver) = open().await;
    let start = tokio::time::Instant::now();
    let mut seen = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until(start + gap * i as u32).await;
        let req = Request::get(path)
            .header("host", addr)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.expect("request");
        assert_eq!(resp.status(), 302);
        let loc = resp.headers()["location"].to_str().unwrap().to_owned();
        let closes = resp
            .headers()
            .get("connection")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        resp.into_body().collect().await.expect("body");
        seen.push(loc);
        if closes {
            drop(sender);
            let _ = driver.await;
            (sender, driver) = open().await;
        }
    }
    drop(sender);
    let _ = driver.await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_do_not_multiply_with_traffic() {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let gate = Gate::start(&two_server_yaml(&primary.url(), &backup.url(), "")).await;
    let on_primary = format!("{}/Lounge", primary.url());
    assert_eq!(location(&gate.url("/Lounge")).await, on_primary);

    let addr = gate.base.trim_start_matches("http://").to_owned();
    let (before_p, before_b) = (primary.counts(), backup.counts());
    let start = Instant::now();
    // 16 connections x 125 requests, 8 ms apart: 2000 requests over ~1 s.
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move {
                keep_alive_burst(&addr, "/Lounge", 125, Duration::from_millis(8)).await
            })
        })
        .collect();
    let mut answered = 0;
    for task in tasks {
        let seen = task.await.expect("burst task");
        assert!(seen.iter().all(|l| *l == on_primary));
        answered += seen.len();
    }
    let run = start.elapsed();
    let (after_p, after_b) = (primary.counts(), backup.counts());
    let creates_p = after_p.bosh_creates - before_p.bosh_creates;
    let creates_b = after_b.bosh_creates - before_b.bosh_creates;
    let bound = (run.as_secs_f64() / INTERVAL.as_secs_f64()).floor() as u64 + 2;
    println!(
        "probe load: {answered} requests in {} ms; BOSH creates primary {creates_p}, backup {creates_b} (bound {bound})",
        run.as_millis()
    );
    assert_eq!(answered, 2000);
    for (name, creates) in [("primary", creates_p), ("backup", creates_b)] {
        assert!(
            (1..=bound).contains(&creates),
            "{name}: {creates} creates in {run:?}, bound 1..={bound}"
        );
    }
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bosh_probe_ends_its_session() {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let gate = Gate::start(&two_server_yaml(&primary.url(), &backup.url(), "")).await;
    // Every create is followed by its terminate: wait for a moment where
    // they match after at least two probes.
    let counts = primary
        .wait_for(Duration::from_secs(3), |c| {
            c.bosh_creates >= 2 && c.bosh_terminates == c.bosh_creates
        })
        .await
        .unwrap_or_else(|c| panic!("terminates do not follow creates: {c:?}"));
    assert_eq!(counts.bosh_sessions, counts.bosh_creates);
    // At most the session of a probe in flight is open.
    assert!(primary.open_sessions() <= 1);
    let terminate = primary
        .recent_requests()
        .into_iter()
        .find(|r| r.body.contains("type='terminate'"))
        .expect("a terminate request");
    assert!(terminate.path.ends_with("/http-bind"));
    assert!(
        terminate.body.contains("sid='standin"),
        "{}",
        terminate.body
    );
    // Nothing inside: a session that never logged in has nothing to end,
    // and Prosody answers stanzas in it with an error.
    assert!(
        terminate.body.trim_end().ends_with("/>"),
        "{}",
        terminate.body
    );
    gate.stop().await;
}

/// A server slow to answer the terminate: the verdict and the latency
/// come from the session request; the terminate is still sent, on its own
/// budget after the verdict, and does not hold the probes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_terminate_is_neither_latency_nor_verdict() {
    let primary = StandIn::http(Mode::SlowTerminate).await;
    let backup = StandIn::http(Mode::Healthy).await;
    // A timeout long enough that a probe which waited for the terminate
    // within it would report about a second of latency.
    let check = "interval: 2s, fast_interval: 100ms, timeout: 1s, rise: 2, fall: 2, \
                 xmpp_domain: localhost";
    let gate = Gate::start(&yaml_with_check(&primary.url(), check, &backup.url())).await;
    let entry = wait_entry(&gate, "primary", "up", Duration::from_secs(3)).await;
    let latency = entry["latency_ms"].as_u64().expect("a latency");
    assert!(latency < 500, "latency {latency} ms holds the terminate");
    // The terminate went out and reached the server.
    primary
        .wait_for_terminates(1, Duration::from_secs(3))
        .await
        .unwrap_or_else(|c| panic!("no terminate: {c:?}"));
    // A second probe comes on time: the slow terminate (cut off after its
    // own 1 s) did not hold the prober beyond interval + budget.
    let counts = primary
        .wait_for(Duration::from_secs(4), |c| c.bosh_creates >= 2)
        .await
        .unwrap_or_else(|c| panic!("no second probe: {c:?}"));
    assert!(counts.bosh_terminates >= 1);
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_kind_checks_status() {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let check = "kind: http, path: /config.js, expect_status: 200, interval: 300ms, fast_interval: 100ms, timeout: 200ms";
    let gate = Gate::start(&yaml_with_check(&primary.url(), check, &backup.url())).await;
    let lounge = gate.url("/Lounge");
    assert_eq!(location(&lounge).await, format!("{}/Lounge", primary.url()));
    assert!(primary.counts().config_js >= 1);
    // An http check never opens BOSH sessions.
    assert_eq!(primary.counts().bosh_creates, 0);

    let t0 = Instant::now();
    primary.set_mode(Mode::Error500).await;
    let took = wait_location(
        &lounge,
        &format!("{}/Lounge", backup.url()),
        t0,
        failover_bound() * 3,
    )
    .await
    .expect("fails over on 500");
    assert!(took <= failover_bound(), "{took:?}");
    let entry = wait_entry(&gate, "primary", "down", Duration::from_secs(1)).await;
    let error = entry["error"].as_str().unwrap();
    assert!(error.contains("/config.js answered 500"), "{error}");
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_kind_checks_body_text() {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let timing = "interval: 300ms, fast_interval: 100ms, timeout: 200ms";

    let found = format!(
        "kind: http, path: /config.js, expect_status: 200-399, body_contains: 'bosh:', {timing}"
    );
    let gate = Gate::start(&yaml_with_check(&primary.url(), &found, &backup.url())).await;
    assert_eq!(
        location(&gate.url("/Lounge")).await,
        format!("{}/Lounge", primary.url())
    );
    gate.stop().await;

    let missing = format!("kind: http, path: /config.js, body_contains: 'no such text', {timing}");
    let gate = Gate::start(&yaml_with_check(&primary.url(), &missing, &backup.url())).await;
    assert_eq!(
        location(&gate.url("/Lounge")).await,
        format!("{}/Lounge", backup.url())
    );
    let entry = wait_entry(&gate, "primary", "down", Duration::from_secs(1)).await;
    let error = entry["error"].as_str().unwrap();
    assert!(error.contains("without the expected text"), "{error}");
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_url_with_a_path_prefix_works() {
    let primary = StandIn::builder().prefix("/jitsi").start().await;
    let backup = StandIn::http(Mode::Healthy).await;
    assert!(primary.url().ends_with("/jitsi"));
    let gate = Gate::start(&two_server_yaml(&primary.url(), &backup.url(), "")).await;
    // The stand-in answers 404 outside its prefix, so "up" means every
    // probe request carried the prefix.
    assert_eq!(
        location(&gate.url("/Lounge")).await,
        format!("{}/Lounge", primary.url())
    );
    wait_entry(&gate, "primary", "up", Duration::from_secs(1)).await;
    let recent = primary.recent_requests();
    assert!(!recent.is_empty());
    for r in &recent {
        assert!(r.path.starts_with("/jitsi/"), "{}", r.path);
    }
    assert!(primary.counts().bosh_sessions >= 1);
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_failed_probe_does_not_fail_over() {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    // fall 3: one failure must not move anyone. A longer fast_interval
    // leaves time to repair before the confirming probe, even under load.
    let check = "interval: 400ms, fast_interval: 250ms, timeout: 200ms, rise: 2, fall: 3, xmpp_domain: localhost";
    let gate = Gate::start(&yaml_with_check(&primary.url(), check, &backup.url())).await;
    let lounge = gate.url("/Lounge");
    let on_primary = format!("{}/Lounge", primary.url());
    assert_eq!(location(&lounge).await, on_primary);

    // Flip right after a probe has finished, so that the next probe (one
    // interval away) is the first to see the fault.
    let done = primary.counts().bosh_terminates;
    primary
        .wait_for_terminates(done + 1, Duration::from_secs(2))
        .await
        .expect("a healthy probe finishes");
    primary.set_mode(Mode::BoshDown).await;
    let before = primary.counts();
    assert_eq!(
        before.bosh_creates, before.bosh_terminates,
        "a probe was in flight at the flip"
    );
    // Exactly one failed create, then repair at once.
    let failed = primary
        .wait_for_creates(before.bosh_creates + 1, Duration::from_secs(2))
        .await
        .expect("the next probe asks for a session");
    primary.set_mode(Mode::Healthy).await;
    assert_eq!(
        failed.bosh_sessions, before.bosh_sessions,
        "that create failed"
    );
    assert_eq!(primary.counts().bosh_creates, before.bosh_creates + 1);

    // The failure was recorded, and the state held.
    let start = Instant::now();
    while failed_probes(&gate).await < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "failure not recorded"
        );
        tokio::time::sleep(POLL).await;
    }
    let entry = server(&status_json(&gate.url("/status.json")).await, "primary").clone();
    assert_eq!(entry["state"], "up", "{entry}");

    // Through the confirming probe and the next settled one, every answer
    // stays on the primary.
    let target = before.bosh_sessions + 2;
    let start = Instant::now();
    while primary.counts().bosh_sessions < target {
        assert_eq!(location(&lounge).await, on_primary);
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "no healthy probes after the repair: {:?}",
            primary.counts()
        );
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(location(&lounge).await, on_primary);
    assert_eq!(failed_probes(&gate).await, 1);
    let entry = server(&status_json(&gate.url("/status.json")).await, "primary").clone();
    assert_eq!(entry["state"], "up", "{entry}");
    gate.stop().await;
}

/// Failed probes of the primary so far, from /metrics.
async fn failed_probes(gate: &Gate) -> u64 {
    let r = get(&gate.url("/metrics"), &[]).await;
    r.body
        .lines()
        .find(|l| {
            l.starts_with("roomgate_probes_total{")
                && l.contains("server=\"primary\"")
                && l.contains("result=\"failure\"")
        })
        .map_or(0, |l| {
            l.rsplit(' ').next().unwrap().parse().expect("a count")
        })
}

/// A real roomgate with one worker thread (as in a one-CPU container, where
/// the runtime sizes itself to one core) over two healthy stand-ins; `spoil`
/// replaces its config file, then a SIGHUP asks for a reload and the
/// primary goes down at once. Failover keeps its usual bound while the
/// reload is pending or failing, the reload fails with `reason` in a line
/// that names the file, and the running config (rooms and aliases) stays.
async fn failover_during_a_bad_reload(spoil: impl FnOnce(&std::path::Path), reason: &str) {
    let (primary, backup, dir, config) = healthy_pair().await;
    let gate = GateProcess::start_via(&[], &config, dir.path(), &["--workers", "1"], "info").await;
    let lounge = gate.url("/Lounge");
    let on_primary = format!("{}/Lounge", primary.url());
    let on_backup = format!("{}/Lounge", backup.url());
    assert_eq!(location(&lounge).await, on_primary);
    wait_state(
        &gate.url("/status.json"),
        "backup",
        "up",
        Duration::from_secs(2),
    )
    .await;

    spoil(&config);
    let seen = gate.log_len();
    gate.signal("HUP");
    let t0 = Instant::now();
    primary.set_mode(Mode::BoshDown).await;
    let failover = wait_location(&lounge, &on_backup, t0, failover_bound() * 3)
        .await
        .unwrap_or_else(|| panic!("no failover during the reload:\n{}", gate.log_text()));
    println!(
        "failover during a reload ({reason}): {} ms (bound {} ms)",
        failover.as_millis(),
        failover_bound().as_millis()
    );
    assert!(
        failover <= failover_bound(),
        "failover took {failover:?} during the reload, bound {:?}",
        failover_bound()
    );
    let line = gate
        .wait_log_after(seen, &config.display().to_string(), Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("the reload never ended:\n{}", gate.log_text()));
    assert!(line.contains(reason), "{line}");
    wait_reloads(&gate.url("/metrics"), "failure", 1, Duration::from_secs(2)).await;
    // The running config stays, alias and all.
    assert_eq!(location(&gate.url("/treff")).await, on_backup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_keeps_its_timing_while_a_reload_meets_a_fifo() {
    failover_during_a_bad_reload(
        |config| {
            std::fs::remove_file(config).unwrap();
            let made = std::process::Command::new("mkfifo")
                .arg(config)
                .status()
                .expect("run mkfifo");
            assert!(made.success());
        },
        "is a FIFO",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_keeps_its_timing_while_a_reload_meets_a_deep_file() {
    // 200 KB of nested `[`: 85 s of parsing in a release build before the
    // nesting bound.
    failover_during_a_bad_reload(
        |config| std::fs::write(config, format!("servers: {}\n", "[".repeat(200_000))).unwrap(),
        "nested deeper than",
    )
    .await;
}
