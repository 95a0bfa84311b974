//! The state directory (`--state-dir`): its lock, the histories read back
//! at start, and the writer thread that appends each state change to the
//! history file (see [`super::store`]) as it happens.
//!
//! Probers hand changes to the writer through a bounded queue and never
//! wait for the disk: a change is rare (the hysteresis sees to that), but
//! an `fsync` can take long on a busy or failing disk, and a prober must
//! keep its timing. The writer is one plain thread rather than a tokio
//! task because all it does is block on files.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

use super::store::{self, Record, StoreError, FILE_NAME};
use super::{History, State};

/// How often the writer notes that the gateway still runs. After a crash
/// (`kill -9`, power loss) the run counts as ended at its last record, so
/// at most this much of the time before the crash is shown as the last
/// state rather than as unknown. 1,440 short lines a day.
pub const HEARTBEAT: Duration = Duration::from_secs(60);

/// The history file is compacted when it grows past twice its size after
/// the last compaction, and never below this size.
const COMPACT_MIN: u64 = 256 * 1024;

/// Changes waiting for the writer at most; more are dropped with a warning
/// (a disk that stalls this long has bigger problems).
const QUEUE: usize = 1024;

/// How long a clean stop waits for the writer's last record.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The file whose lock says that a roomgate uses the directory.
const LOCK_FILE: &str = "lock";

/// Why a state directory cannot be used; roomgate then does not start.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// The directory does not exist.
    #[error("the state directory {0} does not exist; create it (systemd: StateDirectory=)")]
    Missing(String),
    /// The path is something else.
    #[error("the state directory {0} is not a directory")]
    NotADirectory(String),
    /// Another process holds the lock.
    #[error(
        "the state directory {0} is in use by another roomgate (it holds the lock on {0}/lock); \
         give every instance a state directory of its own"
    )]
    InUse(String),
    /// The directory or a file in it cannot be read or written.
    #[error("cannot use the state directory {dir}: {source}")]
    Io {
        /// The directory.
        dir: String,
        /// What failed.
        source: StoreError,
    },
    /// The history file cannot be read.
    #[error(transparent)]
    Store(StoreError),
}

/// An opened state directory.
pub struct Opened {
    /// Where the changes of this run go.
    pub journal: Journal,
    /// A history for every server of the config, by name: read back, or
    /// starting with this run.
    pub histories: BTreeMap<String, History>,
}

/// Where probers send state changes; cheap to clone.
#[derive(Clone, Debug)]
pub struct Journal {
    queue: SyncSender<Message>,
}

#[derive(Debug)]
enum Message {
    /// A server's state changed.
    Change(SystemTime, State, String),
    /// The servers of the config now in force: compaction keeps these.
    Names(Vec<String>),
    /// The run ends: write `stop`, then say so.
    Stop(mpsc::Sender<()>),
    /// Says when everything queued before is written.
    #[cfg(test)]
    Flush(mpsc::Sender<()>),
}

/// Opens `dir`: locks it, reads the history file back (skipping bad
/// records with a warning), rewrites it compacted to the servers `names`,
/// and starts the writer. Any error leaves the history file as it was.
pub fn open(dir: &Path, names: &[String]) -> Result<Opened, StateDirError> {
    open_with(dir, names, COMPACT_MIN)
}

fn open_with(dir: &Path, names: &[String], compact_min: u64) -> Result<Opened, StateDirError> {
    let shown = dir.display().to_string();
    let io = |path: &Path, e: std::io::Error| StateDirError::Io {
        dir: shown.clone(),
        source: StoreError::Io {
            path: path.display().to_string(),
            source: e,
        },
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(StateDirError::NotADirectory(shown)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StateDirError::Missing(shown))
        }
        Err(e) => return Err(io(dir, e)),
    }
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| io(&lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(StateDirError::InUse(shown)),
        Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path, e)),
    }

    let path = dir.join(FILE_NAME);
    let started = SystemTime::now();
    let loaded = store::load(&path, started, true).map_err(StateDirError::Store)?;
    if !loaded.bad_lines.is_empty() {
        tracing::warn!(
            "{}: skipped {} damaged records (lines {}); the rest of the history is kept",
            path.display(),
            loaded.bad_lines.len(),
            shorten(&loaded.bad_lines)
        );
    }
    if loaded.torn_tail {
        tracing::warn!(
            "{}: the last record was cut short (a crash while writing it); skipped",
            path.display()
        );
    }
    let mut histories = loaded.servers;
    histories.retain(|name, _| names.contains(name));
    let size = store::compact(
        dir,
        histories.iter().map(|(n, h)| (n.as_str(), h)),
        &[Record::Start(started)],
    )
    .map_err(|source| StateDirError::Io {
        dir: shown.clone(),
        source,
    })?;
    let file = append_to(&path).map_err(|e| io(&path, e))?;
    tracing::info!(
        "state directory {shown}: history of {} servers read back ({size} bytes)",
        histories.len()
    );
    // The others start with this run, as its `start` record says.
    for name in names {
        histories
            .entry(name.clone())
            .or_insert_with(|| History::new(started));
    }

    let (queue, inbox) = mpsc::sync_channel(QUEUE);
    let writer = Writer {
        dir: dir.to_owned(),
        path,
        file,
        size,
        compact_at: compact_min.max(2 * size),
        compact_min,
        names: names.to_vec(),
        started,
        _lock: lock,
    };
    std::thread::Builder::new()
        .name("roomgate-state".into())
        .spawn(move || writer.run(inbox))
        .map_err(|e| io(dir, e))?;
    Ok(Opened {
        journal: Journal { queue },
        histories,
    })
}

fn append_to(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().append(true).open(path)
}

/// `1, 2, 3, ... (n more)`: bad line numbers for a log line of bounded
/// length.
fn shorten(lines: &[usize]) -> String {
    let shown: Vec<String> = lines.iter().take(10).map(usize::to_string).collect();
    match lines.len() {
        n if n > 10 => format!("{}, ... ({} more)", shown.join(", "), n - 10),
        _ => shown.join(", "),
    }
}

impl Journal {
    /// Queues the change of server `name` to `state` at `at`; never waits.
    pub fn record(&self, name: &str, at: SystemTime, state: State) {
        if let Err(TrySendError::Full(_)) =
            self.queue
                .try_send(Message::Change(at, state, name.to_owned()))
        {
            tracing::warn!(
                "{name} {}: not written to the state directory, {QUEUE} changes wait for the disk",
                state.as_str()
            );
        }
    }

    /// The servers of the config now in force; the others' records go at
    /// the next compaction.
    pub fn set_names(&self, names: Vec<String>) {
        let _ = self.queue.try_send(Message::Names(names));
    }

    /// Ends the run: the writer writes `stop` and ends. Waits for that a
    /// short while at most.
    pub fn close(&self) {
        let (done, wait) = mpsc::channel();
        if self.queue.send(Message::Stop(done)).is_ok() {
            let _ = wait.recv_timeout(CLOSE_WAIT);
        }
    }
}

/// The writer thread's state.
struct Writer {
    /// The state directory.
    dir: PathBuf,
    /// The history file in it.
    path: PathBuf,
    /// The history file, opened for appending.
    file: File,
    /// Its size.
    size: u64,
    /// The size that triggers the next compaction.
    compact_at: u64,
    /// The least `compact_at`.
    compact_min: u64,
    /// The servers whose records compaction keeps.
    names: Vec<String>,
    /// When this run started (its `start` record).
    started: SystemTime,
    /// Held while the process runs; closing it releases the lock.
    _lock: File,
}

impl Writer {
    fn run(mut self, inbox: mpsc::Receiver<Message>) {
        let mut alive_at = Instant::now() + HEARTBEAT;
        loop {
            match inbox.recv_timeout(alive_at.saturating_duration_since(Instant::now())) {
                Ok(Message::Change(at, state, name)) => {
                    self.append(Record::Change(at, state, &name))
                }
                Ok(Message::Names(names)) => self.names = names,
                #[cfg(test)]
                Ok(Message::Flush(done)) => {
                    let _ = done.send(());
                }
                Ok(Message::Stop(done)) => {
                    self.append(Record::Stop(SystemTime::now()));
                    // The file and the lock are let go before the closer
                    // hears of it, so that it may open the directory again.
                    drop(self);
                    let _ = done.send(());
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.append(Record::Alive(SystemTime::now()));
                    alive_at = Instant::now() + HEARTBEAT;
                }
                // The gateway is gone without a clean stop.
                Err(RecvTimeoutError::Disconnected) => {
                    self.append(Record::Stop(SystemTime::now()));
                    return;
                }
            }
        }
    }

    /// Appends one record in one `write` and flushes it to disk.
    fn append(&mut self, record: Record<'_>) {
        let line = record.line();
        match self
            .file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data())
        {
            Ok(()) => self.size += line.len() as u64,
            Err(e) => tracing::warn!(
                "cannot write {}: {e}; this record is lost: {}",
                self.path.display(),
                line.trim_end()
            ),
        }
        if self.size > self.compact_at {
            self.compact();
        }
    }

    /// Rewrites the history file small: this run goes on in the new file.
    fn compact(&mut self) {
        let now = SystemTime::now();
        let before = self.size;
        let result = store::load(&self.path, now, false).and_then(|loaded| {
            let kept = loaded
                .servers
                .iter()
                .filter(|(name, _)| self.names.contains(name))
                .map(|(n, h)| (n.as_str(), h));
            store::compact(
                &self.dir,
                kept,
                &[Record::Start(self.started), Record::Alive(now)],
            )
        });
        let result = result.and_then(|size| {
            append_to(&self.path)
                .map(|file| (file, size))
                .map_err(|source| StoreError::Io {
                    path: self.path.display().to_string(),
                    source,
                })
        });
        match result {
            Ok((file, size)) => {
                self.file = file;
                self.size = size;
                tracing::info!(
                    "compacted {}: {before} -> {size} bytes",
                    self.path.display()
                );
            }
            Err(e) => tracing::warn!("cannot compact the history file: {e}"),
        }
        // After a failure too, so that it is not tried on every record.
        self.compact_at = self.compact_min.max(2 * self.size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    fn names() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    /// Waits until the writer has handled everything queued before.
    fn flush(journal: &Journal) {
        let (done, wait) = mpsc::channel();
        journal.queue.send(Message::Flush(done)).unwrap();
        wait.recv_timeout(Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn changes_survive_a_restart_and_the_lock_keeps_a_second_instance_out() {
        let dir = tempfile::tempdir().unwrap();
        let opened = open(dir.path(), &names()).unwrap();
        assert!(opened.histories.values().all(|h| h.export().1.is_empty()));
        let t0 = SystemTime::now();
        opened.journal.record("a", t0, Up);
        opened.journal.record("b", t0, Down);

        let err = open(dir.path(), &names()).err().expect("the lock holds");
        assert!(matches!(err, StateDirError::InUse(_)), "{err}");

        opened.journal.close();
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(text.starts_with("roomgate-history 1\n"), "{text}");
        assert!(text.lines().last().unwrap().ends_with(" stop"), "{text}");

        // Closed: the lock is free again, and the history is back, unknown
        // since the stop.
        let again = open(dir.path(), &["a".to_owned()]).unwrap();
        assert_eq!(again.histories.len(), 1, "b is not in the config");
        let (_, changes) = again.histories["a"].export();
        assert_eq!(
            changes[0],
            (
                SystemTime::UNIX_EPOCH + Duration::from_millis(store_ms(t0)),
                Up
            )
        );
        assert_eq!(changes[1].1, Unknown);
        again.journal.close();
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(!text.contains(" b\n"), "b compacted away:\n{text}");
    }

    fn store_ms(t: SystemTime) -> u64 {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    #[test]
    fn the_file_is_compacted_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let opened = open_with(dir.path(), &names(), 4096).unwrap();
        let path = dir.path().join(FILE_NAME);
        // Whole milliseconds, as the file keeps them.
        let base = SystemTime::UNIX_EPOCH + Duration::from_millis(store_ms(SystemTime::now()));
        let state = |i: u64| if i.is_multiple_of(2) { Up } else { Down };
        let mut written = 0;
        for i in 0..200 {
            let at = base + Duration::from_millis(i);
            opened.journal.record("a", at, state(i));
            opened.journal.record("b", at, state(i));
            written += 2 * Record::Change(at, state(i), "a").line().len();
        }
        // b is renamed in the config: its records go at the next compaction.
        opened.journal.set_names(vec!["a".into()]);
        for i in 200..400 {
            let at = base + Duration::from_millis(i);
            opened.journal.record("a", at, state(i));
            written += Record::Change(at, state(i), "a").line().len();
        }
        flush(&opened.journal);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(" b\n"), "b compacted away:\n{text}");
        assert!(text.len() < written, "{} of {written} bytes", text.len());
        // The run goes on in the compacted file: its start and a heartbeat.
        assert_eq!(text.matches(" start\n").count(), 1, "{text}");
        opened.journal.close();

        let again = open(dir.path(), &["a".to_owned()]).unwrap();
        assert!(!again.histories.contains_key("b"));
        let (_, changes) = again.histories["a"].export();
        assert_eq!(
            changes.len(),
            401,
            "every change of a, then unknown at the stop"
        );
        for (i, &(at, s)) in changes.iter().take(400).enumerate() {
            assert_eq!(
                (at, s),
                (base + Duration::from_millis(i as u64), state(i as u64))
            );
        }
        assert_eq!(changes[400].1, Unknown);
        again.journal.close();
    }

    #[test]
    fn a_missing_directory_or_a_file_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = open(&missing, &names()).err().unwrap();
        assert!(err.to_string().contains("does not exist"), "{err}");
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = open(&file, &names()).err().unwrap();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn a_future_version_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let text = "roomgate-history 7\nwhatever comes in version 7\n";
        std::fs::write(&path, text).unwrap();
        let err = open(dir.path(), &names()).err().unwrap();
        assert!(err.to_string().contains("version 7"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }
}
