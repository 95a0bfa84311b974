//! The `jitsi` check against a real Prosody 0.12 behind a real nginx set
//! up as Jitsi Meet sets it up (`support::prosody`, `support::jitsi_front`):
//! the rows of the fault matrix that a real Prosody can produce, with the
//! failover and recovery times the README's formulas promise, and the
//! sessions probes leave behind in Prosody. What Prosody cannot do (slow
//! headers, wrong bodies, refused connections) stays with the stand-in
//! (tests/it/fault_matrix.rs).
//!
//! Without Prosody (or nginx) these tests skip visibly; under `CI=true`
//! they fail (`support::tools`).

use std::time::{Duration, Instant};

use crate::support::bosh_client::BoshClient;
use crate::support::faults::*;
use crate::support::jitsi_front::{FrontSpec, JitsiFront};
use crate::support::nginx::nginx_available;
use crate::support::prosody::{prosody_available, Prosody, ProsodySpec};
use crate::support::xmpp_component::{parse, FocusComponent};
use crate::support::*;

/// Whether this test can run; prints the skip line (or fails under CI).
fn tools() -> bool {
    // Both asked, so a missing one is named even when the other is too.
    let prosody = prosody_available();
    nginx_available() && prosody
}

/// Jitsi's Prosody for `localhost` and its nginx site on
/// `http://localhost:PORT`.
async fn jitsi() -> (Prosody, JitsiFront) {
    let prosody = Prosody::start(ProsodySpec::jitsi("localhost")).await;
    let front = JitsiFront::start(&prosody, FrontSpec::http("localhost")).await;
    (prosody, front)
}

/// roomgate with the real Jitsi as primary and a stand-in as backup, both
/// with the quick check of `support::faults`; waits until the primary is
/// up (the first request waits for the first probes).
async fn gate_on(front: &JitsiFront, backup: &StandIn, extra: &str) -> Gate {
    let dir = tempfile::tempdir().unwrap();
    gate_in(dir, front, backup, extra).await
}

async fn gate_in(
    dir: tempfile::TempDir,
    front: &JitsiFront,
    backup: &StandIn,
    extra: &str,
) -> Gate {
    let gate = Gate::start_in(dir, &two_server_yaml(&front.base, &backup.url(), extra)).await;
    assert_eq!(
        location(&gate.url("/Lounge")).await,
        format!("{}/Lounge", front.base)
    );
    wait_entry(&gate, "primary", "up", Duration::from_secs(2)).await;
    wait_entry(&gate, "backup", "up", Duration::from_secs(2)).await;
    gate
}

/// Times the way from "Prosody broken" (at `since`) to the backup
/// redirect against the bound, and prints the reason roomgate gives.
async fn failover(gate: &Gate, backup: &StandIn, since: Instant, what: &str) -> Duration {
    let what = format!("real prosody, {what}: failover");
    let took = time_switch(gate, &backup.url(), since, failover_bound(), &what).await;
    let entry = wait_entry(gate, "primary", "down", Duration::from_secs(2)).await;
    eprintln!("{what}: reason {}", entry["error"]);
    took
}

/// Times the way from "Prosody answers again" (at `since`) to the primary
/// redirect against the bound.
async fn recovery(gate: &Gate, front: &JitsiFront, since: Instant, what: &str) -> Duration {
    let what = format!("real prosody, {what}: recovery");
    time_switch(gate, &front.base, since, recovery_bound(), &what).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_and_every_session_ended() {
    if !tools() {
        return;
    }
    let (prosody, front) = jitsi().await;
    let backup = StandIn::http(Mode::Healthy).await;
    // Through nginx as a browser would: config.js is the file, BOSH is
    // Prosody's.
    let config_js = get(&format!("{}/config.js", front.base), &[]).await;
    assert!(
        config_js.body.contains("domain: 'localhost'"),
        "{}",
        config_js.body
    );
    let gate = gate_on(&front, &backup, "").await;
    // Probes run every 300 ms; each ends its session, so at any time at
    // most the one of a probe in flight is open (without terminates they
    // would pile up, three a second, for Prosody's 60 s inactivity).
    for _ in 0..4 {
        tokio::time::sleep(INTERVAL).await;
        let open = prosody.sessions().await;
        assert!(open <= 1, "{open} sessions open");
    }
    gate.stop().await;
    let created = prosody.log_lines("New BOSH session").len();
    assert!(created >= 4, "{created} sessions created");
    // The terminate of a session that never logged in carries nothing
    // Prosody would answer with an error.
    let unhandled = prosody.log_lines("Unhandled c2s_unauthed stanza");
    assert!(unhandled.is_empty(), "{unhandled:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_stopped_nginx_answers_502_then_restarted() {
    if !tools() {
        return;
    }
    let (mut prosody, front) = jitsi().await;
    let backup = StandIn::http(Mode::Healthy).await;
    let gate = gate_on(&front, &backup, "").await;

    let t0 = Instant::now();
    prosody.stop().await;
    failover(&gate, &backup, t0, "stopped (502)").await;
    let entry = wait_entry(&gate, "primary", "down", Duration::from_secs(1)).await;
    assert!(
        entry["error"]
            .as_str()
            .unwrap()
            .contains("BOSH answered 502"),
        "{entry}"
    );
    assert!(front.nginx.error_log().contains("Connection refused"));

    prosody.restart().await;
    recovery(&gate, &front, Instant::now(), "restarted after stop").await;
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_killed_then_restarted() {
    if !tools() {
        return;
    }
    let (mut prosody, front) = jitsi().await;
    let backup = StandIn::http(Mode::Healthy).await;
    let gate = gate_on(&front, &backup, "").await;

    let t0 = Instant::now();
    prosody.kill();
    failover(&gate, &backup, t0, "killed (SIGKILL)").await;
    prosody.restart().await;
    recovery(&gate, &front, Instant::now(), "restarted after kill").await;
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_black_hole_sigstop_then_sigcont() {
    if !tools() {
        return;
    }
    let (prosody, front) = jitsi().await;
    let backup = StandIn::http(Mode::Healthy).await;
    let gate = gate_on(&front, &backup, "").await;

    let t0 = Instant::now();
    prosody.pause();
    failover(&gate, &backup, t0, "SIGSTOP (black hole)").await;
    let entry = wait_entry(&gate, "primary", "down", Duration::from_secs(1)).await;
    assert!(
        entry["error"]
            .as_str()
            .unwrap()
            .contains("no answer within"),
        "{entry}"
    );

    let t1 = Instant::now();
    prosody.resume();
    recovery(&gate, &front, t1, "SIGCONT").await;
    gate.stop().await;
    // The requests that queued while Prosody was stopped reach it after
    // SIGCONT; the probes that sent them gave up long ago, so no terminate
    // follows: such sessions live until Prosody's inactivity timeout.
    eprintln!(
        "real prosody, after SIGSTOP/SIGCONT: {} sessions open in Prosody",
        prosody.sessions().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_host_for_another_domain_names_xmpp_domain() {
    if !tools() {
        return;
    }
    let (prosody, front) = jitsi().await;
    let backup = StandIn::http(Mode::Healthy).await;
    let check = "interval: 300ms, fast_interval: 100ms, timeout: 200ms, rise: 2, fall: 2, \
                 xmpp_domain: meet.example";
    let gate = Gate::start(&yaml_with_check(&front.base, check, &backup.url())).await;
    assert_eq!(
        location(&gate.url("/Lounge")).await,
        format!("{}/Lounge", backup.url())
    );
    let entry = wait_entry(&gate, "primary", "down", Duration::from_secs(2)).await;
    let error = entry["error"].as_str().expect("error text");
    eprintln!("real prosody, xmpp_domain meet.example on a localhost Prosody: {error}");
    assert!(error.contains("improper-addressing"), "{error}");
    assert!(error.contains("(is xmpp_domain right?)"), "{error}");
    // The stand-in answers as this Prosody does: the same element with the
    // same attributes (Prosody's attribute order varies from run to run).
    let body = bosh_create(&front.base, "meet.example").await;
    let attrs = |xml: &str| {
        let element = parse(xml).unwrap_or_else(|e| panic!("{xml}: {e}"));
        assert!(element.children.is_empty(), "{xml}");
        let mut attrs = element.attrs;
        attrs.sort();
        (element.name, attrs)
    };
    assert_eq!(attrs(&body), attrs(UNKNOWN_DOMAIN_BODY), "{body}");
    assert!(prosody.log_lines("New BOSH session").is_empty());
    gate.stop().await;
}

/// Jitsi loads BOSH per virtual host: a URL whose host is not the XMPP
/// domain gets 404 from Prosody (through nginx, which passes the `Host`
/// on), whatever `xmpp_domain` says, unless `http_default_host` is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_host_that_is_not_the_domain_needs_http_default_host() {
    if !tools() {
        return;
    }
    let backup = StandIn::http(Mode::Healthy).await;
    let by_ip = FrontSpec::http("127.0.0.1").domain("localhost");
    let prosody = Prosody::start(ProsodySpec::jitsi("localhost")).await;
    let front = JitsiFront::start(&prosody, by_ip).await;
    let gate = Gate::start(&two_server_yaml(&front.base, &backup.url(), "")).await;
    let entry = wait_entry(&gate, "primary", "down", Duration::from_secs(2)).await;
    let error = entry["error"].as_str().expect("error text");
    eprintln!("real prosody, URL host 127.0.0.1, domain localhost: {error}");
    assert!(error.contains("BOSH answered 404"), "{error}");
    gate.stop().await;

    let spec = ProsodySpec::jitsi("localhost").default_host("localhost");
    let prosody = Prosody::start(spec).await;
    let by_ip = FrontSpec::http("127.0.0.1").domain("localhost");
    let front = JitsiFront::start(&prosody, by_ip).await;
    gate_on(&front, &backup, "").await.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_in_ca_file() {
    if !tools() {
        return;
    }
    let ca = TestCa::new();
    let prosody = Prosody::start(ProsodySpec::jitsi("localhost")).await;
    let front = JitsiFront::start(
        &prosody,
        FrontSpec::https("localhost", &ca.localhost_leaf()),
    )
    .await;
    assert!(front.base.starts_with("https://localhost:"));
    let backup = StandIn::http(Mode::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("    ca_file: {}", ca.pem_path(dir.path()).display());
    let gate = gate_in(dir, &front, &backup, &extra).await;
    gate.stop().await;
    assert!(!prosody.log_lines("New BOSH session").is_empty());
    assert_eq!(prosody.sessions().await, 0);
}

/// `roomgate probe` 50 times: every run says up, and Prosody is left with
/// no session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_probe_runs_leave_no_session() {
    if !tools() {
        return;
    }
    let (prosody, front) = jitsi().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "servers:\n  jitsi:\n    url: {}\n    check: {{ timeout: 2s, xmpp_domain: localhost }}\n\
         rooms:\n  Lounge: {{ servers: [jitsi] }}\n",
        front.base
    );
    let file = write_file(dir.path(), "routes.yaml", &yaml);
    let start = Instant::now();
    for run in 1..=50 {
        let out = run_probe(&file).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "run {run}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let took = start.elapsed();
    let sessions = prosody.sessions().await;
    let created = prosody.log_lines("New BOSH session").len();
    let unhandled = prosody.log_lines("Unhandled c2s_unauthed stanza").len();
    eprintln!(
        "real prosody: 50 probe runs in {} ms, {created} sessions created, {sessions} left, \
         {unhandled} unhandled stanzas",
        took.as_millis()
    );
    assert_eq!(created, 50);
    assert_eq!(sessions, 0, "sessions left behind");
    assert_eq!(unhandled, 0, "terminates Prosody could not handle");
}

/// POSTs a BOSH session request for `domain` to `base`/http-bind; the
/// answer's body.
async fn bosh_create(base: &str, domain: &str) -> String {
    let body = format!(
        "<body rid='4242' to='{domain}' xml:lang='en' wait='10' hold='1' ver='1.6' \
         xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh' \
         xmlns='http://jabber.org/protocol/httpbind'/>"
    );
    let resp = Req::post(&format!("{base}/http-bind"), &body)
        .header("content-type", "text/xml; charset=utf-8")
        .send()
        .await
        .expect("BOSH answers");
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.body
}

// ---------------------------------------------------------------------------
// The harness itself, checked with the test BOSH client (not roomgate), so
// that the depth tests built on it stand on something proven.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_guest_login_focus_up_and_down() {
    if !tools() {
        return;
    }
    let (prosody, front) = jitsi().await;
    let bind = format!("{}/http-bind", front.base);
    let ping = "<iq type='get' id='ping1' to='focus.localhost' xmlns='jabber:client'>\
                <ping xmlns='urn:xmpp:ping'/></iq>";

    // Anonymous login on the main domain, as a Jitsi guest.
    let focus = FocusComponent::connect(&prosody).await;
    let mut guest = BoshClient::open(&bind, "localhost").await;
    assert_eq!(prosody.sessions().await, 1);
    let jid = guest.login("localhost").await.expect("anonymous login");
    assert!(jid.contains("@localhost/"), "{jid}");
    // Focus up: the component answers the ping.
    let answer = guest.iq("ping1", ping).await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    assert_eq!(focus.answered(), 1);

    // Focus down: Prosody 0.12's mod_component answers for the missing
    // component at once, with `remote-server-timeout` ("Component
    // unavailable"), not `service-unavailable`.
    focus.disconnect(&prosody).await;
    let ping2 = ping.replace("ping1", "ping2");
    let answer = guest.iq("ping2", &ping2).await;
    assert_eq!(answer.attr("type"), Some("error"), "{answer:?}");
    let error = answer
        .children
        .iter()
        .find(|c| c.name == "error")
        .expect("error");
    let condition = &error.children.first().expect("a condition").name;
    eprintln!("real prosody, ping to a disconnected component: {condition}");
    assert_eq!(condition, "remote-server-timeout");

    // Focus back: a new connection takes over.
    let focus = FocusComponent::connect(&prosody).await;
    let ping3 = ping.replace("ping1", "ping3");
    let answer = guest.iq("ping3", &ping3).await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    assert_eq!(focus.answered(), 1);
    guest.terminate().await;
    assert_eq!(prosody.sessions().await, 0);

    // No anonymous login on a host with accounts only.
    let mut member = BoshClient::open(&bind, "auth.localhost").await;
    let refused = member.login("auth.localhost").await;
    eprintln!("real prosody, anonymous login on auth.localhost: {refused:?}");
    assert!(refused.is_err(), "{refused:?}");
    member.terminate().await;
    assert_eq!(prosody.sessions().await, 0);
}
