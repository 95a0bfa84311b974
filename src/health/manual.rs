//! Health set by hand, for tests and fuzz targets that need a server in a
//! given state at once, without waiting for probes to get it there.
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
