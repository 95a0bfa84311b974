//! Which HTTP worker serves a TCP connection, and where it runs.
//!
//! With `SO_REUSEPORT` alone the kernel picks a worker's socket by a hash of
//! the connection's addresses, so every client thread ends up talking to
//! every worker: a request is sent from one core and answered on the other,
//! and both sides wait for each other's core. Instead, when there is one
//! worker per CPU this process may run on, worker *i* sets `SO_INCOMING_CPU`
//! to the *i*-th CPU, and the kernel (Linux 6.2 and later, within a
//! reuseport group) gives it the connections that arrive on that CPU; the
//! worker's thread is kept on that CPU ([`pin_thread`]). A
//! local client such as nginx then talks to the worker on its own core, and
//! for clients from the network the CPU is the one the network card
//! delivered the packets to. On older kernels the option is ignored and the
//! hash applies, as before.
//!
//! Steering follows the client, so a client that opens many connections
//! from one core would pile them on one worker. So a worker that serves
//! [`MARGIN`] connections more than the least busy one hands each new one
//! over to it ([`Load::destination`]). And a client thread may move to
//! another core after it connected (a benchmark's threads, started on one
//! core, do): a kept-alive connection whose packets now arrive on another
//! worker's CPU is closed after an answer, so that the client's next
//! connection lands there ([`Check`]): only when two checks in a row agree,
//! at most once per connection (it ends), and never when that would
//! unbalance the workers ([`Load::misplaced`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// How many more open connections than the least busy worker a worker may
/// serve before it hands new ones over. Large enough that the ups and downs
/// of short-lived connections (64 clients connecting for every request, in
/// the benchmark) hand none over: that would undo the steering. A burst
/// from a client that then spreads over several cores is put right by
/// [`Load::misplaced`] instead; the margin is for clients that stay on one
/// core, whose connections a single worker would otherwise serve alone.
pub const MARGIN: usize = 64;

/// Which CPU a connection's packets arrive on, checked at its 16th, 32nd,
/// 64th, ... read of data: early, to catch a client that moved right after
/// connecting, and ever more rarely after that (one system call each).
#[derive(Default)]
pub struct Check {
    reads: u32,
    last: Option<usize>,
}

impl Check {
    /// Counts a read; at a checkpoint, asks `cpu` for the connection's CPU.
    /// True when this check and the one before found the same CPU, and that
    /// CPU's worker should serve the connection instead of worker `me`.
    pub fn read(&mut self, cpu: impl FnOnce() -> Option<usize>, load: &Load, me: usize) -> bool {
        self.reads = self.reads.wrapping_add(1);
        if self.reads < 16 || !self.reads.is_power_of_two() {
            return false;
        }
        let now = cpu();
        let agreed = now.is_some() && now == self.last;
        self.last = now;
        agreed && now.is_some_and(|cpu| load.misplaced(me, cpu))
    }
}

/// The CPUs this process may run on; `None` where the kernel does not say.
#[cfg(target_os = "linux")]
pub fn allowed_cpus() -> Option<Vec<usize>> {
    use rustix::thread::{sched_getaffinity, CpuSet};
    let set = sched_getaffinity(None).ok()?;
    Some(
        (0..CpuSet::MAX_CPU)
            .filter(|&cpu| set.is_set(cpu))
            .collect(),
    )
}

/// The CPUs this process may run on (Linux only).
#[cfg(not(target_os = "linux"))]
pub fn allowed_cpus() -> Option<Vec<usize>> {
    None
}

/// Keeps the calling thread on `cpu`: a worker stays on the CPU whose
/// connections it takes, so that the pairs of client and worker that
/// steering makes are not undone by the scheduler swapping workers.
#[cfg(target_os = "linux")]
pub fn pin_thread(cpu: usize) -> std::io::Result<()> {
    use rustix::thread::{sched_setaffinity, CpuSet};
    if cpu >= CpuSet::MAX_CPU {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    let mut set = CpuSet::new();
    set.set(cpu);
    Ok(sched_setaffinity(None, &set)?)
}

/// Keeps the calling thread on `cpu` (Linux only).
#[cfg(not(target_os = "linux"))]
pub fn pin_thread(_: usize) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// The CPU whose connections each of `workers` takes: the allowed CPUs in
/// order, when there is exactly one worker for each (and more than one).
/// `None` otherwise: with fewer workers than CPUs, some CPUs would have no
/// worker of their own, and the kernel's hash spreads connections better.
pub fn plan(workers: usize) -> Option<Vec<usize>> {
    allowed_cpus().filter(|cpus| workers > 1 && cpus.len() == workers)
}

/// The CPU that the last packet of `stream` arrived on.
#[cfg(target_os = "linux")]
pub fn incoming_cpu(stream: &tokio::net::TcpStream) -> Option<usize> {
    socket2::SockRef::from(stream).cpu_affinity().ok()
}

/// The CPU that the last packet of `stream` arrived on (Linux only).
#[cfg(not(target_os = "linux"))]
pub fn incoming_cpu(_: &tokio::net::TcpStream) -> Option<usize> {
    None
}

/// Sets the CPU whose connections `listener` takes.
#[cfg(target_os = "linux")]
pub fn set_incoming_cpu(listener: &tokio::net::TcpListener, cpu: usize) -> std::io::Result<()> {
    socket2::SockRef::from(listener).set_cpu_affinity(cpu)
}

/// Sets the CPU whose connections `listener` takes (Linux only).
#[cfg(not(target_os = "linux"))]
pub fn set_incoming_cpu(_: &tokio::net::TcpListener, _: usize) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// One counter on a cache line of its own: each worker writes its own.
#[derive(Default)]
#[repr(align(64))]
struct Count(AtomicUsize);

/// How many connections each worker serves, and which CPU's connections
/// each takes.
pub struct Load {
    open: Box<[Count]>,
    cpus: Vec<usize>,
    /// Connections closed so that their client reconnects to its CPU's
    /// worker.
    moved: AtomicU64,
}

impl Load {
    /// Counts for `workers` workers, all at zero; worker *i* takes the
    /// connections that arrive on `cpus[i]` (none if `cpus` is empty).
    pub fn new(workers: usize, cpus: Vec<usize>) -> Load {
        Load {
            open: (0..workers).map(|_| Count::default()).collect(),
            cpus,
            moved: AtomicU64::new(0),
        }
    }

    /// Worker `worker` serves one more connection.
    pub fn opened(&self, worker: usize) {
        if let Some(count) = self.open.get(worker) {
            count.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A connection of worker `worker` has ended. Never below zero: a count
    /// that wrapped would make the worker look the busiest for good.
    pub fn closed(&self, worker: usize) {
        if let Some(count) = self.open.get(worker) {
            let _ = count
                .0
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// How many connections `worker` serves.
    pub fn open(&self, worker: usize) -> usize {
        self.open
            .get(worker)
            .map_or(0, |count| count.0.load(Ordering::Relaxed))
    }

    /// Where worker `me` should send a connection it has just accepted: the
    /// least busy worker if `me` serves [`MARGIN`] or more connections more
    /// than it, else `None` (keep it). The caller counts the connection
    /// with [`Load::opened`] for whichever worker serves it.
    pub fn destination(&self, me: usize) -> Option<usize> {
        let mine = self.open(me);
        let (least, theirs) = (0..self.open.len())
            .map(|w| (w, self.open(w)))
            .min_by_key(|&(_, open)| open)?;
        (least != me && mine >= theirs + MARGIN).then_some(least)
    }

    /// Counts a connection closed by [`Load::misplaced`]'s verdict.
    pub fn moved(&self) {
        self.moved.fetch_add(1, Ordering::Relaxed);
    }

    /// How many connections were closed by [`Load::misplaced`]'s verdict.
    pub fn moved_count(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }

    /// Whether a connection of worker `me` whose packets arrive on `cpu`
    /// belongs to that CPU's worker instead, and moving it there leaves the
    /// two within [`MARGIN`] of each other.
    pub fn misplaced(&self, me: usize, cpu: usize) -> bool {
        let Some(home) = self.cpus.iter().position(|&c| c == cpu) else {
            return false;
        };
        home != me && self.open(home) + 2 < self.open(me) + MARGIN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpus() {
        if cfg!(target_os = "linux") {
            let cpus = allowed_cpus().expect("Cpus_allowed_list");
            assert!(!cpus.is_empty());
            assert_eq!(plan(cpus.len()).is_some(), cpus.len() > 1);
            assert_eq!(plan(cpus.len() + 1), None);
        }
    }

    /// A burst on one worker: it keeps [`MARGIN`], then every other one
    /// goes to the idle worker, until they are within the margin.
    #[test]
    fn a_burst_is_spread_and_the_usual_ups_and_downs_stay() {
        let load = Load::new(2, vec![0, 1]);
        let mut kept = 0;
        for _ in 0..3 * MARGIN {
            match load.destination(0) {
                None => {
                    kept += 1;
                    load.opened(0);
                }
                Some(other) => {
                    assert_eq!(other, 1);
                    load.opened(1);
                }
            }
        }
        assert_eq!(
            (kept, load.open(0), load.open(1)),
            (2 * MARGIN, 2 * MARGIN, MARGIN)
        );

        // Balanced: a few more on one side move nothing.
        let load = Load::new(3, vec![]);
        for w in 0..3 {
            for _ in 0..20 {
                load.opened(w);
            }
        }
        for _ in 0..MARGIN {
            assert_eq!(load.destination(2), None);
            load.opened(2);
        }
        assert_eq!(load.destination(2), Some(0));
        load.closed(0);
        load.closed(1);
        assert_eq!(load.destination(2), Some(0));
        assert_eq!(load.destination(0), None);
        // Out-of-range workers are ignored, not a panic; no count wraps.
        load.opened(7);
        load.closed(7);
        assert_eq!(load.open(7), 0);
        let fresh = Load::new(1, vec![]);
        fresh.closed(0);
        assert_eq!(fresh.open(0), 0);
    }

    #[test]
    fn two_checks_in_a_row_must_agree() {
        let load = Load::new(2, vec![0, 1]);
        let mut check = Check::default();
        let mut asked = Vec::new();
        let mut verdicts = Vec::new();
        // The client's CPU at reads 16, 32, 64, 128, 256: it moves to CPU 1
        // between 16 and 32, back to 0, then to 1 for good.
        let cpus = [Some(0), Some(1), Some(0), Some(1), Some(1)];
        let mut next = cpus.iter();
        for read in 1..=256u32 {
            let verdict = check.read(
                || {
                    asked.push(read);
                    *next.next().unwrap()
                },
                &load,
                0,
            );
            if verdict {
                verdicts.push(read);
            }
        }
        assert_eq!(asked, [16, 32, 64, 128, 256]);
        assert_eq!(verdicts, [256]);
        // Unknown CPUs never agree.
        let mut check = Check::default();
        for _ in 0..1024 {
            assert!(!check.read(|| None, &load, 0));
        }
    }

    #[test]
    fn a_connection_moves_to_its_cpu_unless_that_unbalances() {
        let load = Load::new(2, vec![4, 6]);
        // Worker 0 on CPU 4, worker 1 on CPU 6.
        for _ in 0..10 {
            load.opened(0);
            load.opened(1);
        }
        assert!(!load.misplaced(0, 4), "at home");
        assert!(load.misplaced(0, 6), "balanced: moves");
        assert!(!load.misplaced(0, 5), "a CPU without a worker");
        // Worker 1 serving MARGIN - 2 more: one more would be too many.
        for _ in 0..MARGIN - 2 {
            load.opened(1);
        }
        assert!(!load.misplaced(0, 6));
        assert!(load.misplaced(1, 4));
    }
}
