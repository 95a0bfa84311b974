//! The Matrix target against a real homeserver: Synapse from PyPI, started
//! by the test (SQLite, 127.0.0.1 only, registration by shared secret).
//! roomgate posts to a room when a stand-in Jitsi goes down and comes back,
//! and the messages are read back through the client API; `notify-test`
//! tells a good token from a bad one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::notify::changed;
use crate::support::faults::*;
use crate::support::synapse::{self, Synapse};
use crate::support::*;

/// When Synapse took the event in (`origin_server_ts`).
fn received_at(event: &serde_json::Value) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(event["origin_server_ts"].as_u64().expect("a timestamp"))
}

/// Polls the room until it holds `n` messages, at most `bound`.
async fn wait_messages(
    hs: &Synapse,
    token: &str,
    room: &str,
    n: usize,
    bound: Duration,
) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let messages = hs.messages(token, room).await;
        if messages.len() >= n || tokio::time::Instant::now() >= deadline {
            return messages;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn delay(from: SystemTime, to: SystemTime) -> i128 {
    match to.duration_since(from) {
        Ok(d) => d.as_millis() as i128,
        Err(e) => -(e.duration().as_millis() as i128),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_are_posted_to_a_real_synapse_room() {
    let Some(python) = synapse::python() else {
        return;
    };
    let started = std::time::Instant::now();
    let mut hs = Synapse::start(&python).await;
    println!(
        "Synapse answered after {} ms",
        started.elapsed().as_millis()
    );
    let token = hs.register("roomgate", false).await;
    let room = hs.create_room(&token).await;

    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "matrix-token", &token);
    write_file(dir.path(), "wrong-token", "syt_not_a_token_of_this_server");
    let target = |file: &str| {
        format!(
            "{}site: {{ public_url: 'https://gate.example' }}\nnotify:\n  timeout: 5s\n  targets:\n    admins: {{ kind: matrix, homeserver: '{}', room: '{room}', token_file: {file} }}\n",
            two_server_yaml(&primary.url(), &backup.url(), ""),
            hs.url
        )
    };
    // notify-test first, as an admin would: a bad token is named as such.
    let bin = env!("CARGO_BIN_EXE_roomgate");
    for (file, code, expect) in [
        ("wrong-token", 1, "M_UNKNOWN_TOKEN"),
        ("matrix-token", 0, " sent "),
    ] {
        let config = write_file(dir.path(), &format!("{file}.yaml"), &target(file));
        let out = tokio::process::Command::new(bin)
            .arg("notify-test")
            .arg(&config)
            .output()
            .await
            .expect("run roomgate notify-test");
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("{stdout}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{stdout}{stderr}");
        assert!(stdout.contains(expect), "{stdout}{stderr}");
        assert!(!stdout.contains(&token));
    }
    let messages = hs.messages(&token, &room).await;
    assert_eq!(messages.len(), 1, "the test message");
    assert!(messages[0]["content"]["body"]
        .as_str()
        .unwrap()
        .starts_with("Test message from roomgate"));

    let gate = Gate::start_in(dir, &target("matrix-token")).await;
    wait_entry(&gate, "primary", "up", Duration::from_secs(2)).await;
    primary.set_mode(Mode::BoshDown).await;
    let down = changed(&gate, "primary", "down", failover_bound() * 3).await;
    let messages = wait_messages(&hs, &token, &room, 2, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 2, "{}", hs.log());
    let posted = &messages[1];
    assert_eq!(posted["sender"], "@roomgate:localhost");
    assert_eq!(posted["content"]["msgtype"], "m.text");
    let body = posted["content"]["body"].as_str().unwrap();
    assert!(body.starts_with("primary is down since "), "{body}");
    assert!(
        body.ends_with(
            "(BOSH answered 502). Lounge and Cave now go to backup: https://gate.example/"
        ),
        "{body}"
    );
    let down_ms = delay(down, received_at(posted));

    primary.set_mode(Mode::Healthy).await;
    let up = changed(&gate, "primary", "up", recovery_bound() * 3).await;
    let messages = wait_messages(&hs, &token, &room, 3, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 3, "{}", hs.log());
    let body = messages[2]["content"]["body"].as_str().unwrap();
    assert!(body.starts_with("primary is back up since "), "{body}");
    let up_ms = delay(up, received_at(&messages[2]));
    println!("delivery to Synapse (change recorded -> origin_server_ts): down {down_ms} ms, up {up_ms} ms");
    // Synapse's clock is this machine's: the arrival cannot precede the
    // change by more than rounding, and comes promptly.
    for d in [down_ms, up_ms] {
        assert!((-2..2000).contains(&d), "delivery took {d} ms");
    }
    // Nothing more for further probes.
    let later = wait_messages(&hs, &token, &room, 4, Duration::from_millis(800)).await;
    assert_eq!(later.len(), 3, "one message per change");
    assert!(hs.running(), "Synapse stayed up:\n{}", hs.log());
    gate.stop().await;
}
