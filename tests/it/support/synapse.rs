//! A real Matrix homeserver for the tests: Synapse from PyPI, with SQLite,
//! listening on 127.0.0.1 only, no federation, no URL previews, no stats;
//! started as a child the test holds (killed on drop), with users
//! registered through the shared-secret admin API.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use http::Method;
use serde_json::{json, Value};

use super::tools::SYNAPSE;
use super::{write_file, Req};

/// Where [`SYNAPSE`]'s Python is looked for: `ROOMGATE_SYNAPSE_PYTHON`, else
/// the virtualenv `.ci/run` makes.
pub fn python() -> Option<PathBuf> {
    let from_env = std::env::var("ROOMGATE_SYNAPSE_PYTHON").ok();
    let candidates: Vec<&str> = from_env
        .as_deref()
        .into_iter()
        .chain(["/opt/synapse-venv/bin/python"])
        .collect();
    SYNAPSE.at(&candidates)
}

/// How long Synapse may take to answer after its start (its first start
/// creates the database; 10-20 s on a busy 2-core machine).
const START_BOUND: Duration = Duration::from_secs(120);

/// The shared secret of the test homeserver's admin registration.
const SHARED_SECRET: &str = "roomgate-test-registration-secret";

/// A running homeserver.
pub struct Synapse {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its files: config, keys, database, log.
    pub dir: tempfile::TempDir,
    child: tokio::process::Child,
}

impl Synapse {
    /// Generates a config in a fresh directory, starts Synapse and waits
    /// (bounded) until its client API answers.
    pub async fn start(python: &Path) -> Synapse {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path();
        let main = data.join("homeserver.yaml");
        let generated = tokio::process::Command::new(python)
            .args(["-m", "synapse.app.homeserver", "--server-name", "localhost"])
            .arg("--config-path")
            .arg(&main)
            .arg("--data-directory")
            .arg(data)
            .args(["--generate-config", "--report-stats=no"])
            .current_dir(data)
            .output()
            .await
            .expect("run synapse --generate-config");
        assert!(
            generated.status.success(),
            "synapse --generate-config failed: {}",
            String::from_utf8_lossy(&generated.stderr)
        );
        let port = free_port();
        // Read after the generated file; top-level keys here win.
        let overrides = write_file(
            data,
            "overrides.yaml",
            &format!(
                "server_name: localhost
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: {db}
registration_shared_secret: {SHARED_SECRET}
report_stats: false
federation_domain_whitelist: []
trusted_key_servers: []
suppress_key_server_warning: true
url_preview_enabled: false
enable_metrics: false
presence:
  enabled: false
rc_message:
  per_second: 1000
  burst_count: 1000
",
                db = data.join("homeserver.db").display()
            ),
        );
        let log = std::fs::File::create(data.join("stderr.log")).expect("log file");
        let child = tokio::process::Command::new(python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&main)
            .arg("-c")
            .arg(&overrides)
            .current_dir(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start synapse");
        let synapse = Synapse {
            url: format!("http://127.0.0.1:{port}"),
            dir,
            child,
        };
        synapse.wait_ready().await;
        synapse
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + START_BOUND;
        let versions = format!("{}/_matrix/client/versions", self.url);
        loop {
            if let Ok(r) = Req::get(&versions)
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                if r.status == 200 {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Synapse did not answer within {START_BOUND:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Synapse's stderr and log file, for failure messages.
    pub fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let text = format!("{}\n{}", read("stderr.log"), read("homeserver.log"));
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A call to the client or admin API: `body` as JSON, with `token` as
    /// the bearer; the answer as JSON, which must come with a 200.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Value {
        let mut req = Req::new(method.clone(), &format!("{}{path}", self.url))
            .timeout(Duration::from_secs(30));
        if let Some(token) = token {
            req = req.header("authorization", &format!("Bearer {token}"));
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(&body.to_string());
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(resp.status, 200, "{method} {path}: {}", resp.body);
        serde_json::from_str(&resp.body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", resp.body))
    }

    /// Registers `user` through the shared-secret admin API (HMAC-SHA1 of
    /// nonce, user, password and admin flag, as Synapse documents it);
    /// returns its access token.
    pub async fn register(&self, user: &str, admin: bool) -> String {
        use ring::hmac;
        let path = "/_synapse/admin/v1/register";
        let nonce = self.call(Method::GET, path, None, None).await["nonce"]
            .as_str()
            .expect("a nonce")
            .to_owned();
        let password = format!("{user}-password-4711");
        let flag = if admin { "admin" } else { "notadmin" };
        let key = hmac::Key::new(
            hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            SHARED_SECRET.as_bytes(),
        );
        let message = format!("{nonce}\0{user}\0{password}\0{flag}");
        let mac: String = hmac::sign(&key, message.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let registered = self
            .call(
                Method::POST,
                path,
                None,
                Some(json!({ "nonce": nonce, "username": user, "password": password, "admin": admin, "mac": mac })),
            )
            .await;
        registered["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned()
    }

    /// Creates a private room; returns its id.
    pub async fn create_room(&self, token: &str) -> String {
        let created = self
            .call(
                Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(token),
                Some(json!({ "name": "roomgate" })),
            )
            .await;
        created["room_id"].as_str().expect("a room id").to_owned()
    }

    /// The `m.room.message` events of `room`, oldest first.
    pub async fn messages(&self, token: &str, room: &str) -> Vec<Value> {
        let room = room.replace('!', "%21").replace(':', "%3A");
        let page = self
            .call(
                Method::GET,
                &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
                Some(token),
                None,
            )
            .await;
        let mut events: Vec<Value> = page["chunk"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["type"] == "m.room.message")
            .collect();
        events.reverse();
        events
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// A port nobody listens on right now (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
