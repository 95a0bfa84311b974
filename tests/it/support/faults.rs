//! What failover tests share: the quick check timings of
//! [`two_server_yaml`], the bounds they promise, and the two shapes of a
//! fault test (a primary that breaks and is repaired; a primary that is
//! broken from the start).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

/// The timings of [`two_server_yaml`].
pub const INTERVAL: Duration = Duration::from_millis(300);
pub const FAST_INTERVAL: Duration = Duration::from_millis(100);
pub const TIMEOUT: Duration = Duration::from_millis(200);
pub const RISE: u32 = 2;
pub const FALL: u32 = 2;

/// Room for scheduling noise on a loaded 2-core CI machine; small against
/// the bounds, so a gateway that waits for an extra interval still fails.
pub const SLACK: Duration = Duration::from_millis(400);

/// Pause between polls of `/Lounge`.
pub const POLL: Duration = Duration::from_millis(10);

/// Worst case from a fault to the backup redirect: the fault may start just
/// after a good probe (one interval), then `fall` failures each take up to a
/// timeout and are `fast_interval` apart, plus a probe in flight at the flip.
pub fn failover_bound() -> Duration {
    INTERVAL + (FAST_INTERVAL + TIMEOUT) * FALL + TIMEOUT + SLACK
}

/// Worst case from the repair to the primary redirect: a failing probe in
/// flight (timeout), the settled interval, then `rise` successes.
pub fn recovery_bound() -> Duration {
    INTERVAL + TIMEOUT + (FAST_INTERVAL + TIMEOUT) * RISE + SLACK
}

/// The Location of a redirect from `url`, which must be a 302.
pub async fn location(url: &str) -> String {
    let r = get(url, &[]).await;
    assert_eq!(r.status, 302, "GET {url}: {}", r.body);
    r.header("location").expect("Location").to_owned()
}

/// Polls `url` until it redirects to `want`; returns how long that took
/// from `since`, or `None` if it did not happen within `give_up`.
pub async fn wait_location(
    url: &str,
    want: &str,
    since: Instant,
    give_up: Duration,
) -> Option<Duration> {
    loop {
        if location(url).await == want {
            return Some(since.elapsed());
        }
        if since.elapsed() > give_up {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Times the way from `since` until `/Lounge` of `gate` redirects to the
/// Lounge at `base`, prints it as `what`, and fails past `bound` (waiting
/// gives up at three times the bound).
pub async fn time_switch(
    gate: &Gate,
    base: &str,
    since: Instant,
    bound: Duration,
    what: &str,
) -> Duration {
    let want = format!("{base}/Lounge");
    let took = wait_location(&gate.url("/Lounge"), &want, since, bound * 3)
        .await
        .unwrap_or_else(|| panic!("{what}: never went to {want}"));
    eprintln!(
        "{what}: {} ms (bound {} ms)",
        took.as_millis(),
        bound.as_millis()
    );
    assert!(took <= bound, "{what}: took {took:?}, bound {bound:?}");
    took
}

/// Polls /status.json until `name` has `state`; returns that entry.
pub async fn wait_entry(gate: &Gate, name: &str, state: &str, bound: Duration) -> Value {
    let status = wait_state(&gate.url("/status.json"), name, state, bound).await;
    server(&status, name).clone()
}

/// A two-server config whose primary has its own `check` map (inline YAML,
/// without braces); the backup has the usual quick test timings.
pub fn yaml_with_check(primary: &str, check: &str, backup: &str) -> String {
    let servers = servers_yaml(primary, &format!("{{ {check} }}"), backup, FAST_CHECK);
    format!("{servers}defaults:\n  servers: [primary, backup]\nrooms:\n  Lounge: {{}}\n")
}

/// Healthy -> `mode` -> Healthy, timing the failover and the recovery.
pub async fn flip_and_back(mode: Mode) {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let gate = Gate::start(&two_server_yaml(&primary.url(), &backup.url(), "")).await;
    let lounge = gate.url("/Lounge");
    let on_primary = format!("{}/Lounge", primary.url());
    let on_backup = format!("{}/Lounge", backup.url());
    // The first request waits for the first probes (cold start).
    assert_eq!(location(&lounge).await, on_primary);
    wait_entry(&gate, "backup", "up", Duration::from_secs(2)).await;

    let t0 = Instant::now();
    primary.set_mode(mode).await;
    let failover = wait_location(&lounge, &on_backup, t0, failover_bound() * 3)
        .await
        .unwrap_or_else(|| panic!("{mode:?}: no failover at all; {:?}", primary.counts()));

    let t1 = Instant::now();
    primary.set_mode(Mode::Healthy).await;
    let recovery = wait_location(&lounge, &on_primary, t1, recovery_bound() * 3)
        .await
        .unwrap_or_else(|| panic!("{mode:?}: no recovery at all; {:?}", primary.counts()));

    println!(
        "failover {mode:?}: {} ms (bound {} ms), recovery: {} ms (bound {} ms)",
        failover.as_millis(),
        failover_bound().as_millis(),
        recovery.as_millis(),
        recovery_bound().as_millis()
    );
    assert!(
        failover <= failover_bound(),
        "{mode:?}: failover took {failover:?}, bound {:?}",
        failover_bound()
    );
    assert!(
        recovery <= recovery_bound(),
        "{mode:?}: recovery took {recovery:?}, bound {:?}",
        recovery_bound()
    );
    gate.stop().await;
}

/// A primary that answers BOSH wrongly from the start is down, and says why.
pub async fn down_with_reason(mode: Mode, reason: &str) {
    let primary = StandIn::http(mode).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let gate = Gate::start(&two_server_yaml(&primary.url(), &backup.url(), "")).await;
    assert_eq!(
        location(&gate.url("/Lounge")).await,
        format!("{}/Lounge", backup.url())
    );
    let entry = wait_entry(&gate, "primary", "down", Duration::from_secs(2)).await;
    let error = entry["error"].as_str().expect("error text");
    assert!(error.contains(reason), "{mode:?}: {error}");
    // It got as far as asking for a session.
    assert!(primary.counts().bosh_creates >= 1);
    gate.stop().await;
}
