//! routes.yaml text -> validated config -> compiled routes.
//!
//! Invariants: no panic (in parsing, validation or `Routes::compile`, which
//! builds every Location ahead of time); an invalid file's error always
//! carries a position (1-based line and column) inside the text, or just
//! past the end of a line; every Location of a valid file starts with its server's
//! URL plus `/` and has no CR, LF or NUL.
//!
//! Inputs that name a `ca_file` are skipped: that key reads the file system
//! (`/dev/zero` would never end), which is not what this target is about;
//! CA loading has its own tests.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use roomgate::config::{Config, ConfigError};
use roomgate::metrics::Metrics;
use roomgate::routes::Routes;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("ca_file") {
        return;
    }
    match Config::parse(text, "fuzz.yaml", Path::new("/nonexistent")) {
        Err(ConfigError::Invalid {
            file, line, column, ..
        }) => {
            assert_eq!(file, "fuzz.yaml");
            // Inside the text: YAML breaks lines at LF, CRLF and a lone CR
            // (YAML 1.2, 5.4); a column may point just past a line's end.
            let text = text.replace("\r\n", "\n");
            let lines: Vec<&str> = text.split(['\n', '\r']).collect();
            assert!(
                line >= 1 && line <= lines.len(),
                "line {line} of {}",
                lines.len()
            );
            let width = lines[line - 1].chars().count() + 1;
            assert!(column >= 1 && column <= width, "column {column} of {width}");
        }
        Err(e) => panic!("parse never reads a file: {e}"),
        Ok(config) => {
            let routes = Routes::compile(&config, &Metrics::new());
            for room in &routes.rooms {
                for target in &room.targets {
                    let base = &config.servers[target.server].url;
                    let loc = target.location.as_bytes();
                    assert!(loc.starts_with(base.as_bytes()), "{loc:?} not below {base}");
                    assert_eq!(loc.get(base.len()), Some(&b'/'), "{loc:?}");
                    assert!(
                        !loc.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)),
                        "CR, LF or NUL in {loc:?}"
                    );
                }
            }
        }
    }
});
