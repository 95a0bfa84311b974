//! What a probed server says is data: a BOSH `condition` (or any other text
//! from the server that ends up in a probe error) can neither forge a log
//! line nor bloat the pages that show every server's error.

use std::time::Duration;

use roomgate::health::MAX_ERROR_CHARS;

use crate::support::*;

/// Upper bound for the first probes to decide (they run at once at start).
const BOUND: Duration = Duration::from_secs(10);

/// Generous bound on `/` and `/status.json` for two servers and two rooms:
/// a few kilobytes of markup and at most [`MAX_ERROR_CHARS`] characters of
/// error per server, nowhere near the megabyte the server sent.
const PAGE_BOUND: usize = 64 * 1024;

/// The primary sends a `condition` with a newline and a made-up log line
/// after it, the backup a 1 MB one. Both go down, as any refused BOSH
/// session does; the log has no line that the server wrote, the error
/// shows the newline escaped, and the pages stay small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_text_neither_forges_log_lines_nor_bloats_pages() {
    let primary = StandIn::http(Mode::ForgedCondition).await;
    let backup = StandIn::http(Mode::HugeCondition).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(
        dir.path(),
        "routes.yaml",
        &two_server_yaml(&primary.url(), &backup.url(), ""),
    );
    let gate = GateProcess::start(&config, dir.path()).await;
    let status_url = gate.url("/status.json");
    wait_state(&status_url, "primary", "down", BOUND).await;
    wait_state(&status_url, "backup", "down", BOUND).await;
    // Both first probes log a WARN line with their reason.
    let warned = gate.wait_log("primary down: BOSH refused", BOUND).await;
    assert!(warned.is_some(), "{}", gate.log_text());
    assert!(
        gate.wait_log("backup down: BOSH refused", BOUND)
            .await
            .is_some(),
        "{}",
        gate.log_text()
    );

    // No line of the log is the server's: the forged line stays inside the
    // WARN line, its newline, CR and escape character written as escapes.
    let log = gate.log_text();
    let forged: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("FORGED") || l.contains('\u{1b}') || l.contains('\r'))
        .collect();
    assert!(forged.is_empty(), "lines the server wrote: {forged:?}");
    let line = warned.unwrap();
    assert!(
        line.contains(
            "BOSH refused the session: policy-violation\\nFORGED 2025-01-01T00:00:00.000000Z  \
             INFO roomgate: primary up\\r\\u{1b}[1A"
        ),
        "{line}"
    );
    // The 1 MB condition makes a log line of bounded length.
    let long = log.lines().map(|l| l.len()).max().expect("some log lines");
    assert!(long < 1024, "a log line of {long} bytes");

    // The error texts as the pages show them.
    let r = get(&status_url, &[]).await;
    assert!(
        r.body.len() < PAGE_BOUND,
        "/status.json is {} bytes",
        r.body.len()
    );
    let status: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
    let error = server(&status, "primary")["error"].as_str().unwrap();
    assert!(!error.chars().any(char::is_control), "{error:?}");
    assert!(error.contains("policy-violation\\nFORGED"), "{error:?}");
    let error = server(&status, "backup")["error"].as_str().unwrap();
    assert!(
        error.starts_with("BOSH refused the session: xxx"),
        "{error}"
    );
    assert!(error.ends_with('\u{2026}'), "a cut is marked: {error}");
    assert!(error.chars().count() <= MAX_ERROR_CHARS, "{error}");

    let r = get(&gate.url("/"), &[("accept", "text/html")]).await;
    assert_eq!(r.status, 200);
    assert!(r.body.len() < PAGE_BOUND, "/ is {} bytes", r.body.len());
    assert!(r.body.contains("BOSH refused the session: xxx"));
    assert!(!r.body.contains('\u{1b}'));
}
