//! The history file of a state directory: its format, how it is read back
//! into histories, and how it is rewritten small (compaction).
//!
//! One append-only text file, `history`, one record a line, each line with
//! a CRC-32 of the rest of it:
//!
//! ```text
//! roomgate-history 1
//! eaea4e80 1767225600000 start
//! f042b685 1767225600412 up primary
//! 8d1d8b1f 1767225660000 alive
//! 4a67da04 1767225702003 down primary
//! 6ea2318a 1767225710000 stop
//! ```
//!
//! The first line names the format and its version; a file of a later
//! version is refused, never rewritten. Then, after the checksum, the time
//! in Unix milliseconds and the kind: `start` (a run of the gateway
//! begins), `up`/`down`/`unknown NAME` (a server's state changed),
//! `alive` (the gateway still ran; written every [`super::journal::HEARTBEAT`])
//! and `stop` (the run ended cleanly).
//!
//! The time the gateway did not run counts as unknown: a run ends at its
//! `stop`, or after a crash at its last record, and from there on every
//! server is unknown until the next run's first probe.
//!
//! Why lines with checksums rather than an embedded database: the data is
//! a few thousand small records written one at a time, appending a line is
//! one `write` (a `kill -9` cannot tear it: the kernel has it or not), and a
//! line that a power loss or a full disk cut short, or that a bit flip
//! spoiled, fails its checksum and is skipped alone; `cat` shows it all.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::history::History;
use super::State;

/// The file's name inside the state directory.
pub const FILE_NAME: &str = "history";

/// The format this build writes and reads.
pub const VERSION: u32 = 1;

/// The first word of the first line.
const MAGIC: &str = "roomgate-history";

/// A file larger than this is not read: compaction keeps it far smaller
/// (see [`super::journal`]), so it is not ours or not sane.
const MAX_FILE: u64 = 64 * 1024 * 1024;

/// One line of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// A run of the gateway begins.
    Start(SystemTime),
    /// The gateway still runs.
    Alive(SystemTime),
    /// The run ended cleanly.
    Stop(SystemTime),
    /// Server `name` went into `state`.
    Change(SystemTime, State, &'a str),
}

impl Record<'_> {
    /// The line, newline included.
    pub fn line(&self) -> String {
        let body = match *self {
            Record::Start(at) => format!("{} start", millis(at)),
            Record::Alive(at) => format!("{} alive", millis(at)),
            Record::Stop(at) => format!("{} stop", millis(at)),
            Record::Change(at, state, name) => {
                format!("{} {} {name}", millis(at), state.as_str())
            }
        };
        format!("{:08x} {body}\n", crc32fast::hash(body.as_bytes()))
    }

    /// The record of `line` (without its newline), or `None` if the
    /// checksum or the syntax is wrong.
    fn parse(line: &str) -> Option<Record<'_>> {
        let (sum, body) = line.split_once(' ')?;
        if sum.len() != 8 || u32::from_str_radix(sum, 16).ok()? != crc32fast::hash(body.as_bytes())
        {
            return None;
        }
        let mut words = body.split(' ');
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(words.next()?.parse().ok()?);
        let record = match (words.next()?, words.next()) {
            ("start", None) => Record::Start(at),
            ("alive", None) => Record::Alive(at),
            ("stop", None) => Record::Stop(at),
            (state, Some(name)) if !name.is_empty() => {
                let state = match state {
                    "up" => State::Up,
                    "down" => State::Down,
                    "unknown" => State::Unknown,
                    _ => return None,
                };
                Record::Change(at, state, name)
            }
            _ => return None,
        };
        words.next().is_none().then_some(record)
    }
}

fn millis(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX)
}

/// Why a history file cannot be used. The file is left as it is.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Written by a later roomgate.
    #[error(
        "{path}: history format version {found}, but this roomgate reads version {VERSION} \
         only; run the newer roomgate, or move the file away to start a new history \
         (it is left untouched)"
    )]
    FutureVersion {
        /// The file.
        path: String,
        /// The version it says it has.
        found: String,
    },
    /// Not a history file at all.
    #[error(
        "{path}: not a roomgate history file (its first line is not `{MAGIC} {VERSION}`); \
         it is left untouched"
    )]
    NotOurs {
        /// The file.
        path: String,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
}

impl StoreError {
    fn io(path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// A history file read back.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every server named in the file, with its history.
    pub servers: BTreeMap<String, History>,
    /// Line numbers of records skipped for a bad checksum or syntax.
    pub bad_lines: Vec<usize>,
    /// Whether the last line had no newline: a write cut short.
    pub torn_tail: bool,
}

/// Reads the history file at `path`; a missing file is an empty history.
///
/// `last_run_ended`: whether the run that wrote the end of the file is
/// over (true at start: it was an earlier process) or is the caller's own
/// (false: a compaction while running). A run that is over and has no
/// `stop` ended at its last record, so every server becomes unknown there.
pub fn load(path: &Path, now: SystemTime, last_run_ended: bool) -> Result<Loaded, StoreError> {
    let bytes = match std::fs::File::open(path) {
        Ok(file) => {
            let len = file.metadata().map_err(|e| StoreError::io(path, e))?.len();
            if len > MAX_FILE {
                return Err(StoreError::io(
                    path,
                    std::io::Error::other(format!(
                        "{len} bytes, more than the {MAX_FILE} a history file can have"
                    )),
                ));
            }
            let mut bytes = Vec::with_capacity(len as usize);
            std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_FILE), &mut bytes)
                .map_err(|e| StoreError::io(path, e))?;
            bytes
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    parse(path, &bytes, now, last_run_ended)
}

fn parse(
    path: &Path,
    bytes: &[u8],
    now: SystemTime,
    last_run_ended: bool,
) -> Result<Loaded, StoreError> {
    let mut lines = bytes.split(|&b| b == b'\n');
    check_header(path, lines.next().unwrap_or_default())?;
    let mut loaded = Loaded {
        torn_tail: !bytes.is_empty() && !bytes.ends_with(b"\n"),
        ..Loaded::default()
    };
    let mut reader = Replay::default();
    let count = bytes.iter().filter(|&&b| b == b'\n').count();
    for (i, line) in lines.enumerate() {
        // Line numbers count from 1, and the header is line 1.
        let number = i + 2;
        if number > count {
            // The text after the last newline: empty, or a torn record.
            break;
        }
        match std::str::from_utf8(line).ok().and_then(Record::parse) {
            Some(record) => reader.apply(&mut loaded.servers, record),
            None => loaded.bad_lines.push(number),
        }
    }
    if last_run_ended {
        reader.end_run(&mut loaded.servers);
    }
    for history in loaded.servers.values() {
        history.forget_before(now);
    }
    Ok(loaded)
}

fn check_header(path: &Path, line: &[u8]) -> Result<(), StoreError> {
    let text = String::from_utf8_lossy(line);
    match text.split_once(' ') {
        Some((MAGIC, version)) if version == VERSION.to_string() => Ok(()),
        Some((MAGIC, version)) if version.parse::<u32>().is_ok_and(|v| v > VERSION) => {
            Err(StoreError::FutureVersion {
                path: path.display().to_string(),
                found: version.to_owned(),
            })
        }
        _ => Err(StoreError::NotOurs {
            path: path.display().to_string(),
        }),
    }
}

/// Replays records into histories, following the runs of the gateway.
#[derive(Default)]
struct Replay {
    /// Start and latest record of the run being read, if one is.
    run: Option<(SystemTime, SystemTime)>,
}

impl Replay {
    fn apply(&mut self, servers: &mut BTreeMap<String, History>, record: Record<'_>) {
        match record {
            Record::Start(at) => {
                self.end_run(servers);
                self.run = Some((at, at));
            }
            Record::Alive(at) => self.seen(at),
            Record::Stop(at) => {
                self.seen(at);
                self.end_run(servers);
            }
            Record::Change(at, state, name) => {
                self.seen(at);
                // A server's history starts with the run it first shows up
                // in (before its first probe it was unknown); outside a run
                // (a compacted file), with its first record.
                let start = self.run.map_or(at, |(start, _)| start.min(at));
                servers
                    .entry(name.to_owned())
                    .or_insert_with(|| History::new(start))
                    .record(at, state);
            }
        }
    }

    fn seen(&mut self, at: SystemTime) {
        if let Some((_, last)) = &mut self.run {
            *last = (*last).max(at);
        }
    }

    /// The run being read is over at its latest record: from there on
    /// every server is unknown.
    fn end_run(&mut self, servers: &mut BTreeMap<String, History>) {
        if let Some((_, last)) = self.run.take() {
            for history in servers.values() {
                history.record(last, State::Unknown);
            }
        }
    }
}

/// Rewrites the file at `dir/FILE_NAME` to hold the histories of `servers`
/// (those whose names `keep` accepts) and then `trailer`: written to a
/// temporary file, flushed to disk and renamed over the old one, so that a
/// crash at any moment leaves the old file or the new one. Returns the new
/// size.
pub fn compact<'a>(
    dir: &Path,
    servers: impl IntoIterator<Item = (&'a str, &'a History)>,
    trailer: &[Record<'_>],
) -> Result<u64, StoreError> {
    let mut text = format!("{MAGIC} {VERSION}\n");
    for (name, history) in servers {
        let (start, changes) = history.export();
        // The first line of a server gives its start (see `Replay::apply`);
        // when the first change is later, an `unknown` at the start says so.
        if changes.first().is_none_or(|&(at, _)| at > start) {
            text.push_str(&Record::Change(start, State::Unknown, name).line());
        }
        for (at, state) in changes {
            text.push_str(&Record::Change(at, state, name).line());
        }
    }
    for record in trailer {
        text.push_str(&record.line());
    }
    let path = dir.join(FILE_NAME);
    let temp: PathBuf = dir.join(format!("{FILE_NAME}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, &path)?;
        // The rename itself is durable once the directory is.
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| StoreError::io(&path, e))?;
    Ok(text.len() as u64)
}

#[cfg(test)]
mod tests;
