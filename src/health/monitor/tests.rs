//! Unit tests of `monitor`.

use super::*;
use std::collections::VecDeque;
use std::sync::Mutex;

/// A probe that replays scripted results and notes when it was called.
#[derive(Clone, Default)]
struct Scripted {
    results: Arc<Mutex<VecDeque<bool>>>,
    calls: Arc<Mutex<Vec<Instant>>>,
}

impl Probe for Scripted {
    async fn probe(&self) -> Result<Duration, ProbeError> {
        self.calls.lock().unwrap().push(Instant::now());
        let ok = self.results.lock().unwrap().pop_front().unwrap_or(true);
        if ok {
            Ok(Duration::from_millis(1))
        } else {
            Err(ProbeError::new("BOSH answered 502"))
        }
    }
}

fn server() -> Server {
    Server::test_primary()
}

/// Lets the prober run until it sleeps again.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn probes_fast_while_a_change_is_confirmed() {
    let probe = Scripted::default();
    // up, then a failure streak that turns it down, then recovery.
    probe
        .results
        .lock()
        .unwrap()
        .extend([true, false, false, false, true, true, true]);
    let start = Instant::now();
    let handle = ServerHandle::spawn_with(server(), probe.clone(), Arc::new(Metrics::new()), None);
    settle().await;
    assert!(handle.is_ready());
    assert_eq!(handle.state(Instant::now()).unwrap(), State::Up);

    let mut states = vec![];
    for _ in 0..6 {
        // Step time until the next probe has run.
        let before = probe.calls.lock().unwrap().len();
        while probe.calls.lock().unwrap().len() == before {
            tokio::time::advance(Duration::from_millis(500)).await;
            settle().await;
        }
        states.push(handle.state(Instant::now()).unwrap());
    }
    let offsets: Vec<u64> = probe
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|t| (*t - start).as_secs())
        .collect();
    // 0 up; +30 fail (1/2); +2 fail -> down; +30 (settled) fail;
    // +30 ok (1/2); +2 ok -> up; +30.
    assert_eq!(offsets, vec![0, 30, 32, 62, 92, 94, 124]);
    use State::*;
    assert_eq!(states, vec![Up, Down, Down, Down, Up, Up]);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_probe_is_cut_off_and_counts_as_failure() {
    struct Hangs;
    impl Probe for Hangs {
        async fn probe(&self) -> Result<Duration, ProbeError> {
            std::future::pending().await
        }
    }
    let handle = ServerHandle::spawn_with(server(), Hangs, Arc::new(Metrics::new()), None);
    settle().await;
    assert!(!handle.is_ready());
    tokio::time::advance(Duration::from_secs(3) + TERMINATE_BUDGET + PROBE_GRACE).await;
    settle().await;
    assert!(handle.is_ready());
    let health = handle.health().expect("a result");
    assert_eq!(health.state, State::Down);
    assert!(health.error.as_deref().unwrap().contains("did not end"));
}

#[tokio::test(start_paused = true)]
async fn a_prober_that_panics_is_restarted_and_says_why() {
    /// Panics on its second call; succeeds otherwise.
    #[derive(Clone, Default)]
    struct PanicsOnce(Arc<Mutex<u32>>);
    impl Probe for PanicsOnce {
        async fn probe(&self) -> Result<Duration, ProbeError> {
            let call = {
                let mut calls = self.0.lock().unwrap();
                *calls += 1;
                *calls
            };
            assert_ne!(call, 2, "the probe broke");
            Ok(Duration::from_millis(1))
        }
    }
    let (log, _logging) = crate::health::test_log::Log::capture();

    let probe = PanicsOnce::default();
    let handle = ServerHandle::spawn_with(server(), probe.clone(), Arc::new(Metrics::new()), None);
    settle().await;
    let first = handle.health().expect("the first probe succeeded");
    assert_eq!(first.state, State::Up);
    // The second probe, one interval later, panics.
    tokio::time::advance(Duration::from_secs(30)).await;
    settle().await;
    assert_eq!(*probe.0.lock().unwrap(), 2);
    let text = log.text();
    assert!(
        text.contains("ERROR") && text.contains("primary") && text.contains("the probe broke"),
        "{text}"
    );
    // After a short pause it probes again, into the same slot, and the
    // state goes on (still up, since unchanged) rather than from unknown.
    tokio::time::advance(Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(*probe.0.lock().unwrap(), 3);
    let again = handle.health().expect("a result");
    assert_eq!(again.state, State::Up);
    assert_eq!(again.since, first.since);
    assert!(again.last_check >= first.last_check);
    assert!(!Arc::ptr_eq(&first, &again), "a new result was published");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_handle_stops_the_prober() {
    let probe = Scripted::default();
    let handle = ServerHandle::spawn_with(server(), probe.clone(), Arc::new(Metrics::new()), None);
    settle().await;
    drop(handle);
    tokio::time::advance(Duration::from_secs(300)).await;
    settle().await;
    assert_eq!(probe.calls.lock().unwrap().len(), 1);
}
