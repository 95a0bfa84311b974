//! A headless Chromium driven through chromedriver and the W3C WebDriver
//! HTTP protocol, with just the commands the browser tests use.
//!
//! Chromium and chromedriver come from the system (`.ci/run` installs them).
//! Without them a test skips as `support::tools` says: loudly, and under
//! `CI=true` not at all but fails.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use http::Method;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use super::Req;

/// chromedriver and Chromium start slowly on a busy two-core machine.
const START_BOUND: Duration = Duration::from_secs(60);

/// Bound on one WebDriver command (navigation included).
const COMMAND_BOUND: Duration = Duration::from_secs(30);

/// A running chromedriver with one browser session; both end on drop.
pub struct Browser {
    /// chromedriver, killed on drop (it takes Chromium down with it).
    driver: Child,
    /// `http://127.0.0.1:PORT/session/ID`.
    session: String,
    /// Chromium's profile, removed on drop.
    _profile: tempfile::TempDir,
}

/// Where the Chromium binary is, if installed.
fn chromium_binary() -> Option<PathBuf> {
    // The Debian launcher script is a shell wrapper; the real binary avoids
    // its environment probing.
    ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn chromedriver_binary() -> Option<PathBuf> {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. `None` after a
    /// skip (see `support::tools`) when they are not installed.
    pub async fn start() -> Option<Browser> {
        let (Some(chromium), Some(driver)) = (chromium_binary(), chromedriver_binary()) else {
            super::tools::CHROMIUM.found(false);
            return None;
        };
        let port = free_port();
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + START_BOUND;
        loop {
            if let Ok(r) = Req::get(&format!("{base}/status")).send().await {
                let v: Value = serde_json::from_str(&r.body).unwrap_or_default();
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver not ready within {START_BOUND:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--disable-default-apps", "--disable-extensions",
                        "--hide-scrollbars", "--force-device-scale-factor=1",
                        "--window-size=1280,900",
                        format!("--user-data-dir={}", profile.path().display()),
                    ],
                },
                "goog:loggingPrefs": { "browser": "ALL" },
                "pageLoadStrategy": "normal",
            }}
        });
        let v = post_bound(&format!("{base}/session"), &caps, START_BOUND).await;
        let id = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        Some(Browser {
            driver,
            session: format!("{base}/session/{id}"),
            _profile: profile,
        })
    }

    async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        let mut req = Req::new(method.clone(), &url)
            .timeout(COMMAND_BOUND)
            .header("content-type", "application/json");
        if let Some(body) = body {
            req = req.body(&body.to_string());
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let v: Value = serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}: {}", r.body));
        assert!(r.status.is_success(), "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    /// Loads `url` and waits for the load event.
    pub async fn goto(&self, url: &str) {
        self.cmd(Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The address the browser shows now.
    pub async fn current_url(&self) -> String {
        let v = self.cmd(Method::GET, "/url", None).await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns
    /// its result.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.cmd(
            Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Resizes the window (CSS pixels).
    pub async fn resize(&self, width: u32, height: u32) {
        self.cmd(
            Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    /// Runs a Chrome DevTools Protocol command (e.g. media emulation).
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.cmd(
            Method::POST,
            "/goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        )
        .await
    }

    /// Presses and releases one key, as a user would (`\u{E004}` is Tab).
    pub async fn press(&self, key: &str) {
        let actions = json!({ "actions": [{
            "type": "key", "id": "keyboard",
            "actions": [{ "type": "keyDown", "value": key }, { "type": "keyUp", "value": key }],
        }]});
        self.cmd(Method::POST, "/actions", Some(actions)).await;
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let v = self.cmd(Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("screenshot is base64")
    }

    /// Console messages since the last call: `(level, message)`.
    pub async fn console(&self) -> Vec<(String, String)> {
        let v = self
            .cmd(Method::POST, "/se/log", Some(json!({ "type": "browser" })))
            .await;
        v.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        (
                            e["level"].as_str().unwrap_or_default().to_owned(),
                            e["message"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Polls `script` until it returns `true`, at most `bound`.
    pub async fn wait_until(&self, script: &str, bound: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            if self.eval(script, json!([])).await == true {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ends the session and chromedriver.
    pub async fn quit(mut self) {
        let _ = Req::new(Method::DELETE, &self.session)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let _ = self.driver.kill().await;
    }
}

async fn post_bound(url: &str, body: &Value, bound: Duration) -> Value {
    let r = Req::post(url, &body.to_string())
        .header("content-type", "application/json")
        .timeout(bound)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let v: Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body));
    assert!(r.status.is_success(), "POST {url}: {v}");
    v
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}
