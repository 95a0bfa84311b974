//! Health set by hand, for tests and fuzz targets that need a server in a
//! given state at once, without waiting for probes to get it there. Both
//! places a probe result goes are written: the lock-free route word that
//! redirects read and the cache behind the status pages.
//!
//! Not part of the service: nothing in roomgate calls it. In production the
//! prober stays the only writer of a server's health.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Health, Monitor, ServerHandle, State};

/// How long a hand-set result is trusted: long enough for any test.
const MANUAL_TTL: Duration = Duration::from_secs(3600);

impl Monitor {
    /// Publishes `state` for `handle` as if probes had led to it; `Unknown`
    /// removes the result. The server's prober keeps running and overwrites
    /// this with its next result, so callers give the server a long
    /// `interval`. For tests and fuzzing only.
    #[doc(hidden)]
    pub async fn set_state_by_hand(&self, handle: &ServerHandle, state: State) {
        // What redirects read (no result reads as unknown)...
        handle.route.publish(state, MANUAL_TTL);
        // ...and what the status pages read.
        if state == State::Unknown {
            self.cache.invalidate(&handle.id).await;
            return;
        }
        let now = SystemTime::now();
        let health = Health {
            state,
            since: now,
            last_check: now,
            latency: None,
            error: (state == State::Down).then(|| "set by hand".to_owned()),
            ttl: MANUAL_TTL,
        };
        self.cache.insert(handle.id, Arc::new(health)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::Config;
    use crate::decision::Choice;
    use crate::gateway::{ConfigSource, Gateway};
    use crate::health::State;

    /// The fuzz target relies on this: what is set by hand is what requests
    /// are routed by.
    #[tokio::test]
    async fn redirects_follow_the_state_set_by_hand() {
        // Loopback ports nobody listens on; a day between probes, so that
        // only the first (failing) probe runs.
        let yaml = "servers:
  a: { url: 'http://127.0.0.1:9', check: { interval: 24h, timeout: 1s } }
  b: { url: 'http://127.0.0.1:9/b', check: { interval: 24h, timeout: 1s } }
rooms:
  Lounge: { servers: [a, b] }
";
        let config = Config::parse(yaml, "t.yaml", Path::new(".")).unwrap();
        let gw = Gateway::start(config, ConfigSource::File("t.yaml".into()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !gw.is_ready() {
            assert!(tokio::time::Instant::now() < deadline, "not ready");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let snap = gw.snapshot();
        let (a, b) = (&snap.servers[0], &snap.servers[1]);
        for (sa, sb, want) in [
            (State::Down, State::Up, Choice::Target(1)),
            (State::Up, State::Up, Choice::Target(0)),
            (State::Down, State::Unknown, Choice::Target(1)),
            (State::Unknown, State::Up, Choice::Target(1)),
            (State::Down, State::Down, Choice::Target(0)),
        ] {
            gw.monitor().set_state_by_hand(a, sa).await;
            gw.monitor().set_state_by_hand(b, sb).await;
            assert_eq!(
                gw.choose(&snap, [0, 1].into_iter()).await,
                want,
                "{sa:?} {sb:?}"
            );
            let status = gw.monitor().state(a).await;
            assert_eq!(status, sa, "the status pages see it too");
        }
    }
}
