//! A real Prosody (Debian's `prosody` package, 0.12) for a test, set up as
//! Jitsi Meet sets it up, on loopback only.
//!
//! ```ignore
//! if !prosody_available() { return; }
//! let prosody = Prosody::start(ProsodySpec::jitsi("localhost")).await;
//! let front = JitsiFront::start(&prosody, FrontSpec::http("localhost")).await;
//! // ... point roomgate at front.base, xmpp_domain: localhost ...
//! prosody.pause(); /* black hole */ prosody.resume();
//! prosody.stop().await; /* nginx answers 502 */ prosody.restart().await;
//! assert_eq!(prosody.sessions().await, 0);
//! ```
//!
//! Each instance has its own config file, data directory, pid file, log
//! and admin socket under a temporary directory, and runs in the
//! foreground (`prosody --config FILE -F`) as a child of the test, never
//! through the system service; it is killed when the value drops. It
//! listens on 127.0.0.1 only: HTTP (for BOSH) on a free port, the
//! component port (XEP-0114) on another one when a component is declared;
//! c2s, s2s and HTTPS listen nowhere (`*_ports = {}`), and s2s is
//! disabled, so Prosody never connects out. Ports are picked by
//! binding 127.0.0.1:0 and closing again; should another process take one
//! in between, Prosody logs "Failed to open server port" and the start is
//! retried on new ports.
//!
//! As in Jitsi's `prosody.cfg.lua`, `bosh` is enabled per virtual host
//! (not globally), `consider_bosh_secure = true`, and the anonymous
//! virtual host does not require encryption. So, as in a Jitsi deployment,
//! BOSH answers 404 for an HTTP `Host` that is no virtual host, unless
//! [`ProsodySpec::default_host`] sets `http_default_host`.
//!
//! Counting live sessions ([`Prosody::sessions`]): Prosody 0.12's admin
//! shell, as an operator would ask it: `prosodyctl --config FILE shell
//! "c2s:count()"` over the instance's own `admin_socket` (mod_admin_shell).
//! `c2s:count()` counts every c2s and every BOSH session, also those that
//! never logged in (it adds mod_bosh's session table to the full
//! sessions), and prints `Total: N clients`. An unterminated BOSH session
//! stays there until its inactivity timeout (60 s).
//!
//! A MUC component ([`ProsodySpec::muc`], e.g. `conference.localhost`) is
//! Prosody's own `muc` module as Jitsi declares it: `muc_room_locking =
//! false` (a room opens with its first occupant, who owns it), the real
//! JIDs visible to everyone (`muc_room_default_public_jids`). Rooms are
//! public (`muc_room_default_public = true`): Prosody 0.12's own default
//! is hidden rooms, whose disco#info says `muc_hidden`; a test that wants
//! one hides it as its owner (`support::bosh_client::MucClient::hide`).
//!
//! Running as root: the config says `run_as_root = true`, so neither
//! Prosody's mod_posix nor `prosodyctl` switches to the `prosody` user
//! (who could not write the temporary directory).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::nginx::free_port;
use super::tools::PROSODY;
use super::Req;

/// Where Debian puts Prosody (`.ci/run` installs it).
pub const PROSODY_BIN: &str = "/usr/bin/prosody";
/// Prosody's control tool, for the admin shell.
pub const PROSODYCTL_BIN: &str = "/usr/bin/prosodyctl";

/// How long Prosody may take to serve BOSH after start.
const START_BOUND: Duration = Duration::from_secs(15);
/// How long a stop (SIGTERM) may take before SIGKILL.
const STOP_BOUND: Duration = Duration::from_secs(5);
/// Starts tried on fresh ports before giving up.
const START_ATTEMPTS: usize = 5;

/// Whether Prosody is installed; see `support::tools` for what happens
/// when it is not.
pub fn prosody_available() -> bool {
    PROSODY.installed(PROSODY_BIN) && PROSODY.installed(PROSODYCTL_BIN)
}

/// How a virtual host lets clients log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `authentication = "anonymous"`: SASL ANONYMOUS works, as for Jitsi
    /// guests on the main (or `guest.`) domain.
    Anonymous,
    /// `authentication = "internal_hashed"` with no accounts: anonymous
    /// login fails, as on a Jitsi secure domain or `auth.` domain.
    Internal,
}

/// A `VirtualHost` of the config, with `bosh` enabled on it.
#[derive(Debug, Clone)]
pub struct VHost {
    pub name: String,
    pub auth: Auth,
}

/// An external component (XEP-0114), e.g. Jicofo's `focus.<domain>`.
#[derive(Debug, Clone)]
pub struct ComponentSpec {
    pub name: String,
    pub secret: String,
}

/// What a [`Prosody`] serves.
#[derive(Debug, Clone, Default)]
pub struct ProsodySpec {
    pub vhosts: Vec<VHost>,
    pub component: Option<ComponentSpec>,
    /// A MUC component (`Component NAME "muc"`), e.g. `conference.<domain>`.
    pub muc: Option<String>,
    /// `http_default_host`: the virtual host that answers HTTP requests
    /// whose `Host` is none of the virtual hosts.
    pub default_host: Option<String>,
}

impl ProsodySpec {
    /// Nothing yet; add hosts with [`ProsodySpec::anonymous`] and
    /// [`ProsodySpec::internal`].
    pub fn new() -> ProsodySpec {
        ProsodySpec::default()
    }

    /// Jitsi's layout for `domain`: the main domain anonymous (guests),
    /// `auth.<domain>` with internal accounts (anonymous login fails), and
    /// the focus component `focus.<domain>` with secret [`FOCUS_SECRET`].
    pub fn jitsi(domain: &str) -> ProsodySpec {
        ProsodySpec::new()
            .anonymous(domain)
            .internal(&format!("auth.{domain}"))
            .component(&format!("focus.{domain}"), FOCUS_SECRET)
    }

    /// Adds a virtual host with anonymous login.
    pub fn anonymous(mut self, name: &str) -> ProsodySpec {
        self.vhosts.push(VHost {
            name: name.to_owned(),
            auth: Auth::Anonymous,
        });
        self
    }

    /// Adds a virtual host with internal accounts only.
    pub fn internal(mut self, name: &str) -> ProsodySpec {
        self.vhosts.push(VHost {
            name: name.to_owned(),
            auth: Auth::Internal,
        });
        self
    }

    /// Declares the external component `name` with `secret`.
    pub fn component(mut self, name: &str, secret: &str) -> ProsodySpec {
        self.component = Some(ComponentSpec {
            name: name.to_owned(),
            secret: secret.to_owned(),
        });
        self
    }

    /// Declares the MUC component `name` (see the module doc).
    pub fn muc(mut self, name: &str) -> ProsodySpec {
        self.muc = Some(name.to_owned());
        self
    }

    /// Sets `http_default_host`.
    pub fn default_host(mut self, name: &str) -> ProsodySpec {
        self.default_host = Some(name.to_owned());
        self
    }
}

/// The component secret of [`ProsodySpec::jitsi`].
pub const FOCUS_SECRET: &str = "focus-secret-for-tests";

/// A running (or stopped, or paused) Prosody of one test.
pub struct Prosody {
    /// Config, data, log, pid and admin socket.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
    /// HTTP (BOSH at `/http-bind`) on 127.0.0.1.
    pub http_port: u16,
    /// The component port on 127.0.0.1, when a component is declared.
    pub component_port: Option<u16>,
    pub spec: ProsodySpec,
    child: Option<Child>,
}

impl Prosody {
    /// Writes the config for `spec` and starts Prosody; returns once BOSH
    /// answers on the HTTP port (bounded; panics with the log otherwise).
    pub async fn start(spec: ProsodySpec) -> Prosody {
        assert!(!spec.vhosts.is_empty(), "a Prosody needs a virtual host");
        let dir = tempfile::tempdir().expect("prosody temp dir");
        for sub in ["data", "certs"] {
            std::fs::create_dir(dir.path().join(sub)).expect("prosody sub dir");
        }
        let config = dir.path().join("prosody.cfg.lua");
        let mut prosody = Prosody {
            dir,
            config,
            http_port: 0,
            component_port: None,
            spec,
            child: None,
        };
        for attempt in 1..=START_ATTEMPTS {
            prosody.http_port = free_port();
            prosody.component_port = prosody.spec.component.as_ref().map(|_| free_port());
            std::fs::write(&prosody.config, prosody.config_text()).expect("write prosody config");
            match prosody.launch().await {
                Ok(()) => return prosody,
                Err(why) if attempt < START_ATTEMPTS => {
                    eprintln!("prosody start {attempt} failed ({why}), retrying on new ports");
                    prosody.kill();
                }
                Err(why) => panic!("prosody did not start: {why}\n{}", prosody.log()),
            }
        }
        unreachable!()
    }

    /// `http://127.0.0.1:PORT`: Prosody's own HTTP server (what nginx
    /// proxies `/http-bind` to).
    pub fn http_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops Prosody with SIGTERM (its clean shutdown), bounded, then
    /// SIGKILL. Its ports close: nginx answers `/http-bind` with 502.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(&child, libc::SIGCONT);
        signal(&child, libc::SIGTERM);
        let deadline = tokio::time::Instant::now() + STOP_BOUND;
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills Prosody at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the stopped (or killed) Prosody again on the same ports and
    /// with the same data; returns once BOSH answers.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: prosody still runs");
        if let Err(why) = self.launch().await {
            panic!("prosody did not restart: {why}\n{}", self.log());
        }
    }

    /// SIGSTOP: Prosody keeps its sockets and the kernel still accepts
    /// connections, but nothing answers (a black hole).
    pub fn pause(&self) {
        signal(self.child.as_ref().expect("prosody runs"), libc::SIGSTOP);
    }

    /// SIGCONT after [`Prosody::pause`]: Prosody answers what queued up.
    pub fn resume(&self) {
        signal(self.child.as_ref().expect("prosody runs"), libc::SIGCONT);
    }

    /// The number of live c2s and BOSH sessions, logged in or not, from
    /// the admin shell (see the module doc).
    pub async fn sessions(&self) -> usize {
        let text = self.shell("c2s:count()").await;
        // "OK: Total: 3 clients"
        text.split("Total:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected c2s:count() answer: {text:?}"))
    }

    /// Runs one admin shell command through `prosodyctl shell`; returns
    /// its output (panics when it fails).
    pub async fn shell(&self, command: &str) -> String {
        let out = tokio::process::Command::new(PROSODYCTL_BIN)
            .arg("--config")
            .arg(&self.config)
            .args(["shell", command])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(10), out)
            .await
            .expect("prosodyctl shell finishes")
            .expect("run prosodyctl");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "prosodyctl shell {command:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Prosody's log so far (debug level).
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("prosody.log")).unwrap_or_default();
        let console =
            std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default();
        format!("{log}{console}")
    }

    /// Lines of the log that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// Spawns Prosody with the written config and waits until its HTTP
    /// port is its own and BOSH answers.
    async fn launch(&mut self) -> Result<(), String> {
        let console = std::fs::File::create(self.dir.path().join("console.log"))
            .expect("prosody console log");
        let child = Command::new(PROSODY_BIN)
            .arg("--config")
            .arg(&self.config)
            .arg("-F")
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("console log"))
            .stderr(console)
            .spawn()
            .map_err(|e| format!("spawn {PROSODY_BIN}: {e}"))?;
        self.child = Some(child);
        let listening = format!("on [127.0.0.1]:{}", self.http_port);
        let deadline = tokio::time::Instant::now() + START_BOUND;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!("prosody exited at start ({status})"));
            }
            let log = self.log();
            if log.contains("Failed to open server port") {
                return Err("a port was taken".to_owned());
            }
            // Only once Prosody itself listens can the answer be its own.
            if log.contains(&listening) && self.bosh_answers().await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("BOSH not answering within {START_BOUND:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether `GET /http-bind` for the first virtual host answers with
    /// mod_bosh's page.
    async fn bosh_answers(&self) -> bool {
        let url = format!("{}/http-bind", self.http_base());
        Req::get(&url)
            .header("host", &self.spec.vhosts[0].name)
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .is_ok_and(|r| r.status == 200 && r.body.contains("BOSH"))
    }

    /// The config file for the current spec and ports.
    fn config_text(&self) -> String {
        let d = self.dir.path().display();
        let lua = |s: &str| format!("{s:?}");
        let mut text = format!(
            "-- Written by roomgate's tests (tests/it/support/prosody.rs).
run_as_root = true
daemonize = false
pidfile = \"{d}/prosody.pid\"
data_path = \"{d}/data\"
certificates = \"{d}/certs\"
admin_socket = \"{d}/admin.sock\"
log = {{ {{ levels = {{ min = \"debug\" }}, to = \"file\", filename = \"{d}/prosody.log\" }} }}
modules_enabled = {{ \"saslauth\", \"disco\", \"ping\", \"admin_shell\" }}
-- No federation: a stanza for another domain bounces here instead of
-- making Prosody look that domain up and connect out.
modules_disabled = {{ \"s2s\" }}
c2s_ports = {{}}
c2s_direct_tls_ports = {{}}
s2s_ports = {{}}
s2s_direct_tls_ports = {{}}
https_ports = {{}}
http_ports = {{ {http} }}
http_interfaces = {{ \"127.0.0.1\" }}
component_ports = {{ {component} }}
component_interfaces = {{ \"127.0.0.1\" }}
consider_bosh_secure = true
",
            http = self.http_port,
            component = self
                .component_port
                .map(|p| p.to_string())
                .unwrap_or_default(),
        );
        if let Some(host) = &self.spec.default_host {
            text.push_str(&format!("http_default_host = {}\n", lua(host)));
        }
        for vhost in &self.spec.vhosts {
            let auth = match vhost.auth {
                Auth::Anonymous => "anonymous",
                Auth::Internal => "internal_hashed",
            };
            text.push_str(&format!(
                "\nVirtualHost {}\n    authentication = \"{auth}\"\n    \
                 c2s_require_encryption = false\n    modules_enabled = {{ \"bosh\" }}\n",
                lua(&vhost.name)
            ));
        }
        if let Some(component) = &self.spec.component {
            text.push_str(&format!(
                "\nComponent {}\n    component_secret = {}\n",
                lua(&component.name),
                lua(&component.secret)
            ));
        }
        if let Some(muc) = &self.spec.muc {
            text.push_str(&format!(
                "\nComponent {} \"muc\"\n    storage = \"memory\"\n    \
                 muc_room_locking = false\n    muc_room_default_public_jids = true\n    \
                 muc_room_default_public = true\n",
                lua(muc)
            ));
        }
        text
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
}
