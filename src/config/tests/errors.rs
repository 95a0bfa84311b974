//! What an error looks like, whole-file errors that cannot carry their
//! expectation in a comment, and errors of loading a file.

use super::*;

#[test]
fn display_form_is_file_line_column_message() {
    let e = parse(&format!("{SERVERS}rooms:\n  A:\n    servers: [a, nope]\n")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "routes.yaml:8:18: rooms.A.servers[1]: unknown server `nope`; \
         the servers declared under `servers:` are: a, b"
    );
}

#[test]
fn file_name_is_the_one_given_to_parse() {
    let e = Config::parse("servers: [", "conf/x.yaml", Path::new(".")).unwrap_err();
    assert!(e.to_string().starts_with("conf/x.yaml:"), "{e}");
}

#[test]
fn message_carries_no_prose_position() {
    // serde_yaml appends "at line L column C"; the position leads instead.
    let (_, _, message) = err(&format!("{SERVERS}bogus: 1\n"));
    assert!(!message.contains("at line"), "{message}");
    assert!(!message.contains("column"), "{message}");
}

#[test]
fn empty_file_is_reported_at_1_1() {
    assert_err("", 1, 1, "the file is empty");
}

/// A whitespace-only file is empty too, and is reported where an empty file
/// is, not at the end-of-stream mark.
#[test]
fn whitespace_only_file_is_reported_at_1_1() {
    assert_err("   \n  \n", 1, 1, "the file is empty");
    assert_err("\n", 1, 1, "the file is empty");
}

#[test]
fn parses_do_not_leak_names_into_each_other() {
    let yaml = format!("{SERVERS}rooms:\n  A:\n    aliases: [x]\n");
    // a failed parse in between must leave no names behind either
    ok(&yaml);
    err(&format!(
        "{SERVERS}rooms:\n  A:\n    aliases: [x]\n  X: {{}}\n"
    ));
    ok(&yaml);
    // server names from one parse are unknown to the next
    assert_err(
        "servers:\n  c:\n    url: https://c.example\nrooms:\n  A:\n    servers: [a]\n",
        6,
        15,
        "the servers declared under `servers:` are: c",
    );
}

#[test]
fn load_of_a_missing_file_is_a_read_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nowhere.yaml");
    match Config::load(&path) {
        Err(e @ ConfigError::Read { .. }) => {
            let ConfigError::Read { file, reason } = &e else {
                unreachable!()
            };
            assert_eq!(file, &path.display().to_string());
            assert_eq!(reason.kind(), std::io::ErrorKind::NotFound);
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!("{}: cannot read: ", path.display())),
                "{shown}"
            );
            // The reason once, also where errors print with their chain.
            let reason = reason.to_string();
            let chained = format!("{:#}", anyhow::Error::new(e));
            assert_eq!(chained.matches(&reason).count(), 1, "{chained}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn load_names_the_file_in_validation_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    std::fs::write(&path, format!("{ONE}defaults:\n  redirect_status: 301\n")).unwrap();
    let e = Config::load(&path).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}:5:20: ", path.display())),
        "{e}"
    );
}
