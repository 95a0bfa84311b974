//! Tokens of notification targets: secrets, so they never stand in
//! routes.yaml. A target names a file (`token_file:`) or an environment
//! variable (`token_env:`) that holds one, read at every load so that a
//! SIGHUP picks up a new token; an inline `token:` is refused. A [`Secret`]
//! prints where it came from, never its value, and no error here shows
//! one, so no log line, error, `check` summary or page can.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::in_context;
use super::scalars::checked_str;

/// Longest token file read; real tokens are a few hundred bytes at most.
const MAX_TOKEN_BYTES: u64 = 4096;

/// A token: its value, and where it came from for people to read.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    /// The token itself; only [`Secret::expose`] hands it out.
    value: String,
    /// `file /etc/roomgate/token` or `env NAME`.
    from: String,
}

impl Secret {
    /// The token, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Where the token came from (`file PATH` or `env NAME`).
    pub fn source(&self) -> &str {
        &self.from
    }

    /// A secret for tests of the delivery code.
    #[doc(hidden)]
    pub fn for_tests(value: &str) -> Secret {
        Secret {
            value: value.to_owned(),
            from: "test".to_owned(),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(from {})", self.from)
    }
}

/// `token:` in the file, which is always refused; its value is never shown.
pub(super) struct InlineToken;

impl<'de> Deserialize<'de> for InlineToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RefuseInline)
    }
}

/// Refuses whatever `token:` holds.
struct RefuseInline;

impl RefuseInline {
    fn refuse<E: de::Error>() -> Result<InlineToken, E> {
        Err(E::custom(
            "a token must not stand in routes.yaml (it would end up in backups, diffs and pastes); put it in a file named by `token_file:` or in an environment variable named by `token_env:`",
        ))
    }
}

impl<'de> Visitor<'de> for RefuseInline {
    type Value = InlineToken;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no inline token")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<InlineToken, E> {
        RefuseInline::refuse()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<InlineToken, E> {
        RefuseInline::refuse()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<InlineToken, E> {
        RefuseInline::refuse()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<InlineToken, E> {
        RefuseInline::refuse()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<InlineToken, E> {
        RefuseInline::refuse()
    }
    fn visit_unit<E: de::Error>(self) -> Result<InlineToken, E> {
        RefuseInline::refuse()
    }
}

/// Checks a token's characters without ever showing them: a token goes
/// into a header or a URL path, where only visible ASCII belongs.
fn check_token(value: &str, from: &str) -> Result<Secret, String> {
    if value.is_empty() {
        return Err(format!("the token from {from} is empty"));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "the token from {from} has characters a token cannot have (spaces, control characters or non-ASCII; its value is not shown)"
        ));
    }
    Ok(Secret {
        value: value.to_owned(),
        from: from.to_owned(),
    })
}

/// `token_file:`: a file holding the token (surrounding white space is
/// dropped), relative to the routes file's directory.
pub(super) struct TokenFile(pub(super) Secret);

impl<'de> Deserialize<'de> for TokenFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a path to a file holding the token", |text| {
            use std::io::Read as _;
            let base = in_context(|c| Some(c.base_dir.clone())).unwrap_or_default();
            let path = base.join(text);
            let shown = path.display();
            let file = std::fs::File::open(&path)
                .map_err(|e| format!("token_file `{shown}` cannot be read: {e}"))?;
            if !file.metadata().is_ok_and(|m| m.is_file()) {
                return Err(format!("token_file `{shown}` is not a regular file"));
            }
            let mut bytes = Vec::new();
            file.take(MAX_TOKEN_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("token_file `{shown}` cannot be read: {e}"))?;
            if bytes.len() as u64 > MAX_TOKEN_BYTES {
                return Err(format!(
                    "token_file `{shown}` is larger than {MAX_TOKEN_BYTES} bytes; it should hold just the token"
                ));
            }
            let text = String::from_utf8(bytes).unwrap_or_default();
            check_token(text.trim(), &format!("file {shown}")).map(TokenFile)
        })
    }
}

/// `token_env:`: the name of an environment variable holding the token.
pub(super) struct TokenEnv(pub(super) Secret);

impl<'de> Deserialize<'de> for TokenEnv {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "the name of an environment variable", |name| {
            let valid =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(format!(
                    "`{name}` is not an environment variable name (letters, digits and `_`)"
                ));
            }
            let value = std::env::var(name).map_err(|e| match e {
                std::env::VarError::NotPresent => {
                    format!("the environment variable {name} is not set")
                }
                std::env::VarError::NotUnicode(_) => {
                    format!("the environment variable {name} is not valid text")
                }
            })?;
            check_token(value.trim(), &format!("env {name}")).map(TokenEnv)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_their_value() {
        let secret = check_token("syt_very_secret", "env T").unwrap();
        assert_eq!(format!("{secret:?}"), "Secret(from env T)");
        let err = check_token("has space", "file /x").unwrap_err();
        assert!(!err.contains("has space"), "{err}");
    }
}
