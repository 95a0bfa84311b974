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
mod tests {
    use super::*;
    use crate::health::history::WINDOW;
    use State::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn file(records: &[Record<'_>]) -> Vec<u8> {
        let mut text = format!("{MAGIC} {VERSION}\n");
        for r in records {
            text.push_str(&r.line());
        }
        text.into_bytes()
    }

    fn changes(loaded: &Loaded, name: &str) -> Vec<(u64, State)> {
        let (_, changes) = loaded.servers[name].export();
        changes
            .into_iter()
            .map(|(at, s)| (at.duration_since(t(0)).unwrap().as_secs(), s))
            .collect()
    }

    fn read(bytes: &[u8], now: SystemTime) -> Result<Loaded, StoreError> {
        parse(Path::new("history"), bytes, now, true)
    }

    #[test]
    fn records_round_trip_through_their_lines() {
        for r in [
            Record::Start(t(1)),
            Record::Alive(t(2)),
            Record::Stop(t(3)),
            Record::Change(t(4), Up, "primary"),
            Record::Change(t(5), Down, "ffmuc.net"),
            Record::Change(t(6), Unknown, "a_b-c"),
        ] {
            let line = r.line();
            assert!(line.ends_with('\n'));
            assert_eq!(Record::parse(line.trim_end()), Some(r), "{line}");
        }
        assert_eq!(
            Record::Change(t(0), Up, "primary").line(),
            format!(
                "{:08x} 1700000000000 up primary\n",
                crc32fast::hash(b"1700000000000 up primary")
            )
        );
    }

    #[test]
    fn a_run_that_ended_without_stop_ends_at_its_last_record() {
        let bytes = file(&[
            Record::Start(t(0)),
            Record::Change(t(1), Up, "a"),
            Record::Change(t(1), Down, "b"),
            Record::Alive(t(60)),
            // killed here; the next run:
            Record::Start(t(100)),
            Record::Change(t(101), Up, "a"),
            Record::Stop(t(200)),
        ]);
        let loaded = read(&bytes, t(300)).unwrap();
        assert_eq!(
            changes(&loaded, "a"),
            [(1, Up), (60, Unknown), (101, Up), (200, Unknown)]
        );
        assert_eq!(changes(&loaded, "b"), [(1, Down), (60, Unknown)]);
        assert_eq!(loaded.servers["a"].export().0, t(0));
        assert!(loaded.bad_lines.is_empty() && !loaded.torn_tail);
        let s = loaded.servers["a"].summary(t(300), WINDOW);
        assert_eq!(s.up, Duration::from_secs(59 + 99));
        assert_eq!(s.known, s.up);
    }

    #[test]
    fn the_own_run_is_not_ended_when_compacting_while_running() {
        let bytes = file(&[Record::Start(t(0)), Record::Change(t(1), Up, "a")]);
        let loaded = parse(Path::new("history"), &bytes, t(10), false).unwrap();
        assert_eq!(changes(&loaded, "a"), [(1, Up)]);
    }

    #[test]
    fn a_truncated_last_record_is_skipped() {
        let mut bytes = file(&[Record::Start(t(0)), Record::Change(t(1), Up, "a")]);
        let whole = bytes.len();
        bytes.extend_from_slice(Record::Change(t(2), Down, "a").line().as_bytes());
        // Cut anywhere inside the last line, newline included.
        for cut in whole..bytes.len() {
            let loaded = read(&bytes[..cut], t(10)).unwrap();
            // The run ended at its last whole record.
            assert_eq!(
                changes(&loaded, "a"),
                [(1, Up), (1, Unknown)],
                "cut at {cut}"
            );
            assert_eq!(loaded.torn_tail, cut > whole, "cut at {cut}");
            assert!(loaded.bad_lines.is_empty());
        }
    }

    #[test]
    fn corrupt_records_are_skipped_alone() {
        let mut bytes = file(&[
            Record::Start(t(0)),
            Record::Change(t(1), Up, "a"),
            Record::Change(t(2), Down, "a"),
            Record::Change(t(3), Up, "a"),
        ]);
        // Flip one digit of the time in line 4 (the down): its checksum fails.
        let text = String::from_utf8(bytes.clone()).unwrap();
        let line4 = text.lines().nth(3).unwrap();
        let at = text.find(line4).unwrap() + 12;
        bytes[at] = if bytes[at] == b'9' { b'8' } else { b'9' };
        // And garbage at the end.
        bytes.extend_from_slice(b"\x00\xff garbage\nnot a record\n");
        let loaded = read(&bytes, t(10)).unwrap();
        assert_eq!(loaded.bad_lines, [4, 6, 7]);
        // The up at 3 repeats the state once the down is gone.
        assert_eq!(changes(&loaded, "a"), [(1, Up), (3, Unknown)]);
    }

    #[test]
    fn a_future_version_is_refused_and_other_files_are_not_ours() {
        let err = read(b"roomgate-history 2\n", t(0)).unwrap_err();
        assert!(matches!(err, StoreError::FutureVersion { .. }), "{err}");
        assert!(err.to_string().contains("version 2"), "{err}");
        for other in [
            &b"roomgate-history x\n"[..],
            b"{\"json\": 1}\n",
            b"\n",
            b"roomgate-history 0\n",
        ] {
            let err = read(other, t(0)).unwrap_err();
            assert!(matches!(err, StoreError::NotOurs { .. }), "{err}");
        }
        // An empty file (created, never written) is not ours either: the
        // header is written in the same rename as the first records.
        assert!(read(b"", t(0)).is_err());
    }

    #[test]
    fn compaction_keeps_the_window_and_the_names_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let day = 24 * 3600;
        let mut records = vec![Record::Start(t(0))];
        for i in 0..100 {
            records.push(Record::Change(
                t(i * 60 + 1),
                if i % 2 == 0 { Up } else { Down },
                "a",
            ));
        }
        records.push(Record::Change(t(5), Up, "gone"));
        records.push(Record::Alive(t(day)));
        records.push(Record::Start(t(day + 3600)));
        records.push(Record::Change(t(day + 3601), Up, "a"));
        std::fs::write(dir.path().join(FILE_NAME), file(&records)).unwrap();
        let now = t(2 * day);
        let path = dir.path().join(FILE_NAME);
        let loaded = load(&path, now, true).unwrap();
        // The day-old flapping is out of the window; what remains is the
        // state at the window's start (unknown since the first run ended
        // at its `alive`), the second run's up, and its end.
        assert_eq!(
            changes(&loaded, "a"),
            [(day, Unknown), (day + 3601, Up), (day + 3601, Unknown)]
        );
        let before = std::fs::metadata(&path).unwrap().len();
        let kept = loaded.servers.iter().filter(|(n, _)| n.as_str() == "a");
        let size = compact(
            dir.path(),
            kept.map(|(n, h)| (n.as_str(), h)),
            &[Record::Start(now)],
        )
        .unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
        assert!(size < before / 4, "{size} of {before}");
        assert!(!dir.path().join(format!("{FILE_NAME}.tmp")).exists());
        let again = load(&path, now, true).unwrap();
        assert!(!again.servers.contains_key("gone"));
        // A leading unknown says no more than the start does.
        assert_eq!(
            changes(&again, "a"),
            [(day + 3601, Up), (day + 3601, Unknown)]
        );
        let s1 = loaded.servers["a"].summary(now, WINDOW);
        let s2 = again.servers["a"].summary(now, WINDOW);
        assert_eq!(s1, s2);
    }

    #[test]
    fn a_server_that_flaps_all_day_keeps_max_changes() {
        use crate::health::history::MAX_CHANGES;
        let n = 3 * MAX_CHANGES as u64;
        let mut records = vec![Record::Start(t(0))];
        let state = |i: u64| if i.is_multiple_of(2) { Up } else { Down };
        records.extend((0..n).map(|i| Record::Change(t(i + 1), state(i), "a")));
        let bytes = file(&records);
        let loaded = read(&bytes, t(n + 1)).unwrap();
        let (start, changes) = loaded.servers["a"].export();
        assert_eq!(changes.len(), MAX_CHANGES);
        assert_eq!(changes.last().unwrap().1, Unknown);
        // Before the oldest change kept, nothing is claimed.
        assert_eq!(start, changes[0].0);
        let dir = tempfile::tempdir().unwrap();
        let size = compact(dir.path(), [("a", &loaded.servers["a"])], &[]).unwrap();
        let line = Record::Change(t(n), Down, "a").line().len() as u64;
        assert!(size <= (MAX_CHANGES as u64 + 2) * line, "{size}");
        assert!(size * 2 < bytes.len() as u64, "{size} of {}", bytes.len());
    }

    #[test]
    fn the_examples_in_the_docs_are_sound_records() {
        for doc in [
            include_str!("../../docs/state.md"),
            include_str!("store.rs"),
        ] {
            let block = doc
                .split("roomgate-history 1\n")
                .nth(1)
                .expect("an example file");
            let lines: Vec<&str> = block
                .lines()
                .map(|l| l.trim_start_matches("//! "))
                .take_while(|l| !l.starts_with("```"))
                .collect();
            assert_eq!(lines.len(), 5, "{lines:?}");
            for line in lines {
                assert!(Record::parse(line).is_some(), "{line}");
            }
        }
    }
}
