//! The poller against scripted sources on tokio's paused clock (when it
//! queries, how long counts hold, how each room's answer is read), the
//! rule for the focus, and which rooms a server is asked about.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{people, rooms_on, Occupancy, OccupancyHandle, OccupancySource};
use crate::config::{self, Config, Server};
use crate::health::ProbeError;
use crate::metrics::{Metrics, ProbeLabels};

const INTERVAL: Duration = Duration::from_secs(30);

/// What one query answers.
type Answer = Result<Vec<Occupancy>, ProbeError>;

/// A source that replays scripted answers (the last one for ever) and
/// notes when it was asked.
#[derive(Clone, Default)]
struct Scripted {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    calls: Arc<Mutex<Vec<Instant>>>,
}

impl Scripted {
    fn new(answers: impl IntoIterator<Item = Answer>) -> Self {
        let s = Scripted::default();
        s.answers.lock().unwrap().extend(answers);
        s
    }
    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

impl OccupancySource for Scripted {
    async fn occupants(&self, rooms: &[String]) -> Result<Vec<Occupancy>, ProbeError> {
        self.calls.lock().unwrap().push(Instant::now());
        let mut answers = self.answers.lock().unwrap();
        let answer = if answers.len() > 1 {
            answers.pop_front()
        } else {
            answers.front().cloned()
        };
        answer.unwrap_or_else(|| Ok(vec![Occupancy::Unknown; rooms.len()]))
    }
}

fn failure() -> Answer {
    Err(ProbeError::new("login: not-authorized"))
}

fn server(exclude: u32) -> Server {
    Server {
        occupancy: Some(config::Occupancy {
            interval: INTERVAL,
            muc_domain: "conference.localhost".into(),
            exclude,
        }),
        ..Server::test_primary()
    }
}

fn rooms(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// Lets the poller run until it sleeps again.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// Lets `d` pass in small steps, so that the poller runs at each of
/// its times rather than once at the end.
async fn pass(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        let step = (end - Instant::now()).min(Duration::from_millis(100));
        tokio::time::advance(step).await;
        settle().await;
    }
}

fn people_in(handle: &OccupancyHandle, room: &str) -> Option<u32> {
    handle.people(room, Instant::now()).map(|s| s.people)
}

fn queries(metrics: &Metrics, result: &'static str) -> u64 {
    metrics
        .occupancy_queries
        .get_or_create(&ProbeLabels {
            server: "primary".into(),
            result,
        })
        .get()
}

#[tokio::test(start_paused = true)]
async fn one_query_per_interval_however_many_readers() {
    use Occupancy::*;
    let source = Scripted::new([Ok(vec![Known(4), Empty])]);
    let metrics = Arc::new(Metrics::new());
    let start = Instant::now();
    let handle = OccupancyHandle::spawn_with(
        &server(1),
        rooms(&["lounge", "cave"]),
        source.clone(),
        &metrics,
    );
    settle().await;
    for _ in 0..200 {
        // A second's worth of page views, previews and scrapes.
        for _ in 0..50 {
            assert_eq!(people_in(&handle, "Lounge"), Some(3));
        }
        tokio::time::advance(Duration::from_millis(500)).await;
        settle().await;
    }
    let offsets: Vec<u64> = source
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|t| (*t - start).as_secs())
        .collect();
    assert_eq!(offsets, [0, 30, 60, 90]);
    assert_eq!(queries(&metrics, "success"), 4);
    assert_eq!(queries(&metrics, "failure"), 0);
}

#[tokio::test(start_paused = true)]
async fn counts_read_as_unknown_three_intervals_after_they_were_taken() {
    use Occupancy::*;
    let source = Scripted::new([Ok(vec![Known(3)]), failure()]);
    let metrics = Arc::new(Metrics::new());
    let handle =
        OccupancyHandle::spawn_with(&server(1), rooms(&["lounge"]), source.clone(), &metrics);
    settle().await;
    let taken = Instant::now();
    let seen = handle.people("lounge", taken).expect("a count");
    assert_eq!(seen.people, 2);
    // The queries at 30 and 60 s fail; the count from 0 s still holds.
    pass(INTERVAL * 3 - Duration::from_millis(1)).await;
    assert_eq!(source.calls(), 3);
    assert_eq!(handle.people("lounge", Instant::now()), Some(seen));
    tokio::time::advance(Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(people_in(&handle, "lounge"), None);
    assert_eq!(queries(&metrics, "failure"), 3);
    // A success brings it back.
    source.answers.lock().unwrap().clear();
    source.answers.lock().unwrap().push_back(Ok(vec![Known(1)]));
    pass(INTERVAL).await;
    assert_eq!(people_in(&handle, "lounge"), Some(0));
}

#[tokio::test(start_paused = true)]
async fn each_room_is_read_by_the_rule_and_unknown_is_never_zero() {
    use Occupancy::*;
    let names = ["a", "b", "c", "d", "e", "f"];
    // Only five answers for six rooms: the sixth is unknown.
    let source = Scripted::new([Ok(vec![Known(4), Known(1), Known(0), Empty, Unknown])]);
    let handle =
        OccupancyHandle::spawn_with(&server(1), rooms(&names), source, &Arc::new(Metrics::new()));
    settle().await;
    let got: Vec<Option<u32>> = names.iter().map(|r| people_in(&handle, r)).collect();
    assert_eq!(got, [Some(3), Some(0), Some(0), Some(0), None, None]);
    // Rooms match in any case; rooms never asked about are unknown.
    assert_eq!(people_in(&handle, "A"), Some(3));
    assert_eq!(people_in(&handle, "nowhere"), None);
}

#[tokio::test(start_paused = true)]
async fn hidden_rooms_are_unknown_and_the_log_says_why_once() {
    use Occupancy::*;
    let (log, _logging) = crate::health::test_log::Log::capture();
    let source = Scripted::new([
        Ok(vec![Hidden, Known(3), Hidden]),
        Ok(vec![Hidden, Known(3), Hidden]),
    ]);
    let names = ["lounge", "cave", "attic"];
    let handle =
        OccupancyHandle::spawn_with(&server(1), rooms(&names), source, &Arc::new(Metrics::new()));
    settle().await;
    let got: Vec<Option<u32>> = names.iter().map(|r| people_in(&handle, r)).collect();
    assert_eq!(got, [None, Some(2), None]);
    pass(Duration::from_secs(30)).await;
    let text = log.text();
    assert_eq!(text.matches("are hidden").count(), 1, "{text}");
    assert!(text.contains("rooms lounge, attic are hidden"), "{text}");
    assert!(text.contains("muc_room_default_public = true"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn exclude_zero_counts_every_occupant() {
    let source = Scripted::new([Ok(vec![Occupancy::Known(2)])]);
    let handle =
        OccupancyHandle::spawn_with(&server(0), rooms(&["x"]), source, &Arc::new(Metrics::new()));
    settle().await;
    assert_eq!(people_in(&handle, "x"), Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_query_that_hangs_is_given_up_when_the_next_is_due() {
    struct Hangs(Arc<Mutex<u32>>);
    impl OccupancySource for Hangs {
        async fn occupants(&self, _: &[String]) -> Result<Vec<Occupancy>, ProbeError> {
            *self.0.lock().unwrap() += 1;
            std::future::pending().await
        }
    }
    let calls = Arc::new(Mutex::new(0));
    let metrics = Arc::new(Metrics::new());
    let handle =
        OccupancyHandle::spawn_with(&server(1), rooms(&["x"]), Hangs(calls.clone()), &metrics);
    settle().await;
    pass(INTERVAL - Duration::from_millis(1)).await;
    assert_eq!(
        (*calls.lock().unwrap(), queries(&metrics, "failure")),
        (1, 0)
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(
        (*calls.lock().unwrap(), queries(&metrics, "failure")),
        (2, 1)
    );
    assert_eq!(people_in(&handle, "x"), None);
}

#[tokio::test(start_paused = true)]
async fn a_poller_that_panics_starts_again_an_interval_later() {
    #[derive(Clone, Default)]
    struct PanicsOnce(Arc<Mutex<Vec<Instant>>>);
    impl OccupancySource for PanicsOnce {
        async fn occupants(&self, _: &[String]) -> Result<Vec<Occupancy>, ProbeError> {
            let call = {
                let mut calls = self.0.lock().unwrap();
                calls.push(Instant::now());
                calls.len()
            };
            assert_ne!(call, 2, "the source broke");
            Ok(vec![Occupancy::Known(5)])
        }
    }
    let source = PanicsOnce::default();
    let start = Instant::now();
    let handle = OccupancyHandle::spawn_with(
        &server(1),
        rooms(&["x"]),
        source.clone(),
        &Arc::new(Metrics::new()),
    );
    settle().await;
    pass(Duration::from_secs(100)).await;
    let offsets: Vec<u64> = source
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|t| (*t - start).as_secs())
        .collect();
    // 0 ok, 30 panics, restarted after one interval: 60, then 90.
    assert_eq!(offsets, [0, 30, 60, 90]);
    assert_eq!(people_in(&handle, "x"), Some(4));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_handle_stops_the_poller() {
    let source = Scripted::default();
    let handle = OccupancyHandle::spawn_with(
        &server(1),
        rooms(&["x"]),
        source.clone(),
        &Arc::new(Metrics::new()),
    );
    settle().await;
    drop(handle);
    pass(INTERVAL * 10).await;
    assert_eq!(source.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_server_without_occupancy_is_never_asked() {
    let source = Scripted::default();
    let mut off = server(1);
    off.occupancy = None;
    assert!(OccupancyHandle::spawn(&off, rooms(&["x"]), &Arc::new(Metrics::new())).is_none());
    let handle = OccupancyHandle::spawn_with(
        &off,
        rooms(&["x"]),
        source.clone(),
        &Arc::new(Metrics::new()),
    );
    pass(INTERVAL * 3).await;
    assert_eq!(source.calls(), 0);
    assert_eq!(people_in(&handle, "x"), None);
}

#[test]
fn the_focus_is_subtracted_from_a_live_room_only() {
    use Occupancy::*;
    // Jicofo alone: the room is live and empty of people.
    assert_eq!(people(Known(1), 1), Some(0));
    assert_eq!(people(Known(4), 1), Some(3));
    assert_eq!(people(Known(0), 1), Some(0));
    assert_eq!(people(Empty, 1), Some(0));
    assert_eq!(people(Known(2), 5), Some(0), "never below 0");
    assert_eq!(people(Known(3), 0), Some(3));
    assert_eq!(people(Known(u32::MAX), 1), Some(u32::MAX - 1));
    assert_eq!(people(Unknown, 1), None, "unknown is never 0");
    assert_eq!(people(Unknown, 0), None);
}

#[test]
fn a_server_is_asked_about_its_rooms_by_their_names_there() {
    let config = Config::parse(
        "servers:\n  a: { url: 'https://a.example' }\n  b: { url: 'https://b.example' }\n\
         rooms:\n  Lounge: {}\n  Cave: { servers: [b] }\n  \
         Elsewhere: { servers: [{ server: a, room: LOUNGE }, { server: b, room: Keller }] }\n",
        "t",
        Path::new("."),
    )
    .unwrap();
    assert_eq!(rooms_on(&config, 0), ["lounge"]);
    assert_eq!(rooms_on(&config, 1), ["lounge", "cave", "keller"]);
    assert!(rooms_on(&config, 2).is_empty());
}
