//! Tests of the history file: records, runs, damage, versions, compaction.

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
        include_str!("../../../docs/state.md"),
        include_str!("../store.rs"),
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
