//! The segment journal on real files: records come back in order after a
//! reopen, a torn tail is cut and appending goes on after it, damage before
//! the tail stops recovery, segments rotate and are trimmed whole.

#![allow(clippy::unwrap_used)]

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use hongbao_engine::journal::{Journal, JournalError, Position};
use hongbao_journal::{FileJournal, SEGMENT_BYTES};

/// A segment's header, and a frame's bytes besides its payload (the format
/// table in the crate's doc).
const SEGMENT_HEADER_BYTES: u64 = 16;
const FRAME_OVERHEAD_BYTES: u64 = 20;

/// Every payload here has this length, so that a record's offset is known.
const PAYLOAD_BYTES: u64 = 11;
const FRAME_BYTES: u64 = FRAME_OVERHEAD_BYTES + PAYLOAD_BYTES;

fn payload(position: Position) -> Vec<u8> {
    let payload = format!("record {position:04}").into_bytes();
    assert_eq!(payload.len() as u64, PAYLOAD_BYTES);
    payload
}

/// The offset of the frame of the `nth` record (from 1) of a segment.
fn frame_offset(nth: u64) -> u64 {
    SEGMENT_HEADER_BYTES + (nth - 1) * FRAME_BYTES
}

fn segment_path(dir: &Path, first: Position) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

/// The segments' first positions, from the file names.
fn segment_firsts(dir: &Path) -> Vec<Position> {
    let mut firsts: Vec<Position> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_str().unwrap().strip_suffix(".seg").unwrap().parse().unwrap())
        .collect();
    firsts.sort_unstable();
    firsts
}

fn files_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().metadata().unwrap().len()).sum()
}

/// Records as `recover` passes them on.
type Records = Vec<(Position, Vec<u8>)>;

/// Recovers `journal` after `after`, returning what `recover` returns and
/// the records passed on.
fn recover(journal: &mut FileJournal, after: Position) -> Result<(Position, Records), JournalError> {
    let mut records = Vec::new();
    let recovered = journal.recover(after, &mut |position, payload| {
        records.push((position, payload.to_vec()));
        Ok(())
    })?;
    Ok((recovered, records))
}

fn expected(positions: impl IntoIterator<Item = Position>) -> Records {
    positions.into_iter().map(|position| (position, payload(position))).collect()
}

/// A journal in `dir` holding records `1..=count`.
fn journal_with(dir: &Path, segment_bytes: u64, count: Position) -> FileJournal {
    let mut journal = FileJournal::with_segment_bytes(dir, segment_bytes).unwrap();
    assert_eq!(recover(&mut journal, 0).unwrap(), (0, vec![]));
    for position in 1..=count {
        journal.append(position, &payload(position)).unwrap();
    }
    journal
}

fn reopened(dir: &Path, segment_bytes: u64) -> FileJournal {
    FileJournal::with_segment_bytes(dir, segment_bytes).unwrap()
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[usize::try_from(offset).unwrap()] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(bytes).unwrap();
}

#[test]
fn records_come_back_in_order_after_a_reopen_and_only_those_past_after() {
    let dir = tempfile::tempdir().unwrap();
    drop(journal_with(dir.path(), SEGMENT_BYTES, 20));
    let mut journal = FileJournal::open(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 0).unwrap(), (20, expected(1..=20)));
    let mut journal = FileJournal::open(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 12).unwrap(), (20, expected(13..=20)));
    assert_eq!(recover(&mut journal, 20).unwrap(), (20, vec![]));
    assert_eq!(journal.bytes(), files_bytes(dir.path()));
    assert_eq!(journal.bytes(), frame_offset(21));
}

#[test]
fn a_fresh_directory_is_created_and_recovers_empty() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("sets").join("0");
    let mut journal = FileJournal::open(&dir).unwrap();
    assert_eq!(recover(&mut journal, 0).unwrap(), (0, vec![]));
    assert_eq!(journal.bytes(), 0);
    journal.append(1, &payload(1)).unwrap();
    assert_eq!(segment_firsts(&dir), vec![1]);
}

#[test]
fn a_torn_last_record_is_cut_and_the_next_append_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    drop(journal_with(dir.path(), SEGMENT_BYTES, 3));
    // The 4th frame, as the journal writes it, from a twin journal.
    let twin = tempfile::tempdir().unwrap();
    drop(journal_with(twin.path(), SEGMENT_BYTES, 4));
    let twin_bytes = fs::read(segment_path(twin.path(), 1)).unwrap();
    let fourth = &twin_bytes[usize::try_from(frame_offset(4)).unwrap()..];
    let path = segment_path(dir.path(), 1);
    append_bytes(&path, &fourth[..fourth.len() / 2]);

    let mut journal = FileJournal::open(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 0).unwrap(), (3, expected(1..=3)));
    assert_eq!(fs::metadata(&path).unwrap().len(), frame_offset(4));
    journal.append(4, &payload(4)).unwrap();
    assert_eq!(fs::read(&path).unwrap(), twin_bytes);

    let mut journal = FileJournal::open(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 0).unwrap(), (4, expected(1..=4)));
}

#[test]
fn a_torn_frame_header_is_cut_as_well() {
    let dir = tempfile::tempdir().unwrap();
    drop(journal_with(dir.path(), SEGMENT_BYTES, 2));
    let path = segment_path(dir.path(), 1);
    append_bytes(&path, &[0x5a; 7]);
    let mut journal = FileJournal::open(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 0).unwrap(), (2, expected(1..=2)));
    assert_eq!(fs::metadata(&path).unwrap().len(), frame_offset(3));
}

#[test]
fn a_bad_payload_checksum_in_the_last_record_is_a_torn_tail_and_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    drop(journal_with(dir.path(), SEGMENT_BYTES, 3));
    let path = segment_path(dir.path(), 1);
    flip_byte(&path, frame_offset(4) - 1);

    let mut journal = FileJournal::open(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 0).unwrap(), (2, expected(1..=2)));
    assert_eq!(fs::metadata(&path).unwrap().len(), frame_offset(3));
    journal.append(3, &payload(3)).unwrap();
    let mut journal = FileJournal::open(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 0).unwrap(), (3, expected(1..=3)));
}

#[test]
fn a_damaged_record_before_the_tail_is_corrupt_at_its_frame() {
    let dir = tempfile::tempdir().unwrap();
    drop(journal_with(dir.path(), SEGMENT_BYTES, 5));
    let path = segment_path(dir.path(), 1);
    flip_byte(&path, frame_offset(2) + FRAME_OVERHEAD_BYTES + 3);
    let before = fs::read(&path).unwrap();

    let mut journal = FileJournal::open(dir.path()).unwrap();
    match recover(&mut journal, 0) {
        Err(JournalError::Corrupt { file, offset, .. }) => {
            assert_eq!((file, offset), (path.display().to_string(), frame_offset(2)));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(fs::read(&path).unwrap(), before, "a damaged journal is left as it is");
    let refused = journal.append(6, &payload(6));
    assert!(matches!(refused, Err(JournalError::Invalid { position: 6, .. })), "{refused:?}");
}

#[test]
fn a_damaged_record_in_a_segment_before_the_last_is_corrupt_even_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    drop(journal_with(dir.path(), 100, 10));
    let firsts = segment_firsts(dir.path());
    assert!(firsts.len() > 1, "{firsts:?}");
    // The last record of the first segment, whose successor starts after it.
    let path = segment_path(dir.path(), firsts[0]);
    let records = firsts[1] - firsts[0];
    flip_byte(&path, frame_offset(records + 1) - 1);

    let mut journal = reopened(dir.path(), 100);
    match recover(&mut journal, 0) {
        Err(JournalError::Corrupt { file, offset, .. }) => {
            assert_eq!((file, offset), (path.display().to_string(), frame_offset(records)));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn segments_rotate_and_trim_drops_only_those_wholly_at_or_below_upto() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = journal_with(dir.path(), 200, 50);
    let firsts = segment_firsts(dir.path());
    assert!(firsts.len() >= 5, "{firsts:?}");
    assert_eq!(firsts[0], 1);
    assert_eq!(journal.bytes(), files_bytes(dir.path()));

    journal.trim(30).unwrap();
    let kept = segment_firsts(dir.path());
    let dropped: Vec<Position> = firsts.iter().copied().filter(|first| !kept.contains(first)).collect();
    assert!(!dropped.is_empty());
    assert!(kept[0] <= 31, "record 31 must be kept: {kept:?}");
    // The first segment kept is the one holding 31: its successor is past it.
    assert!(kept.get(1).is_none_or(|&second| second > 31), "{kept:?}");
    assert_eq!(journal.bytes(), files_bytes(dir.path()));

    let mut journal = reopened(dir.path(), 200);
    assert_eq!(recover(&mut journal, 30).unwrap(), (50, expected(31..=50)));
    journal.trim(1_000).unwrap();
    assert_eq!(segment_firsts(dir.path()), vec![*firsts.last().unwrap()], "the last segment stays");
    assert_eq!(recover(&mut journal, 50).unwrap(), (50, vec![]));
    journal.append(51, &payload(51)).unwrap();
    let mut journal = reopened(dir.path(), 200);
    assert_eq!(recover(&mut journal, 50).unwrap(), (51, expected([51])));
}

#[test]
fn positions_continue_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    drop(journal_with(dir.path(), 200, 50));
    let firsts = segment_firsts(dir.path());
    let mut journal = reopened(dir.path(), 200);
    assert_eq!(recover(&mut journal, 0).unwrap(), (50, expected(1..=50)));
    for pair in firsts.windows(2) {
        let records =
            (fs::metadata(segment_path(dir.path(), pair[0])).unwrap().len() - SEGMENT_HEADER_BYTES) / FRAME_BYTES;
        assert_eq!(pair[0] + records, pair[1], "segment {} ends where {} starts", pair[0], pair[1]);
    }
}

#[test]
fn an_append_out_of_order_or_before_recover_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = FileJournal::open(dir.path()).unwrap();
    let refused = journal.append(1, &payload(1));
    assert!(matches!(refused, Err(JournalError::Invalid { position: 1, .. })), "{refused:?}");
    assert_eq!(recover(&mut journal, 0).unwrap(), (0, vec![]));
    for position in [0, 2] {
        let refused = journal.append(position, &payload(position));
        assert!(matches!(refused, Err(JournalError::Invalid { .. })), "{position}: {refused:?}");
    }
    journal.append(1, &payload(1)).unwrap();
    for position in [1, 3] {
        let refused = journal.append(position, &payload(position));
        assert!(matches!(refused, Err(JournalError::Invalid { .. })), "{position}: {refused:?}");
    }
    journal.append(2, &payload(2)).unwrap();
    let mut journal = FileJournal::open(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 0).unwrap(), (2, expected(1..=2)));
}

#[test]
fn tables_ahead_of_the_journal_make_the_next_append_follow_the_tables() {
    let dir = tempfile::tempdir().unwrap();
    drop(journal_with(dir.path(), SEGMENT_BYTES, 3));
    let mut journal = FileJournal::open(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 10).unwrap(), (10, vec![]));
    let refused = journal.append(4, &payload(4));
    assert!(matches!(refused, Err(JournalError::Invalid { .. })), "{refused:?}");
    journal.append(11, &payload(11)).unwrap();
    journal.append(12, &payload(12)).unwrap();
    assert_eq!(segment_firsts(dir.path()), vec![1, 11]);

    let mut journal = FileJournal::open(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 10).unwrap(), (12, expected(11..=12)));
    journal.append(13, &payload(13)).unwrap();
    let mut journal = FileJournal::open(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 11).unwrap(), (13, expected(12..=13)));
}

#[test]
fn records_missing_past_after_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    drop(journal_with(dir.path(), SEGMENT_BYTES, 3));
    let mut journal = FileJournal::open(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 10).unwrap(), (10, vec![]));
    journal.append(11, &payload(11)).unwrap();

    // Tables at 5 would need records 6 to 10, which the journal lacks.
    let mut journal = FileJournal::open(dir.path()).unwrap();
    match recover(&mut journal, 5) {
        Err(JournalError::Corrupt { file, offset: 0, .. }) => {
            assert_eq!(file, segment_path(dir.path(), 11).display().to_string());
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_last_segment_shorter_than_its_header_is_a_torn_creation_and_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    drop(journal_with(dir.path(), SEGMENT_BYTES, 3));
    fs::write(segment_path(dir.path(), 4), b"HBJ1\x01").unwrap();

    let mut journal = FileJournal::open(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 0).unwrap(), (3, expected(1..=3)));
    assert_eq!(segment_firsts(dir.path()), vec![1]);
    assert_eq!(journal.bytes(), files_bytes(dir.path()));
    journal.append(4, &payload(4)).unwrap();
    let mut journal = FileJournal::open(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 0).unwrap(), (4, expected(1..=4)));
}

#[test]
fn a_segment_with_a_wrong_header_is_corrupt_at_offset_zero() {
    let dir = tempfile::tempdir().unwrap();
    drop(journal_with(dir.path(), SEGMENT_BYTES, 3));
    let path = segment_path(dir.path(), 1);
    flip_byte(&path, 0);
    let mut journal = FileJournal::open(dir.path()).unwrap();
    match recover(&mut journal, 0) {
        Err(JournalError::Corrupt { file, offset: 0, .. }) => assert_eq!(file, path.display().to_string()),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn an_error_from_each_stops_recovery_and_is_returned_as_is() {
    let dir = tempfile::tempdir().unwrap();
    drop(journal_with(dir.path(), SEGMENT_BYTES, 5));
    let mut journal = FileJournal::open(dir.path()).unwrap();
    let mut seen = Vec::new();
    let stop = JournalError::Invalid { position: 3, why: "undecodable".to_owned() };
    let result = journal.recover(0, &mut |position, _| {
        seen.push(position);
        if position == 3 { Err(stop.clone()) } else { Ok(()) }
    });
    assert_eq!(result, Err(stop));
    assert_eq!(seen, vec![1, 2, 3]);
    let refused = journal.append(6, &payload(6));
    assert!(matches!(refused, Err(JournalError::Invalid { .. })), "{refused:?}");
}

#[test]
fn recovering_below_a_trim_is_corrupt_since_the_records_after_it_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = journal_with(dir.path(), 200, 50);
    journal.trim(30).unwrap();
    let kept = segment_firsts(dir.path());
    assert!(kept[0] > 11, "{kept:?}");
    let mut journal = reopened(dir.path(), 200);
    match recover(&mut journal, 10) {
        Err(JournalError::Corrupt { file, offset: 0, .. }) => {
            assert_eq!(file, segment_path(dir.path(), kept[0]).display().to_string());
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_segment_starting_inside_its_predecessor_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    drop(journal_with(dir.path(), SEGMENT_BYTES, 5));
    // A segment header (the format table) claiming record 5, already in the
    // segment before it.
    let mut header = b"HBJ1\x01\x00\x00\x00".to_vec();
    header.extend_from_slice(&5_u64.to_le_bytes());
    let path = segment_path(dir.path(), 5);
    fs::write(&path, header).unwrap();
    let mut journal = FileJournal::open(dir.path()).unwrap();
    match recover(&mut journal, 0) {
        Err(JournalError::Corrupt { file, offset: 0, .. }) => assert_eq!(file, path.display().to_string()),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn an_older_record_past_a_torn_tail_does_not_make_it_damage() {
    let dir = tempfile::tempdir().unwrap();
    drop(journal_with(dir.path(), SEGMENT_BYTES, 3));
    let path = segment_path(dir.path(), 1);
    let bytes = fs::read(&path).unwrap();
    let first_frame = &bytes[usize::try_from(frame_offset(1)).unwrap()..usize::try_from(frame_offset(2)).unwrap()];
    let mut tail = vec![0x5a; 9];
    tail.extend_from_slice(first_frame);
    append_bytes(&path, &tail);

    let mut journal = FileJournal::open(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 0).unwrap(), (3, expected(1..=3)));
    assert_eq!(fs::metadata(&path).unwrap().len(), frame_offset(4));
}

#[test]
fn an_intact_record_out_of_sequence_is_corrupt_even_at_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    drop(journal_with(dir.path(), SEGMENT_BYTES, 3));
    // Record 5's frame, as the journal writes it, where 4 is due.
    let twin = tempfile::tempdir().unwrap();
    drop(journal_with(twin.path(), SEGMENT_BYTES, 5));
    let twin_bytes = fs::read(segment_path(twin.path(), 1)).unwrap();
    let path = segment_path(dir.path(), 1);
    append_bytes(&path, &twin_bytes[usize::try_from(frame_offset(5)).unwrap()..]);

    let mut journal = FileJournal::open(dir.path()).unwrap();
    match recover(&mut journal, 0) {
        Err(JournalError::Corrupt { file, offset, .. }) => {
            assert_eq!((file, offset), (path.display().to_string(), frame_offset(4)));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
