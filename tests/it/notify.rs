//! Notifications end to end: a stand-in Jitsi goes down and comes back,
//! and stand-in receivers of each kind (webhook, Matrix, Telegram) get one
//! message per change, in the API's shape; failing receivers are retried
//! as they ask; a hanging one slows down neither redirects nor probes; and
//! `roomgate notify-test` reports each target. Delivery times are printed
//! (from the moment the prober recorded the change to the request's
//! arrival).

use std::time::{Duration, Instant, SystemTime};

use crate::support::faults::*;
use crate::support::receiver::{Answer, Received, Receiver};
use crate::support::*;

/// Bound on a message's arrival after its change, for a receiver that
/// answers at once: the announcer and the queue add no wait of their own.
const PROMPT: Duration = Duration::from_secs(2);

/// The tokens of the tests; none may show up in any output.
const HOOK_TOKEN: &str = "hook-secret-4711";
const MATRIX_TOKEN: &str = "syt_matrix_secret_4711";
const TELEGRAM_TOKEN: &str = "123456:telegram-secret-4711";

/// [`two_server_yaml`] with a public URL and `targets` (lines indented by
/// four spaces) under `notify:`.
fn yaml(primary: &StandIn, backup: &StandIn, timeout: &str, targets: &str) -> String {
    format!(
        "{}site: {{ public_url: 'https://gate.example' }}\nnotify:\n  timeout: {timeout}\n  targets:\n{targets}",
        two_server_yaml(&primary.url(), &backup.url(), "")
    )
}

/// A temporary directory holding the token files the targets name.
fn token_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "hook-token", &format!("{HOOK_TOKEN}\n"));
    write_file(dir.path(), "matrix-token", MATRIX_TOKEN);
    write_file(dir.path(), "telegram-token", TELEGRAM_TOKEN);
    dir
}

fn webhook(name: &str, r: &Receiver) -> String {
    format!(
        "    {name}: {{ kind: webhook, url: '{}/hook', token_file: hook-token }}\n",
        r.url()
    )
}

fn matrix(name: &str, r: &Receiver) -> String {
    format!(
        "    {name}: {{ kind: matrix, homeserver: '{}', room: '!room:localhost', token_file: matrix-token }}\n",
        r.url()
    )
}

fn telegram(name: &str, r: &Receiver) -> String {
    format!(
        "    {name}: {{ kind: telegram, api: '{}', chat: '@chaosdorf', token_file: telegram-token }}\n",
        r.url()
    )
}

/// Waits until `server` has `state`; returns when the prober recorded the
/// change (the moment its log line is written).
pub(crate) async fn changed(gate: &Gate, server: &str, state: &str, bound: Duration) -> SystemTime {
    wait_entry(gate, server, state, bound).await;
    let snapshot = gate.gw.snapshot();
    let handle = snapshot
        .servers
        .iter()
        .find(|s| s.server.name == server)
        .expect("the server");
    handle.health().expect("a result").since
}

pub(crate) fn ms(from: SystemTime, to: SystemTime) -> u128 {
    to.duration_since(from).unwrap_or_default().as_millis()
}

/// The value of `roomgate_notifications_total{target, result}`.
async fn counted(gate: &Gate, target: &str, result: &str) -> u64 {
    let text = get(&gate.url("/metrics"), &[]).await.body;
    let needle =
        format!("roomgate_notifications_total{{target=\"{target}\",result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_gets_one_message_per_change() {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let hook = Receiver::start(vec![]).await;
    let admins = Receiver::start(vec![]).await;
    let channel = Receiver::start(vec![]).await;
    let targets =
        webhook("hook", &hook) + &matrix("admins", &admins) + &telegram("channel", &channel);
    let gate = Gate::start_in(token_dir(), &yaml(&primary, &backup, "2s", &targets)).await;
    wait_entry(&gate, "primary", "up", Duration::from_secs(2)).await;
    wait_entry(&gate, "backup", "up", Duration::from_secs(2)).await;

    primary.set_mode(Mode::BoshDown).await;
    let down = changed(&gate, "primary", "down", failover_bound() * 3).await;
    let hooks = hook.wait(1, PROMPT).await;
    let rooms = admins.wait(1, PROMPT).await;
    let chats = channel.wait(1, PROMPT).await;
    assert_eq!(
        (hooks.len(), rooms.len(), chats.len()),
        (1, 1, 1),
        "one message each for the change"
    );
    println!(
        "delivery after down: webhook {} ms, matrix {} ms, telegram {} ms",
        ms(down, hooks[0].at),
        ms(down, rooms[0].at),
        ms(down, chats[0].at)
    );

    // The webhook: the event as JSON, with the token as a bearer.
    let h = &hooks[0];
    assert_eq!((h.method.as_str(), h.path.as_str()), ("POST", "/hook"));
    assert_eq!(
        h.authorization.as_deref(),
        Some(format!("Bearer {HOOK_TOKEN}").as_str())
    );
    assert_eq!(h.content_type.as_deref(), Some("application/json"));
    let event = h.json();
    assert_eq!(event["version"], 1);
    assert_eq!(event["kind"], "down");
    assert_eq!(event["server"]["name"], "primary");
    assert_eq!(event["server"]["url"], primary.url());
    assert_eq!(
        (event["old_state"].as_str(), event["new_state"].as_str()),
        (Some("up"), Some("down"))
    );
    assert_eq!(event["error"], "BOSH answered 502");
    assert_eq!(event["public_url"], "https://gate.example/");
    assert_eq!(event["moved"][0]["room"], "Lounge");
    assert_eq!(event["moved"][0]["to"]["name"], "backup");
    assert_eq!(
        event["moved"][0]["target"],
        format!("{}/Lounge", backup.url())
    );
    assert_eq!(event["moved"][1]["room"], "Cave");
    assert_eq!(event["all_down"], serde_json::json!([]));
    let text = event["text"].as_str().unwrap().to_owned();
    assert!(text.starts_with("primary is down since "), "{text}");
    assert!(
        text.ends_with(
            "(BOSH answered 502). Lounge and Cave now go to backup: https://gate.example/"
        ),
        "{text}"
    );

    // Matrix: PUT of an m.text to the room, with a transaction id.
    let m = &rooms[0];
    assert_eq!(m.method, "PUT");
    let prefix = "/_matrix/client/v3/rooms/%21room%3Alocalhost/send/m.room.message/";
    assert!(m.path.starts_with(prefix), "{}", m.path);
    assert!(m.path.len() > prefix.len());
    assert_eq!(
        m.authorization.as_deref(),
        Some(format!("Bearer {MATRIX_TOKEN}").as_str())
    );
    assert_eq!(
        m.json(),
        serde_json::json!({ "msgtype": "m.text", "body": text })
    );

    // Telegram: sendMessage with the token in the path, as the Bot API has it.
    let t = &chats[0];
    assert_eq!(t.method, "POST");
    assert_eq!(t.path, format!("/bot{TELEGRAM_TOKEN}/sendMessage"));
    assert_eq!(t.authorization, None);
    assert_eq!(
        t.json(),
        serde_json::json!({ "chat_id": "@chaosdorf", "text": text })
    );

    primary.set_mode(Mode::Healthy).await;
    let up = changed(&gate, "primary", "up", recovery_bound() * 3).await;
    let hooks = hook.wait(2, PROMPT).await;
    let rooms = admins.wait(2, PROMPT).await;
    let chats = channel.wait(2, PROMPT).await;
    println!(
        "delivery after up: webhook {} ms, matrix {} ms, telegram {} ms",
        ms(up, hooks[1].at),
        ms(up, rooms[1].at),
        ms(up, chats[1].at)
    );
    let event = hooks[1].json();
    assert_eq!(event["kind"], "up");
    assert_eq!(event["error"], serde_json::Value::Null);
    let text = event["text"].as_str().unwrap();
    assert!(text.starts_with("primary is back up since "), "{text}");
    assert!(
        text.ends_with("Lounge and Cave now go to primary again: https://gate.example/"),
        "{text}"
    );
    assert_ne!(
        rooms[0].path, rooms[1].path,
        "a new transaction per message"
    );
    for r in [&hooks, &rooms, &chats] {
        let delivered = [&r[0], &r[1]].map(|m| m.at);
        assert!(
            ms(down, delivered[0]) < PROMPT.as_millis()
                && ms(up, delivered[1]) < PROMPT.as_millis()
        );
    }

    // Several more probe rounds of both servers: no further message.
    let more = hook.wait(3, Duration::from_millis(1000)).await;
    assert_eq!(more.len(), 2, "one message per change, never one per probe");
    assert_eq!(admins.received().len(), 2);
    assert_eq!(channel.received().len(), 2);
    assert_eq!(counted(&gate, "hook", "sent").await, 2);
    assert_eq!(counted(&gate, "admins", "sent").await, 2);
    assert_eq!(counted(&gate, "channel", "retried").await, 0);

    // No token anywhere people or scrapers look.
    for path in ["/", "/status.json", "/metrics"] {
        let body = get(&gate.url(path), &[]).await.body;
        for token in [HOOK_TOKEN, MATRIX_TOKEN, TELEGRAM_TOKEN] {
            assert!(!body.contains(token), "{path} shows a token");
        }
    }
    gate.stop().await;
}

/// The pause between the first two requests a receiver got.
fn gap(received: &[Received]) -> Duration {
    received[1]
        .at
        .duration_since(received[0].at)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_as_the_receiver_asks() {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let admins = Receiver::start(vec![Answer::Status(
        500,
        vec![],
        r#"{"errcode":"M_UNKNOWN","error":"Internal server error"}"#.into(),
    )])
    .await;
    let channel = Receiver::start(vec![Answer::Status(
        429,
        vec![],
        r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 2","parameters":{"retry_after":2}}"#.into(),
    )])
    .await;
    let hook = Receiver::start(vec![Answer::Status(
        429,
        vec![("retry-after", "1".into())],
        String::new(),
    )])
    .await;
    let targets =
        matrix("admins", &admins) + &telegram("channel", &channel) + &webhook("hook", &hook);
    let gate = Gate::start_in(token_dir(), &yaml(&primary, &backup, "2s", &targets)).await;
    wait_entry(&gate, "primary", "up", Duration::from_secs(2)).await;

    primary.set_mode(Mode::BoshDown).await;
    let down = changed(&gate, "primary", "down", failover_bound() * 3).await;
    let rooms = admins.wait(2, Duration::from_secs(5)).await;
    let chats = channel.wait(2, Duration::from_secs(5)).await;
    let hooks = hook.wait(2, Duration::from_secs(5)).await;
    assert_eq!((rooms.len(), chats.len(), hooks.len()), (2, 2, 2));
    println!(
        "retries: matrix after 500: {} ms later (backoff 500-1000 ms), delivered {} ms after the change; \
         telegram after retry_after 2: {} ms later, delivered {} ms; webhook after Retry-After 1: {} ms later, delivered {} ms",
        gap(&rooms).as_millis(),
        ms(down, rooms[1].at),
        gap(&chats).as_millis(),
        ms(down, chats[1].at),
        gap(&hooks).as_millis(),
        ms(down, hooks[1].at)
    );
    // The first retry waits the backoff (half to all of 1 s).
    assert!(
        gap(&rooms) >= Duration::from_millis(480) && gap(&rooms) < Duration::from_millis(1500),
        "{:?}",
        gap(&rooms)
    );
    // Waits asked for are kept (the backoff alone would be under 1 s).
    assert!(
        gap(&chats) >= Duration::from_millis(1980) && gap(&chats) < Duration::from_millis(3000),
        "{:?}",
        gap(&chats)
    );
    assert!(
        gap(&hooks) >= Duration::from_millis(980) && gap(&hooks) < Duration::from_millis(2000),
        "{:?}",
        gap(&hooks)
    );
    // A retry is the same Matrix transaction, so it can never post twice.
    assert_eq!(rooms[0].path, rooms[1].path);
    assert_eq!(rooms[0].body, rooms[1].body);
    for target in ["admins", "channel", "hook"] {
        assert_eq!(counted(&gate, target, "retried").await, 1, "{target}");
        assert_eq!(counted(&gate, target, "sent").await, 1, "{target}");
    }
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_slows_neither_redirects_nor_probes() {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let stuck = Receiver::start(vec![Answer::Hang; 10]).await;
    let hook = Receiver::start(vec![]).await;
    let targets = webhook("stuck", &stuck) + &webhook("hook", &hook);
    // Attempts may hang for 10 s: longer than the whole test.
    let gate = Gate::start_in(token_dir(), &yaml(&primary, &backup, "10s", &targets)).await;
    let lounge = gate.url("/Lounge");
    wait_entry(&gate, "primary", "up", Duration::from_secs(2)).await;

    primary.set_mode(Mode::BoshDown).await;
    let down = changed(&gate, "primary", "down", failover_bound() * 3).await;
    let hooks = hook.wait(1, PROMPT).await;
    assert_eq!(hooks.len(), 1, "the other target is not held up");
    assert_eq!(
        stuck.wait(1, PROMPT).await.len(),
        1,
        "the stuck one got its request"
    );
    println!(
        "with a hanging target beside it: webhook {} ms after the change",
        ms(down, hooks[0].at)
    );

    // Redirects while that request hangs.
    let on_backup = format!("{}/Lounge", backup.url());
    let mut took = Vec::new();
    for _ in 0..50 {
        let start = Instant::now();
        assert_eq!(location(&lounge).await, on_backup);
        took.push(start.elapsed());
    }
    took.sort();
    let (p50, max) = (took[took.len() / 2], *took.last().unwrap());
    println!(
        "redirects during a hanging notification: p50 {} us, max {} us",
        p50.as_micros(),
        max.as_micros()
    );
    assert!(max < Duration::from_millis(100), "slowest request {max:?}");
    assert!(p50 < Duration::from_millis(20), "median request {p50:?}");

    // Probes keep their pace: the recovery comes within its usual bound,
    // and the backup is probed every interval meanwhile.
    let creates = backup.counts().bosh_creates;
    let t1 = Instant::now();
    primary.set_mode(Mode::Healthy).await;
    let on_primary = format!("{}/Lounge", primary.url());
    let recovery = wait_location(&lounge, &on_primary, t1, recovery_bound() * 3)
        .await
        .expect("a recovery");
    let window = t1.elapsed();
    let probes = backup.counts().bosh_creates - creates;
    let expected = (window.as_secs_f64() / INTERVAL.as_secs_f64()).floor() as u64;
    println!(
        "recovery with a hanging target: {} ms (bound {} ms); backup probed {probes} times in {} ms",
        recovery.as_millis(),
        recovery_bound().as_millis(),
        window.as_millis()
    );
    assert!(recovery <= recovery_bound(), "recovery took {recovery:?}");
    assert!(
        probes + 1 >= expected,
        "{probes} probes of the backup in {window:?}"
    );
    assert_eq!(
        hook.wait(2, PROMPT).await.len(),
        2,
        "the recovery is announced"
    );
    assert_eq!(
        stuck.received().len(),
        1,
        "the stuck target's attempt still hangs"
    );
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_test_reports_each_target_and_check_hides_tokens() {
    let backup = StandIn::http(Mode::Healthy).await;
    let hook = Receiver::start(vec![]).await;
    let admins = Receiver::start(vec![Answer::Status(
        401,
        vec![],
        r#"{"errcode":"M_UNKNOWN_TOKEN","error":"Invalid access token passed."}"#.into(),
    )])
    .await;
    let dir = token_dir();
    let config = write_file(
        dir.path(),
        "routes.yaml",
        &yaml(
            &backup,
            &backup,
            "2s",
            &(webhook("hook", &hook) + &matrix("admins", &admins)),
        ),
    );
    let bin = env!("CARGO_BIN_EXE_roomgate");
    let out = tokio::process::Command::new(bin)
        .arg("notify-test")
        .arg(&config)
        .env_remove("ROOMGATE_CONFIG")
        .output()
        .await
        .expect("run roomgate notify-test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name}: {stdout}"))
            .to_owned()
    };
    assert!(line("hook").contains(" sent "), "{stdout}");
    assert!(
        line("admins").contains("failed")
            && line("admins").contains("answered 401: M_UNKNOWN_TOKEN"),
        "{stdout}"
    );
    let test = hook.received()[0].json();
    assert_eq!(test["kind"], "test");
    assert!(test["text"]
        .as_str()
        .unwrap()
        .starts_with("Test message from roomgate"));
    assert_eq!(admins.received().len(), 1, "one attempt, no retries");

    let check = tokio::process::Command::new(bin)
        .arg("check")
        .arg(&config)
        .output()
        .await
        .expect("run roomgate check");
    let summary = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success());
    assert!(summary.contains("token from file"), "{summary}");
    for text in [&stdout, &summary, &String::from_utf8_lossy(&out.stderr)] {
        for token in [HOOK_TOKEN, MATRIX_TOKEN, TELEGRAM_TOKEN] {
            assert!(!text.contains(token), "a token is shown:\n{text}");
        }
    }
}
