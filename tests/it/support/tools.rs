//! The system tools tests drive for real, and the one way a test skips
//! when one is missing.
//!
//! A test that needs a tool asks [`Tool::found`] (or [`Tool::usable`] when
//! the tool is there but may not work, e.g. without root) and returns early
//! when that says no. What happens then:
//!
//! - under `CI=true` the test fails, naming the tool and how to install it
//!   (`.ci/run` installs every tool listed here, so in CI a skip is a bug);
//! - elsewhere it prints `SKIPPED <test>: <tool> not found (<install>)` on
//!   the process's raw stderr. libtest captures what `print!`/`eprint!`
//!   write from a test, and shows it only for failing tests; it does not
//!   capture writes to the `std::io::stderr()` handle, so the line shows in
//!   plain `cargo test` output, between the results (checked by trying
//!   both).

use std::io::Write as _;
use std::path::PathBuf;

/// A system tool some test needs.
pub struct Tool {
    /// What the skip line and the CI failure call it.
    pub name: &'static str,
    /// How to get it on Debian, as `.ci/run` does.
    pub install: &'static str,
}

pub const NGINX: Tool = Tool {
    name: "nginx",
    install: "apt-get install nginx",
};

/// A real XMPP server behind nginx, for the `jitsi` check
/// (tests/it/prosody.rs); `prosodyctl` counts its sessions.
pub const PROSODY: Tool = Tool {
    name: "prosody",
    install: "apt-get install prosody",
};

pub const CHROMIUM: Tool = Tool {
    name: "chromium and chromedriver",
    install: "apt-get install chromium chromium-driver",
};

pub const SYSTEMD_ANALYZE: Tool = Tool {
    name: "systemd-analyze",
    install: "apt-get install systemd",
};

pub const KUBERNETES_VALIDATE: Tool = Tool {
    name: "kubernetes-validate",
    install: "python3 -m pip install kubernetes-validate",
};

/// The seccomp bindings of Debian's own Python (`/usr/bin/python3`), for
/// running roomgate under the systemd unit's syscall filter.
pub const PYTHON3_SECCOMP: Tool = Tool {
    name: "python3-seccomp",
    install: "apt-get install python3-seccomp",
};

pub const UNSHARE: Tool = Tool {
    name: "unshare -n",
    install: "apt-get install util-linux, and run as root",
};

pub const SETPRIV: Tool = Tool {
    name: "setpriv",
    install: "apt-get install util-linux",
};

/// Builds the container image (`deploy/container/build.sh`).
pub const BUILDAH: Tool = Tool {
    name: "buildah",
    install: "apt-get install buildah",
};

/// Loads and runs the container image, with [`RUNC`] as its runtime.
pub const PODMAN: Tool = Tool {
    name: "podman",
    install: "apt-get install podman, and run as root",
};

/// The OCI runtime the container test configures for podman (crun, podman's
/// default, rejects the cgroup layout of some machines).
pub const RUNC: Tool = Tool {
    name: "runc",
    install: "apt-get install runc",
};

/// The Rust standard library for the static binary of the container image.
pub const MUSL_TARGET: Tool = Tool {
    name: "the x86_64-unknown-linux-musl target",
    install: "rustup target add x86_64-unknown-linux-musl",
};

/// The C compiler for ring's and mimalloc's C code in the musl build.
pub const MUSL_GCC: Tool = Tool {
    name: "musl-gcc",
    install: "apt-get install musl-tools",
};

/// A Matrix homeserver, in its own virtualenv (tests/it/synapse.rs); the
/// Python is found through `support::synapse::python`.
pub const SYNAPSE: Tool = Tool {
    name: "Synapse (matrix-synapse)",
    install: "python3 -m venv /opt/synapse-venv && /opt/synapse-venv/bin/pip install matrix-synapse==1.163.2",
};

impl Tool {
    /// Whether the test can go on: `found`, or else it skips (see the
    /// module doc) and the caller returns.
    pub fn found(&self, found: bool) -> bool {
        found || {
            skip(self, "not found");
            false
        }
    }

    /// Like [`Tool::found`] for a tool that is there but does not work here,
    /// for the reason `why`.
    pub fn usable(&self, works: bool, why: &str) -> bool {
        works || {
            skip(self, &format!("not usable ({why})"));
            false
        }
    }

    /// The first of `paths` that exists; `None` after a skip (see
    /// [`Tool::found`]).
    pub fn at(&self, paths: &[&str]) -> Option<PathBuf> {
        let found = paths.iter().map(PathBuf::from).find(|p| p.exists());
        if found.is_none() {
            skip(self, &format!("not found at {}", paths.join(" or ")));
        }
        found
    }

    /// Whether a file at `path` exists; see [`Tool::found`].
    pub fn installed(&self, path: &str) -> bool {
        self.at(&[path]).is_some()
    }
}

/// Whether the tests run in CI (`CI=true`), where nothing may skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Fails the test under CI, else prints the skip line where `cargo test`
/// shows it.
fn skip(tool: &Tool, problem: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    if in_ci() {
        panic!(
            "{test}: {} {problem}, and CI=true: install it ({}; .ci/run does)",
            tool.name, tool.install
        );
    }
    // On its own line: under `cargo test -q` the progress dots share it.
    let line = format!(
        "\nSKIPPED {test}: {} {problem} ({}); this test proved nothing\n",
        tool.name, tool.install
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Whether the tests run as root (effective uid 0), from /proc.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// The command prefix that runs a program as nobody when the tests run as
/// root, so that a permission test sees the kernel's checks (root reads
/// and writes anywhere); empty otherwise. `None`, after the skip line (or
/// the failure under CI), when `setpriv` cannot do it.
pub fn as_nobody() -> Option<&'static [&'static str]> {
    const NOBODY: &[&str] = &[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    if !is_root() {
        return Some(&[]);
    }
    let usable = std::process::Command::new("setpriv")
        .args(NOBODY)
        .arg("true")
        .status()
        .is_ok_and(|s| s.success());
    SETPRIV
        .usable(usable, "cannot run a command as nobody")
        .then_some(NOBODY)
}
