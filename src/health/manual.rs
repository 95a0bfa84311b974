//! Health set by hand, for tests and fuzz targets that need a server in a
//! given state at once, without waiting for probes to get it there. It is
//! published where probe results go, so redirects and status pages see it.
//!
//! Not part of the service: nothing in roomgate calls it. In production the
//! prober stays the only writer of a server's health.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{Health, ServerHandle, State};

/// How long a hand-set result is trusted: long enough for any test.
const MANUAL_TTL: Duration = Duration::from_secs(3600);

impl ServerHandle {
    /// Publishes `state` as if probes had led to it; `Unknown` removes the
    /// result. The server's prober keeps running and overwrites this with
    /// its next result, so callers give the server a long `interval`. For
    /// tests and fuzzing only.
    #[doc(hidden)]
    pub fn set_state_by_hand(&self, state: State) {
        let now = SystemTime::now();
        self.publish((state != State::Unknown).then(|| Health {
            state,
            since: now,
            last_check: now,
            latency: None,
            error: (state == State::Down).then(|| "set by hand".to_owned()),
            expires: Instant::now() + MANUAL_TTL,
        }));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::Config;
    use crate::decision::Choice;
    use crate::gateway::{ConfigSource, Gateway};
    use crate::health::{Health, State};
    use std::time::SystemTime;
    use tokio::time::Instant;

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
            a.set_state_by_hand(sa);
            b.set_state_by_hand(sb);
            let room = &snap.routes.rooms[0];
            assert_eq!(snap.choose(room.servers()).await, want, "{sa:?} {sb:?}");
            let health = a.health().map_or(State::Unknown, |h| h.state);
            assert_eq!(health, sa, "the status pages see it too");
        }
    }

    /// A result past its expiry reads as unknown, never as its state: a
    /// prober that stopped publishing cannot keep a server "up".
    #[tokio::test(start_paused = true)]
    async fn an_expired_result_reads_as_unknown() {
        let now = Instant::now();
        let health = Health {
            state: State::Up,
            since: SystemTime::now(),
            last_check: SystemTime::now(),
            latency: None,
            error: None,
            expires: now + Duration::from_secs(90),
        };
        assert_eq!(health.state_at(now), State::Up);
        tokio::time::advance(Duration::from_secs(89)).await;
        assert_eq!(health.state_at(Instant::now()), State::Up);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(health.state_at(Instant::now()), State::Unknown);
    }
}
