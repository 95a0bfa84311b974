//! A real nginx in front of roomgate, run from the shipped `deploy/nginx/`
//! files.
//!
//! The test writes a minimal main `nginx.conf` (what a distribution ships:
//! `events`, `http`, pid and log paths inside a temp prefix) that includes
//! the deploy files unchanged except for [`substitute`]d paths, ports and
//! addresses. nginx runs in the foreground (`daemon off`) with `-p` and `-c`
//! pointing into a temp directory, and is stopped when the value drops.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Where Debian puts nginx (`.ci/run` installs it).
pub const NGINX: &str = "/usr/sbin/nginx";

/// How long nginx may take to answer on its port after start.
const START_BOUND: Duration = Duration::from_secs(15);

/// Whether nginx is installed; see `support::tools` for what happens when
/// it is not.
pub fn nginx_available() -> bool {
    super::tools::NGINX.installed(NGINX)
}

/// The text of `deploy/<name>`.
pub fn deploy_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `text` with every `(from, to)` replaced. Each `from` must occur, so a
/// changed deploy file fails the test instead of silently going untested.
pub fn substitute(text: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (from, to) in pairs {
        assert!(
            out.contains(from),
            "`{from}` not found in the deploy file; update the test's substitutions:\n{out}"
        );
        out = out.replace(from, to);
    }
    out
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Makes `dir` enterable by everyone (nginx workers run as `nobody`).
pub fn open_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
}

/// A running nginx master with its workers.
pub struct Nginx {
    /// The prefix directory: config, pid, logs, temp files.
    pub dir: tempfile::TempDir,
    /// The main config file.
    pub conf: PathBuf,
    child: std::process::Child,
}

impl Nginx {
    /// Starts nginx with `http_body` inside `http { }` of the main config and
    /// `files` written beside it (`@DIR@` in `http_body` stands for their
    /// directory, as in `include @DIR@/NAME;`), and waits until `wait_port`
    /// on 127.0.0.1 accepts connections.
    pub async fn start(http_body: &str, files: &[(&str, &str)], wait_port: u16) -> Nginx {
        let dir = tempfile::tempdir().expect("nginx temp dir");
        open_dir(dir.path());
        let p = dir.path().display().to_string();
        let http_body = http_body.replace("@DIR@", &p);
        for (name, text) in files {
            // A name with a directory (`www/index.html`) gets it made.
            if let Some(parent) = Path::new(name).parent() {
                std::fs::create_dir_all(dir.path().join(parent)).expect("nginx sub dir");
            }
            super::write_file(dir.path(), name, text);
        }
        // As root, workers drop to an unprivileged user like in production;
        // that also proves the unix socket's default mode lets them in.
        let user = if super::tools::is_root() {
            "user nobody nogroup;"
        } else {
            ""
        };
        let main = format!(
            "{user}
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log notice;
events {{ worker_connections 512; }}
http {{
    access_log {p}/access.log;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
{http_body}
}}
"
        );
        let conf = super::write_file(dir.path(), "nginx.conf", &main);
        let child = std::process::Command::new(NGINX)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let mut nginx = Nginx { dir, conf, child };
        let deadline = tokio::time::Instant::now() + START_BOUND;
        loop {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!(
                    "nginx exited at start ({status}):\n{}\n--- nginx.conf ---\n{main}",
                    nginx.error_log()
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", wait_port))
                .await
                .is_ok()
            {
                return nginx;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nginx not listening on {wait_port} within {START_BOUND:?}:\n{}",
                nginx.error_log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `nginx -s reload` with the same prefix and config: the master
    /// re-reads the config and replaces its workers gracefully.
    pub fn reload(&self) {
        let out = std::process::Command::new(NGINX)
            .arg("-p")
            .arg(self.dir.path())
            .arg("-c")
            .arg(&self.conf)
            .args(["-s", "reload"])
            .output()
            .expect("run nginx -s reload");
        assert!(
            out.status.success(),
            "nginx -s reload failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.error_log()
        );
    }

    /// The error log so far (start-up problems, reloads, upstream errors).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master stops the workers too; SIGKILL would orphan
        // them with the listening sockets.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The values of every `href` and `src` attribute in `html`, unescaped.
pub fn links(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lower = html.to_ascii_lowercase();
    for attr in ["href=", "src="] {
        let mut from = 0;
        while let Some(at) = lower[from..].find(attr) {
            let start = from + at + attr.len();
            from = start;
            // Only a whole attribute name: preceded by whitespace.
            let before = html[..start - attr.len()].chars().last();
            if !before.is_some_and(char::is_whitespace) {
                continue;
            }
            let rest = &html[start..];
            let value = match rest.chars().next() {
                Some(q @ ('"' | '\'')) => rest[1..].split(q).next().unwrap_or(""),
                _ => rest
                    .split(|c: char| c.is_whitespace() || c == '>')
                    .next()
                    .unwrap_or(""),
            };
            out.push(
                value
                    .replace("&quot;", "\"")
                    .replace("&#39;", "'")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&"),
            );
        }
    }
    out
}

/// Where `href` on a page at `page_path` leads, as a path with query, when
/// it stays on `origin` (`http://host:port`); `None` for another origin and
/// for `data:`/`mailto:` and the like. Follows RFC 3986 §5.2 for the cases
/// a page can produce: absolute URL, network-path, absolute path, relative
/// path with `.`/`..` segments, query-only and fragment-only references.
pub fn resolve(origin: &str, page_path: &str, href: &str) -> Option<String> {
    let href = href.split('#').next().unwrap_or("");
    if href.starts_with("//") {
        let scheme = origin.split("://").next().unwrap_or("http");
        return resolve(origin, page_path, &format!("{scheme}:{href}"));
    }
    if let Some((scheme, rest)) = href.split_once(':') {
        if !scheme.contains('/') && !scheme.contains('?') {
            // An absolute URL: ours only if it starts with our origin.
            let ours = format!("{scheme}:{rest}");
            let path = ours.strip_prefix(origin)?;
            return match path.chars().next() {
                None => Some("/".to_owned()),
                Some('/') => Some(normalize(path)),
                Some('?') => Some(format!("/{path}")),
                _ => None,
            };
        }
    }
    if href.is_empty() {
        return Some(page_path.to_owned());
    }
    if href.starts_with('?') {
        let path = page_path.split('?').next().unwrap_or("/");
        return Some(format!("{path}{href}"));
    }
    if href.starts_with('/') {
        return Some(normalize(href));
    }
    let page = page_path.split('?').next().unwrap_or("/");
    let dir = &page[..=page.rfind('/').unwrap_or(0)];
    Some(normalize(&format!("{dir}{href}")))
}

/// Removes `.` and `..` segments from an absolute path (keeps the query).
fn normalize(path: &str) -> String {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    for (i, seg) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        match *seg {
            "." => {
                if last {
                    segments.push("");
                }
            }
            ".." => {
                segments.pop();
                if last {
                    segments.push("");
                }
            }
            s => segments.push(s),
        }
    }
    let mut out = format!("/{}", segments.join("/"));
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}
