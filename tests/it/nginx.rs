//! roomgate behind a real nginx, configured with the shipped `deploy/nginx/`
//! files (only paths, ports and listen addresses substituted).
//!
//! - the dedicated-host site over TCP, with TLS: redirects, the http->https
//!   move, `/metrics` for localhost only, client addresses, failover;
//! - the prefix snippet over the unix socket: redirects under `/raum/`, and
//!   every link on the status page and on 404 pages stays under `/raum/`;
//! - the scale-out upstream: one of two instances stops (SIGTERM, SIGKILL)
//!   under a steady request stream, and no request fails;
//! - `nginx -s reload` and roomgate's SIGHUP under a request stream.
//!
//! "Non-local" clients: loopback is the only network here, so a client that
//! must not count as local connects from 127.0.0.2 (a loopback address too,
//! but not the 127.0.0.1 / ::1 that the `allow` rules name). nginx sees it
//! as `$remote_addr = 127.0.0.2`, exactly as it would see a remote address.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::nginx::{
    deploy_file, free_port, links, nginx_available, open_dir, resolve, substitute, Nginx,
};
use crate::support::*;

/// Upper bound for a state to show through nginx (probes every 100-300 ms).
const BOUND: Duration = Duration::from_secs(15);

/// The host name of the dedicated-host site.
const HOST: &str = "virtual.example.org";

/// The existing site the prefix snippet is mounted in.
const PREFIX_HOST: &str = "chaosdorf.example";

/// The port of `http://127.0.0.1:PORT`.
fn port_of(base: &str) -> u16 {
    base.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {base}"))
}

/// A routes.yaml (Lounge, Cave on primary then backup) that trusts only
/// 127.0.0.1 as a proxy, written into `dir`.
fn write_config(dir: &Path, primary: &StandIn, backup: &StandIn) -> std::path::PathBuf {
    let yaml = format!(
        "{}trusted_proxies: [127.0.0.1]\n",
        two_server_yaml(&primary.url(), &backup.url(), "")
    );
    write_file(dir, "routes.yaml", &yaml)
}

/// The dedicated-host site with its TLS files, for nginx on `http`/`https`.
struct Site {
    /// `roomgate-site.conf`, substituted.
    conf: String,
    /// Client TLS config trusting the site's certificate.
    tls: Arc<rustls::ClientConfig>,
    https: u16,
    http: u16,
}

fn site(dir: &Path) -> Site {
    let ca = TestCa::new();
    let leaf = ca.leaf(&[HOST, "127.0.0.1"]);
    let cert = write_file(dir, "fullchain.pem", &leaf.cert_pem);
    let key = write_file(dir, "privkey.pem", &leaf.key_pem);
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let (http, https) = (free_port(), free_port());
    let conf = substitute(
        &deploy_file("nginx/roomgate-site.conf"),
        &[
            ("listen 80;", &format!("listen 127.0.0.1:{http};")),
            ("listen [::]:80;", &format!("listen [::1]:{http};")),
            ("listen 443 ssl;", &format!("listen 127.0.0.1:{https} ssl;")),
            (
                "listen [::]:443 ssl;",
                &format!("listen [::1]:{https} ssl;"),
            ),
            (
                "/etc/letsencrypt/live/virtual.example.org/fullchain.pem",
                &cert.display().to_string(),
            ),
            (
                "/etc/letsencrypt/live/virtual.example.org/privkey.pem",
                &key.display().to_string(),
            ),
            ("/var/www/html", &www.display().to_string()),
        ],
    );
    Site {
        conf,
        tls: ca.client_config(),
        https,
        http,
    }
}

impl Site {
    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https)
    }

    fn get(&self, path: &str) -> Req {
        Req::get(&self.url(path))
            .tls_config(self.tls.clone())
            .header("host", HOST)
    }
}

/// `roomgate-upstream.conf` pointing at `port`.
fn upstream_tcp(port: u16) -> String {
    substitute(
        &deploy_file("nginx/roomgate-upstream.conf"),
        &[(
            "server 127.0.0.1:8080;",
            &format!("server 127.0.0.1:{port};"),
        )],
    )
}

/// Sends `req` until it answers `status`, at most [`BOUND`].
async fn wait_status(req: Req, status: u16) -> Resp {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let last = req.clone().send().await;
        match &last {
            Ok(r) if r.status == status => return last.unwrap(),
            _ if tokio::time::Instant::now() >= deadline => {
                panic!("no {status} within {BOUND:?}; last answer: {last:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Sends `req` until its Location is `location`, at most [`BOUND`].
async fn wait_location(req: Req, location: &str) {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let last = req.clone().send().await;
        if let Ok(r) = &last {
            if r.header("location") == Some(location) {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Location never became {location} within {BOUND:?}; last: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The log line of the access line for `uri`, waited for (bounded).
async fn access_line(gate: &GateProcess, uri: &str) -> String {
    gate.wait_log(&format!("uri={uri} "), BOUND)
        .await
        .unwrap_or_else(|| panic!("no access line for {uri}:\n{}", gate.log_text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedicated_host_site_over_tcp() {
    if !nginx_available() {
        return;
    }
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &primary, &backup);
    let gate = GateProcess::start_with(&config, dir.path(), "debug").await;
    let site = site(dir.path());
    let files = [
        ("roomgate-upstream.conf", upstream_tcp(port_of(&gate.base))),
        ("roomgate-site.conf", site.conf.clone()),
    ];
    let nginx = Nginx::start(
        "include @DIR@/roomgate-upstream.conf;\ninclude @DIR@/roomgate-site.conf;",
        &files
            .iter()
            .map(|(n, t)| (*n, t.as_str()))
            .collect::<Vec<_>>(),
        site.https,
    )
    .await;
    wait_status(site.get("/readyz"), 200).await;

    // The redirect, through TLS and the upstream, query kept.
    let r = site.get("/Lounge?jwt=abc").send().await.unwrap();
    assert_eq!(r.status, 302, "{r:?}\n{}", nginx.error_log());
    assert_eq!(
        r.header("location").unwrap(),
        format!("{}/Lounge?jwt=abc", primary.url())
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = site.get("/treff/").send().await.unwrap();
    assert_eq!(
        r.header("location").unwrap(),
        format!("{}/Lounge", primary.url())
    );

    // On a port other than 443 the absolute short links keep it: QR code,
    // link preview and status page name https://HOST:PORT/Lounge.
    public_links_keep_the_port(
        |path| {
            Req::get(&site.url(path))
                .tls_config(site.tls.clone())
                .header("host", &format!("{HOST}:{}", site.https))
        },
        &format!("https://{HOST}:{}/Lounge", site.https),
    )
    .await;

    // Port 80 moves everything to https, path and query unchanged.
    let r = Req::get(&format!("http://127.0.0.1:{}/Lounge?x=1", site.http))
        .header("host", HOST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("https://virtual.example.org/Lounge?x=1")
    );
    // ...except ACME challenges, served from the web root.
    std::fs::create_dir_all(dir.path().join("www/.well-known/acme-challenge")).unwrap();
    write_file(
        &dir.path().join("www/.well-known/acme-challenge"),
        "token",
        "proof",
    );
    let r = Req::get(&format!(
        "http://127.0.0.1:{}/.well-known/acme-challenge/token",
        site.http
    ))
    .header("host", HOST)
    .send()
    .await
    .unwrap();
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "proof"));

    // /metrics: localhost only.
    let r = site.get("/metrics").send().await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.contains("roomgate_"), "{}", r.body);
    let r = site
        .get("/metrics")
        .source("127.0.0.2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 403, "/metrics answered a non-local client");
    // The rest of the site is for everyone.
    let r = site.get("/Cave").source("127.0.0.2").send().await.unwrap();
    assert_eq!(r.status, 302);

    // Client address: nginx (127.0.0.1, trusted) appends the real peer to a
    // made-up X-Forwarded-For; roomgate logs the real one.
    let r = site
        .get("/Cave?via=nginx")
        .source("127.0.0.2")
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 302);
    let line = access_line(&gate, "/Cave?via=nginx").await;
    assert!(line.contains("client=127.0.0.2 "), "{line}");
    // Straight to roomgate from an untrusted peer, the header is ignored.
    let r = Req::get(&gate.url("/Cave?direct"))
        .source("127.0.0.3")
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 302);
    let line = access_line(&gate, "/Cave?direct").await;
    assert!(line.contains("client=127.0.0.3 "), "{line}");
    assert!(!gate.log_text().contains("client=203.0.113.9"));

    // Failover shows through nginx, and back.
    primary.set_mode(Mode::Refusing).await;
    wait_location(site.get("/Lounge"), &format!("{}/Lounge", backup.url())).await;
    primary.set_mode(Mode::Healthy).await;
    wait_location(site.get("/Lounge"), &format!("{}/Lounge", primary.url())).await;
}

/// The absolute short link of the Lounge, as roomgate builds it behind
/// nginx from what `get` (a request through nginx with a Host that carries
/// a non-standard port) forwards: the QR code, the link-preview card and the
/// status page must all say `expected`.
async fn public_links_keep_the_port(get: impl Fn(&str) -> Req, expected: &str) {
    let r = get("/_/qr/Lounge.svg").send().await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(crate::status_extras::decode_qr(&r.body), expected);
    let r = get("/Lounge")
        .header("user-agent", "TelegramBot (like TwitterBot)")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body.contains(&format!(
            "<meta property=\"og:url\" content=\"{expected}\">"
        )),
        "{}",
        r.body
    );
    let r = get("/").send().await.unwrap();
    let (base, room) = expected.rsplit_once('/').unwrap();
    assert!(
        r.body.contains(&format!("{base}/<wbr>{room}")),
        "{expected} not on the status page:\n{}",
        r.body
    );
}

/// Fetches every link of the page at `page` (a path under `/raum/`, as the
/// browser sees it) through nginx: each must stay under `/raum/` and must
/// not answer 404. Returns how many links were followed.
async fn check_links(origin: &str, page: &str, html: &str) -> usize {
    let found = links(html);
    let mut followed = 0;
    for href in &found {
        let Some(path) = resolve(origin, page, href) else {
            continue; // another host, e.g. a Jitsi server
        };
        assert!(
            path.starts_with("/raum/"),
            "link {href:?} on {page} leads to {path}, outside /raum/"
        );
        let r = Req::get(&format!("{origin}{path}"))
            .header("host", PREFIX_HOST)
            .header("accept", "text/html")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path} (from {href:?} on {page}): {e}"));
        assert_ne!(
            r.status, 404,
            "link {href:?} on {page} -> {path} is a 404:\n{}",
            r.body
        );
        assert!(r.status.as_u16() < 500, "{path}: {}", r.status);
        followed += 1;
    }
    followed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_snippet_over_the_unix_socket() {
    if !nginx_available() {
        return;
    }
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    open_dir(dir.path());
    let config = write_config(dir.path(), &primary, &backup);
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    open_dir(&run);
    let socket = run.join("roomgate.sock");
    // No --socket-mode: the default must let nginx's workers in.
    let mut gate = GateProcess::spawn_with(
        &config,
        dir.path(),
        &format!("unix:{}", socket.display()),
        &[],
        "debug",
    );
    assert!(
        gate.wait_log("listening on unix:", BOUND).await.is_some(),
        "{}",
        gate.log_text()
    );
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o666, "default socket mode");
    }

    let port = free_port();
    let upstream = substitute(
        &deploy_file("nginx/roomgate-upstream-unix.conf"),
        &[(
            "unix:/run/roomgate/roomgate.sock",
            &format!("unix:{}", socket.display()),
        )],
    );
    let prefix = deploy_file("nginx/roomgate-prefix.conf");
    // The admin's existing site, with the snippet included.
    let http = format!(
        "include @DIR@/roomgate-upstream-unix.conf;
server {{
    listen 127.0.0.1:{port};
    server_name {PREFIX_HOST};
    location / {{ return 200 \"the existing site\\n\"; }}
    include @DIR@/roomgate-prefix.conf;
}}"
    );
    let nginx = Nginx::start(
        &http,
        &[
            ("roomgate-upstream-unix.conf", &upstream),
            ("roomgate-prefix.conf", &prefix),
        ],
        port,
    )
    .await;
    let origin = format!("http://127.0.0.1:{port}");
    let get = |path: &str| {
        Req::get(&format!("{origin}{path}"))
            .header("host", PREFIX_HOST)
            .header("accept", "text/html")
    };
    wait_status(get("/raum/readyz"), 200).await;

    let r = get("/raum/Lounge?x=1").send().await.unwrap();
    assert_eq!(r.status, 302, "{r:?}\n{}", nginx.error_log());
    assert_eq!(
        r.header("location").unwrap(),
        format!("{}/Lounge?x=1", primary.url())
    );
    let r = get("/raum/treff").send().await.unwrap();
    assert_eq!(
        r.header("location").unwrap(),
        format!("{}/Lounge", primary.url())
    );
    // The site around it is untouched, and /raum leads into the mount.
    let r = get("/Lounge").send().await.unwrap();
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "the existing site\n")
    );
    let r = get("/raum").send().await.unwrap();
    assert_eq!(r.status, 301);
    assert!(r.header("location").unwrap().ends_with("/raum/"), "{r:?}");

    // Absolute links keep the port the client used, under the prefix.
    public_links_keep_the_port(
        |path| {
            Req::get(&format!("{origin}/raum{path}"))
                .header("host", &format!("{PREFIX_HOST}:{port}"))
        },
        &format!("http://{PREFIX_HOST}:{port}/raum/Lounge"),
    )
    .await;

    // The status page: every link resolves under the prefix.
    let r = get("/raum/").send().await.unwrap();
    assert_eq!(r.status, 200);
    let followed = check_links(&origin, "/raum/", &r.body).await;
    assert!(
        followed >= 3,
        "only {followed} links on the status page:\n{}",
        r.body
    );

    // 404 pages at any depth link back into the prefix.
    for page in [
        "/raum/Nope",
        "/raum/Nope/",
        "/raum/Nope/x",
        "/raum/Nope/x/y",
        "/raum/_/x/y",
    ] {
        let r = get(page).send().await.unwrap();
        assert_eq!(r.status, 404, "{page}");
        let followed = check_links(&origin, page, &r.body).await;
        // Both rooms, and the status page.
        assert_eq!(followed, 3, "{page}: every room linked:\n{}", r.body);
    }
    // The text 404 names paths under the forwarded prefix.
    let r = Req::get(&format!("{origin}/raum/Nope/x"))
        .header("host", PREFIX_HOST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert!(r.body.contains("\n/raum/Lounge\n"), "{}", r.body);

    // /metrics under the prefix: localhost only.
    let r = get("/raum/metrics")
        .source("127.0.0.2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    let r = get("/raum/metrics").send().await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.contains("roomgate_"));

    // Over the socket the peer is "unix", trusted: the client comes from
    // nginx's X-Forwarded-For.
    let r = get("/raum/Cave?who")
        .source("127.0.0.2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 302);
    let line = access_line(&gate, "/Cave?who").await;
    assert!(
        line.contains("client=127.0.0.2 ") && line.contains("conn{peer=unix}"),
        "{line}"
    );

    // Failover through the socket too.
    primary.set_mode(Mode::Error500).await;
    wait_location(get("/raum/Lounge"), &format!("{}/Lounge", backup.url())).await;

    drop(nginx);
    gate.signal("TERM");
    assert!(gate.wait_exit(BOUND).await.expect("exits").success());
    assert!(!socket.exists(), "socket left behind");
}

/// Clients sending requests at once in a [`Stream`]. Each request opens a
/// new TLS connection to nginx, which took about 45 ms here (plain HTTP
/// through nginx under 1 ms), so one client alone would be slow.
const STREAM_CLIENTS: usize = 4;

/// Clients that send GET requests one after another until stopped, and
/// count answers other than the expected redirect.
struct Stream {
    sent: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Stream {
    fn start(req: Req, location: String) -> Stream {
        let sent = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..STREAM_CLIENTS)
            .map(|_| {
                tokio::spawn({
                    let (sent, failed, failures, stop) =
                        (sent.clone(), failed.clone(), failures.clone(), stop.clone());
                    let (req, location) = (req.clone(), location.clone());
                    async move {
                        while !stop.load(Ordering::Relaxed) {
                            let answer = req.clone().send().await;
                            sent.fetch_add(1, Ordering::Relaxed);
                            let ok = matches!(&answer, Ok(r) if r.status == 302
                        && r.header("location") == Some(location.as_str()));
                            if !ok {
                                failed.fetch_add(1, Ordering::Relaxed);
                                failures.lock().unwrap().push(format!("{answer:?}"));
                            }
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    }
                })
            })
            .collect();
        Stream {
            sent,
            failed,
            failures,
            stop,
            tasks,
        }
    }

    fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until `n` more requests than now were sent.
    async fn wait_more(&self, n: usize) {
        let target = self.sent() + n;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.sent() < target {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stream stalled at {} requests",
                self.sent()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the stream; returns (sent, failed, failure descriptions).
    async fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        let failures = self.failures.lock().unwrap().clone();
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            failures,
        )
    }
}

/// Two instances behind the scale-out upstream; `signal` stops the first
/// while a client keeps asking.
async fn scale_out(signal: &str) {
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &primary, &backup);
    let mut first = GateProcess::start(&config, dir.path()).await;
    let second = GateProcess::start(&config, dir.path()).await;
    for gate in [&first, &second] {
        wait_state(&gate.url("/status.json"), "primary", "up", BOUND).await;
    }
    let upstream = substitute(
        &deploy_file("nginx/roomgate-upstream-scale-out.conf"),
        &[
            (
                "server 10.0.0.11:8080 ",
                &format!("server 127.0.0.1:{} ", port_of(&first.base)),
            ),
            (
                "server 10.0.0.12:8080 ",
                &format!("server 127.0.0.1:{} ", port_of(&second.base)),
            ),
        ],
    );
    let site = site(dir.path());
    let nginx = Nginx::start(
        "include @DIR@/roomgate-upstream-scale-out.conf;\ninclude @DIR@/roomgate-site.conf;",
        &[
            ("roomgate-upstream-scale-out.conf", &upstream),
            ("roomgate-site.conf", &site.conf),
        ],
        site.https,
    )
    .await;

    let stream = Stream::start(site.get("/Lounge"), format!("{}/Lounge", primary.url()));
    // Both instances serve before one goes.
    let deadline = tokio::time::Instant::now() + BOUND;
    while lounge_redirects(&first).await == 0 || lounge_redirects(&second).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nginx did not spread requests over both instances"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stream.wait_more(50).await;

    first.signal(signal);
    first
        .wait_exit(BOUND)
        .await
        .expect("the first instance exits");
    let served_by_second = lounge_redirects(&second).await;
    stream.wait_more(300).await;
    let (sent, failed, failures) = stream.finish().await;
    println!("scale-out, one of two instances stopped by SIG{signal}: {sent} requests sent, {failed} failed");
    assert_eq!(
        failed,
        0,
        "requests failed: {failures:#?}\nnginx:\n{}",
        nginx.error_log()
    );
    assert!(
        lounge_redirects(&second).await >= served_by_second + 300,
        "the second instance did not take over"
    );
}

/// Redirects for /Lounge that `gate` answered, from its /metrics.
async fn lounge_redirects(gate: &GateProcess) -> u64 {
    let metrics = get(&gate.url("/metrics"), &[]).await.body;
    sample(&metrics, "roomgate_redirects_total", &[("room", "Lounge")]) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_survives_an_instance_stopping() {
    if nginx_available() {
        scale_out("TERM").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_survives_an_instance_killed() {
    if nginx_available() {
        scale_out("KILL").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_of_nginx_and_roomgate_lose_no_request() {
    if !nginx_available() {
        return;
    }
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &primary, &backup);
    let gate = GateProcess::start(&config, dir.path()).await;
    wait_state(&gate.url("/status.json"), "primary", "up", BOUND).await;
    let site = site(dir.path());
    let upstream = upstream_tcp(port_of(&gate.base));
    let nginx = Nginx::start(
        "include @DIR@/roomgate-upstream.conf;\ninclude @DIR@/roomgate-site.conf;",
        &[
            ("roomgate-upstream.conf", &upstream),
            ("roomgate-site.conf", &site.conf),
        ],
        site.https,
    )
    .await;

    let stream = Stream::start(site.get("/Lounge"), format!("{}/Lounge", primary.url()));
    stream.wait_more(50).await;
    const ROUNDS: usize = 3;
    for round in 1..=ROUNDS {
        nginx.reload();
        stream.wait_more(40).await;
        gate.signal("HUP");
        wait_reloads(&gate.url("/metrics"), "success", round as u64, BOUND).await;
        stream.wait_more(40).await;
    }
    stream.wait_more(100).await;
    let (sent, failed, failures) = stream.finish().await;
    println!(
        "{ROUNDS} x (nginx -s reload, roomgate SIGHUP): {sent} requests sent, {failed} failed"
    );
    assert_eq!(
        failed,
        0,
        "requests failed: {failures:#?}\n{}",
        nginx.error_log()
    );
    // Both reloads really happened.
    let reconfigured = nginx.error_log().matches("(SIGHUP) received").count();
    assert_eq!(reconfigured, ROUNDS, "nginx log:\n{}", nginx.error_log());
    let metrics = get(&gate.url("/metrics"), &[]).await.body;
    assert_eq!(reloads(&metrics, "success"), ROUNDS as u64, "{metrics}");
    assert_eq!(reloads(&metrics, "failure"), 0, "{metrics}");
}

/// A request target of `len` bytes for room Lounge, as Jitsi's token
/// links make them: `/Lounge?jwt=` and a token.
fn jwt_target(len: usize) -> String {
    let head = "/Lounge?jwt=";
    let token: String = "eyJhbGciOiJSUzI1NiJ9.0123456789-_abcdefXYZ"
        .chars()
        .cycle()
        .take(len - head.len())
        .collect();
    format!("{head}{token}")
}

/// Every target roomgate accepts (up to `MAX_URI_LEN` bytes) passes through
/// both front files, and one byte more is roomgate's 414, never nginx's
/// 502. roomgate's redirect echoes the query in its Location, so its answer
/// head grows with the target: with nginx's default `proxy_buffer_size`
/// (one memory page) such heads were "upstream sent too big header".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_accepted_target_passes_through_nginx() {
    if !nginx_available() {
        return;
    }
    let max = roomgate::http::MAX_URI_LEN;
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &primary, &backup);
    let gate = GateProcess::start(&config, dir.path()).await;
    wait_state(&gate.url("/status.json"), "primary", "up", BOUND).await;
    let site = site(dir.path());
    let prefix_port = free_port();
    let http = format!(
        "include @DIR@/roomgate-upstream.conf;
include @DIR@/roomgate-site.conf;
server {{
    listen 127.0.0.1:{prefix_port};
    server_name {PREFIX_HOST};
    include @DIR@/roomgate-prefix.conf;
}}"
    );
    let nginx = Nginx::start(
        &http,
        &[
            ("roomgate-upstream.conf", &upstream_tcp(port_of(&gate.base))),
            ("roomgate-site.conf", &site.conf),
            (
                "roomgate-prefix.conf",
                &deploy_file("nginx/roomgate-prefix.conf"),
            ),
        ],
        site.https,
    )
    .await;
    let prefixed = |target: &str| {
        Req::get(&format!("http://127.0.0.1:{prefix_port}/raum{target}"))
            .header("host", PREFIX_HOST)
    };

    let longest = jwt_target(max);
    let too_long = jwt_target(max + 1);
    assert_eq!(longest.len(), max);
    // Straight to roomgate, for reference.
    let r = get(&gate.url(&longest), &[]).await;
    assert_eq!(r.status, 302);
    assert_eq!(get(&gate.url(&too_long), &[]).await.status, 414);

    // The host of its own, over TLS; then the prefix, which nginx strips,
    // so roomgate sees the same targets.
    for (front, req_longest, req_too_long) in [
        ("site", site.get(&longest), site.get(&too_long)),
        ("prefix", prefixed(&longest), prefixed(&too_long)),
    ] {
        let r = req_longest.send().await.unwrap();
        assert_eq!(
            r.status,
            302,
            "{front}: {} bytes: {}\n{}",
            longest.len(),
            r.body,
            nginx.error_log()
        );
        assert_eq!(
            r.header("location").unwrap(),
            format!("{}{longest}", primary.url()),
            "{front}"
        );
        let r = req_too_long.send().await.unwrap();
        assert_eq!(
            r.status,
            414,
            "{front}: {} bytes: {}\n{}",
            too_long.len(),
            r.body,
            nginx.error_log()
        );
    }
    // A 404 for a path of the longest length, and the move to https of the
    // longest target, are nginx's and roomgate's own answers too.
    let path = format!("/{}", "x".repeat(max - 1));
    assert_eq!(site.get(&path).send().await.unwrap().status, 404);
    let r = Req::get(&format!("http://127.0.0.1:{}{longest}", site.http))
        .header("host", HOST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location").unwrap(),
        format!("https://{HOST}{longest}")
    );
    assert!(
        !nginx.error_log().contains("too big header"),
        "{}",
        nginx.error_log()
    );
}

#[test]
fn the_link_helpers_resolve_like_a_browser() {
    let o = "http://127.0.0.1:80";
    let r = |page, href| resolve(o, page, href);
    assert_eq!(r("/raum/", "./Lounge").unwrap(), "/raum/Lounge");
    assert_eq!(r("/raum/Nope/x", "../Lounge").unwrap(), "/raum/Lounge");
    assert_eq!(r("/raum/Nope/x", "./Lounge").unwrap(), "/raum/Nope/Lounge");
    assert_eq!(r("/raum/a/b", "../../x").unwrap(), "/x");
    assert_eq!(r("/raum/", "/Lounge").unwrap(), "/Lounge");
    assert_eq!(
        r("/raum/", "status.json?x=1#f").unwrap(),
        "/raum/status.json?x=1"
    );
    assert_eq!(
        r("/raum/", "http://127.0.0.1:80/raum/x").unwrap(),
        "/raum/x"
    );
    assert_eq!(r("/raum/", "https://elsewhere.example/x"), None);
    assert_eq!(r("/raum/", "//elsewhere.example/x"), None);
    assert_eq!(r("/raum/", "data:image/png;base64,xx"), None);
    assert_eq!(r("/raum/", "").unwrap(), "/raum/");
    assert_eq!(r("/raum/", ".").unwrap(), "/raum/");
    assert_eq!(r("/raum/x", "..").unwrap(), "/");
    let html = "<a href=\"./a?x=1&amp;y=2\">a</a><img src='b.png'><link rel=x href=c.css>\
                <p data-href=\"no\">";
    assert_eq!(links(html), ["./a?x=1&y=2", "c.css", "b.png"]);
}
