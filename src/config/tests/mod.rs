//! Unit tests of config validation.
//!
//! The files that must be refused, each with the error it must produce, are
//! fixtures in `tests/config/` (see `fixtures.rs`). The Rust tests here
//! cover what a table of files cannot: what accepted files resolve to, the
//! defaults, files named by the config, the error type itself, and property
//! tests.

use super::*;

mod defaults;
mod errors;
mod files;
mod fixtures;
mod names;
mod proptests;
mod values;

/// Two servers, `a` then `b`; five lines, so what follows starts on line 6.
const SERVERS: &str =
    "servers:\n  a:\n    url: https://a.example\n  b:\n    url: https://b.example\n";

/// One server `a`; three lines, so what follows starts on line 4.
const ONE: &str = "servers:\n  a:\n    url: https://a.example\n";

/// `ONE` with a block `check:` mapping whose first line (`body`, indented
/// by six spaces) is line 5; its keys start in column 7.
fn check(body: &str) -> String {
    format!("{ONE}    check:\n{body}")
}

fn parse(yaml: &str) -> Result<Config, ConfigError> {
    Config::parse(yaml, "routes.yaml", Path::new("."))
}

#[track_caller]
fn ok(yaml: &str) -> Config {
    parse(yaml).unwrap_or_else(|e| panic!("expected a valid config, got {e}\n--- yaml ---\n{yaml}"))
}

#[track_caller]
fn err(yaml: &str) -> (usize, usize, String) {
    match parse(yaml) {
        Err(ConfigError::Invalid {
            file,
            line,
            column,
            message,
        }) => {
            assert_eq!(file, "routes.yaml");
            (line, column, message)
        }
        Err(e) => panic!("expected ConfigError::Invalid, got {e:?}"),
        Ok(_) => panic!("expected an error, the config was accepted\n--- yaml ---\n{yaml}"),
    }
}

/// The error of `yaml` is at `line:column` and its message contains `needle`.
#[track_caller]
fn assert_err(yaml: &str, line: usize, column: usize, needle: &str) {
    let (l, c, message) = err(yaml);
    assert!(
        (l, c) == (line, column) && message.contains(needle),
        "expected {line}:{column} with {needle:?}\n     got {l}:{c}: {message}\n--- yaml ---\n{yaml}"
    );
}

fn target(server: usize, room: &str) -> Target {
    Target {
        server,
        room: room.to_owned(),
    }
}

fn room<'c>(config: &'c Config, name: &str) -> &'c Room {
    config
        .rooms
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no room {name}"))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The index of the server called `name`.
fn server_index(config: &Config, name: &str) -> Option<usize> {
    config.servers.iter().position(|s| s.name == name)
}
