//! Driving wrk and reading its report.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::{die, procs};

/// The User-Agent header every benchmark request carries: a browser's, as
/// real visitors send (roomgate checks it against the link-preview fetchers
/// on every request).
pub const BROWSER: &str =
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";

/// One wrk command line without the URL.
#[derive(Clone, Debug)]
pub struct Wrk {
    pub threads: usize,
    pub connections: usize,
    pub seconds: u64,
    /// `Connection: close` on every request: the server closes after each
    /// answer and wrk opens a new connection for the next request.
    pub close: bool,
}

impl Wrk {
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            format!("-t{}", self.threads.min(self.connections)),
            format!("-c{}", self.connections),
            format!("-d{}s", self.seconds),
            "--timeout".into(),
            "5s".into(),
            "--latency".into(),
            "-H".into(),
            BROWSER.into(),
        ];
        if self.close {
            a.push("-H".into());
            a.push("Connection: close".into());
        }
        a
    }

    /// The command line, quoted for a shell, with `url` at the end.
    pub fn command_line(&self, url: &str) -> String {
        let mut s = String::from("wrk");
        for a in self.args() {
            if a.contains(' ') {
                s.push_str(&format!(" '{a}'"));
            } else {
                s.push(' ');
                s.push_str(&a);
            }
        }
        s.push(' ');
        s.push_str(url);
        s
    }

    /// Runs wrk against `url` (with the open-file limit raised for 1,000
    /// connections) and reads its report; gives up when wrk overruns its
    /// duration by far.
    pub async fn run(&self, url: &str) -> Run {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("ulimit -n \"$(ulimit -H -n)\"; exec \"$@\"")
            .arg("sh")
            .arg("wrk")
            .args(self.args())
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| die(&format!("cannot start wrk: {e}")));
        // Stopped with the servers if the bench is interrupted meanwhile.
        let pid = child.id().unwrap_or(0);
        procs::track(pid);
        let bound = Duration::from_secs(self.seconds + 30);
        let out = match tokio::time::timeout(bound, child.wait_with_output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => die(&format!("wrk: {e}")),
            Err(_) => die(&format!("wrk against {url} ran longer than {bound:?}")),
        };
        procs::untrack(pid);
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            die(&format!(
                "wrk failed: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        parse(&text).unwrap_or_else(|| die(&format!("cannot read wrk output:\n{text}")))
    }
}

/// What one wrk run measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Run {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub requests: u64,
    /// Socket errors and answers other than 2xx/3xx.
    pub errors: u64,
}

/// Reads requests/s, p50, p99, requests and errors from wrk's `--latency`
/// output.
pub fn parse(text: &str) -> Option<Run> {
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
