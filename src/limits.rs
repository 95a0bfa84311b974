//! Process limits at startup: as many file descriptors as the system
//! allows, and a connection cap that fits in them.
//!
//! Every open connection is a file descriptor. If the cap were above the
//! descriptor limit, a flood of connections would make `accept` fail with
//! "too many open files" instead of getting the polite 503 of the cap, and
//! probes, reloads and log files would fail with it.

/// Descriptors kept back from the connection cap for everything else: the
/// listener, probe connections, the config file on reload, stdio, the
/// runtime's own.
pub const RESERVED_FDS: u64 = 64;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (the default soft limit
/// is often 1024) and returns the connection cap that fits under it:
/// `wanted`, or less when the limit is too low, with a warning.
pub fn fit_connection_cap(wanted: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!("cannot read or raise the open file limit: {e}");
            return wanted;
        }
    };
    let fits = usize::try_from(limit.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
    if fits < wanted {
        tracing::warn!(
            "open file limit is {limit}: capping connections at {fits} instead of {wanted}"
        );
        return fits.max(1);
    }
    tracing::info!("open file limit {limit}; at most {wanted} connections");
    wanted
}
