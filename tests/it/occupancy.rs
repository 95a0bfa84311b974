//! Occupancy end to end: roomgate counting the occupants of rooms on a real
//! Prosody 0.12 (anonymous guests, a `conference.localhost` MUC as Jitsi
//! declares it) behind nginx, with test clients in the rooms over BOSH
//! (`support::bosh_client::Occupant`), one of them playing Jicofo's focus.
//!
//! - 0 (no room), 1 (focus + 1), 3 (focus + 3) and 0 again (the focus
//!   alone): in `/status.json`, in the link preview, in `/metrics` and on
//!   the status page in a real headless Chromium, refreshed there without
//!   a reload; each within 1.5 intervals of the join.
//! - A hidden room (`muc#roomconfig_publicroom` false, set by its owner)
//!   is unknown (`null`), never 0.
//! - However many rooms (5) and requests, the server sees one guest
//!   session per occupancy interval (counted in Prosody's debug log).
//!
//! The screenshot: `docs/screenshots/status-occupancy.png` is the status
//! page of the first test with 3 people in the Lounge. The test always
//! saves it to `target/screenshots/`, and writes it to `docs/screenshots/`
//! only with `ROOMGATE_SCREENSHOTS=1` (how the committed one was made), so
//! that ordinary runs leave the work tree alone.
//!
//! The occupancy interval is 10 s, the floor: these tests take about 40 s
//! each, and wait by polling with bounds, never by sleeping.
//!
//! Without Prosody, nginx or Chromium they skip visibly; under `CI=true`
//! they fail (`support::tools`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::bosh_client::{room_info, MucClient, Occupant};
use crate::support::jitsi_front::{FrontSpec, JitsiFront};
use crate::support::nginx::nginx_available;
use crate::support::prosody::{prosody_available, Prosody, ProsodySpec};
use crate::support::webdriver::Browser;
use crate::support::*;

/// The occupancy interval of these tests: the floor roomgate accepts.
const INTERVAL: Duration = Duration::from_secs(10);

/// A change in a room shows in `/status.json` within this: the next query
/// (at most an interval away) plus its own time, with room for a busy
/// machine.
const SHOW_BOUND: Duration = Duration::from_millis(15_000);

/// The page reads `/status.json` every 5 s.
const PAGE_BOUND: Duration = Duration::from_millis(15_000 + 5_000 + 2_000);

/// The conference MUC of the test Jitsi.
const MUC: &str = "conference.localhost";

/// A link preview fetcher (Telegram's).
const PREVIEW_AGENT: &str = "TelegramBot (like TwitterBot)";

fn tools() -> bool {
    // Each asked, so every missing one is named.
    let prosody = prosody_available();
    let nginx = nginx_available();
    prosody && nginx
}

/// Jitsi's Prosody for `localhost` with its conference MUC, behind nginx.
async fn jitsi() -> (Prosody, JitsiFront) {
    let prosody = Prosody::start(ProsodySpec::jitsi("localhost").muc(MUC)).await;
    let front = JitsiFront::start(&prosody, FrontSpec::http("localhost")).await;
    (prosody, front)
}

/// roomgate for one Jitsi at `base`: the `login` check every
/// `check_interval`, occupancy every 10 s, and `rooms` (YAML lines under
/// `rooms:`). Returns once the server is up.
async fn gate(base: &str, check_interval: &str, rooms: &str) -> Gate {
    let yaml = format!(
        "site:
  title: Chaosdorf VirtualSpace
  intro: The Chaosdorf exists in virtual space too! Click a room to enter it.
servers:
  chaosdorf:
    url: {base}
    label: Chaosdorf
    check: {{ interval: {check_interval}, timeout: 3s, xmpp_domain: localhost, depth: login }}
    occupancy: {{ interval: {}s }}
defaults:
  servers: [chaosdorf]
rooms:
{rooms}",
        INTERVAL.as_secs()
    );
    let gate = Gate::start(&yaml).await;
    wait_state(
        &gate.url("/status.json"),
        "chaosdorf",
        "up",
        Duration::from_secs(10),
    )
    .await;
    gate
}

/// Polls `/status.json` until room `name` shows `want` occupants (a number
/// or null), at most `bound` from `since`; returns the room's entry and
/// how long that took from `since`.
async fn wait_occupants(gate: &Gate, name: &str, want: Value, since: Instant) -> (Value, Duration) {
    loop {
        let status = status_json(&gate.url("/status.json")).await;
        let entry = room(&status, name).clone();
        if entry["occupants"] == want {
            return (entry, since.elapsed());
        }
        assert!(
            since.elapsed() < SHOW_BOUND,
            "{name} not at {want} occupants within {SHOW_BOUND:?}: {entry}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `og:description` of the link preview of `/room`.
async fn preview(gate: &Gate, room: &str) -> String {
    let r = get(
        &gate.url(&format!("/{room}")),
        &[("user-agent", PREVIEW_AGENT)],
    )
    .await;
    assert_eq!(r.status, 200, "preview of {room}: {r:?}");
    let marker = "<meta property=\"og:description\" content=\"";
    let start = r.body.find(marker).expect("og:description") + marker.len();
    let len = r.body[start..].find('"').expect("end of og:description");
    r.body[start..start + len].to_owned()
}

/// `/metrics`, parsed with prometheus-parse: sample name plus sorted
/// labels (`name{k=v,...}`) -> value.
async fn scrape(gate: &Gate) -> HashMap<String, f64> {
    let r = get(&gate.url("/metrics"), &[]).await;
    assert_eq!(r.status, 200);
    let lines = r.body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    scrape
        .samples
        .into_iter()
        .filter_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            Some((format!("{}{{{}}}", s.metric, labels.join(",")), value))
        })
        .collect()
}

/// What Prosody itself says about `room`: its `muc#roominfo_occupants`,
/// or the error condition (asked by a guest of our own).
async fn prosody_says(front: &JitsiFront, room: &str) -> String {
    let url = format!("{}/http-bind", front.base);
    room_info(&url, "localhost", &format!("{room}@{MUC}")).await
}

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|p| p.join("screenshots"))
        .expect("target dir");
    std::fs::create_dir_all(&dir).expect("create target/screenshots");
    dir
}

/// The badge text of room `name` on the page, or "" when hidden.
const BADGE_OF: &str = "var b = document.querySelector('[data-room=\"' + arguments[0] + '\"] [data-field=\"occupants\"]'); return b.hidden ? '' : b.textContent;";

/// 0, 1, 3 and 0 people in the Lounge, everywhere roomgate shows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_show_in_json_preview_metrics_and_the_page() {
    if !tools() {
        return;
    }
    // Chromium first: it starts slowly, and the rooms must not wait for it.
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (prosody, front) = jitsi().await;
    let bosh = format!("{}/http-bind", front.base);
    let lounge = format!("lounge@{MUC}");
    let gate = gate(
        &front.base,
        "5s",
        "  Lounge:
    description: The Lounge is the general meeting place to arrive, chat and get to know each other.
  Hackcenter:
    description: Group meetings happen in the Hackcenter.
  Cave:
    description: The Cave is the back room for side conversations.
",
    )
    .await;

    // No room on the server: nobody there (item-not-found), from the
    // first query at start.
    let (entry, _) = wait_occupants(&gate, "Lounge", json!(0), Instant::now()).await;
    assert!(entry["occupants_at"].is_string(), "{entry}");
    assert_eq!(prosody_says(&front, "lounge").await, "item-not-found");
    assert!(preview(&gate, "Lounge")
        .await
        .starts_with("Nobody in the room now. "));

    // The focus and one person: 1.
    let focus = Occupant::join(&bosh, "localhost", &lounge, "focus").await;
    let alice = Occupant::join(&bosh, "localhost", &lounge, "alice").await;
    let (entry, took_1) = wait_occupants(&gate, "Lounge", json!(1), Instant::now()).await;
    assert!(entry["occupants_at"].is_string(), "{entry}");
    assert_eq!(prosody_says(&front, "lounge").await, "2");
    browser.goto(&gate.url("/")).await;
    assert_eq!(
        browser.eval(BADGE_OF, json!(["Lounge"])).await,
        "1 here now"
    );
    assert_eq!(
        browser.eval(BADGE_OF, json!(["Cave"])).await,
        "nobody here now"
    );

    // Two more: 3, in every place, and on the open page without a reload.
    let joined = Instant::now();
    let bob = Occupant::join(&bosh, "localhost", &lounge, "bob").await;
    let carol = Occupant::join(&bosh, "localhost", &lounge, "carol").await;
    let (entry, took_3) = wait_occupants(&gate, "Lounge", json!(3), joined).await;
    assert!(entry["occupants_at"].is_string(), "{entry}");
    let description = preview(&gate, "Lounge").await;
    assert!(
        description.starts_with("3 in the room now. The Lounge is"),
        "{description}"
    );
    let m = scrape(&gate).await;
    assert_eq!(
        m.get("roomgate_room_occupants{room=Lounge}"),
        Some(&3.0),
        "{m:?}"
    );
    assert_eq!(
        m.get("roomgate_room_occupants{room=Cave}"),
        Some(&0.0),
        "{m:?}"
    );
    assert!(
        m.get("roomgate_occupancy_queries_total{result=success,server=chaosdorf}")
            .is_some_and(|n| *n >= 2.0),
        "{m:?}"
    );
    browser
        .eval("window.notReloaded = true; return null;", json!([]))
        .await;
    let badge =
        "var b = document.querySelector('[data-room=\"Lounge\"] [data-field=\"occupants\"]'); \
                 return window.notReloaded === true && !b.hidden && b.textContent === '3 here now' \
                 && b.closest('.card').classList.contains('occupied');";
    assert!(
        browser.wait_until(badge, PAGE_BOUND).await,
        "the page shows no \"3 here now\": {}",
        browser.eval(BADGE_OF, json!(["Lounge"])).await
    );
    save_screenshot(&browser).await;

    // Everyone but the focus leaves: the room lives on with one occupant,
    // which is not a person.
    let left = Instant::now();
    for person in [alice, bob, carol] {
        person.leave().await;
    }
    let (_, took_0) = wait_occupants(&gate, "Lounge", json!(0), left).await;
    assert_eq!(prosody_says(&front, "lounge").await, "1");
    assert!(
        browser
            .wait_until(
                "var b = document.querySelector('[data-room=\"Lounge\"] [data-field=\"occupants\"]'); \
                 return b.textContent === 'nobody here now';",
                PAGE_BOUND
            )
            .await
    );
    focus.leave().await;
    eprintln!(
        "occupancy on real Prosody: join -> count shown: 1 in {} ms, 3 in {} ms, leave -> 0 in {} ms (interval {} s)",
        took_1.as_millis(),
        took_3.as_millis(),
        took_0.as_millis(),
        INTERVAL.as_secs()
    );
    browser.quit().await;
    gate.stop().await;
    drop(prosody);
}

/// Saves the page at 3 people in the Lounge (see the module doc).
async fn save_screenshot(browser: &Browser) {
    browser.resize(1000, 900).await;
    let height = browser
        .eval(
            "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight];",
            json!([]),
        )
        .await;
    let page = height[0].as_u64().unwrap_or(900).clamp(400, 4000);
    let frame = height[1].as_u64().unwrap_or(0).min(400);
    browser.resize(1000, (page + frame) as u32).await;
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = screenshot_dir().join("status-occupancy.png");
    std::fs::write(&path, &png).expect("write screenshot");
    eprintln!("screenshot: {}", path.display());
    if std::env::var("ROOMGATE_SCREENSHOTS").as_deref() == Ok("1") {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::write(docs.join("status-occupancy.png"), &png).expect("write docs screenshot");
        eprintln!(
            "screenshot: {}",
            docs.join("status-occupancy.png").display()
        );
    }
}

/// One BOSH session of roomgate's occupancy, as Prosody's debug log
/// shows it.
#[derive(Debug, Default)]
struct Session {
    /// HTTP requests to `/http-bind`: the one that created it, and every
    /// later one naming its `sid`.
    requests: usize,
    /// Stanzas Prosody received in it (`Received[...]`).
    stanzas: usize,
    /// The rooms it sent a disco#info to, in order.
    rooms: Vec<String>,
}

/// The sessions in Prosody's `log` that sent a disco#info to a room of
/// the MUC: roomgate's occupancy queries (neither its health probes nor
/// the test's occupants send one).
fn occupancy_sessions(log: &str) -> Vec<Session> {
    let sid_of = |line: &str, marker: &str| -> Option<String> {
        let rest = &line[line.find(marker)? + marker.len()..];
        Some(rest[..rest.find('\'')?].to_owned())
    };
    let mut order: Vec<String> = Vec::new();
    let mut sessions: HashMap<String, Session> = HashMap::new();
    for line in log.lines() {
        if let Some(sid) = sid_of(line, "New BOSH session, assigned it sid '") {
            order.push(sid.clone());
            sessions.entry(sid).or_default().requests += 1;
        } else if line.contains("Handling new request") {
            let Some(sid) = sid_of(line, " sid='") else {
                continue; // a session's first request: counted above
            };
            let session = sessions.entry(sid).or_default();
            session.requests += 1;
            if line.contains("disco#info") {
                let room = sid_of(line, " to='").expect("a disco#info names its room");
                session.rooms.push(room);
            }
        } else if let Some((head, _)) = line.split_once("\tdebug\tReceived[") {
            let sid = head.rsplit_once(" bosh").map(|(_, sid)| sid.to_owned());
            if let Some(sid) = sid {
                sessions.entry(sid).or_default().stanzas += 1;
            }
        }
    }
    order
        .into_iter()
        .filter_map(|sid| sessions.remove(&sid))
        .filter(|s| s.rooms.iter().any(|r| r.ends_with(&format!("@{MUC}"))))
        .collect()
}

/// Five rooms, one of them hidden by its owner, and requests hammering
/// the page, `/status.json`, previews and `/metrics` for 2.5 intervals:
/// the hidden room is unknown, and Prosody sees one occupancy session per
/// interval, each asking every room once: 5 + 5 requests, 2 + 5 stanzas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_per_interval_and_hidden_rooms_are_unknown() {
    if !tools() {
        return;
    }
    let (prosody, front) = jitsi().await;
    let bosh = format!("{}/http-bind", front.base);
    // The owner hides its room before roomgate starts: every query sees it
    // hidden. Two occupants: were it counted, it would say 1.
    let mut owner = MucClient::join(&bosh, "localhost", &format!("hidden@{MUC}"), "owner").await;
    owner.hide().await;
    let owner = owner.stay();
    let guest = Occupant::join(&bosh, "localhost", &format!("hidden@{MUC}"), "guest").await;
    let focus = Occupant::join(&bosh, "localhost", &format!("lounge@{MUC}"), "focus").await;
    let alice = Occupant::join(&bosh, "localhost", &format!("lounge@{MUC}"), "alice").await;
    // Prosody would tell: the room's form says 2 (our own guest's query,
    // left out of the count below).
    assert_eq!(prosody_says(&front, "hidden").await, "2");
    let ours = occupancy_sessions(&prosody.log()).len();

    let started = Instant::now();
    let gate = gate(
        &front.base,
        "5s",
        "  Lounge: {}\n  Hackcenter: {}\n  Cave: {}\n  Freitagsfoo: {}\n  Hidden: {}\n",
    )
    .await;
    let (lounge, _) = wait_occupants(&gate, "Lounge", json!(1), started).await;
    let status = status_json(&gate.url("/status.json")).await;
    let hidden = room(&status, "Hidden");
    assert!(hidden["occupants"].is_null(), "{hidden}");
    assert!(hidden["occupants_at"].is_null(), "{hidden}");
    assert_eq!(room(&status, "Cave")["occupants"], 0);
    assert!(lounge["occupants_at"].is_string());

    // Hammer every reader for 2.5 intervals.
    let window = INTERVAL * 5 / 2;
    let until = Instant::now() + window;
    let paths = ["/", "/status.json", "/metrics", "/Lounge", "/Hidden"];
    let mut hammers = Vec::new();
    for worker in 0..4 {
        let base = gate.base.clone();
        hammers.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < until {
                let path = paths[(worker + done as usize) % paths.len()];
                let r = get(&format!("{base}{path}"), &[("user-agent", PREVIEW_AGENT)]).await;
                assert_eq!(r.status, 200, "{path}");
                done += 1;
            }
            done
        }));
    }
    let mut requests = 0;
    for hammer in hammers {
        requests += hammer.await.expect("hammer");
    }
    let elapsed = started.elapsed();

    let mut sessions = occupancy_sessions(&prosody.log());
    sessions.drain(..ours);
    let queries = (elapsed.as_secs_f64() / INTERVAL.as_secs_f64()).floor() as usize + 1;
    eprintln!(
        "occupancy on real Prosody: {requests} requests to roomgate in {} ms; {} occupancy \
         sessions in {} ms since start (interval {} s); per session: {:?}",
        window.as_millis(),
        sessions.len(),
        elapsed.as_millis(),
        INTERVAL.as_secs(),
        sessions
            .iter()
            .map(|s| (s.requests, s.stanzas))
            .collect::<Vec<_>>()
    );
    assert!(requests > 100, "{requests} requests");
    // One per interval from the start on: at 0, 10 s, 20 s, ...
    assert!(
        sessions.len() <= queries && sessions.len() + 1 >= queries,
        "{} sessions in {elapsed:?}, expected {queries}: {sessions:?}",
        sessions.len()
    );
    let rooms: Vec<String> = ["lounge", "hackcenter", "cave", "freitagsfoo", "hidden"]
        .iter()
        .map(|r| format!("{r}@{MUC}"))
        .collect();
    for session in &sessions {
        assert_eq!(session.rooms, rooms, "{session:?}");
        assert_eq!(session.requests, 5 + rooms.len(), "{session:?}");
        assert_eq!(session.stanzas, 2 + rooms.len(), "{session:?}");
    }
    let m = scrape(&gate).await;
    let succeeded = m["roomgate_occupancy_queries_total{result=success,server=chaosdorf}"];
    assert_eq!(succeeded as usize, sessions.len(), "{m:?}");
    assert!(
        !m.contains_key("roomgate_room_occupants{room=Hidden}"),
        "{m:?}"
    );
    assert_eq!(m.get("roomgate_room_occupants{room=Lounge}"), Some(&1.0));
    // Still unknown, never 0; the preview says nothing about it.
    let status = status_json(&gate.url("/status.json")).await;
    assert!(room(&status, "Hidden")["occupants"].is_null());
    let description = preview(&gate, "Hidden").await;
    assert!(
        !description.starts_with("Nobody") && !description.contains("in the room now"),
        "{description}"
    );
    for occupant in [owner, guest, focus, alice] {
        occupant.leave().await;
    }
    gate.stop().await;
}
