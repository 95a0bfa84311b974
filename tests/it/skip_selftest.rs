//! The skip of `support::tools`, seen from outside: this test binary run
//! again, as `cargo test` runs it (output captured), with one test that
//! lacks a tool. Without `CI=true` the test passes and its SKIPPED line is
//! in the output anyway; with `CI=true` it fails, naming the tool and how
//! to install it.

use std::process::Output;

use crate::support::tools::Tool;

const PROBE: &str = "skip_selftest::a_test_whose_tool_is_missing";
const PROBE_ENV: &str = "ROOMGATE_SKIP_PROBE";

const MISSING: Tool = Tool {
    name: "frobnicate",
    install: "apt-get install frobnicator",
};

/// Does nothing unless run by [`run_probe`].
#[test]
fn a_test_whose_tool_is_missing() {
    if std::env::var_os(PROBE_ENV).is_none() {
        return;
    }
    if !MISSING.found(false) {
        return;
    }
    unreachable!("found(false) goes on");
}

/// The probe test alone, with captured output as under `cargo test`.
fn run_probe(ci: bool) -> Output {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", PROBE, "--test-threads", "1"])
        .env(PROBE_ENV, "1")
        .env_remove("CI");
    if ci {
        command.env("CI", "true");
    }
    command.output().expect("run the test binary")
}

#[test]
fn a_skip_shows_in_captured_output_and_fails_under_ci() {
    let out = run_probe(false);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.lines().any(|l| l
            == format!("SKIPPED {PROBE}: frobnicate not found (apt-get install frobnicator); this test proved nothing")),
        "no SKIPPED line:\n{said}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let out = run_probe(true);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "passed under CI=true:\n{said}");
    assert!(
        said.contains("frobnicate not found, and CI=true: install it (apt-get install frobnicator"),
        "{said}"
    );
}
