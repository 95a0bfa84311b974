//! What is checked before the YAML parser sees a file: that it is a
//! regular file, its size, and how deeply it nests.
//!
//! The parser (libyaml, through yaml_serde) takes time quadratic in the
//! depth of flow collections: for each token it walks the stack of possible
//! simple keys, one per open `[` or `{` (`yaml_parser_stale_simple_keys`).
//! 10,000, 20,000 and 40,000 nested `[` took 0.5, 1.5 and 5.5 s in
//! `roomgate check` without this bound. Block nesting is linear in time but not in
//! memory (1 MiB of `- - - …` holds ~300 MB of events). yaml_serde's own
//! recursion limit (128) applies only after the whole file has been
//! parsed into events, so it comes too late. [`check_nesting`] therefore
//! scans the text first, in one linear pass, and refuses a file nested
//! deeper than [`MAX_NESTING`] at the position where it gets too deep.
//!
//! The scan follows the YAML token rules that decide where a collection
//! starts (quotes, comments, block scalars, tags, plain scalars that span
//! lines), so that nothing the parser would read as a `[` is hidden from
//! it. Where it cannot tell, it counts more, never less: the worst a
//! mistake can do is refuse a strange file that nests nearly
//! [`MAX_NESTING`] deep, which no routes file does (the deepest path,
//! `rooms: Room: servers: - {server: …}`, is 5 levels).

use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

use super::ConfigError;

/// The largest config file roomgate reads: 256 KiB. A file at the room and
/// server limits ([`super::MAX_ROOMS`], [`super::MAX_SERVERS`]) with
/// descriptions is about 64 KB. The YAML parser holds about 100 to 170
/// bytes per byte of file while it parses, so 1 MiB could peak near 200 MB;
/// 256 KiB keeps a reload of the worst accepted file near 45 MB.
pub const MAX_FILE_BYTES: u64 = 256 << 10;

/// The deepest nesting of mappings and lists a config may have; a routes
/// file needs 5 levels.
pub const MAX_NESTING: usize = 32;

/// Reads the config at `path`, refusing anything that is not a regular
/// file or is larger than [`MAX_FILE_BYTES`], without ever blocking on it:
/// the file is opened with `O_NONBLOCK`, so a FIFO at the path (which a
/// plain open would wait on until a writer comes) is opened at once and
/// then refused by its type.
pub(super) fn read_config(path: &Path, file: &str) -> Result<String, ConfigError> {
    let read_error = |reason| ConfigError::Read {
        file: file.to_owned(),
        reason,
    };
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_error)?;
    let kind = handle.metadata().map_err(read_error)?.file_type();
    // A directory is left to read(2), which says "Is a directory".
    if !kind.is_file() && !kind.is_dir() {
        let what = if kind.is_fifo() {
            "a FIFO (named pipe)"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else {
            "a special file"
        };
        return Err(ConfigError::NotAFile {
            file: file.to_owned(),
            what,
        });
    }
    // One byte more than allowed tells "at the limit" from "over it"
    // without trusting the size in the metadata, which may change.
    let mut bytes = Vec::new();
    handle
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::TooLarge {
            file: file.to_owned(),
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text ({e})"),
        ))
    })
}

/// Where the nesting first goes deeper than [`MAX_NESTING`]: 1-based line
/// and column.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct TooDeep {
    pub(super) line: usize,
    pub(super) column: usize,
}

/// What the scanner is inside of, across line ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Inside {
    /// Ordinary YAML.
    Yaml,
    /// A `'single-quoted'` scalar.
    Single,
    /// A `"double-quoted"` scalar.
    Double,
    /// The content lines of a `|` or `>` block scalar: lines indented
    /// deeper than `parent` (the enclosing block collection's column, -1
    /// at the top), all at least `indent` once the first has set it.
    BlockScalar {
        parent: isize,
        indent: Option<usize>,
    },
}

/// Scans `text` for nesting deeper than [`MAX_NESTING`], in linear time.
pub(super) fn check_nesting(text: &str) -> Result<(), TooDeep> {
    let mut scan = Scan {
        block: Vec::new(),
        flow: 0,
        inside: Inside::Yaml,
        plain: false,
    };
    let mut number = 0;
    for line in text.split('\n') {
        // A lone CR also breaks lines (YAML 1.2, 5.4).
        for part in line.strip_suffix('\r').unwrap_or(line).split('\r') {
            number += 1;
            scan.line(part.as_bytes()).map_err(|at| TooDeep {
                line: number,
                column: part[..at].chars().count() + 1,
            })?;
        }
    }
    Ok(())
}

/// The scanner's state between lines.
struct Scan {
    /// Columns of the open block collections, innermost last.
    block: Vec<usize>,
    /// Open flow collections (`[`, `{`).
    flow: usize,
    /// Quotes and block scalars that go on over line ends.
    inside: Inside,
    /// Whether a plain scalar is open, which a deeper line continues.
    plain: bool,
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

impl Scan {
    fn depth(&self) -> usize {
        self.block.len() + self.flow
    }

    /// The innermost block collection's column; -1 at the top.
    fn parent(&self) -> isize {
        self.block.last().map_or(-1, |&c| c as isize)
    }

    /// Opens a block collection at `column` unless one is open there.
    fn block_at(&mut self, column: usize, at: usize) -> Result<(), usize> {
        if self.parent() < column as isize {
            self.block.push(column);
            if self.depth() > MAX_NESTING {
                return Err(at);
            }
        }
        Ok(())
    }

    fn open_flow(&mut self, at: usize) -> Result<(), usize> {
        self.flow += 1;
        if self.depth() > MAX_NESTING {
            return Err(at);
        }
        Ok(())
    }

    /// Scans one line (without its line break); `Err` holds the byte
    /// offset where the nesting got too deep.
    fn line(&mut self, b: &[u8]) -> Result<(), usize> {
        let indent = b.iter().take_while(|&&c| c == b' ').count();
        let empty = b.iter().all(|&c| is_blank(c));
        if let Inside::BlockScalar {
            parent,
            indent: set,
        } = self.inside
        {
            if empty {
                return Ok(());
            }
            match set {
                None if indent as isize > parent => {
                    self.inside = Inside::BlockScalar {
                        parent,
                        indent: Some(indent),
                    };
                    return Ok(());
                }
                Some(set) if indent >= set => return Ok(()),
                _ => self.inside = Inside::Yaml,
            }
        }
        let mut i = 0;
        // In block context, the column where the current entry (a possible
        // key) began.
        let mut entry = indent;
        if self.inside == Inside::Yaml && self.flow == 0 {
            i = indent;
            let rest = &b[i..];
            if empty || rest.starts_with(b"#") {
                // Comment lines end a plain scalar, blank lines do not.
                self.plain &= empty;
                return Ok(());
            }
            // A line indented deeper than the innermost block collection
            // goes on with an open plain scalar; any other ends it.
            if !(self.plain && indent as isize > self.parent()) {
                self.plain = false;
                let marker = |m: &[u8]| {
                    indent == 0 && rest.starts_with(m) && rest.get(3).is_none_or(|&c| is_blank(c))
                };
                if marker(b"---") || marker(b"...") {
                    self.block.clear();
                    i += 3;
                } else if indent == 0 && rest[0] == b'%' {
                    return Ok(());
                } else {
                    while self.block.last().is_some_and(|&c| c > indent) {
                        self.block.pop();
                    }
                }
            }
        }
        // Outside a plain scalar, the next character that is not blank
        // starts a token, as in libyaml's scanner: even right after a
        // quoted scalar or a closing bracket.
        while i < b.len() {
            let c = b[i];
            let next = b.get(i + 1).copied();
            match self.inside {
                Inside::Single => {
                    if c == b'\'' {
                        if next == Some(b'\'') {
                            i += 2;
                            continue;
                        }
                        self.inside = Inside::Yaml;
                    }
                    i += 1;
                    continue;
                }
                Inside::Double => {
                    match c {
                        b'\\' => i += 1,
                        b'"' => self.inside = Inside::Yaml,
                        _ => {}
                    }
                    i += 1;
                    continue;
                }
                Inside::BlockScalar { .. } => return Ok(()),
                Inside::Yaml => {}
            }
            let flow = self.flow > 0;
            let token = !self.plain;
            if is_blank(c) {
                i += 1;
                continue;
            }
            if c == b'#' && (i == 0 || is_blank(b[i - 1])) {
                self.plain = false;
                return Ok(());
            }
            match c {
                // In flow context a plain scalar ends at a bracket.
                b'[' | b'{' if flow || token => {
                    if !flow {
                        entry = i;
                    }
                    self.open_flow(i)?;
                    self.plain = false;
                }
                b']' | b'}' if flow => {
                    self.flow -= 1;
                    self.plain = false;
                }
                b',' if flow => self.plain = false,
                b':' if next.is_none_or(is_blank)
                    || flow && next.is_some_and(|n| b",[]{}".contains(&n)) =>
                {
                    // A mapping value indicator; in block context the
                    // entry it ends is a key, so a mapping is open there.
                    if !flow {
                        self.block_at(entry, entry)?;
                    }
                    self.plain = false;
                }
                b'\'' | b'"' if token => {
                    if !flow {
                        entry = i;
                    }
                    self.inside = if c == b'\'' {
                        Inside::Single
                    } else {
                        Inside::Double
                    };
                }
                b'-' | b'?' if token && !flow && next.is_none_or(is_blank) => {
                    self.block_at(i, i)?;
                }
                b'|' | b'>' if token && !flow => {
                    // An indentation indicator in the header fixes the
                    // content's indentation; otherwise its first line does.
                    let parent = self.parent();
                    let digit = b[i + 1..]
                        .iter()
                        .take(2)
                        .find(|d| d.is_ascii_digit())
                        .map(|d| isize::from(d - b'0'));
                    self.inside = Inside::BlockScalar {
                        parent,
                        indent: digit.map(|d| (parent.max(0) + d) as usize),
                    };
                    return Ok(());
                }
                b'&' | b'*' if token => {
                    // Anchor and alias names: letters, digits, `-` and `_`.
                    i += 1;
                    while b
                        .get(i)
                        .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
                    {
                        i += 1;
                    }
                    continue;
                }
                b'!' if token => {
                    // A tag: `!<…>` up to its `>`, brackets and all; any
                    // other up to a blank or a flow indicator.
                    if next == Some(b'<') {
                        i += b[i..]
                            .iter()
                            .position(|&c| c == b'>')
                            .unwrap_or(b.len() - i);
                    } else {
                        while b
                            .get(i + 1)
                            .is_some_and(|&c| !is_blank(c) && !b",[]{}".contains(&c))
                        {
                            i += 1;
                        }
                    }
                }
                _ if token => {
                    if !flow {
                        entry = i;
                    }
                    self.plain = true;
                }
                _ => {}
            }
            i += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deep(text: &str) -> Option<(usize, usize)> {
        check_nesting(text).err().map(|e| (e.line, e.column))
    }

    #[test]
    fn deep_flow_is_refused_where_it_gets_too_deep() {
        // The file's mapping is level 1, so the 32nd `[` is one too many.
        let text = format!("servers: {}\n", "[".repeat(200_000));
        assert_eq!(deep(&text), Some((1, 10 + 31)));
        let text = format!("a:\n  b: {}", "{x: ".repeat(40));
        assert_eq!(deep(&text), Some((2, 6 + 4 * 30)));
        // As deep as allowed, and closed again, many times over.
        let ok = format!("servers: {}{}\n", "[".repeat(31), "]".repeat(31));
        assert_eq!(deep(&ok.repeat(3).replace("servers", "s")), None);
    }

    #[test]
    fn deep_block_nesting_is_refused_too() {
        let text = format!("servers:\n{}x\n", "- ".repeat(100_000));
        assert_eq!(deep(&text), Some((2, 1 + 2 * 32)));
        let text: String = (0..40)
            .map(|i| format!("{}a{i}:\n", " ".repeat(i)))
            .collect();
        assert_eq!(deep(&text), Some((33, 33)));
        // Mixed: 16 block levels, then flow.
        let mut text: String = (0..16)
            .map(|i| format!("{}a{i}:\n", " ".repeat(i)))
            .collect();
        text.push_str(&format!("{}x: {}", " ".repeat(16), "[".repeat(20)));
        assert_eq!(deep(&text), Some((17, 20 + 15)));
    }

    #[test]
    fn brackets_in_text_do_not_count() {
        let many = "[[[[[[[[[[".repeat(10);
        for text in [
            format!("a: '{many}'\n"),
            format!("a: \"{many}\\\"\"\n"),
            format!("a: x {many}\n"),
            format!("a: x\n  {many}\n"),
            format!("a: |\n  {many}\n  {many}\nb: c\n"),
            format!("- >2\n   {many}\n"),
            format!("a: 'x\n  {many}'\n"),
            format!("a: 1 # {many}\n"),
            format!("# {many}\n"),
            format!("a: [x, '{many}', \"]]\", y]\n"),
            format!("a: !<tag:{many}> x\n"),
            format!("a: [a'b, c, \"{many}\"]\n"),
        ] {
            assert_eq!(deep(&text), None, "{text}");
        }
    }

    #[test]
    fn nothing_hides_a_deep_flow_from_the_count() {
        let deep_flow = "[".repeat(100);
        for text in [
            // A quote inside a plain scalar starts nothing...
            format!("a: x 'y\nb: {deep_flow}\n"),
            // ...nor on a line that continues it.
            format!("a: x\n 'y\nb: {deep_flow}\n"),
            // A tag ends at a flow indicator; an anchor is followed by the node.
            format!("a: [!t]{deep_flow}\n"),
            format!("a: &x {deep_flow}\n"),
            // A block scalar ends at a line indented no deeper than its parent.
            format!("a: |\n  text\nb: {deep_flow}\n"),
            format!("- a: |\n    text\n  b: {deep_flow}\n"),
            // A comment needs a blank before it.
            format!("a: x#y\nb: {deep_flow}\n"),
            // Lines may break at a lone CR.
            format!("a: |\r  text\rb: {deep_flow}\r"),
        ] {
            assert!(deep(&text).is_some(), "{text:?}");
        }
    }

    #[test]
    fn the_repository_routes_nest_five_levels_deep() {
        let text = include_str!("../../routes.yaml");
        assert_eq!(check_nesting(text), Ok(()));
    }
}
