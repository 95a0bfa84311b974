//! The processes the bench starts, and what `/proc` says about them: CPU
//! time, resident memory, the TCP connections the kernel accepted.

use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::die;

/// Servers started by this run; `process::exit` runs no destructors, so they
/// are stopped from here on every way out.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// How long the servers get to exit after SIGTERM before SIGKILL.
const STOP_BOUND: Duration = Duration::from_secs(5);

/// SIGTERM to every server started (nginx's master then stops its workers),
/// a bounded wait until they are gone, SIGKILL to any still there.
pub fn stop_children() {
    let pids = std::mem::take(&mut *CHILDREN.lock().unwrap_or_else(|e| e.into_inner()));
    stop(&pids);
}

/// Stops `pids` as [`stop_children`] does, and forgets them.
pub fn stop(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| !pids.contains(p));
    signal("-TERM", pids);
    let deadline = Instant::now() + STOP_BOUND;
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    if !left.is_empty() {
        eprintln!("load bench: {left:?} still running after SIGTERM; SIGKILL");
        signal("-KILL", &left);
    }
}

fn signal(sig: &str, pids: &[u32]) {
    let _ = std::process::Command::new("kill")
        .arg(sig)
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// Whether `pid` still runs (a zombie waiting to be reaped does not).
fn alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|state| *state != "Z"))
}

/// Runs `argv` with the open-file limit raised to the hard limit, as any
/// server facing thousands of connections is run; stderr goes to `log`.
pub fn spawn(argv: &[&str], log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap_or_else(|e| die(&format!("log file: {e}")));
    let child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n \"$(ulimit -H -n)\"; exec \"$@\"")
        .arg("sh")
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| die(&format!("cannot start {}: {e}", argv[0])));
    if let Some(pid) = child.id() {
        track(pid);
    }
    child
}

/// Adds `pid` to the processes [`stop_children`] stops.
pub fn track(pid: u32) {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
}

/// Removes `pid` (which has exited) from them.
pub fn untrack(pid: u32) {
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|&p| p != pid);
}

/// The fields of `/proc/<pid>/stat` after the command name, from the state
/// (field 3) on.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// `pid` and its direct children (nginx's master and its workers).
pub fn tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in dir.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // Field 4, the parent, is the second after the command name.
        if stat_fields(child).is_some_and(|f| f.get(1).is_some_and(|p| *p == pid.to_string())) {
            pids.push(child);
        }
    }
    pids
}

/// User + system CPU time of `pids` (all their threads, live and exited), in
/// clock ticks.
pub fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&p| stat_fields(p))
        .map(|f| {
            // utime and stime are fields 14 and 15: 11 and 12 after the state.
            let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            tick(11) + tick(12)
        })
        .sum()
}

/// Clock ticks per second (`getconf CLK_TCK`, almost always 100).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// `VmRSS` of `pids` together, in KiB.
pub fn rss_kb(pids: &[u32]) -> u64 {
    pids.iter().map(|&p| status_kb(p, "VmRSS:")).sum()
}

/// A `kB` field of `/proc/<pid>/status`.
pub fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// TCP connections the kernel has accepted in this network namespace
/// (`PassiveOpens` in `/proc/net/snmp`): the bench's own count of new
/// connections, whatever the load generator reports.
pub fn tcp_accepts() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "PassiveOpens")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Whether a program is installed (on the PATH or in /usr/sbin).
pub fn need(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(tool).is_file();
    if !found {
        die(&format!(
            "`{tool}` not found; install it (Debian: apt-get install nginx haproxy wrk)"
        ));
    }
}

/// Where to run `name` from: /usr/sbin (not on every PATH) or the PATH.
pub fn tool(name: &str) -> String {
    let sbin = Path::new("/usr/sbin").join(name);
    if sbin.is_file() {
        sbin.display().to_string()
    } else {
        name.to_owned()
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| die(&format!("no free port: {e}")))
}
