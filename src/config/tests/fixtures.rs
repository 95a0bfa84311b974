//! The table of refused files: every file in `tests/config/` is a
//! routes.yaml that must not load, and its first line says how it fails:
//!
//! ```text
//! # expect: 9:18: rooms.A.servers[1]: unknown server `nope`; the servers ...
//! ```
//!
//! that is `line:column: message`, counting the comment line itself. The
//! test loads each file through [`Config::load`], as `roomgate check` does,
//! and compares the whole `file:line:column: message` with the expectation.
//! To add a case, write the file with a best guess, run this test, and read
//! the difference it prints before taking the actual message.

use std::path::PathBuf;

use super::*;

/// How the first line of a fixture starts.
const EXPECT: &str = "# expect: ";

#[test]
fn every_fixture_is_refused_as_its_first_line_says() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/config");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    paths.sort();
    assert!(
        !paths.is_empty(),
        "{} holds no fixtures, so this test would check nothing",
        dir.display()
    );
    let failures: Vec<String> = paths
        .iter()
        .filter_map(|path| {
            let shown = path.strip_prefix(root).unwrap_or(path).display();
            check_fixture(path)
                .err()
                .map(|why| format!("{shown}\n{why}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n\n")
    );
}

/// Loads one fixture and compares; the error is a diff for people.
fn check_fixture(path: &Path) -> Result<(), String> {
    if path.extension().is_none_or(|e| e != "yaml") {
        return Err("  not a .yaml file: only fixtures belong here".to_owned());
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("  cannot read: {e}"))?;
    let first = text.lines().next().unwrap_or_default();
    let expected = first
        .strip_prefix(EXPECT)
        .ok_or_else(|| format!("  the first line must be `{EXPECT}LINE:COLUMN: MESSAGE`"))?;
    // Config::load names the file as it was given; the fixture cannot know
    // where the checkout is, so the path is put in front here.
    let file = path.display().to_string();
    let expected_whole = format!("{file}:{expected}");
    let actual_whole = match Config::load(path) {
        Ok(_) => return Err(format!("  - {EXPECT}{expected}\n  + (the file loads)")),
        Err(e) => e.to_string(),
    };
    if actual_whole == expected_whole {
        return Ok(());
    }
    let actual = match actual_whole.strip_prefix(&format!("{file}:")) {
        Some(rest) => format!("{EXPECT}{rest}"),
        None => actual_whole.clone(),
    };
    let expected = format!("{EXPECT}{expected}");
    let at = expected
        .chars()
        .zip(actual.chars())
        .take_while(|(e, a)| e == a)
        .count();
    Err(format!(
        "  - {expected}\n  + {actual}\n    {}^ first difference",
        " ".repeat(at)
    ))
}
