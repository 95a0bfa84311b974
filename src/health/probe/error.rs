//! Why a probe failed, as text safe to log and show.

use std::fmt;

/// Longest text a [`ProbeError`] carries, in characters (escapes and the
/// cut mark included). Every such text ends up in a log line, on `/` and in
/// `/status.json` for every server, so a server that answers with a
/// megabyte-long BOSH `condition` must not make every page a megabyte.
pub const MAX_ERROR_CHARS: usize = 200;

/// Marks where `bounded_text` cut a text.
const CUT_MARK: char = '\u{2026}';

/// Why a probe failed, in words fit for a log line and the status page.
///
/// Its text is partly what the probed server said (a BOSH `condition`, or
/// names from its certificate inside a TLS error), so it is data, never
/// trusted: [`ProbeError::new`], the only way to make one, escapes control
/// characters (a newline would forge a log line) and bounds the length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeError(String);

impl ProbeError {
    /// A probe error saying `text`, made safe by `bounded_text`.
    pub fn new(text: impl AsRef<str>) -> ProbeError {
        ProbeError(bounded_text(text.as_ref(), MAX_ERROR_CHARS))
    }

    /// The text, escaped and bounded.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, escaped and bounded.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `text` fit for one log line and a page: characters that could break or
/// fake a line, or reorder what a terminal shows, are escaped (`\n`, `\r`,
/// `\t`, otherwise `\u{..}`), and the result is at most `max` characters
/// (`max` >= 1): a longer one is cut between characters, never inside an
/// escape, and ends with `…`. The text is looked at only as far as needed,
/// so a huge one costs no more than a short one.
fn bounded_text(text: &str, max: usize) -> String {
    let max = max.max(1);
    let mut out = String::with_capacity(text.len().min(max.saturating_mul(4)));
    // Characters in `out`, and the length of `out` at the last place where
    // the cut mark still fits.
    let mut chars = 0;
    let mut cut = None;
    for c in text.chars() {
        let before = out.len();
        let added = push_escaped(&mut out, c);
        if cut.is_none() && chars + added > max - 1 {
            cut = Some(before);
        }
        chars += added;
        if chars > max {
            out.truncate(cut.unwrap_or(0));
            out.push(CUT_MARK);
            return out;
        }
    }
    out
}

/// Whether `c` must not appear as itself in a log line: C0 and C1 controls
/// and DEL, the Unicode line and paragraph separators (some viewers break
/// lines there), and the bidirectional overrides and isolates (they make a
/// terminal show text in another order than it has).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Appends `c`, escaped if it must be; returns the characters appended.
fn push_escaped(out: &mut String, c: char) -> usize {
    use std::fmt::Write as _;
    if !needs_escape(c) {
        out.push(c);
        return 1;
    }
    let before = out.len();
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        _ => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    // Escapes are ASCII: bytes are characters.
    out.len() - before
}

impl std::error::Error for ProbeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_cannot_forge_a_log_line() {
        // As a server's BOSH `condition` can say it.
        let forged = "x\n2025-01-01T00:00:00Z  INFO roomgate: primary up\r\u{1b}[2J";
        let e = ProbeError::new(format!("BOSH refused the session: {forged}"));
        assert_eq!(
            e.as_str(),
            "BOSH refused the session: x\\n2025-01-01T00:00:00Z  INFO roomgate: primary up\\r\\u{1b}[2J"
        );
        // Tab, DEL, C1, line separator, a bidi override.
        assert_eq!(
            bounded_text("a\tb\u{7f}c\u{85}d\u{2028}e\u{202e}f", 100),
            "a\\tb\\u{7f}c\\u{85}d\\u{2028}e\\u{202e}f"
        );
        // Plain text, even non-ASCII, is left as it is.
        assert_eq!(
            bounded_text("Wartung: bald zurück ✓", 100),
            "Wartung: bald zurück ✓"
        );
    }

    #[test]
    fn server_text_is_bounded() {
        // As a server's BOSH `condition` can be.
        let huge = "ä".repeat(1_000_000);
        let e = ProbeError::new(format!("BOSH refused the session: {huge}"));
        assert_eq!(e.as_str().chars().count(), MAX_ERROR_CHARS);
        assert!(e.as_str().starts_with("BOSH refused the session: ää"));
        assert!(e.as_str().ends_with("ä\u{2026}"));
        // Exactly at the bound: not cut. One more: cut, mark included.
        assert_eq!(bounded_text("abcde", 5), "abcde");
        assert_eq!(bounded_text("abcdef", 5), "abcd\u{2026}");
        // An escape is never cut in half.
        assert_eq!(bounded_text("abc\u{1b}", 9), "abc\\u{1b}");
        assert_eq!(bounded_text("abc\u{1b}x", 9), "abc\u{2026}");
    }

    proptest::proptest! {
        #[test]
        fn bounded_text_is_safe_and_short(text in "(?s).{0,300}", max in 1usize..260) {
            let out = bounded_text(&text, max);
            proptest::prop_assert!(out.chars().count() <= max, "{:?}", out);
            proptest::prop_assert!(!out.chars().any(needs_escape), "{:?}", out);
            // Escaping alone, with no bound that bites, loses nothing.
            let full = bounded_text(&text, usize::MAX / 2);
            if full.chars().count() <= max {
                proptest::prop_assert_eq!(&out, &full);
            } else {
                // Cut: a prefix of the escaped text, then the mark.
                let kept = out.strip_suffix(CUT_MARK).expect("a cut is marked");
                proptest::prop_assert!(full.starts_with(kept));
            }
            if !text.chars().any(needs_escape) {
                proptest::prop_assert!(text.starts_with(out.strip_suffix(CUT_MARK).unwrap_or(&out)));
            }
        }
    }
}
