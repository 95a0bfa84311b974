//! The fault matrix: one test per way a Jitsi server (or the config file)
//! misbehaves, each against a local stand-in, each asserting the decision
//! that the fault matrix in docs/reliability.md promises. Rows are numbered
//! as in that table.
//!
//! Faults that can come and go are tested both ways (healthy -> fault ->
//! healthy, with the failover and recovery times bounded by the check
//! settings); faults that are there from the start are tested from the
//! first probe, which decides directly.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::faults::*;
use crate::support::tools::{as_nobody, UNSHARE};
use crate::support::*;

// ---------------------------------------------------------------------------
// Rows 1-5: the server breaks, then is repaired.

/// Row 1: the port is closed (process or host gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row01_connection_refused() {
    flip_and_back(Mode::Refusing).await;
}

/// Row 2: connections are accepted and never answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row02_black_hole() {
    flip_and_back(Mode::BlackHole).await;
}

/// Row 3: the answer's status line and headers trickle in, a byte per
/// 200 ms, far past the 200 ms probe timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row03_slow_headers() {
    flip_and_back(Mode::SlowHeaders).await;
}

/// Row 4: BOSH sends 200 and its headers at once, then the body a byte per
/// 200 ms: a probe that only looked at the status would call it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row04_slow_body() {
    flip_and_back(Mode::SlowBody).await;
}

/// Row 5: every request answers 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row05_server_errors() {
    flip_and_back(Mode::Error500).await;
}

/// Row 5b: nginx up, Prosody down: pages 200, BOSH 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row05b_bosh_bad_gateway() {
    flip_and_back(Mode::BoshDown).await;
}

// ---------------------------------------------------------------------------
// Rows 6-7: BOSH answers 200, but not with a session.

/// Row 6: a maintenance or captive page instead of `<stream:features`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row06_wrong_body() {
    down_with_reason(Mode::WrongBody, "maintenance").await;
}

/// Row 7: Prosody does not host the XMPP domain we ask for; Prosody 0.12
/// says `improper-addressing` (tests/it/prosody.rs has the real one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row07_bosh_unknown_domain() {
    down_with_reason(
        Mode::UnknownDomain,
        "improper-addressing (is xmpp_domain right?)",
    )
    .await;
}

// ---------------------------------------------------------------------------
// Rows 8-10: TLS. The stand-in serves `leaf`; roomgate trusts `trusted`
// (through `ca_file`). The first probe fails in the handshake and decides.

async fn tls_fault(leaf: &Leaf, trusted: &TestCa, expect: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let primary = StandIn::https(Mode::Healthy, leaf).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let extra = format!("    ca_file: {}", trusted.pem_path(dir.path()).display());
    let gate = Gate::start_in(dir, &two_server_yaml(&primary.url(), &backup.url(), &extra)).await;
    // Already the very first answer goes to the backup.
    assert_eq!(
        location(&gate.url("/Lounge")).await,
        format!("{}/Lounge", backup.url())
    );
    let entry = wait_entry(&gate, "primary", "down", Duration::from_secs(2)).await;
    let error = entry["error"].as_str().expect("an error text");
    println!("TLS fault: {error}");
    assert!(expect.iter().any(|e| error.contains(e)), "{error}");
    // No request got past the handshake.
    assert_eq!(primary.counts().requests, 0);
    gate.stop().await;
}

/// Row 8: a certificate from a CA we do not trust.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row08_tls_unknown_ca() {
    let served_by = TestCa::new();
    tls_fault(
        &served_by.localhost_leaf(),
        &TestCa::new(),
        &["UnknownIssuer"],
    )
    .await;
}

/// Row 8b: a self-signed certificate made as a CA (`CA:TRUE`), trusted
/// through `ca_file` as its own CA. rustls refuses a CA certificate as a
/// server's; the error says so in plain words and what to do, on the page,
/// in `/status.json` and in `roomgate probe`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row08b_tls_a_ca_certificate_as_the_servers_own() {
    let leaf = Leaf::self_signed_ca(&["localhost", "127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_file(dir.path(), "self.pem", &leaf.cert_pem);
    let primary = StandIn::https(Mode::Healthy, &leaf).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let extra = format!("    ca_file: {}", ca_file.display());
    let yaml = two_server_yaml(&primary.url(), &backup.url(), &extra);
    let file = write_file(dir.path(), "routes.yaml", &yaml);
    let gate = Gate::start_in(dir, &yaml).await;
    let entry = wait_entry(&gate, "primary", "down", Duration::from_secs(2)).await;
    let error = entry["error"].as_str().expect("an error text");
    println!("TLS fault, CA as server certificate: {error}");
    for words in [
        "CaUsedAsEndEntity",
        "the server's certificate is a CA certificate (CA:TRUE)",
        "signed by a CA in ca_file",
        "or one with CA:FALSE",
    ] {
        assert!(error.contains(words), "{words:?} not in {error}");
    }
    let page = get(&gate.url("/"), &[]).await;
    assert!(
        page.body.contains("is a CA certificate (CA:TRUE)"),
        "{}",
        page.body
    );
    let out = run_probe(&file).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("is a CA certificate (CA:TRUE)"), "{table}");
    gate.stop().await;
}

/// Row 9: a trusted CA, but the certificate expired (2021).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row09_tls_expired() {
    let ca = TestCa::new();
    let leaf = ca.expired_leaf(&["localhost", "127.0.0.1"]);
    tls_fault(&leaf, &ca, &["Expired", "expired"]).await;
}

/// Row 10: a trusted, valid certificate for another host name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row10_tls_wrong_host_name() {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["meet.other.example"]);
    tls_fault(&leaf, &ca, &["NotValidForName", "not valid for"]).await;
}

// ---------------------------------------------------------------------------
// Rows 11-12: names that do not resolve.

/// Row 11: a `.invalid` host. RFC 6761 says resolvers answer such names
/// negatively at once; roomgate's probe resolver does (glibc would ask the
/// configured DNS server, off this machine), so the probe fails at once
/// rather than at its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row11_dns_invalid_name() {
    let backup = StandIn::http(Mode::Healthy).await;
    let slow = "interval: 30s, fast_interval: 10s, timeout: 5s, xmpp_domain: localhost";
    let gate = Gate::start(&yaml_with_check(
        "http://jitsi.roomgate-test.invalid:8080",
        slow,
        &backup.url(),
    ))
    .await;
    let start = Instant::now();
    assert_eq!(
        location(&gate.url("/Lounge")).await,
        format!("{}/Lounge", backup.url())
    );
    let entry = wait_entry(&gate, "primary", "down", Duration::from_secs(2)).await;
    let took = start.elapsed();
    let error = entry["error"].as_str().expect("an error text");
    println!(
        "invalid name: {error} (decided within {} ms)",
        took.as_millis()
    );
    assert!(error.contains("does not resolve"), "{error}");
    // Far below the 5 s timeout: nobody was asked.
    assert!(took < Duration::from_secs(2), "{took:?}");
    gate.stop().await;
}

/// Row 12: a real resolver failure. `roomgate probe` runs in a fresh network
/// namespace (`unshare -n`: only a loopback that is down), so the system
/// resolver genuinely fails to reach its DNS server, and no query leaves the
/// machine. Needs root (or user namespaces) and unshare(1).
#[test]
fn row12_dns_resolver_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    // An ordinary name (not .invalid, not in /etc/hosts), so the lookup
    // goes all the way to the system resolver.
    let file = write_file(
        dir.path(),
        "routes.yaml",
        "servers:\n  primary:\n    url: https://jitsi.roomgate-test.example.org\n    \
         check: { timeout: 2s }\nrooms:\n  Lounge: {}\n",
    );
    let usable = std::process::Command::new("unshare")
        .args(["-n", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !UNSHARE.usable(usable, "a network namespace needs root") {
        return;
    }
    let start = Instant::now();
    let out = std::process::Command::new("unshare")
        .args(["-n", env!("CARGO_BIN_EXE_roomgate"), "probe"])
        .arg(&file)
        .current_dir(dir.path())
        .env_remove("ROOMGATE_CONFIG")
        .output()
        .expect("run unshare");
    let took = start.elapsed();
    let table = String::from_utf8_lossy(&out.stdout);
    println!("{table}(in {} ms)", took.as_millis());
    assert_eq!(
        out.status.code(),
        Some(1),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("primary"))
        .unwrap_or_else(|| panic!("no row in {table}"));
    assert!(row.split_whitespace().any(|w| w == "down"), "{row}");
    assert!(row.contains("dns error"), "{row}");
}

// ---------------------------------------------------------------------------
// Row 13: flapping.

/// The `roomgate_state_changes_total` of `server`.
async fn state_changes(gate: &Gate, server: &str) -> u64 {
    let metrics = get(&gate.url("/metrics"), &[]).await.body;
    metrics
        .lines()
        .find(|l| {
            l.starts_with("roomgate_state_changes_total{")
                && l.contains(&format!("server=\"{server}\""))
        })
        .map_or(0, |l| {
            l.rsplit(' ').next().unwrap().parse().expect("a count")
        })
}

/// Row 13: BOSH succeeds and fails by turns. With rise = fall = 2 no streak
/// ever completes, so after the first probe (a success: up) the state holds
/// and every answer stays on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row13_flapping_every_probe() {
    let primary = StandIn::http(Mode::Flapping).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let gate = Gate::start(&two_server_yaml(&primary.url(), &backup.url(), "")).await;
    let lounge = gate.url("/Lounge");
    let on_primary = format!("{}/Lounge", primary.url());
    let start = Instant::now();
    let mut answers = 0;
    // Ten probes: five failures, each followed by a success.
    while primary.counts().bosh_creates < 10 {
        assert_eq!(location(&lounge).await, on_primary);
        answers += 1;
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "too few probes: {:?}",
            primary.counts()
        );
        tokio::time::sleep(POLL).await;
    }
    let counts = primary.counts();
    println!(
        "flapping: {} probes ({} sessions) in {} ms, {answers} answers, all on the primary",
        counts.bosh_creates,
        counts.bosh_sessions,
        start.elapsed().as_millis()
    );
    assert!(counts.bosh_sessions < counts.bosh_creates, "{counts:?}");
    let status = status_json(&gate.url("/status.json")).await;
    assert_eq!(server(&status, "primary")["state"], "up");
    // unknown -> up, and nothing since.
    assert_eq!(state_changes(&gate, "primary").await, 1);
    gate.stop().await;
}

// ---------------------------------------------------------------------------
// Rows 14-15: the backup goes down while the primary is down.

/// Primary down (the room is on the backup), then the backup goes down too.
/// Returns the gate, the stand-ins and the two Locations.
async fn both_down(policy: &str) -> (Gate, StandIn, StandIn, String, String) {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let yaml = two_server_yaml(&primary.url(), &backup.url(), "").replace(
        "defaults:\n",
        &format!("defaults:\n  when_all_down: {policy}\n"),
    );
    let gate = Gate::start(&yaml).await;
    let lounge = gate.url("/Lounge");
    let on_primary = format!("{}/Lounge", primary.url());
    let on_backup = format!("{}/Lounge", backup.url());
    assert_eq!(location(&lounge).await, on_primary);
    wait_entry(&gate, "backup", "up", Duration::from_secs(2)).await;

    primary.set_mode(Mode::BoshDown).await;
    let t0 = Instant::now();
    wait_location(&lounge, &on_backup, t0, failover_bound() * 3)
        .await
        .expect("fails over to the backup");
    backup.set_mode(Mode::BoshDown).await;
    wait_entry(&gate, "backup", "down", failover_bound() * 3).await;
    (gate, primary, backup, on_primary, on_backup)
}

/// Row 14: `when_all_down: first`: back to the first server (it may well be
/// up again by the time the user gets there; a 503 helps nobody).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row14_backup_down_too_policy_first() {
    let (gate, _primary, backup, on_primary, on_backup) = both_down("first").await;
    let status = status_json(&gate.url("/status.json")).await;
    assert_eq!(server(&status, "primary")["state"], "down");
    assert_eq!(location(&gate.url("/Lounge")).await, on_primary);
    // The backup comes back first: the room follows it.
    backup.set_mode(Mode::Healthy).await;
    let t0 = Instant::now();
    let took = wait_location(&gate.url("/Lounge"), &on_backup, t0, recovery_bound() * 3)
        .await
        .expect("back on the backup");
    assert!(took <= recovery_bound(), "{took:?}");
    gate.stop().await;
}

/// Row 15: `when_all_down: page`: 503 with every link, no Location.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row15_backup_down_too_policy_page() {
    let (gate, _primary, backup, on_primary, on_backup) = both_down("page").await;
    let r = get(&gate.url("/Lounge"), &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("location").is_none());
    assert_eq!(r.header("retry-after"), Some("30"));
    for link in [&on_primary, &on_backup] {
        assert!(r.body.contains(&format!("href=\"{link}\"")), "{}", r.body);
    }
    backup.set_mode(Mode::Healthy).await;
    // 503 until the backup is confirmed up, then its Location.
    let t0 = Instant::now();
    loop {
        let r = get(&gate.url("/Lounge"), &[]).await;
        if r.status == 302 {
            assert_eq!(r.header("location"), Some(on_backup.as_str()));
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(t0.elapsed() <= recovery_bound(), "no recovery");
        tokio::time::sleep(POLL).await;
    }
    gate.stop().await;
}

// ---------------------------------------------------------------------------
// Rows 16-18: the config file goes away or becomes unreadable before a
// SIGHUP. The running config stays, and the log names the file.

/// A real roomgate (run through `wrapper`) over a healthy primary; breaks
/// the config with `break_it`, sends SIGHUP, checks that the reload counts
/// as failed, that the log names the file and `reason`, and that the rooms
/// still redirect; then repairs the file and reloads.
async fn reload_fails(wrapper: &[&str], break_it: impl FnOnce(&Path), reason: &str) {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = two_server_yaml(&primary.url(), &backup.url(), "");
    let file = write_file(dir.path(), "routes.yaml", &yaml);
    // Readable for an unprivileged roomgate too (see row 18); temp dirs
    // are 0700.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let gate = GateProcess::start_via(wrapper, &file, dir.path(), &[], "info").await;
    let on_primary = format!("{}/Lounge", primary.url());
    assert_eq!(location(&gate.url("/Lounge")).await, on_primary);

    break_it(&file);
    let seen = gate.log_len();
    gate.signal("HUP");
    let metrics = gate.url("/metrics");
    wait_reloads(&metrics, "failure", 1, Duration::from_secs(5)).await;
    // The log tells the operator which file and why.
    let line = gate
        .wait_log_after(seen, &file.display().to_string(), Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("the file is not named:\n{}", gate.log_text()));
    println!("{line}");
    assert!(line.contains(reason), "{line}");
    // The running config still serves, rooms and all.
    assert_eq!(location(&gate.url("/Lounge")).await, on_primary);
    assert_eq!(location(&gate.url("/treff")).await, on_primary);

    // Repaired, the next SIGHUP loads it.
    let _ = std::fs::remove_dir(&file);
    std::fs::write(
        &file,
        yaml.replace("aliases: [treff]", "aliases: [treff, hub]"),
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    gate.signal("HUP");
    wait_reloads(&metrics, "success", 1, Duration::from_secs(5)).await;
    assert_eq!(location(&gate.url("/hub")).await, on_primary);
}

/// Row 16: the file was deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row16_config_deleted_before_sighup() {
    reload_fails(
        &[],
        |file| std::fs::remove_file(file).unwrap(),
        "No such file",
    )
    .await;
}

/// Row 17: the path is there but cannot be read as a file (a directory
/// took its place, e.g. a botched deploy or volume mount).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row17_config_replaced_by_a_directory() {
    reload_fails(
        &[],
        |file| {
            std::fs::remove_file(file).unwrap();
            std::fs::create_dir(file).unwrap();
        },
        "Is a directory",
    )
    .await;
}

/// Row 18: `chmod 000`. Root reads such a file anyway (CAP_DAC_OVERRIDE),
/// so when the tests run as root, roomgate runs as `nobody` through
/// setpriv(1), with its directory and file opened up for it first; then the
/// permission check is the kernel's, as in a real deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row18_config_made_unreadable_before_sighup() {
    let Some(wrapper) = as_nobody() else {
        return;
    };
    reload_fails(
        wrapper,
        |file| {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o000)).unwrap();
        },
        "Permission denied",
    )
    .await;
}
