//! Property tests: no text makes the parser panic, and every error it
//! reports points inside the text.

use proptest::prelude::*;

use super::*;

/// Lines as YAML counts them: `\n`, `\r\n`, a lone `\r`, and the Unicode
/// breaks libyaml knows.
fn yaml_lines(text: &str) -> usize {
    let mut breaks = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\u{85}' | '\u{2028}' | '\u{2029}' => breaks += 1,
            '\r' if chars.peek() != Some(&'\n') => breaks += 1,
            _ => {}
        }
    }
    breaks + 1
}

fn check_invariants(text: &str) -> Result<(), TestCaseError> {
    match Config::parse(text, "routes.yaml", Path::new(".")) {
        Ok(config) => {
            // whatever got through is consistent
            for room in &config.rooms {
                for t in &room.targets {
                    prop_assert!(t.server < config.servers.len());
                }
            }
        }
        Err(ConfigError::Invalid {
            file,
            line,
            column,
            message,
        }) => {
            prop_assert_eq!(file, "routes.yaml");
            prop_assert!(line >= 1, "line {} in {:?}", line, text);
            prop_assert!(column >= 1, "column {} in {:?}", column, text);
            prop_assert!(
                line <= yaml_lines(text) + 1,
                "line {} past the end ({} lines) in {:?}: {}",
                line,
                yaml_lines(text),
                text,
                message
            );
            prop_assert!(!message.is_empty());
        }
        Err(e) => prop_assert!(false, "unexpected error {:?}", e),
    }
    Ok(())
}

/// A valid config touching most rules (no ca_file: mutations must not read
/// files). Server names are long enough that no single edit makes them
/// numeric.
const VALID: &str = "\
site:
  title: T
  notice: N
servers:
  chaosdorf:
    url: https://virtual.example:8443/jitsi/
    label: Chaosdorf
    check:
      interval: 30s
      timeout: 3s
      rise: 2
      fall: 2
      xmpp_domain: meet.jitsi
  freifunk:
    url: http://meet.example
    check: { kind: http, path: /, expect_status: 200-399, body_contains: ok }
defaults:
  servers: [chaosdorf, freifunk]
  redirect_status: 302
  when_all_down: page
unlisted:
  allow: true
  servers: [freifunk]
rooms:
  Lounge:
    description: Treffpunkt
    aliases: [treff, cafe]
  Cave:
    servers: [freifunk, { server: chaosdorf, room: ChaosCave }]
  2024: {}
";

#[test]
fn the_mutation_base_is_valid() {
    let config = ok(VALID);
    assert_eq!(config.rooms.len(), 3);
}

#[derive(Debug, Clone)]
enum Edit {
    Replace(prop::sample::Index, char),
    Delete(prop::sample::Index),
    Insert(prop::sample::Index, char),
}

fn yaml_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => prop::sample::select(vec![
            ' ', '\n', '\t', '\r', ':', '-', '[', ']', '{', '}', ',', '#', '\'', '"', '&', '*', '!',
            '|', '>', '?', '%', '@', '`', '.', '/', '\\', '0', '9', 'a', 'Z', '_', 'ü', '\u{2028}',
        ]),
        1 => any::<char>(),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<prop::sample::Index>(), yaml_char()).prop_map(|(i, c)| Edit::Replace(i, c)),
        any::<prop::sample::Index>().prop_map(Edit::Delete),
        (any::<prop::sample::Index>(), yaml_char()).prop_map(|(i, c)| Edit::Insert(i, c)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for edit in edits {
        match edit {
            Edit::Replace(i, c) if !chars.is_empty() => {
                let i = i.index(chars.len());
                chars[i] = *c;
            }
            Edit::Delete(i) if !chars.is_empty() => {
                chars.remove(i.index(chars.len()));
            }
            Edit::Insert(i, c) => {
                let i = i.index(chars.len() + 1);
                chars.insert(i, *c);
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        check_invariants(&text)?;
    }

    #[test]
    fn yaml_like_text_never_panics(
        text in "(servers|rooms|url|check|aliases|defaults|[a-z0-9 :\\-\\[\\]{},#'\"\n\t]){0,80}"
    ) {
        check_invariants(&text)?;
    }

    #[test]
    fn mutated_valid_configs_never_panic(edits in prop::collection::vec(edit(), 1..4)) {
        check_invariants(&apply(VALID, &edits))?;
    }

    #[test]
    fn single_byte_edits_of_a_valid_config_never_panic(
        at in any::<prop::sample::Index>(),
        byte in 0x20u8..0x7f,
        delete in any::<bool>(),
    ) {
        let mut bytes = VALID.as_bytes().to_vec();
        let i = at.index(bytes.len());
        if delete {
            bytes.remove(i);
        } else {
            bytes[i] = byte;
        }
        // VALID is ASCII, so every such edit keeps it UTF-8
        let text = String::from_utf8(bytes).expect("VALID is ASCII");
        check_invariants(&text)?;
    }
}
