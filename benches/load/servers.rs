//! The configurations of the servers under test: roomgate's routes.yaml,
//! nginx's `return 302`, HAProxy's health-aware redirect, and the front
//! nginx built from the shipped `deploy/nginx/` files.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::support::nginx::{deploy_file, substitute};
use crate::support::StandIn;

/// Rooms served by all three systems; the benchmark requests the first.
pub const ROOMS: [&str; 4] = ["Lounge", "Hackcenter", "Cave", "Freitagsfoo"];

/// Probe settings shared by roomgate and HAProxy.
pub const INTERVAL: Duration = Duration::from_secs(2);
pub const TIMEOUT: Duration = Duration::from_secs(1);

pub fn routes_yaml(primary: &str, backup: &str) -> String {
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

/// The start of a main nginx.conf with prefix `dir`: what a distribution
/// ships, with the access log off.
fn nginx_main(dir: &Path, workers: usize) -> String {
    let d = dir.display();
    format!(
        "worker_processes {workers};\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n    access_log off;\n\
         \x20   client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n"
    )
}

/// nginx answering every room with a static `return 302` to `primary` (no
/// health checks at all: the lower bound of work a redirect can be).
pub fn nginx_conf(dir: &Path, workers: usize, port: u16, primary: &str) -> String {
    let mut s = nginx_main(dir, workers);
    // As many requests per connection as roomgate and HAProxy allow (nginx
    // closes after 1,000 by default).
    s.push_str("    keepalive_requests 1000000;\n    keepalive_timeout 65s;\n");
    let _ = writeln!(
        s,
        "    server {{\n        listen 127.0.0.1:{port} reuseport;"
    );
    for room in ROOMS {
        let _ = writeln!(
            s,
            "        location = /{room} {{ return 302 {primary}/{room}; }}"
        );
    }
    s.push_str("        location / { return 404; }\n    }\n}\n");
    s
}

/// HAProxy with a health-checked backend per server and a redirect per room
/// to the first one that is up (the closest existing tool to roomgate).
pub fn haproxy_cfg(threads: usize, port: u16, primary: &StandIn, backup: &StandIn) -> String {
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
    // No `log` line: HAProxy logs nothing (no access log), like the others.
    format!(
        "global\n    maxconn 8000\n    nbthread {threads}\n\ndefaults\n    mode http\n    timeout connect 1s\n    \
         timeout client 30s\n    timeout server 30s\n    timeout http-keep-alive 65s\n\n\
         frontend gateway\n    bind 127.0.0.1:{port}\n{redirects}    http-request return status 404\n\n{}\n{}",
        check("primary", primary),
        check("backup", backup),
    )
}

/// One site of the front nginx: a copy of `deploy/nginx/roomgate-site.conf`
/// proxying to upstream `upstream`, served in plain HTTP on `port`.
///
/// The substitutions: the `listen 443 ssl` server listens on
/// 127.0.0.1:`port` without TLS (so that the shapes measure the proxying,
/// not the encryption); the port-80 server (a redirect to https) on a port of
/// its own, unused; the IPv6 listens are left out; certificate and webroot
/// paths point into `dir` (nginx loads the certificates even without an ssl
/// listener).
pub fn front_site(dir: &Path, upstream: &str, port: u16, http_port: u16) -> String {
    let cert = dir.join("fullchain.pem").display().to_string();
    let key = dir.join("privkey.pem").display().to_string();
    substitute(
        &deploy_file("nginx/roomgate-site.conf"),
        &[
            ("listen 80;", &format!("listen 127.0.0.1:{http_port};")),
            ("listen [::]:80;", "# (IPv6 left out by the bench)"),
            ("listen 443 ssl;", &format!("listen 127.0.0.1:{port};")),
            ("listen [::]:443 ssl;", "# (IPv6 left out by the bench)"),
            (
                "/etc/letsencrypt/live/virtual.example.org/fullchain.pem",
                &cert,
            ),
            (
                "/etc/letsencrypt/live/virtual.example.org/privkey.pem",
                &key,
            ),
            ("/var/www/html", &dir.join("www").display().to_string()),
            (
                "proxy_pass http://roomgate;",
                &format!("proxy_pass http://{upstream};"),
            ),
        ],
    )
}

/// `deploy/nginx/roomgate-upstream.conf` naming `upstream` and pointing at
/// 127.0.0.1:`port`.
pub fn front_upstream_tcp(upstream: &str, port: u16) -> String {
    substitute(
        &deploy_file("nginx/roomgate-upstream.conf"),
        &[
            ("upstream roomgate {", &format!("upstream {upstream} {{")),
            (
                "server 127.0.0.1:8080;",
                &format!("server 127.0.0.1:{port};"),
            ),
        ],
    )
}

/// `deploy/nginx/roomgate-upstream-unix.conf` naming `upstream` and pointing
/// at `socket`.
pub fn front_upstream_unix(upstream: &str, socket: &Path) -> String {
    substitute(
        &deploy_file("nginx/roomgate-upstream-unix.conf"),
        &[
            ("upstream roomgate {", &format!("upstream {upstream} {{")),
            (
                "unix:/run/roomgate/roomgate.sock",
                &format!("unix:{}", socket.display()),
            ),
        ],
    )
}

/// The front nginx's main config: `workers` workers, and the `files` (name,
/// text) written into `dir` and included at http level.
pub fn front_conf(dir: &Path, workers: usize, files: &[(String, String)]) -> String {
    let mut s = nginx_main(dir, workers);
    for (name, text) in files {
        crate::support::write_file(dir, name, text);
        let _ = writeln!(s, "    include {}/{name};", dir.display());
    }
    s.push_str("}\n");
    s
}
