//! The depths of the `jitsi` check (`bosh`, `login`, `focus`) against a
//! real Prosody 0.12 behind nginx as Jitsi sets them up, with a test focus
//! component (XEP-0114) playing Jicofo: what each depth reports for each
//! fault, its failover and recovery times against the README's formulas,
//! and the sessions 50 probes of each depth leave in Prosody.
//!
//! The checks here are slower than the stand-in tests' (`timeout` 600 ms
//! instead of 200 ms): a `focus` probe makes seven requests of a Prosody
//! that shares two cores with the whole test suite.

use std::time::{Duration, Instant};

use crate::support::faults::{location, time_switch, wait_entry, yaml_with_check, SLACK};
use crate::support::jitsi_front::{FrontSpec, JitsiFront};
use crate::support::nginx::nginx_available;
use crate::support::prosody::{prosody_available, Prosody, ProsodySpec};
use crate::support::xmpp_component::FocusComponent;
use crate::support::*;

const INTERVAL: Duration = Duration::from_millis(800);
const FAST_INTERVAL: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_millis(600);
const RISE: u32 = 2;
const FALL: u32 = 2;

/// Whether this test can run; prints the skip line (or fails under CI).
fn tools() -> bool {
    let prosody = prosody_available();
    nginx_available() && prosody
}

/// The primary's check at `depth`, plus `extra` keys (inline YAML).
fn check(depth: &str, extra: &str) -> String {
    format!(
        "interval: {}ms, fast_interval: {}ms, timeout: {}ms, rise: {RISE}, fall: {FALL}, \
         xmpp_domain: localhost, depth: {depth}{extra}",
        INTERVAL.as_millis(),
        FAST_INTERVAL.as_millis(),
        TIMEOUT.as_millis()
    )
}

/// The README's worst case from a fault to the backup redirect.
fn failover_bound() -> Duration {
    INTERVAL + (FAST_INTERVAL + TIMEOUT) * FALL + TIMEOUT + SLACK
}

/// The README's worst case from the repair to the primary redirect.
fn recovery_bound() -> Duration {
    INTERVAL + TIMEOUT + (FAST_INTERVAL + TIMEOUT) * RISE + SLACK
}

/// Jitsi's Prosody for `localhost` (with `focus.localhost`) behind nginx,
/// the test Jicofo connected, roomgate probing it at `depth` with a healthy
/// stand-in as the backup; returns once the primary is up.
struct Rig {
    prosody: Prosody,
    front: JitsiFront,
    backup: StandIn,
    gate: Gate,
    focus: Option<FocusComponent>,
}

impl Rig {
    async fn start(depth: &str) -> Rig {
        let prosody = Prosody::start(ProsodySpec::jitsi("localhost")).await;
        let front = JitsiFront::start(&prosody, FrontSpec::http("localhost")).await;
        let focus = FocusComponent::connect(&prosody).await;
        let backup = StandIn::http(Mode::Healthy).await;
        let yaml = yaml_with_check(&front.base, &check(depth, ""), &backup.url());
        let gate = Gate::start(&yaml).await;
        assert_eq!(
            location(&gate.url("/Lounge")).await,
            format!("{}/Lounge", front.base),
            "{depth}"
        );
        wait_entry(&gate, "primary", "up", Duration::from_secs(3)).await;
        Rig {
            prosody,
            front,
            backup,
            gate,
            focus: Some(focus),
        }
    }

    /// Times the way from a fault made at `since` to the backup redirect
    /// against the bound, and returns it with the error roomgate reports.
    async fn failover(&self, since: Instant, what: &str) -> (Duration, String) {
        let what = format!("real prosody, {what}: failover");
        let took = time_switch(
            &self.gate,
            &self.backup.url(),
            since,
            failover_bound(),
            &what,
        )
        .await;
        let entry = wait_entry(&self.gate, "primary", "down", Duration::from_secs(2)).await;
        let error = entry["error"].as_str().unwrap_or_default().to_owned();
        eprintln!("{what}: reported {error}");
        (took, error)
    }

    /// Times the way from the repair at `since` to the primary redirect.
    async fn recovery(&self, since: Instant, what: &str) -> Duration {
        let what = format!("real prosody, {what}: recovery");
        time_switch(&self.gate, &self.front.base, since, recovery_bound(), &what).await
    }

    /// Prosody stopped (nginx answers 502), then started again.
    async fn stop_and_restart(&mut self, depth: &str) {
        let t0 = Instant::now();
        self.prosody.stop().await;
        let (_, error) = self
            .failover(t0, &format!("{depth}, Prosody stopped"))
            .await;
        assert!(error.contains("BOSH answered 502"), "{error}");
        self.prosody.restart().await;
        // The component reconnects as Jicofo would.
        self.focus = Some(FocusComponent::connect(&self.prosody).await);
        self.recovery(Instant::now(), &format!("{depth}, Prosody restarted"))
            .await;
    }

    /// Prosody SIGSTOPped (a black hole), then SIGCONTed.
    async fn pause_and_resume(&self, depth: &str) {
        let t0 = Instant::now();
        self.prosody.pause();
        let (_, error) = self.failover(t0, &format!("{depth}, SIGSTOP")).await;
        assert!(error.contains("no answer within"), "{error}");
        let t1 = Instant::now();
        self.prosody.resume();
        self.recovery(t1, &format!("{depth}, SIGCONT")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_depth_logs_a_guest_in_and_follows_prosody() {
    if !tools() {
        return;
    }
    let mut rig = Rig::start("login").await;
    // A guest got in: SASL ANONYMOUS and a bound resource, as a browser.
    let authenticated = rig.prosody.log_lines("Authenticated as");
    assert!(!authenticated.is_empty(), "{}", rig.prosody.log());
    assert!(authenticated.iter().all(|l| l.contains("@localhost")));
    assert!(!rig.prosody.log_lines("Resource bound").is_empty());
    // The login depth does not ask the focus anything.
    assert_eq!(rig.focus.as_ref().unwrap().answered(), 0);

    // Jicofo gone changes nothing at this depth.
    rig.focus.take().unwrap().disconnect(&rig.prosody).await;
    tokio::time::sleep(INTERVAL * 2).await;
    assert_eq!(
        location(&rig.gate.url("/Lounge")).await,
        format!("{}/Lounge", rig.front.base)
    );
    rig.focus = Some(FocusComponent::connect(&rig.prosody).await);

    rig.stop_and_restart("login").await;
    rig.pause_and_resume("login").await;
    rig.gate.stop().await;
    let unhandled = rig.prosody.log_lines("Unhandled c2s");
    assert!(unhandled.is_empty(), "{unhandled:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn focus_depth_follows_jicofo() {
    if !tools() {
        return;
    }
    let mut rig = Rig::start("focus").await;
    assert!(rig.focus.as_ref().unwrap().answered() >= 1);

    // Jicofo disconnects: Prosody answers the ping for it with an error,
    // the server goes down after `fall` probes and comes back after `rise`.
    let t0 = Instant::now();
    rig.focus.take().unwrap().disconnect(&rig.prosody).await;
    let (_, error) = rig.failover(t0, "focus, Jicofo disconnected").await;
    assert!(
        error.starts_with("focus: remote-server-timeout (is Jicofo running"),
        "{error}"
    );
    let t1 = Instant::now();
    let focus = FocusComponent::connect(&rig.prosody).await;
    rig.recovery(t1, "focus, Jicofo reconnected").await;
    assert!(focus.answered() >= RISE as u64);
    rig.focus = Some(focus);

    rig.stop_and_restart("focus").await;
    rig.pause_and_resume("focus").await;
    rig.gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bosh_depth_follows_prosody_but_not_jicofo() {
    if !tools() {
        return;
    }
    let mut rig = Rig::start("bosh").await;
    assert!(rig.prosody.log_lines("Authenticated as").is_empty());
    rig.focus.take().unwrap().disconnect(&rig.prosody).await;
    tokio::time::sleep(INTERVAL * 2).await;
    assert_eq!(
        location(&rig.gate.url("/Lounge")).await,
        format!("{}/Lounge", rig.front.base)
    );
    rig.stop_and_restart("bosh").await;
    rig.pause_and_resume("bosh").await;
    rig.gate.stop().await;
}

/// A deployment with a secure domain: members log in at `localhost`,
/// guests at `guest.localhost`. Without `guest_domain` the login fails
/// with Prosody's condition and a hint; with it the server is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_domain_for_a_secure_domain() {
    if !tools() {
        return;
    }
    let spec = ProsodySpec::new()
        .internal("localhost")
        .anonymous("guest.localhost");
    let prosody = Prosody::start(spec).await;
    let front = JitsiFront::start(&prosody, FrontSpec::http("localhost")).await;
    let backup = StandIn::http(Mode::Healthy).await;

    let yaml = yaml_with_check(&front.base, &check("login", ""), &backup.url());
    let gate = Gate::start(&yaml).await;
    let entry = wait_entry(&gate, "primary", "down", Duration::from_secs(3)).await;
    let error = entry["error"].as_str().unwrap();
    eprintln!("real prosody, login at a members-only domain: {error}");
    assert!(
        error.starts_with("login: invalid-mechanism (localhost offers no anonymous login"),
        "{error}"
    );
    assert!(error.contains("set guest_domain"), "{error}");
    gate.stop().await;

    let extra = ", guest_domain: guest.localhost";
    let yaml = yaml_with_check(&front.base, &check("login", extra), &backup.url());
    let gate = Gate::start(&yaml).await;
    wait_entry(&gate, "primary", "up", Duration::from_secs(3)).await;
    gate.stop().await;
    let guests = prosody.log_lines("Authenticated as");
    assert!(!guests.is_empty());
    assert!(
        guests.iter().all(|l| l.contains("@guest.localhost")),
        "{guests:#?}"
    );
}

/// 50 runs of `roomgate probe` at each depth: every one up, as many BOSH
/// requests as the docs say, no session left in Prosody, no stanza Prosody
/// could not handle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_probes_of_each_depth_leave_no_session() {
    if !tools() {
        return;
    }
    let prosody = Prosody::start(ProsodySpec::jitsi("localhost")).await;
    let front = JitsiFront::start(&prosody, FrontSpec::http("localhost")).await;
    let focus = FocusComponent::connect(&prosody).await;
    let dir = tempfile::tempdir().unwrap();
    // BOSH requests per probe that reach Prosody: docs/checks.md counts
    // one more for each depth, config.js, which nginx serves.
    for (depth, bosh_requests) in [("bosh", 2), ("login", 5), ("focus", 6)] {
        let yaml = format!(
            "servers:\n  jitsi:\n    url: {}\n    check: {{ timeout: 2s, xmpp_domain: localhost, \
             depth: {depth} }}\nrooms:\n  Lounge: {{ servers: [jitsi] }}\n",
            front.base
        );
        let file = write_file(dir.path(), &format!("{depth}.yaml"), &yaml);
        let created_before = prosody.log_lines("New BOSH session").len();
        let requests_before = prosody.log_lines("Handling new request").len();
        let start = Instant::now();
        for run in 1..=50 {
            let out = run_probe(&file).await;
            assert_eq!(
                out.status.code(),
                Some(0),
                "{depth} run {run}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let took = start.elapsed();
        let created = prosody.log_lines("New BOSH session").len() - created_before;
        let requests = prosody.log_lines("Handling new request").len() - requests_before;
        let left = prosody.sessions().await;
        eprintln!(
            "real prosody, depth {depth}: 50 probe runs in {} ms, {created} sessions created, \
             {left} left, {requests} BOSH requests",
            took.as_millis()
        );
        assert_eq!(created, 50, "{depth}");
        assert_eq!(
            requests,
            50 * bosh_requests,
            "{depth}: BOSH requests per probe"
        );
        assert_eq!(left, 0, "{depth}: sessions left behind");
    }
    assert_eq!(focus.answered(), 50, "one ping per focus probe");
    let unhandled = prosody.log_lines("Unhandled c2s");
    assert!(unhandled.is_empty(), "{unhandled:#?}");
}
