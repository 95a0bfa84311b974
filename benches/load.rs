//! Load comparison: roomgate against what an admin would otherwise write.
//!
//! Run with `cargo bench --bench load` (options after `--`, see `--help`).
//! Needs `nginx`, `haproxy` and `wrk` on the PATH (Debian: `apt-get install
//! nginx haproxy wrk`).
//!
//! On loopback it starts:
//! - roomgate (this crate's release binary) with a two-server routes.yaml;
//! - nginx with the same rooms as static `return 302` locations (no health
//!   checks at all: the lower bound of work a redirect can be);
//! - HAProxy with a health-aware `http-request redirect ... if { nbsrv(..) gt
//!   0 }` per room (the closest existing tool);
//! - stand-in Jitsi servers (`tests/it/support/standin.rs`) for the health
//!   checks: one pair probed by roomgate, one by HAProxy, so that each one's
//!   probes can be counted.
//!
//! Then it drives each with the same `wrk` command, interleaved (A B C, B C A,
//! ... for every round), and prints and writes requests/s and p50/p99 per
//! system, and the median per-round ratio roomgate/nginx and
//! roomgate/HAProxy. Results go to `benches/results/` (`results.json`,
//! `results.md`, `chart.svg`); the README's Performance section is built from
//! them.

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{Mode, StandIn};
use tokio::process::{Child, Command};

/// The User-Agent header every benchmark request carries.
const BROWSER: &str =
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";

/// Rooms served by all three systems; the benchmark requests the first.
const ROOMS: [&str; 4] = ["Lounge", "Hackcenter", "Cave", "Freitagsfoo"];

/// Probe settings shared by roomgate and HAProxy.
const INTERVAL: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_secs(1);

struct Options {
    rounds: usize,
    duration: u64,
    scenarios: Vec<u8>,
    out: PathBuf,
    threads: usize,
}

fn options() -> Options {
    let mut o = Options {
        rounds: 5,
        duration: 5,
        scenarios: vec![1, 2, 3, 4],
        out: Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results"),
        threads: 2,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| die(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--rounds" => o.rounds = parse(&value("--rounds")),
            "--duration" => o.duration = parse(&value("--duration")),
            "--threads" => o.threads = parse(&value("--threads")),
            "--out" => o.out = PathBuf::from(value("--out")),
            "--scenarios" => {
                o.scenarios = value("--scenarios").split(',').map(parse).collect();
            }
            "--bench" => {} // added by `cargo bench`
            "-h" | "--help" => {
                println!(
                    "cargo bench --bench load -- [--rounds N (5)] [--duration SECONDS (5)] \
                     [--scenarios 1,2,3,4] [--threads WRK_THREADS (2)] [--out DIR (benches/results)]"
                );
                std::process::exit(0);
            }
            other => die(&format!("unknown option {other}; try --help")),
        }
    }
    if o.rounds < 1 || o.duration < 1 {
        die("--rounds and --duration must be at least 1");
    }
    o
}

fn parse<T: std::str::FromStr>(s: &str) -> T {
    s.trim()
        .parse()
        .unwrap_or_else(|_| die(&format!("not a number: {s}")))
}

fn die(msg: &str) -> ! {
    eprintln!("load bench: {msg}");
    stop_children();
    std::process::exit(2)
}

/// Servers started by this run; `process::exit` runs no destructors, so they
/// are stopped from here on every way out.
static CHILDREN: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// SIGTERM to every server started (nginx's master then stops its workers).
fn stop_children() {
    let pids = std::mem::take(&mut *CHILDREN.lock().unwrap_or_else(|e| e.into_inner()));
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
}

/// One load setting, run against every system.
struct Scenario {
    id: u8,
    name: &'static str,
    connections: usize,
    close: bool,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        id: 1,
        name: "steady, 64 keep-alive connections",
        connections: 64,
        close: false,
    },
    Scenario {
        id: 2,
        name: "1,000 keep-alive connections",
        connections: 1000,
        close: false,
    },
    Scenario {
        id: 3,
        name: "new connection per request, 64 at a time",
        connections: 64,
        close: true,
    },
    Scenario {
        id: 4,
        name: "primary black-holed, 64 keep-alive connections",
        connections: 64,
        close: false,
    },
];

/// What one wrk run measured.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    requests: u64,
    errors: u64,
}

/// A system under test.
struct System {
    name: &'static str,
    url: String,
    child: Child,
}

impl System {
    fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| die(&format!("no free port: {e}")))
}

/// Runs `argv` with the open-file limit raised, as any server facing 1,000
/// connections is run.
fn spawn(argv: &[&str], log: &Path) -> Child {
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
        CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
    }
    child
}

fn need(tool: &str) {
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

fn tool(name: &str) -> String {
    let sbin = Path::new("/usr/sbin").join(name);
    if sbin.is_file() {
        sbin.display().to_string()
    } else {
        name.to_owned()
    }
}

fn routes_yaml(primary: &str, backup: &str) -> String {
    let mut y = format!(
        "servers:\n  primary:\n    url: {primary}\n    check: {{ interval: {i}s, fast_interval: {i}s, timeout: {t}s }}\n  \
         backup:\n    url: {backup}\n    check: {{ interval: {i}s, fast_interval: {i}s, timeout: {t}s }}\nrooms:\n",
        i = INTERVAL.as_secs(),
        t = TIMEOUT.as_secs(),
    );
    for room in ROOMS {
        let _ = writeln!(y, "  {room}: {{ servers: [primary, backup] }}");
    }
    y
}

fn nginx_conf(dir: &Path, port: u16, primary: &str) -> String {
    let d = dir.display();
    let mut locations = String::new();
    for room in ROOMS {
        let _ = writeln!(
            locations,
            "        location = /{room} {{ return 302 {primary}/{room}; }}"
        );
    }
    format!(
        "worker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n    access_log off;\n    keepalive_requests 1000000;\n    keepalive_timeout 65s;\n\
         \x20   client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n\
         \x20   server {{\n        listen 127.0.0.1:{port} reuseport;\n{locations}        location / {{ return 404; }}\n    }}\n}}\n"
    )
}

fn haproxy_cfg(port: u16, primary: &StandIn, backup: &StandIn) -> String {
    let mut redirects = String::new();
    for room in ROOMS {
        let _ = writeln!(
            redirects,
            "    http-request redirect location {p}/{room} code 302 if {{ path /{room} }} {{ nbsrv(primary) gt 0 }}\n    \
             http-request redirect location {b}/{room} code 302 if {{ path /{room} }}",
            p = primary.url(),
            b = backup.url(),
        );
    }
    let check = |name: &str, s: &StandIn| {
        format!(
            "backend {name}\n    option httpchk\n    http-check send meth GET uri /config.js ver HTTP/1.1 hdr Host localhost\n    \
             timeout check {t}s\n    \
             server {name} {addr} check inter {i}s fastinter {i}s fall 2 rise 2\n",
            addr = s.addr(),
            i = INTERVAL.as_secs(),
            t = TIMEOUT.as_secs(),
        )
    };
    format!(
        "global\n    maxconn 8000\n    nbthread 2\n\ndefaults\n    mode http\n    timeout connect 1s\n    \
         timeout client 30s\n    timeout server 30s\n    timeout http-keep-alive 65s\n\n\
         frontend gateway\n    bind 127.0.0.1:{port}\n{redirects}    http-request return status 404\n\n{}\n{}",
        check("primary", primary),
        check("backup", backup),
    )
}

/// Polls `url` until it answers `want`.
async fn wait_status(url: &str, want: u16, bound: Duration) {
    let deadline = Instant::now() + bound;
    loop {
        if let Ok(resp) = support::Req::get(url)
            .timeout(Duration::from_secs(1))
            .send()
            .await
        {
            if resp.status.as_u16() == want {
                return;
            }
        }
        if Instant::now() > deadline {
            die(&format!("{url} did not answer {want} within {bound:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `url` until its Location starts with `prefix`.
async fn wait_location(url: &str, prefix: &str, bound: Duration) {
    let deadline = Instant::now() + bound;
    loop {
        let last = support::Req::get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if let Ok(resp) = &last {
            if resp
                .header("location")
                .is_some_and(|l| l.starts_with(prefix))
            {
                return;
            }
        }
        if Instant::now() > deadline {
            die(&format!(
                "{url} did not redirect to {prefix} within {bound:?}; last answer: {last:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wrk(url: &str, s: &Scenario, o: &Options) -> Run {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n \"$(ulimit -H -n)\"; exec \"$@\"")
        .arg("sh")
        .arg("wrk")
        .arg(format!("-t{}", o.threads.min(s.connections)))
        .arg(format!("-c{}", s.connections))
        .arg(format!("-d{}s", o.duration))
        .args(["--timeout", "5s", "--latency"])
        // A browser's User-Agent, as real visitors send: roomgate checks it
        // against the link-preview fetchers on every request.
        .args(["-H", BROWSER]);
    if s.close {
        cmd.args(["-H", "Connection: close"]);
    }
    let out = cmd
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| die(&format!("wrk: {e}")));
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        die(&format!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse_wrk(&text).unwrap_or_else(|| die(&format!("cannot read wrk output:\n{text}")))
}

/// Reads requests/s, p50, p99, requests and errors from wrk's `--latency`
/// output.
fn parse_wrk(text: &str) -> Option<Run> {
    let mut run = Run::default();
    let mut seen = 0;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => {
                run.p50_us = micros(v)?;
                seen += 1;
            }
            ["99%", v] => {
                run.p99_us = micros(v)?;
                seen += 1;
            }
            ["Requests/sec:", v] => {
                run.rps = v.parse().ok()?;
                seen += 1;
            }
            [n, "requests", "in", ..] => run.requests = n.parse().ok()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => run.errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                for w in rest {
                    if let Ok(n) = w.trim_end_matches(',').parse::<u64>() {
                        run.errors += n;
                    }
                }
            }
            _ => {}
        }
    }
    (seen == 3).then_some(run)
}

fn micros(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        "m" => n * 60e6,
        _ => return None,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `VmRSS` and `VmHWM` of a process, in kB.
fn rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let version = |cmd: &str, arg: &str| {
        std::process::Command::new(tool(cmd))
            .arg(arg)
            .output()
            .map(|o| {
                let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
                s.push_str(&String::from_utf8_lossy(&o.stderr));
                s.lines().next().unwrap_or("").trim().to_owned()
            })
            .unwrap_or_default()
    };
    json!({
        "cores": cores,
        "cpu": model,
        "nginx": version("nginx", "-v"),
        "haproxy": version("haproxy", "-v"),
        "wrk": version("wrk", "-v"),
    })
}

fn main() {
    let o = options();
    for t in ["nginx", "haproxy", "wrk"] {
        need(t);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| die(&format!("runtime: {e}")));
    // Exits from the watcher itself: dropping the run instead would SIGKILL
    // nginx's master (`kill_on_drop`) and leave its workers behind.
    runtime.spawn(async {
        let signal = interrupted().await;
        die(&format!("stopped by {signal}; stopping the servers"));
    });
    runtime.block_on(bench(o));
}

/// Completes on SIGINT or SIGTERM, so that an interrupted run (Ctrl-C,
/// `timeout`, CI) still stops the servers it started.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

async fn bench(o: Options) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| die(&format!("tempdir: {e}")));
    let d = dir.path();
    let binary = env!("CARGO_BIN_EXE_roomgate");
    let binary_bytes = std::fs::metadata(binary).map_or(0, |m| m.len());

    // Health-check targets: one pair for roomgate, one for HAProxy.
    let rg_primary = StandIn::http(Mode::Healthy).await;
    let rg_backup = StandIn::http(Mode::Healthy).await;
    let hp_primary = StandIn::http(Mode::Healthy).await;
    let hp_backup = StandIn::http(Mode::Healthy).await;

    let started = Instant::now();
    let rg_port = free_port();
    let routes = d.join("routes.yaml");
    std::fs::write(&routes, routes_yaml(&rg_primary.url(), &rg_backup.url()))
        .unwrap_or_else(|e| die(&format!("write: {e}")));
    let roomgate = System {
        name: "roomgate",
        url: format!("http://127.0.0.1:{rg_port}"),
        child: spawn(
            &[
                binary,
                "--config",
                &routes.display().to_string(),
                "--listen",
                &format!("127.0.0.1:{rg_port}"),
            ],
            &d.join("roomgate.log"),
        ),
    };

    let ng_port = free_port();
    let ng_conf = d.join("nginx.conf");
    std::fs::write(&ng_conf, nginx_conf(d, ng_port, &rg_primary.url()))
        .unwrap_or_else(|e| die(&format!("write: {e}")));
    let nginx_bin = tool("nginx");
    let nginx = System {
        name: "nginx",
        url: format!("http://127.0.0.1:{ng_port}"),
        child: spawn(
            &[
                &nginx_bin,
                "-p",
                &d.display().to_string(),
                "-c",
                &ng_conf.display().to_string(),
                "-e",
                &d.join("nginx-error.log").display().to_string(),
                "-g",
                "daemon off;",
            ],
            &d.join("nginx.log"),
        ),
    };

    let hp_port = free_port();
    let hp_cfg = d.join("haproxy.cfg");
    std::fs::write(&hp_cfg, haproxy_cfg(hp_port, &hp_primary, &hp_backup))
        .unwrap_or_else(|e| die(&format!("write: {e}")));
    let haproxy_bin = tool("haproxy");
    let haproxy = System {
        name: "haproxy",
        url: format!("http://127.0.0.1:{hp_port}"),
        child: spawn(
            &[&haproxy_bin, "-db", "-f", &hp_cfg.display().to_string()],
            &d.join("haproxy.log"),
        ),
    };

    wait_status(
        &format!("{}/readyz", roomgate.url),
        200,
        Duration::from_secs(15),
    )
    .await;
    wait_location(
        &format!("{}/Lounge", roomgate.url),
        &rg_primary.url(),
        Duration::from_secs(15),
    )
    .await;
    wait_status(
        &format!("{}/Lounge", nginx.url),
        302,
        Duration::from_secs(15),
    )
    .await;
    wait_location(
        &format!("{}/Lounge", haproxy.url),
        &hp_primary.url(),
        Duration::from_secs(15),
    )
    .await;
    let rg_pid = roomgate.pid().unwrap_or(0);
    let (idle_rss, _) = rss_kb(rg_pid);
    println!(
        "roomgate {} ({} bytes), idle RSS {idle_rss} kB; {} round(s) of {} s per system and scenario",
        binary,
        binary_bytes,
        o.rounds,
        o.duration
    );

    let systems = [&roomgate, &nginx, &haproxy];
    let mut results = Vec::new();
    let mut peak_rss_s2 = 0;
    let steady_counts = (rg_primary.counts(), rg_backup.counts(), Instant::now());
    let mut steady_end = None;
    for scenario in SCENARIOS.iter().filter(|s| o.scenarios.contains(&s.id)) {
        if scenario.id == 4 {
            steady_end = Some((rg_primary.counts(), rg_backup.counts(), Instant::now()));
            rg_primary.set_mode(Mode::BlackHole).await;
            hp_primary.set_mode(Mode::BlackHole).await;
            let bound = Duration::from_secs(30);
            wait_location(&format!("{}/Lounge", roomgate.url), &rg_backup.url(), bound).await;
            wait_location(&format!("{}/Lounge", haproxy.url), &hp_backup.url(), bound).await;
        }
        println!("\nscenario {}: {}", scenario.id, scenario.name);
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); systems.len()];
        for round in 0..o.rounds {
            for k in 0..systems.len() {
                let i = (round + k) % systems.len();
                let sys = systems[i];
                let run = wrk(&format!("{}/Lounge", sys.url), scenario, &o).await;
                println!(
                    "  round {} {:<8} {:>9.0} req/s  p50 {:>8.0} us  p99 {:>8.0} us  errors {}",
                    round + 1,
                    sys.name,
                    run.rps,
                    run.p50_us,
                    run.p99_us,
                    run.errors
                );
                runs[i].push(run);
            }
        }
        if scenario.id == 2 {
            peak_rss_s2 = rss_kb(rg_pid).1;
        }
        let ratio = |other: usize| {
            median(
                runs[0]
                    .iter()
                    .zip(&runs[other])
                    .map(|(a, b)| a.rps / b.rps)
                    .collect(),
            )
        };
        let (vs_nginx, vs_haproxy) = (ratio(1), ratio(2));
        let mut per_system = serde_json::Map::new();
        for (sys, runs) in systems.iter().zip(&runs) {
            let med = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
            per_system.insert(
                sys.name.to_owned(),
                json!({
                    "rps": med(|r| r.rps),
                    "p50_us": med(|r| r.p50_us),
                    "p99_us": med(|r| r.p99_us),
                    "errors": runs.iter().map(|r| r.errors).sum::<u64>(),
                    "requests": runs.iter().map(|r| r.requests).sum::<u64>(),
                    "runs": runs.iter().map(|r| json!([r.rps, r.p50_us, r.p99_us])).collect::<Vec<_>>(),
                }),
            );
        }
        println!(
            "  median ratio requests/s: roomgate/nginx {vs_nginx:.3}, roomgate/haproxy {vs_haproxy:.3}"
        );
        results.push(json!({
            "id": scenario.id,
            "name": scenario.name,
            "connections": scenario.connections,
            "keep_alive": !scenario.close,
            "systems": per_system,
            "ratio_nginx": vs_nginx,
            "ratio_haproxy": vs_haproxy,
        }));
    }
    if o.scenarios.contains(&4) {
        rg_primary.set_mode(Mode::Healthy).await;
        hp_primary.set_mode(Mode::Healthy).await;
    }

    // Scenario 5: probes during the load scenarios with steady health
    // (1-3), whatever the request rate, against run time / interval.
    let end = steady_end.unwrap_or((rg_primary.counts(), rg_backup.counts(), Instant::now()));
    let secs = end.2.duration_since(steady_counts.2).as_secs_f64();
    let bound = (secs / INTERVAL.as_secs_f64()).floor() + 2.0;
    let probes_primary = end.0.config_js - steady_counts.0.config_js;
    let probes_backup = end.1.config_js - steady_counts.1.config_js;
    let requests: u64 = results
        .iter()
        .filter(|r| r["id"].as_u64() != Some(4))
        .filter_map(|r| r["systems"]["roomgate"]["requests"].as_u64())
        .sum();
    println!(
        "\nscenario 5: probe amplification over {secs:.1} s of load ({requests} roomgate requests): \
         primary {probes_primary}, backup {probes_backup} probes; bound run time / interval + 2 = {bound}"
    );
    let whole = started.elapsed().as_secs_f64();
    let (_, peak_rss) = rss_kb(rg_pid);
    println!(
        "whole run {whole:.0} s: {} + {} probes (includes the black-hole transitions)",
        rg_primary.counts().config_js,
        rg_backup.counts().config_js
    );
    println!("roomgate RSS: idle {idle_rss} kB, peak after scenario 2 {peak_rss_s2} kB, peak overall {peak_rss} kB");

    let report = json!({
        "machine": machine(),
        "rounds": o.rounds,
        "duration_s": o.duration,
        "wrk_threads": o.threads,
        "command": "cargo bench --bench load",
        "scenarios": results,
        "probes": {
            "seconds": secs,
            "interval_s": INTERVAL.as_secs(),
            "bound": bound,
            "primary": probes_primary,
            "backup": probes_backup,
            "requests": requests,
        },
        "roomgate": {
            "binary_bytes": binary_bytes,
            "idle_rss_kb": idle_rss,
            "peak_rss_scenario2_kb": peak_rss_s2,
            "peak_rss_kb": peak_rss,
        },
    });
    write_results(&o.out, &report);
    stop_children();
}

fn write_results(out: &Path, report: &Value) {
    if let Err(e) = std::fs::create_dir_all(out) {
        die(&format!("{}: {e}", out.display()));
    }
    let json = serde_json::to_string_pretty(report).unwrap_or_default();
    let md = markdown(report);
    let svg = chart(report);
    for (name, text) in [
        ("results.json", json),
        ("results.md", md),
        ("chart.svg", svg),
    ] {
        let path = out.join(name);
        if let Err(e) = std::fs::write(&path, text) {
            die(&format!("{}: {e}", path.display()));
        }
        println!("wrote {}", path.display());
    }
}

const NAMES: [&str; 3] = ["roomgate", "nginx", "haproxy"];

fn markdown(r: &Value) -> String {
    let m = &r["machine"];
    let mut s = format!(
        "Measured on {} core(s), {}; {} rounds of {} s per system, interleaved; wrk with {} threads on the same machine.\n\n\
         | scenario | system | requests/s | p50 | p99 | errors | roomgate / this |\n|---|---|---:|---:|---:|---:|---:|\n",
        m["cores"],
        m["cpu"].as_str().unwrap_or("?"),
        r["rounds"],
        r["duration_s"],
        r["wrk_threads"],
    );
    for sc in r["scenarios"].as_array().into_iter().flatten() {
        for name in NAMES {
            let x = &sc["systems"][name];
            let ratio = match name {
                "nginx" => format!("{:.2}×", sc["ratio_nginx"].as_f64().unwrap_or(f64::NAN)),
                "haproxy" => format!("{:.2}×", sc["ratio_haproxy"].as_f64().unwrap_or(f64::NAN)),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "| {} {} | {name} | {:.0} | {} | {} | {} | {ratio} |",
                sc["id"],
                sc["name"].as_str().unwrap_or(""),
                x["rps"].as_f64().unwrap_or(0.0),
                latency(x["p50_us"].as_f64()),
                latency(x["p99_us"].as_f64()),
                x["errors"],
            );
        }
    }
    let p = &r["probes"];
    let g = &r["roomgate"];
    let _ = write!(
        s,
        "\nProbes during {:.0} s of load ({} roomgate requests, interval {} s): primary {}, backup {}; \
         bound run time / interval + 2 = {}.\n\nroomgate: binary {} bytes, idle RSS {} kB, \
         peak RSS after scenario 2 {} kB.\n",
        p["seconds"].as_f64().unwrap_or(0.0),
        p["requests"],
        p["interval_s"],
        p["primary"],
        p["backup"],
        p["bound"],
        g["binary_bytes"],
        g["idle_rss_kb"],
        g["peak_rss_scenario2_kb"],
    );
    s
}

fn latency(us: Option<f64>) -> String {
    match us {
        Some(us) if us >= 1000.0 => format!("{:.2} ms", us / 1000.0),
        Some(us) => format!("{us:.0} µs"),
        None => "?".into(),
    }
}

/// A grouped bar chart of median requests/s per scenario and system.
fn chart(r: &Value) -> String {
    let scenarios: Vec<&Value> = r["scenarios"].as_array().into_iter().flatten().collect();
    let colors = ["#2b7a4b", "#3b6fb6", "#b5651d"];
    let max = scenarios
        .iter()
        .flat_map(|sc| {
            NAMES
                .iter()
                .map(move |n| sc["systems"][n]["rps"].as_f64().unwrap_or(0.0))
        })
        .fold(1.0, f64::max);
    let (w, h, left, top, bottom) = (640.0, 300.0, 60.0, 30.0, 60.0);
    let plot_h = h - top - bottom;
    let group_w = (w - left - 10.0) / scenarios.len().max(1) as f64;
    let bar_w = group_w / 4.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n\
         <text x=\"{left}\" y=\"18\" font-size=\"13\">Median requests/s per scenario ({} core(s), higher is better)</text>\n",
        r["machine"]["cores"]
    );
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let y = top + plot_h - plot_h * k as f64 / 4.0;
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{:.0}k</text>",
            w - 10.0,
            left - 4.0,
            y + 4.0,
            v / 1000.0
        );
    }
    for (g, sc) in scenarios.iter().enumerate() {
        let x0 = left + g as f64 * group_w + bar_w / 2.0;
        for (k, name) in NAMES.iter().enumerate() {
            let v = sc["systems"][name]["rps"].as_f64().unwrap_or(0.0);
            let bh = plot_h * v / max;
            let _ = writeln!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{}\"><title>{name}: {v:.0} req/s</title></rect>",
                x0 + k as f64 * bar_w,
                top + plot_h - bh,
                bar_w - 2.0,
                colors[k]
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">scenario {}</text>",
            x0 + 1.5 * bar_w,
            top + plot_h + 16.0,
            sc["id"]
        );
    }
    for (k, name) in NAMES.iter().enumerate() {
        let x = left + k as f64 * 110.0;
        let _ = writeln!(
            s,
            "<rect x=\"{x}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{name}</text>",
            h - 22.0,
            colors[k],
            x + 14.0,
            h - 13.0
        );
    }
    s.push_str("</svg>\n");
    s
}
