//! Inputs that made a fuzz target fail (fuzz/regressions/<target>/), kept
//! as tests of the invariant they broke. See fuzz/run.sh and the section
//! "Hostile input" of docs/reliability.md.

use std::path::{Path, PathBuf};

use roomgate::config::{Config, ConfigError};

/// The regression inputs of `target`, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    files.sort();
    files
}

/// The position of `text`'s config error, checked to lie inside the text
/// (YAML line breaks: LF, CRLF, lone CR; a column may be one past a line).
fn position(text: &str) -> (usize, usize) {
    let Err(ConfigError::Invalid { line, column, .. }) =
        Config::parse(text, "regression.yaml", Path::new("/nonexistent"))
    else {
        panic!("{text:?} is not rejected with a position");
    };
    let normalized = text.replace("\r\n", "\n");
    let lines: Vec<&str> = normalized.split(['\n', '\r']).collect();
    assert!((1..=lines.len()).contains(&line), "{text:?}: line {line}");
    let width = lines[line - 1].chars().count() + 1;
    assert!((1..=width).contains(&column), "{text:?}: {line}:{column}");
    (line, column)
}

#[test]
fn config_errors_point_inside_the_text() {
    let files = inputs("config");
    assert!(!files.is_empty());
    for file in files {
        let text = std::fs::read_to_string(&file).expect("regression input");
        let (line, column) = position(&text);
        println!("{}: {line}:{column}", file.display());
    }
}

/// The two findings, with the positions a user now sees.
#[test]
fn config_error_positions_of_the_findings() {
    // A flow mapping cut off at the end of a one-line file: libyaml said
    // 2:1, a line that does not exist.
    assert_eq!(position("{!"), (1, 3));
    // Lone CRs break lines in YAML (the harness counted them wrongly; the
    // position was right all along).
    let text = "servers:\n  a: { url: x\r30s\r3\n";
    assert_eq!(position(text), (5, 1));
}
