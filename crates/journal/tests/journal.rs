//! The segment journal on real files: records come back in order after a
//! reopen, a torn tail is cut and appending goes on after it, damage before
//! the tail stops recovery, segments rotate and are trimmed whole, and the
//! last segment grows by zeros that appends overwrite.
//!
//! A torn write lands where the journal writes its next frame: inside the
//! last segment's zero tail, just after its records (`write_at` with
//! `frame_offset`), not at the end of its file.

#![allow(clippy::unwrap_used)]

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use hongbao_engine::journal::{Journal, JournalError, Position};
use hongbao_journal::{FileJournal, GROW_BYTES, SEGMENT_BYTES};

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

/// The files' bytes without the zeros that end them: their headers' and
/// records' (every payload here ends in a digit, not a zero), what `bytes()`
/// counts. The last segment's file is longer: it has a zero tail.
fn records_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let bytes = fs::read(entry.unwrap().path()).unwrap();
            bytes.iter().rposition(|&byte| byte != 0).map_or(0, |last| last as u64 + 1)
        })
        .sum()
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

/// Writes `bytes` at `offset`, over what is there (the zero tail, say).
fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, offset).unwrap();
}

fn file_bytes(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

/// The frame of the record at `position` (the `position`th of its segment)
/// as the journal writes it, from a twin journal.
fn twin_frame(position: Position) -> Vec<u8> {
    let twin = tempfile::tempdir().unwrap();
    drop(journal_with(twin.path(), SEGMENT_BYTES, position));
    let bytes = fs::read(segment_path(twin.path(), 1)).unwrap();
    bytes[usize::try_from(frame_offset(position)).unwrap()..usize::try_from(frame_offset(position + 1)).unwrap()]
        .to_vec()
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
    // `bytes()` counts the records, not the zero tail after them.
    assert_eq!(journal.bytes(), records_bytes(dir.path()));
    assert_eq!(journal.bytes(), frame_offset(21));
    assert_eq!(files_bytes(dir.path()), GROW_BYTES);
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
    let fourth = &twin_bytes[usize::try_from(frame_offset(4)).unwrap()..usize::try_from(frame_offset(5)).unwrap()];
    let path = segment_path(dir.path(), 1);
    write_at(&path, frame_offset(4), &fourth[..fourth.len() / 2]);

    let mut journal = FileJournal::open(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 0).unwrap(), (3, expected(1..=3)));
    // Cut where the torn record starts, zero tail and all.
    assert_eq!(fs::metadata(&path).unwrap().len(), frame_offset(4));
    journal.append(4, &payload(4)).unwrap();
    // Grown again by zeros: the same file as the twin's.
    assert_eq!(fs::read(&path).unwrap(), twin_bytes);

    let mut journal = FileJournal::open(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 0).unwrap(), (4, expected(1..=4)));
}

#[test]
fn a_torn_frame_header_is_cut_as_well() {
    let dir = tempfile::tempdir().unwrap();
    drop(journal_with(dir.path(), SEGMENT_BYTES, 2));
    let path = segment_path(dir.path(), 1);
    write_at(&path, frame_offset(3), &[0x5a; 7]);
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
    assert_eq!(journal.bytes(), records_bytes(dir.path()));
    // Sealed segments were cut to their records; the last has a zero tail.
    for first in &firsts[..firsts.len() - 1] {
        let bytes = file_bytes(&segment_path(dir.path(), *first));
        assert_eq!((bytes - SEGMENT_HEADER_BYTES) % FRAME_BYTES, 0, "segment {first}: {bytes} bytes");
    }
    assert_eq!(file_bytes(&segment_path(dir.path(), *firsts.last().unwrap())), GROW_BYTES);

    journal.trim(30).unwrap();
    let kept = segment_firsts(dir.path());
    let dropped: Vec<Position> = firsts.iter().copied().filter(|first| !kept.contains(first)).collect();
    assert!(!dropped.is_empty());
    assert!(kept[0] <= 31, "record 31 must be kept: {kept:?}");
    // The first segment kept is the one holding 31: its successor is past it.
    assert!(kept.get(1).is_none_or(|&second| second > 31), "{kept:?}");
    assert_eq!(journal.bytes(), records_bytes(dir.path()));

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
    // The segment left behind was sealed: cut to its records.
    assert_eq!(file_bytes(&segment_path(dir.path(), 1)), frame_offset(4));

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
    assert_eq!(journal.bytes(), records_bytes(dir.path()));
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
    write_at(&path, frame_offset(4), &tail);

    let mut journal = FileJournal::open(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 0).unwrap(), (3, expected(1..=3)));
    assert_eq!(fs::metadata(&path).unwrap().len(), frame_offset(4));
}

#[test]
fn an_intact_record_out_of_sequence_is_corrupt_even_at_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    drop(journal_with(dir.path(), SEGMENT_BYTES, 3));
    // Record 5's frame, as the journal writes it, where 4 is due.
    let path = segment_path(dir.path(), 1);
    write_at(&path, frame_offset(4), &twin_frame(5));

    let mut journal = FileJournal::open(dir.path()).unwrap();
    match recover(&mut journal, 0) {
        Err(JournalError::Corrupt { file, offset, .. }) => {
            assert_eq!((file, offset), (path.display().to_string(), frame_offset(4)));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_zero_tail_past_the_last_record_is_the_end_and_the_next_append_follows_the_records() {
    let dir = tempfile::tempdir().unwrap();
    drop(journal_with(dir.path(), SEGMENT_BYTES, 5));
    let path = segment_path(dir.path(), 1);
    assert_eq!(file_bytes(&path), GROW_BYTES);
    // A longer zero tail than the journal leaves, of an odd length.
    append_bytes(&path, &vec![0; usize::try_from(2 * GROW_BYTES + 7).unwrap()]);
    let before = fs::read(&path).unwrap();

    let mut journal = FileJournal::open(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 0).unwrap(), (5, expected(1..=5)));
    assert_eq!(journal.bytes(), frame_offset(6));
    assert_eq!(fs::read(&path).unwrap(), before, "the zero tail stays");

    journal.append(6, &payload(6)).unwrap();
    let after = fs::read(&path).unwrap();
    assert_eq!(after.len(), before.len(), "the tail had room: no growth");
    let (start, end) = (usize::try_from(frame_offset(6)).unwrap(), usize::try_from(frame_offset(7)).unwrap());
    assert_eq!(after[..start], before[..start]);
    assert_eq!(after[start..end], twin_frame(6));
    assert!(after[end..].iter().all(|&byte| byte == 0));
    let mut journal = FileJournal::open(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 0).unwrap(), (6, expected(1..=6)));
    assert_eq!(journal.bytes(), frame_offset(7));
}

#[test]
fn a_zero_tail_shorter_than_a_frame_or_none_is_the_end_too() {
    for zeros in [0, 7, 19, 20] {
        let dir = tempfile::tempdir().unwrap();
        drop(journal_with(dir.path(), SEGMENT_BYTES, 5));
        let path = segment_path(dir.path(), 1);
        OpenOptions::new().write(true).open(&path).unwrap().set_len(frame_offset(6) + zeros).unwrap();

        let mut journal = FileJournal::open(dir.path()).unwrap();
        assert_eq!(recover(&mut journal, 0).unwrap(), (5, expected(1..=5)), "{zeros} zeros");
        assert_eq!(file_bytes(&path), frame_offset(6) + zeros, "{zeros} zeros: nothing cut");
        journal.append(6, &payload(6)).unwrap();
        assert_eq!(file_bytes(&path), GROW_BYTES, "{zeros} zeros: grown to a step");
        let mut journal = FileJournal::open(dir.path()).unwrap();
        assert_eq!(recover(&mut journal, 0).unwrap(), (6, expected(1..=6)), "{zeros} zeros");
    }
}

#[test]
fn a_zeroed_record_before_intact_ones_is_corrupt_not_an_end() {
    let frame = usize::try_from(FRAME_BYTES).unwrap();
    // The whole frame zeroed, or only its header.
    for zeros in [frame, 16] {
        let dir = tempfile::tempdir().unwrap();
        drop(journal_with(dir.path(), SEGMENT_BYTES, 5));
        let path = segment_path(dir.path(), 1);
        write_at(&path, frame_offset(3), &vec![0; zeros]);
        let before = fs::read(&path).unwrap();

        let mut journal = FileJournal::open(dir.path()).unwrap();
        match recover(&mut journal, 0) {
            Err(JournalError::Corrupt { file, offset, .. }) => {
                assert_eq!((file, offset), (path.display().to_string(), frame_offset(3)), "{zeros} zeros");
            }
            other => panic!("{zeros} zeros: expected Corrupt, got {other:?}"),
        }
        assert_eq!(fs::read(&path).unwrap(), before, "a damaged journal is left as it is");
        let mut journal = FileJournal::open_read_only(dir.path()).unwrap();
        let read_only = recover(&mut journal, 0);
        assert!(matches!(read_only, Err(JournalError::Corrupt { .. })), "{zeros} zeros, read-only: {read_only:?}");
    }
}

#[test]
fn a_zeroed_record_in_a_segment_before_the_last_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    drop(journal_with(dir.path(), 100, 10));
    let firsts = segment_firsts(dir.path());
    let path = segment_path(dir.path(), firsts[0]);
    let records = firsts[1] - firsts[0];
    assert!(records >= 2, "{firsts:?}");
    // Its last record zeroed: zeros to the end of a sealed file, whose
    // record the next segment does not have.
    write_at(&path, frame_offset(records), &vec![0; usize::try_from(FRAME_BYTES).unwrap()]);
    let mut journal = reopened(dir.path(), 100);
    match recover(&mut journal, 0) {
        Err(JournalError::Corrupt { file, .. }) => {
            assert_eq!(file, segment_path(dir.path(), firsts[1]).display().to_string());
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The tables holding that record, nothing is lost.
    let mut journal = reopened(dir.path(), 100);
    assert_eq!(recover(&mut journal, records).unwrap(), (10, expected(records + 1..=10)));
}

#[test]
fn the_file_grows_in_zero_filled_steps_not_per_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = segment_path(dir.path(), 1);
    let mut journal = FileJournal::open(dir.path()).unwrap();
    recover(&mut journal, 0).unwrap();
    // The file's sizes, each time it changed.
    let mut sizes = Vec::new();
    let check = |journal: &FileJournal, sizes: &mut Vec<u64>| {
        let (size, used) = (file_bytes(&path), journal.bytes());
        assert_eq!(size % GROW_BYTES, 0, "{size} bytes for {used} of records");
        assert!(used <= size && size - used < GROW_BYTES, "{size} bytes for {used} of records");
        if sizes.last() != Some(&size) {
            sizes.push(size);
        }
    };
    for position in 1..=1_000 {
        journal.append(position, &[0x5a; 100]).unwrap();
        check(&journal, &mut sizes);
    }
    assert_eq!(journal.bytes(), SEGMENT_HEADER_BYTES + 1_000 * (FRAME_OVERHEAD_BYTES + 100));
    assert_eq!(sizes, [GROW_BYTES], "one growth for 1,000 appends");
    for position in 1_001..=1_040 {
        journal.append(position, &[0x5a; 100 << 10]).unwrap();
        check(&journal, &mut sizes);
    }
    assert_eq!(sizes, (1..=5).map(|steps| steps * GROW_BYTES).collect::<Vec<_>>());
    // A frame longer than a step grows the file past it in one go.
    journal.append(1_041, &vec![0x5a; usize::try_from(GROW_BYTES * 5 / 2).unwrap()]).unwrap();
    check(&journal, &mut sizes);
    // 4.02 MiB of records, then 2.5 MiB more: from 5 MiB to 7 MiB at once.
    assert_eq!(sizes[5..], [7 * GROW_BYTES]);

    let mut journal = FileJournal::open(dir.path()).unwrap();
    let mut count = 0;
    let recovered = journal.recover(0, &mut |_, _| {
        count += 1;
        Ok(())
    });
    assert_eq!(recovered, Ok(1_041));
    assert_eq!(count, 1_041);
}

#[test]
fn a_torn_record_in_the_zero_tail_is_cut_and_the_next_append_follows_the_last_good_one() {
    let fourth = twin_frame(4);
    let mut header_unwritten = fourth.clone();
    header_unwritten[..16].fill(0);
    let mut payload_unwritten = fourth.clone();
    payload_unwritten[usize::try_from(FRAME_OVERHEAD_BYTES).unwrap()..].fill(0);
    // Its blocks written in another order than its bytes: the header not yet,
    // or the header and not the payload's end.
    let torn: [(&str, &[u8]); 3] = [
        ("header written, not the payload", &payload_unwritten),
        ("payload written, not the header", &header_unwritten),
        ("its first bytes", &fourth[..3]),
    ];
    for (how, bytes) in torn {
        let dir = tempfile::tempdir().unwrap();
        drop(journal_with(dir.path(), SEGMENT_BYTES, 3));
        let path = segment_path(dir.path(), 1);
        write_at(&path, frame_offset(4), bytes);

        let mut journal = FileJournal::open(dir.path()).unwrap();
        assert_eq!(recover(&mut journal, 0).unwrap(), (3, expected(1..=3)), "{how}");
        // Cut where the torn record starts, its zero tail with it.
        assert_eq!(file_bytes(&path), frame_offset(4), "{how}");
        journal.append(4, &payload(4)).unwrap();
        assert_eq!(file_bytes(&path), GROW_BYTES, "{how}");
        let mut journal = FileJournal::open(dir.path()).unwrap();
        assert_eq!(recover(&mut journal, 0).unwrap(), (4, expected(1..=4)), "{how}");
    }
}

#[test]
fn bytes_past_the_zero_tail_are_a_torn_tail_unless_an_intact_later_record() {
    let dir = tempfile::tempdir().unwrap();
    drop(journal_with(dir.path(), SEGMENT_BYTES, 3));
    let path = segment_path(dir.path(), 1);
    append_bytes(&path, &[0x5a; 5]);
    let mut journal = FileJournal::open(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 0).unwrap(), (3, expected(1..=3)));
    assert_eq!(file_bytes(&path), frame_offset(4));

    let dir = tempfile::tempdir().unwrap();
    drop(journal_with(dir.path(), SEGMENT_BYTES, 3));
    let path = segment_path(dir.path(), 1);
    append_bytes(&path, &twin_frame(4));
    let mut journal = FileJournal::open(dir.path()).unwrap();
    match recover(&mut journal, 0) {
        Err(JournalError::Corrupt { offset, .. }) => assert_eq!(offset, frame_offset(4)),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn read_only_recovery_ends_at_the_zero_tail_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    drop(journal_with(dir.path(), SEGMENT_BYTES, 3));
    let path = segment_path(dir.path(), 1);
    let mut journal = FileJournal::open_read_only(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 0).unwrap(), (3, expected(1..=3)));
    assert_eq!(journal.bytes(), frame_offset(4));

    let fourth = twin_frame(4);
    write_at(&path, frame_offset(4), &fourth[..fourth.len() / 2]);
    let before = fs::read(&path).unwrap();
    let mut journal = FileJournal::open_read_only(dir.path()).unwrap();
    assert_eq!(recover(&mut journal, 0).unwrap(), (3, expected(1..=3)));
    assert_eq!(fs::read(&path).unwrap(), before, "the torn record is left in place");
    let refused = journal.append(4, &payload(4));
    assert!(matches!(refused, Err(JournalError::Invalid { .. })), "{refused:?}");
}
