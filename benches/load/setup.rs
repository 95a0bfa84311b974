//! Starting the servers under test and waiting until they redirect.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::Child;

use crate::procs::{free_port, spawn, tool};
use crate::support::{self, StandIn};
use crate::{die, servers};

/// How long a server may take from its start to its first redirect.
const START_BOUND: Duration = Duration::from_secs(15);

/// The config files written and the servers' command lines, for the
/// results.
#[derive(Default)]
pub struct Record {
    pub configs: Vec<(String, String)>,
    pub commands: Vec<(String, String)>,
}

impl Record {
    fn keep(&mut self, file: &str, text: &str, server: Option<(&str, String)>) {
        self.configs.push((file.to_owned(), text.to_owned()));
        if let Some((name, cmd)) = server {
            self.commands.push((name.to_owned(), cmd));
        }
    }
}

/// roomgate, nginx `return 302` and HAProxy, each on its own port.
pub struct Direct {
    pub roomgate: Child,
    pub nginx: Child,
    pub haproxy: Child,
    pub rg_port: u16,
    pub ng_port: u16,
    pub hp_port: u16,
}

/// `http://127.0.0.1:PORT`.
pub fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// Starts roomgate (probing `rg`), nginx (redirecting to `rg[0]`) and
/// HAProxy (probing `hp`), with `workers` workers for nginx and HAProxy,
/// configs and logs in `dir`; returns when each redirects.
pub async fn direct(
    dir: &Path,
    workers: usize,
    rg: [&StandIn; 2],
    hp: [&StandIn; 2],
    record: &mut Record,
) -> Direct {
    let rg_port = free_port();
    let routes_text = servers::routes_yaml(&rg[0].url(), &rg[1].url());
    let routes = write(dir, "routes.yaml", &routes_text);
    let roomgate = roomgate(dir, "roomgate", &routes, &format!("127.0.0.1:{rg_port}"));
    record.keep("routes.yaml", &routes_text, Some(("roomgate", roomgate.1)));

    let ng_dir = mkdir(dir.join("nginx"));
    let ng_port = free_port();
    let ng_text = servers::nginx_conf(&ng_dir, workers, ng_port, &rg[0].url());
    let (nginx, ng_cmd) = nginx(&ng_dir, &ng_text);
    record.keep("nginx.conf", &ng_text, Some(("nginx", ng_cmd)));

    let hp_port = free_port();
    let hp_text = servers::haproxy_cfg(workers, hp_port, hp[0], hp[1]);
    let hp_cfg = write(dir, "haproxy.cfg", &hp_text).display().to_string();
    let hp_argv = [tool("haproxy"), "-db".into(), "-f".into(), hp_cfg];
    let haproxy = spawn(
        &hp_argv.each_ref().map(String::as_str),
        &dir.join("haproxy.log"),
    );
    record.keep(
        "haproxy.cfg",
        &hp_text,
        Some(("HAProxy", hp_argv.join(" "))),
    );

    wait_status(&format!("{}/readyz", url(rg_port)), 200, START_BOUND).await;
    wait_location(
        &format!("{}/Lounge", url(rg_port)),
        &rg[0].url(),
        START_BOUND,
    )
    .await;
    wait_status(&format!("{}/Lounge", url(ng_port)), 302, START_BOUND).await;
    wait_location(
        &format!("{}/Lounge", url(hp_port)),
        &hp[0].url(),
        START_BOUND,
    )
    .await;
    Direct {
        roomgate: roomgate.0,
        nginx,
        haproxy,
        rg_port,
        ng_port,
        hp_port,
    }
}

/// The front nginx of shapes E and F, and the roomgate on a unix socket
/// behind it.
pub struct Front {
    pub nginx: Child,
    pub unix: Child,
    /// The sites: to roomgate over TCP, to roomgate over the unix socket, to
    /// HAProxy.
    pub rg_port: u16,
    pub unix_port: u16,
    pub hp_port: u16,
}

/// Starts roomgate on a unix socket (probing `unix`) and the front nginx
/// with a site per upstream, each a copy of the shipped files: roomgate at
/// `rg_port` (probing `rg_primary` first), roomgate on the socket, HAProxy at
/// `hp_port` (probing `hp_primary` first); returns when every site
/// redirects.
#[allow(clippy::too_many_arguments)]
pub async fn front(
    dir: &Path,
    workers: usize,
    unix: [&StandIn; 2],
    rg_port: u16,
    rg_primary: &str,
    hp_port: u16,
    hp_primary: &str,
    record: &mut Record,
) -> Front {
    let routes_text = servers::routes_yaml(&unix[0].url(), &unix[1].url());
    let routes = write(dir, "routes-unix.yaml", &routes_text);
    let socket = dir.join("roomgate.sock");
    let listen = format!("unix:{}", socket.display());
    let (unix_gate, cmd) = roomgate(dir, "roomgate-unix", &routes, &listen);
    record.keep(
        "routes-unix.yaml",
        &routes_text,
        Some(("roomgate (unix)", cmd)),
    );

    let fe_dir = mkdir(dir.join("front"));
    let leaf = support::Leaf::self_signed(&["virtual.example.org"]);
    write(&fe_dir, "fullchain.pem", &leaf.cert_pem);
    write(&fe_dir, "privkey.pem", &leaf.key_pem);
    mkdir(fe_dir.join("www"));
    let (fe_rg, fe_unix, fe_hp) = (free_port(), free_port(), free_port());
    let files: Vec<(String, String)> = [
        (
            "roomgate-upstream.conf",
            servers::front_upstream_tcp("roomgate", rg_port),
        ),
        (
            "roomgate-site.conf",
            servers::front_site(&fe_dir, "roomgate", fe_rg, free_port()),
        ),
        (
            "roomgate-upstream-unix.conf",
            servers::front_upstream_unix("roomgate_unix", &socket),
        ),
        (
            "roomgate-site-unix.conf",
            servers::front_site(&fe_dir, "roomgate_unix", fe_unix, free_port()),
        ),
        (
            "haproxy-upstream.conf",
            servers::front_upstream_tcp("haproxy", hp_port),
        ),
        (
            "haproxy-site.conf",
            servers::front_site(&fe_dir, "haproxy", fe_hp, free_port()),
        ),
    ]
    .map(|(name, text)| (name.to_owned(), text))
    .into();
    let text = servers::front_conf(&fe_dir, workers, &files);
    let (nginx, cmd) = nginx(&fe_dir, &text);
    record.keep("front nginx.conf", &text, Some(("front nginx", cmd)));
    for (name, text) in &files {
        record.keep(&format!("front {name}"), text, None);
    }

    wait_location(&format!("{}/Lounge", url(fe_rg)), rg_primary, START_BOUND).await;
    let unix_primary = unix[0].url();
    wait_location(
        &format!("{}/Lounge", url(fe_unix)),
        &unix_primary,
        START_BOUND,
    )
    .await;
    wait_location(&format!("{}/Lounge", url(fe_hp)), hp_primary, START_BOUND).await;
    Front {
        nginx,
        unix: unix_gate,
        rg_port: fe_rg,
        unix_port: fe_unix,
        hp_port: fe_hp,
    }
}

/// Starts this crate's release binary (default worker count) with
/// `routes` on `listen`; returns it with its command line.
fn roomgate(dir: &Path, name: &str, routes: &Path, listen: &str) -> (Child, String) {
    let argv = [
        env!("CARGO_BIN_EXE_roomgate"),
        "--config",
        &routes.display().to_string(),
        "--listen",
        listen,
    ];
    let child = spawn(&argv, &dir.join(format!("{name}.log")));
    (child, argv.join(" "))
}

/// Starts nginx with prefix `dir` and `conf` as its main config; returns it
/// with its command line.
fn nginx(dir: &Path, conf: &str) -> (Child, String) {
    let path = write(dir, "nginx.conf", conf);
    let (p, c) = (dir.display().to_string(), path.display().to_string());
    let error_log = dir.join("error.log").display().to_string();
    let argv = [
        &tool("nginx"),
        "-p",
        &p,
        "-c",
        &c,
        "-e",
        &error_log,
        "-g",
        "daemon off;",
    ];
    let child = spawn(&argv, &dir.join("stderr.log"));
    (child, format!("nginx -p {p} -c {c} -g 'daemon off;'"))
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| die(&format!("{}: {e}", path.display())));
    path
}

/// Creates `path`, enterable by nginx's workers (`nobody` when run as root:
/// they reach the unix socket through it).
pub fn mkdir(path: PathBuf) -> PathBuf {
    std::fs::create_dir_all(&path).unwrap_or_else(|e| die(&format!("{}: {e}", path.display())));
    support::nginx::open_dir(&path);
    path
}

pub fn pid(child: &Child) -> u32 {
    child
        .id()
        .unwrap_or_else(|| die("a server exited right after its start"))
}

/// Polls `url` until it answers `want`.
pub async fn wait_status(url: &str, want: u16, bound: Duration) {
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
pub async fn wait_location(url: &str, prefix: &str, bound: Duration) {
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
