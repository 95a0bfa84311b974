//! Server names, room names, aliases and references that are accepted, and
//! what they resolve to.

use super::*;

#[test]
fn servers_may_be_referenced_before_their_declaration() {
    let config = ok(
        "rooms:\n  A:\n    servers: [b, {server: a, room: Ah}]\n  B: {}\n\
         defaults:\n  servers: [b]\nunlisted:\n  servers: [a]\n\
         servers:\n  a:\n    url: https://a.example\n  b:\n    url: https://b.example\n",
    );
    assert_eq!(
        room(&config, "A").targets,
        [target(1, "A"), target(0, "Ah")]
    );
    assert_eq!(room(&config, "B").targets, [target(1, "B")]);
    assert_eq!(config.defaults.servers, [target(1, "")]);
    assert_eq!(config.unlisted.servers, [target(0, "")]);
}

#[test]
fn server_names_are_case_sensitive() {
    // `A` and `a` are two servers
    let config =
        ok("servers:\n  a:\n    url: https://a.example\n  A:\n    url: https://b.example\n");
    assert_eq!(config.servers.len(), 2);
}

#[test]
fn names_at_the_length_limit_and_of_every_allowed_character() {
    let longest = "L".repeat(MAX_NAME_LEN);
    let config = ok(&format!(
        "{SERVERS}rooms:\n  {longest}:\n    aliases: [a.b_c-D9, .hidden, x..y]\n  2024: {{}}\n  007: {{}}\n"
    ));
    assert_eq!(config.rooms[0].name, longest);
    assert_eq!(config.rooms[0].aliases, ["a.b_c-D9", ".hidden", "x..y"]);
    // YAML reads `2024:` as a number; as a room name it is the text
    assert_eq!(config.rooms[1].name, "2024");
    assert_eq!(
        config.rooms[1].targets,
        [target(0, "2024"), target(1, "2024")]
    );
    assert_eq!(config.rooms[2].name, "007");
}

#[test]
fn numeric_aliases_and_remote_names_are_text() {
    let config = ok(&format!(
        "{SERVERS}rooms:\n  A:\n    aliases: [42]\n    servers: [a, {{server: b, room: 2024}}]\n"
    ));
    assert_eq!(config.rooms[0].aliases, ["42"]);
    assert_eq!(config.rooms[0].targets, [target(0, "A"), target(1, "2024")]);
}

#[test]
fn reserved_names_are_the_gateways_paths_and_only_whole_names_collide() {
    // the exact list of the design contract
    assert_eq!(
        RESERVED_NAMES,
        ["healthz", "readyz", "metrics", "status.json", "_"]
    );
    // only whole names collide
    ok(&format!(
        "{SERVERS}rooms:\n  healthz2: {{}}\n  _x: {{}}\n  metrics-room: {{}}\n  status: {{}}\n"
    ));
}

#[test]
fn remote_room_names_claim_nothing() {
    // the same remote name in two rooms, or a reserved word, is fine there
    let config = ok(&format!(
        "{SERVERS}rooms:\n  A:\n    servers: [{{server: b, room: Shared}}]\n  \
         B:\n    servers: [{{server: b, room: Shared}}]\n  C:\n    servers: [{{server: a, room: healthz}}]\n  Shared: {{}}\n"
    ));
    assert_eq!(config.rooms[0].targets, [target(1, "Shared")]);
    assert_eq!(config.rooms[1].targets, [target(1, "Shared")]);
    assert_eq!(config.rooms[2].targets, [target(0, "healthz")]);
}

#[test]
fn server_names_at_the_length_limit_and_numeric() {
    let longest = "s".repeat(MAX_NAME_LEN);
    let config = ok(&format!(
        "servers:\n  {longest}:\n    url: https://a.example\n  2024:\n    url: https://b.example\n"
    ));
    assert_eq!(config.servers[0].name, longest);
    assert_eq!(config.servers[1].name, "2024");
    assert_eq!(server_index(&config, "2024"), Some(1));
}

/// Regression: a server key YAML reads as a number in another spelling
/// (`0x1F`, `0o17`) was once named by its value in one pass and by its text
/// in the other, and a quoted reference made `RawFile::resolve` panic.
/// Parsing user input must never panic.
#[test]
fn numeric_looking_server_names_do_not_panic() {
    for name in ["0x1F", "0o17"] {
        let yaml = format!(
            "servers:\n  {name}:\n    url: https://a.example\nrooms:\n  A:\n    servers: [\"{name}\"]\n"
        );
        let result = std::panic::catch_unwind(|| parse(&yaml).map(|c| c.servers[0].name.clone()));
        match result {
            Ok(Ok(server)) => assert_eq!(server, name),
            Ok(Err(e)) => panic!("{name}: {e}"),
            Err(_) => panic!("Config::parse panicked on server `{name}`"),
        }
    }
}

/// Names are taken as written, not as YAML's number value: `0x1F:` stays
/// `0x1F` (not /31), `room: 0x10` stays `0x10`, and `1.5:` is a valid name,
/// not a float (`+5:` is refused for its `+`: fixture
/// `room_name_with_plus_sign_number.yaml`).
#[test]
fn names_are_taken_as_written() {
    let config = ok(&format!(
        "{SERVERS}rooms:\n  0x1F:\n    servers: [a, {{server: b, room: 0x10}}]\n  1.5: {{}}\n  1e3: {{}}\n"
    ));
    let names: Vec<&str> = config.rooms.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["0x1F", "1.5", "1e3"]);
    assert_eq!(
        config.rooms[0].targets,
        [target(0, "0x1F"), target(1, "0x10")]
    );
}

/// A server named `2024` can be referenced in the plain form
/// `servers: [2024]` as well as `{ server: 2024 }`.
#[test]
fn numeric_server_names_can_be_referenced_plainly() {
    let config = ok(
        "servers:\n  2024:\n    url: https://a.example\n  b:\n    url: https://b.example\n\
         defaults:\n  servers: [b, 2024]\nrooms:\n  A:\n    servers: [2024]\n",
    );
    assert_eq!(config.rooms[0].targets, [target(0, "A")]);
    assert_eq!(config.defaults.servers, [target(1, ""), target(0, "")]);
}
