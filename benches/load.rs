//! Load-shape matrix: roomgate against what an admin would otherwise write.
//!
//! Run with `cargo bench --bench load`. Needs `nginx`, `haproxy` and `wrk`
//! (Debian: `apt-get install nginx haproxy wrk`). Everything runs on
//! loopback; a full run with the defaults takes about 4.5 minutes (16 wrk
//! runs per round, 3 rounds of 5 s, plus about 15 s of start and memory
//! measurement).
//!
//! Settings, from the environment (defaults in brackets):
//!
//! - `ROOMGATE_BENCH_ROUNDS` [3]: rounds per shape. In each round every
//!   contender of the shape runs once, in rotated order (A B C, B C A, ...).
//! - `ROOMGATE_BENCH_SECONDS` [5]: length of one wrk run.
//! - `ROOMGATE_BENCH_SHAPES` [ABCDEF]: the shapes to run (always in the
//!   order A-F, H); `H` (like B with the primary Jitsi server black-holed)
//!   is not in the default.
//! - `ROOMGATE_BENCH_IDLE` [3000]: idle keep-alive connections for the
//!   memory measurement; 0 skips it.
//! - `ROOMGATE_BENCH_FRONT_WORKERS` [2]: worker processes of the front nginx
//!   in shapes E and F.
//! - `ROOMGATE_BENCH_OUT` [benches/results]: where results go.
//!
//! For example, a smoke run of about 25 s: `ROOMGATE_BENCH_ROUNDS=1
//! ROOMGATE_BENCH_SECONDS=1 ROOMGATE_BENCH_OUT=/tmp/lb cargo bench --bench
//! load`.
//!
//! The contenders, all started by the bench:
//! - roomgate: this crate's release binary with its default worker count and
//!   a two-server routes.yaml (a second one on a unix socket for shape F);
//! - nginx with the same rooms as static `return 302` locations (no health
//!   checks at all: the lower bound of work a redirect can be);
//! - HAProxy with a health-aware `http-request redirect location ... code 302
//!   if { nbsrv(primary) gt 0 }` per room (the closest existing tool);
//! - stand-in Jitsi servers (`tests/it/support/standin.rs`) for the health
//!   checks, a pair per roomgate and one for HAProxy, so that probes can be
//!   counted.
//!
//! nginx and HAProxy run as many workers (threads) as roomgate does by
//! default, one per CPU; no one writes an access log. The front nginx of
//! shapes E and F is built from the shipped `deploy/nginx/` files (see
//! `load/servers.rs` for the substitutions) and serves plain HTTP; one nginx
//! serves all three of its sites, so that both contenders of E and F go
//! through the same workers.
//!
//! The shapes:
//!
//! | shape | load | contenders |
//! |---|---|---|
//! | A | `wrk -t1 -c64`, keep-alive, direct | roomgate, nginx, HAProxy |
//! | B | `wrk -t2 -c64`, keep-alive, direct | same |
//! | C | `wrk -t2 -c1000`, keep-alive, direct | same |
//! | D | `wrk -t2 -c64 -H 'Connection: close'`: a new connection per request | same |
//! | E | `wrk -t2 -c64` to nginx, TCP keep-alive upstream | roomgate, HAProxy |
//! | F | as E, roomgate's upstream over a unix socket | roomgate (unix), HAProxy (TCP) |
//!
//! Per contender and shape it reports requests/s (median of the rounds),
//! p50/p99 latency (wrk's), the median per-round ratio of roomgate's
//! requests/s to this one's, CPU time per request (user + system from
//! `/proc/<pid>/stat` of the server, and for E/F also of nginx + server,
//! divided by the requests of the round), TCP connections accepted per
//! request (`PassiveOpens`, which shows that D really opens one connection
//! per request) and the peak RSS sampled during the runs. Before the shapes
//! it measures the memory per idle keep-alive connection: RSS before and
//! while holding `ROOMGATE_BENCH_IDLE` connections that each made one
//! request, on a separate set of freshly started servers (so that neither
//! measurement inherits the other's memory). Results go to `results.json`, `results.md` (tables with the
//! command lines and the generated configs) and `chart.svg` (ratios per
//! shape).
//!
//! SIGINT or SIGTERM (Ctrl-C, `timeout`) stops every server started.

#[path = "../tests/it/support/mod.rs"]
mod support;

#[path = "load/idle.rs"]
mod idle;
#[path = "load/procs.rs"]
mod procs;
#[path = "load/report.rs"]
mod report;
#[path = "load/servers.rs"]
mod servers;
#[path = "load/setup.rs"]
mod setup;
#[path = "load/wrk.rs"]
mod wrk;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{Mode, StandIn};

use procs::{cpu_ticks, rss_kb, tcp_accepts, tool, tree};
use setup::{pid, url, wait_location};
use wrk::{Run, Wrk};

struct Options {
    rounds: usize,
    seconds: u64,
    shapes: Vec<char>,
    idle: usize,
    front_workers: usize,
    out: PathBuf,
}

fn options() -> Options {
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--bench" => {} // added by `cargo bench`
            "-h" | "--help" => {
                println!(
                    "cargo bench --bench load; settings from the environment:\n  \
                     ROOMGATE_BENCH_ROUNDS (3) ROOMGATE_BENCH_SECONDS (5) ROOMGATE_BENCH_SHAPES (ABCDEF; also H)\n  \
                     ROOMGATE_BENCH_IDLE (3000) ROOMGATE_BENCH_FRONT_WORKERS (2) ROOMGATE_BENCH_OUT (benches/results)"
                );
                std::process::exit(0);
            }
            other => die(&format!(
                "unknown argument {other}; settings come from ROOMGATE_BENCH_* variables, see --help"
            )),
        }
    }
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let num = |name: &str, default: u64| var(name).map_or(default, |v| parse(name, &v));
    let mut o = Options {
        rounds: num("ROOMGATE_BENCH_ROUNDS", 3) as usize,
        seconds: num("ROOMGATE_BENCH_SECONDS", 5),
        shapes: var("ROOMGATE_BENCH_SHAPES")
            .unwrap_or_else(|| "ABCDEF".into())
            .to_ascii_uppercase()
            .chars()
            .filter(|c| c.is_ascii_alphabetic())
            .collect(),
        idle: num("ROOMGATE_BENCH_IDLE", 3000) as usize,
        front_workers: num("ROOMGATE_BENCH_FRONT_WORKERS", 2) as usize,
        out: var("ROOMGATE_BENCH_OUT").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results"),
            PathBuf::from,
        ),
    };
    if o.rounds < 1 || o.seconds < 1 || o.front_workers < 1 {
        die("ROOMGATE_BENCH_ROUNDS, _SECONDS and _FRONT_WORKERS must be at least 1");
    }
    if let Some(bad) = o.shapes.iter().find(|c| !"ABCDEFH".contains(**c)) {
        die(&format!("unknown shape {bad}; shapes are A-F and H"));
    }
    // H black-holes a server for the rest of the run: always last.
    o.shapes.sort_unstable();
    o.shapes.dedup();
    o
}

fn parse(name: &str, s: &str) -> u64 {
    s.trim()
        .parse()
        .unwrap_or_else(|_| die(&format!("{name}: not a number: {s}")))
}

/// The run's directory (configs, server logs); left in place when the run
/// fails, for a look at the logs.
static RUN_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn die(msg: &str) -> ! {
    eprintln!("load bench: {msg}");
    if let Some(dir) = RUN_DIR.get() {
        eprintln!(
            "load bench: configs and server logs are in {}",
            dir.display()
        );
    }
    procs::stop_children();
    std::process::exit(2)
}

/// Where a shape's load goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Direct,
    /// Through the front nginx, roomgate over TCP.
    FrontTcp,
    /// Through the front nginx, roomgate over a unix socket.
    FrontUnix,
    /// Direct, with the primary Jitsi server black-holed.
    BlackHole,
}

struct Shape {
    id: char,
    name: &'static str,
    threads: usize,
    connections: usize,
    close: bool,
    route: Route,
}

const SHAPES: [Shape; 7] = [
    Shape {
        id: 'A',
        name: "wrk -t1 -c64, keep-alive, direct",
        threads: 1,
        connections: 64,
        close: false,
        route: Route::Direct,
    },
    Shape {
        id: 'B',
        name: "wrk -t2 -c64, keep-alive, direct",
        threads: 2,
        connections: 64,
        close: false,
        route: Route::Direct,
    },
    Shape {
        id: 'C',
        name: "1,000 keep-alive connections (wrk -t2 -c1000), direct",
        threads: 2,
        connections: 1000,
        close: false,
        route: Route::Direct,
    },
    Shape {
        id: 'D',
        name: "a new connection per request (wrk -t2 -c64, Connection: close), direct",
        threads: 2,
        connections: 64,
        close: true,
        route: Route::Direct,
    },
    Shape {
        id: 'E',
        name: "behind nginx, TCP keep-alive upstream (wrk -t2 -c64)",
        threads: 2,
        connections: 64,
        close: false,
        route: Route::FrontTcp,
    },
    Shape {
        id: 'F',
        name: "behind nginx, roomgate over a unix socket, HAProxy over TCP (wrk -t2 -c64)",
        threads: 2,
        connections: 64,
        close: false,
        route: Route::FrontUnix,
    },
    Shape {
        id: 'H',
        name: "primary black-holed, wrk -t2 -c64, keep-alive, direct",
        threads: 2,
        connections: 64,
        close: false,
        route: Route::BlackHole,
    },
];

/// One system as a shape sees it.
struct Contender {
    /// `roomgate`, `nginx` or `haproxy`.
    name: &'static str,
    /// What runs, e.g. `roomgate (unix) behind nginx`.
    label: &'static str,
    url: String,
    /// The server that answers the redirect.
    server: u32,
    /// The front nginx's master, in shapes E and F.
    front: Option<u32>,
}

/// What one round of one contender measured.
#[derive(Clone, Copy, Debug, Default)]
struct Round {
    run: Run,
    /// CPU seconds of the server, and of the front nginx.
    cpu_s: f64,
    front_cpu_s: f64,
    /// TCP connections the kernel accepted during the round (all servers).
    accepts: u64,
    /// Highest RSS of the server seen during the round.
    peak_rss_kb: u64,
}

/// How often the RSS is sampled during a run.
const RSS_SAMPLE: Duration = Duration::from_millis(100);

/// Time after wrk ends for the servers to finish closing its connections,
/// before the CPU time is read.
const SETTLE: Duration = Duration::from_millis(200);

async fn round(c: &Contender, wrk: &Wrk, ticks_per_s: f64) -> Round {
    let server = tree(c.server);
    let front = c.front.map(tree).unwrap_or_default();
    let (server0, front0, accepts0) = (cpu_ticks(&server), cpu_ticks(&front), tcp_accepts());
    let url = format!("{}/Lounge", c.url);
    let run = wrk.run(&url);
    tokio::pin!(run);
    let mut peak_rss_kb = rss_kb(&server);
    // Ends with wrk, which `Wrk::run` bounds.
    let run = loop {
        tokio::select! {
            run = &mut run => break run,
            () = tokio::time::sleep(RSS_SAMPLE) => peak_rss_kb = peak_rss_kb.max(rss_kb(&server)),
        }
    };
    tokio::time::sleep(SETTLE).await;
    let secs = |t1: u64, t0: u64| t1.saturating_sub(t0) as f64 / ticks_per_s;
    Round {
        run,
        cpu_s: secs(cpu_ticks(&server), server0),
        front_cpu_s: secs(cpu_ticks(&front), front0),
        accepts: tcp_accepts().saturating_sub(accepts0),
        peak_rss_kb,
    }
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

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
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
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "cores": workers(),
        "cpu": model,
        "load_average_at_start": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "nginx": version("nginx", "-v"),
        "haproxy": version("haproxy", "-v"),
        "wrk": version("wrk", "-v"),
    })
}

/// roomgate's default worker count (one per CPU this process may use), which
/// nginx and HAProxy get too.
fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn main() {
    let o = options();
    for t in ["nginx", "haproxy", "wrk"] {
        procs::need(t);
    }
    // The idle-memory measurement holds thousands of sockets in this process.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        die(&format!("cannot raise the open-file limit: {e}"));
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
        eprintln!("load bench: stopped by {signal}; stopping the servers");
        procs::stop_children();
        if let Some(dir) = RUN_DIR.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
        std::process::exit(130)
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
    let started = Instant::now();
    let machine = machine();
    let tmp = tempfile::tempdir().unwrap_or_else(|e| die(&format!("tempdir: {e}")));
    let d = setup::mkdir(tmp.path().to_path_buf());
    let _ = RUN_DIR.set(d.clone());
    let binary = env!("CARGO_BIN_EXE_roomgate");
    let binary_bytes = std::fs::metadata(binary).map_or(0, |m| m.len());
    let n = workers();
    println!(
        "roomgate {binary} ({binary_bytes} bytes); {n} CPU(s), nginx and HAProxy with {n} workers; \
         {} round(s) of {} s per contender; shapes {}",
        o.rounds,
        o.seconds,
        o.shapes.iter().collect::<String>(),
    );

    // Health-check targets: a pair per roomgate, one for HAProxy.
    let rg_primary = StandIn::http(Mode::Healthy).await;
    let rg_backup = StandIn::http(Mode::Healthy).await;
    let unix_primary = StandIn::http(Mode::Healthy).await;
    let unix_backup = StandIn::http(Mode::Healthy).await;
    let hp_primary = StandIn::http(Mode::Healthy).await;
    let hp_backup = StandIn::http(Mode::Healthy).await;
    let rg_pair = [&rg_primary, &rg_backup];
    let hp_pair = [&hp_primary, &hp_backup];

    // Memory per idle keep-alive connection, on servers of their own that
    // have served only the readiness checks (so that the shapes' peak RSS
    // does not start from the idle connections' leftovers, and the idle
    // figures not from the shapes' pools).
    let mut idle = Vec::new();
    if o.idle > 0 {
        println!("\nidle keep-alive memory, {} connections each:", o.idle);
        let dir = setup::mkdir(d.join("idle"));
        let fresh = setup::direct(&dir, n, rg_pair, hp_pair, &mut setup::Record::default()).await;
        let servers = [
            ("roomgate", fresh.rg_port, pid(&fresh.roomgate)),
            ("nginx", fresh.ng_port, pid(&fresh.nginx)),
            ("haproxy", fresh.hp_port, pid(&fresh.haproxy)),
        ];
        for (name, port, pid) in servers {
            let m = idle::measure(([127, 0, 0, 1], port).into(), pid, o.idle).await;
            println!(
                "  {name:<8} RSS {:>7} kB -> {:>7} kB with {} of {} held: {:.2} KiB per connection",
                m.rss_before_kb,
                m.rss_after_kb,
                m.held,
                m.connections,
                m.kib_per_connection()
            );
            idle.push(json!({
                "name": name,
                "connections": m.connections,
                "held": m.held,
                "rss_before_kb": m.rss_before_kb,
                "rss_after_kb": m.rss_after_kb,
                "kib_per_connection": m.kib_per_connection(),
            }));
        }
        procs::stop(&servers.map(|(_, _, pid)| pid));
    }

    let mut record = setup::Record::default();
    let direct = setup::direct(&d, n, rg_pair, hp_pair, &mut record).await;
    let (rg_port, ng_port, hp_port) = (direct.rg_port, direct.ng_port, direct.hp_port);
    let (rg, ng, hp) = (
        pid(&direct.roomgate),
        pid(&direct.nginx),
        pid(&direct.haproxy),
    );
    let rg_start_rss = rss_kb(&[rg]);
    // Shapes E and F: the front nginx, and roomgate on a unix socket.
    let front = if o.shapes.iter().any(|s| "EF".contains(*s)) {
        Some(
            setup::front(
                &d,
                o.front_workers,
                [&unix_primary, &unix_backup],
                rg_port,
                &rg_primary.url(),
                hp_port,
                &hp_primary.url(),
                &mut record,
            )
            .await,
        )
    } else {
        None
    };

    let ticks_per_s = procs::clock_ticks();
    let front_pid = front.as_ref().map(|f| pid(&f.nginx));
    let unix_pid = front.as_ref().map_or(0, |f| pid(&f.unix));
    let (fe_rg, fe_unix, fe_hp) = front
        .as_ref()
        .map_or((0, 0, 0), |f| (f.rg_port, f.unix_port, f.hp_port));
    let direct = |label| -> Vec<Contender> {
        [
            Contender {
                name: "roomgate",
                label,
                url: url(rg_port),
                server: rg,
                front: None,
            },
            Contender {
                name: "nginx",
                label: "nginx return 302",
                url: url(ng_port),
                server: ng,
                front: None,
            },
            Contender {
                name: "haproxy",
                label: "HAProxy redirect",
                url: url(hp_port),
                server: hp,
                front: None,
            },
        ]
        .into()
    };
    let behind = |label, port, server| -> Vec<Contender> {
        vec![
            Contender {
                name: "roomgate",
                label,
                url: url(port),
                server,
                front: front_pid,
            },
            Contender {
                name: "haproxy",
                label: "HAProxy (TCP) behind nginx",
                url: url(fe_hp),
                server: hp,
                front: front_pid,
            },
        ]
    };
    let probes_from = (rg_primary.counts(), rg_backup.counts(), Instant::now());
    let mut probes_to = None;
    let mut shapes = Vec::new();
    for id in &o.shapes {
        let Some(shape) = SHAPES.iter().find(|s| s.id == *id) else {
            continue;
        };
        let contenders: Vec<Contender> = match shape.route {
            Route::Direct => direct("roomgate"),
            Route::BlackHole => direct("roomgate, primary black-holed"),
            Route::FrontTcp => behind("roomgate (TCP) behind nginx", fe_rg, rg),
            Route::FrontUnix => behind("roomgate (unix) behind nginx", fe_unix, unix_pid),
        };
        if shape.route == Route::BlackHole && probes_to.is_none() {
            probes_to = Some((rg_primary.counts(), rg_backup.counts(), Instant::now()));
            rg_primary.set_mode(Mode::BlackHole).await;
            hp_primary.set_mode(Mode::BlackHole).await;
            let bound = Duration::from_secs(30);
            wait_location(&format!("{}/Lounge", url(rg_port)), &rg_backup.url(), bound).await;
            wait_location(&format!("{}/Lounge", url(hp_port)), &hp_backup.url(), bound).await;
        }
        let wrk = Wrk {
            threads: shape.threads,
            connections: shape.connections,
            seconds: o.seconds,
            close: shape.close,
        };
        println!(
            "\nshape {}: {}\n  {}",
            shape.id,
            shape.name,
            wrk.command_line("<url>")
        );
        let mut rounds: Vec<Vec<Round>> = contenders.iter().map(|_| Vec::new()).collect();
        for r in 0..o.rounds {
            for k in 0..contenders.len() {
                let i = (r + k) % contenders.len();
                let c = &contenders[i];
                let m = round(c, &wrk, ticks_per_s).await;
                let per_req = |s: f64| s * 1e6 / m.run.requests.max(1) as f64;
                let with_front = c.front.map_or(String::new(), |_| {
                    format!(" (with nginx {:>5.1})", per_req(m.cpu_s + m.front_cpu_s))
                });
                println!(
                    "  round {} {:<28} {:>8.0} req/s  p99 {:>8.0} us  CPU {:>5.1} us/req{with_front}  \
                     accepts/req {:.2}  errors {}",
                    r + 1,
                    c.label,
                    m.run.rps,
                    m.run.p99_us,
                    per_req(m.cpu_s),
                    m.accepts as f64 / m.run.requests.max(1) as f64,
                    m.run.errors
                );
                rounds[i].push(m);
            }
        }
        shapes.push(shape_json(shape, &wrk, &contenders, &rounds));
    }
    if probes_to.is_some() {
        rg_primary.set_mode(Mode::Healthy).await;
        hp_primary.set_mode(Mode::Healthy).await;
    }

    // Probes while the load ran with steady health, whatever the request
    // rate, against run time / interval.
    let to = probes_to.unwrap_or((rg_primary.counts(), rg_backup.counts(), Instant::now()));
    let secs = to.2.duration_since(probes_from.2).as_secs_f64();
    let probes = json!({
        "seconds": secs,
        "interval_s": servers::INTERVAL.as_secs(),
        "bound": (secs / servers::INTERVAL.as_secs_f64()).floor() + 2.0,
        "primary": to.0.config_js - probes_from.0.config_js,
        "backup": to.1.config_js - probes_from.1.config_js,
    });
    let report = json!({
        "machine": machine,
        "rounds": o.rounds,
        "seconds": o.seconds,
        "workers": n,
        "front_workers": o.front_workers,
        "command": "cargo bench --bench load",
        "run_seconds": started.elapsed().as_secs_f64(),
        "shapes": shapes,
        "idle": idle,
        "probes": probes,
        "roomgate": {
            "binary_bytes": binary_bytes,
            "start_rss_kb": rg_start_rss,
            "peak_rss_kb": procs::status_kb(rg, "VmHWM:"),
        },
        "servers": record.commands.iter().map(|(n, c)| json!({"name": n, "command": c})).collect::<Vec<_>>(),
        "configs": record.configs.iter().map(|(n, t)| json!({"name": n, "text": t})).collect::<Vec<_>>(),
    });
    println!("\n{}", report::table(&report));
    println!("{}", report::footer(&report));
    report::write(&o.out, &report);
    println!("whole run {:.0} s", started.elapsed().as_secs_f64());
    procs::stop_children();
}

/// A shape's results: per contender the medians over its rounds and the
/// rounds themselves; the ratio is the median of the per-round ratios of
/// roomgate's requests/s to this contender's.
fn shape_json(shape: &Shape, wrk: &Wrk, contenders: &[Contender], rounds: &[Vec<Round>]) -> Value {
    let mut list = Vec::new();
    for (i, (c, runs)) in contenders.iter().zip(rounds).enumerate() {
        let med = |f: &dyn Fn(&Round) -> f64| median(runs.iter().map(f).collect());
        let per_req = |r: &Round, s: f64| s * 1e6 / r.run.requests.max(1) as f64;
        let ratio = (i > 0).then(|| {
            median(
                rounds[0]
                    .iter()
                    .zip(runs)
                    .map(|(a, b)| a.run.rps / b.run.rps)
                    .collect(),
            )
        });
        list.push(json!({
            "name": c.name,
            "label": c.label,
            "url": format!("{}/Lounge", c.url),
            "rps": med(&|r| r.run.rps),
            "p50_us": med(&|r| r.run.p50_us),
            "p99_us": med(&|r| r.run.p99_us),
            "ratio": ratio,
            "cpu_us_per_request": med(&|r| per_req(r, r.cpu_s)),
            "cpu_us_per_request_with_nginx": c.front.map(|_| med(&|r| per_req(r, r.cpu_s + r.front_cpu_s))),
            "tcp_accepts_per_request": med(&|r| r.accepts as f64 / r.run.requests.max(1) as f64),
            "peak_rss_kb": runs.iter().map(|r| r.peak_rss_kb).max().unwrap_or(0),
            "errors": runs.iter().map(|r| r.run.errors).sum::<u64>(),
            "requests": runs.iter().map(|r| r.run.requests).sum::<u64>(),
            "rounds": runs.iter().map(|r| json!({
                "rps": r.run.rps,
                "p50_us": r.run.p50_us,
                "p99_us": r.run.p99_us,
                "requests": r.run.requests,
                "errors": r.run.errors,
                "cpu_s": r.cpu_s,
                "front_cpu_s": r.front_cpu_s,
                "tcp_accepts": r.accepts,
                "peak_rss_kb": r.peak_rss_kb,
            })).collect::<Vec<_>>(),
        }));
    }
    json!({
        "id": shape.id.to_string(),
        "name": shape.name,
        "wrk": wrk.command_line("<url>"),
        "contenders": list,
    })
}
