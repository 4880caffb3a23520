//! A set's journal on disk: `FileJournal`, the segment-file implementation of
//! the engine's `Journal` (`hongbao_engine::journal`). A batch is answered
//! once its record is here and `fdatasync`ed; the tables follow behind, and
//! the journal is trimmed a segment at a time below what they hold.
//!
//! This file owns the journal's life: which segment is appended to, when a
//! new one starts, how recovery walks the segments and tells a torn tail from
//! damage, and what trimming may delete. The bytes of one segment (names,
//! header, frames, checksums) are `segment.rs`'s.
//!
//! # Format
//!
//! This table is the format's one definition. All integers are little-endian;
//! every checksum is CRC-32C (Castagnoli).
//!
//! | Part | Bytes | Contents |
//! |------|-------|----------|
//! | segment file | name | its first record's position as 20 zero-padded decimal digits, then `.seg` (`00000000000000000001.seg`): the names sort as the positions do |
//! | segment header | 0..4 | magic `HBJ1` |
//! | | 4..6 | format version, `u16` = 1 |
//! | | 6..8 | reserved, `u16` = 0 |
//! | | 8..16 | first position, `u64`, the same as the name's |
//! | record frame | 0..4 | `u32` checksum of the frame's bytes 4..16 |
//! | (one after another from offset 16) | 4..8 | payload length `n`, `u32`, at most `PAYLOAD_BYTES_MAX` (256 MiB) |
//! | | 8..16 | position, `u64` |
//! | | 16..20 | `u32` checksum of the payload |
//! | | 20..20+`n` | payload (the engine's record, opaque here) |
//! | zero tail | after the last frame, to the file's end | zeros, where the next frames go (see below) |
//!
//! Positions run without a gap: a segment's first record is at the position
//! its name gives, each next record one further, and the next segment starts
//! where its predecessor ended. A new segment is started once the current one
//! holds `segment_bytes` or more of records (`SEGMENT_BYTES` by default), so a
//! segment may pass that size by one record.
//!
//! The last segment's file is longer than its records: it grows by zeros,
//! `GROW_BYTES` at a time (to the next multiple of `GROW_BYTES` that holds the
//! frame being written), and each frame overwrites the zeros after the one
//! before. A segment is sealed when the next one starts: its file is cut to its
//! records (and synced) before its successor is created, so only the last
//! segment has a zero tail (recovery accepts one in any segment all the same).
//! A frame's header is never all zeros: its position is 1 or more, and its
//! checksum, of bytes 4..16, would then be the CRC-32C of 12 zero bytes, which
//! is not zero. So where a frame would start, bytes that are all zeros up to
//! the end of the file (a zero tail, however short) are the segment's end.
//!
//! # Durability and recovery
//!
//! `append` writes a frame with one `pwrite` at the end of the last segment's
//! records, into its zero tail, and `fdatasync`s it before returning. When the
//! tail is too short for the frame, the file first grows: zeros are written
//! (real ones: not `set_len` or `fallocate`, whose holes and unwritten extents
//! still need metadata written when first written to) and `fsync`ed. So the
//! `fdatasync` of a frame finds no size to commit, only the frame's blocks:
//! appending to a file commits its new size in the file system's journal at
//! every sync, overwriting does not (see `tests/append_cost.rs` for what that
//! saves). Starting a segment also syncs its header and the directory.
//!
//! A crash can therefore leave only the last record of the last segment torn
//! (never acknowledged), partly over the zeros after it, or a last segment
//! shorter than its header. `recover` cuts either off: a torn record by
//! truncating the file where it starts (zero tail and all; the next append
//! grows the file again), so that everything from the records' end to the
//! file's end is zeros, as appends need. A zero tail with nothing but zeros in
//! it is the end and stays. Bytes that are not all zeros where a frame should
//! be, and that are not an intact frame, are a torn tail only in the last
//! segment and only if no intact later record follows them (however they start,
//! zeros included: a record's frame zeroed before records that follow is
//! damage, not an end); anywhere else they are damage to acknowledged records:
//! `Corrupt`, and start-up stops.
//!
//! # Cost
//!
//! The `fdatasync` per append dominates everything else here (framing and
//! checksums take microseconds; a sync takes from tens of microseconds on a
//! drive with power-loss protection to milliseconds on one without). The
//! engine pays it once per batch, not per command: that is what group commit
//! is for. Overwriting zeros instead of appending cuts it further: on the
//! project's ext4 disk (a virtual one, shared with other work), 2,000 appends
//! of 16 KiB took a mean of 137 to 165 µs each (median 118 to 142) into
//! zero-filled segments, against 213 to 261 µs (median 215 to 256) with each
//! frame appended at the file's end as before: four runs of each, alternated,
//! of the same test build (`tests/append_cost.rs`). The means include the
//! growing: one append in 64 there wrote `GROW_BYTES` of zeros and `fsync`ed
//! them first, about 1.1 ms.

mod segment;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use hongbao_engine::journal::{Journal, JournalError, Position};
use tracing::warn;

pub use segment::PAYLOAD_BYTES_MAX;
use segment::{
    Frame, SEGMENT_HEADER_BYTES, SegmentReader, encode_frame, find_later_record, parse_segment_name, segment_header,
    segment_name, zeros_to_end,
};

/// The size past which appends start a new segment. Large enough that the
/// per-segment costs (a header, two syncs, a directory entry) vanish next to
/// its records; small enough that trimming lets go of the disk in steps.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// The step by which the last segment's file grows, in zeros that appends then
/// overwrite: its size is a multiple of it (bar a segment cut at a torn
/// record), never more than this past its records. Large enough that growing
/// (a write and an `fsync`) is rare next to the appends it serves; small
/// enough that the zeros cost nothing on disk.
pub const GROW_BYTES: u64 = 1 << 20;

/// The zeros a segment grows by, written a slice at a time.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// One set's journal: a directory of segment files.
pub struct FileJournal {
    dir: PathBuf,
    segment_bytes: u64,
    /// The segments in order of position; the last is the one appended to.
    segments: Vec<Segment>,
    /// The last segment, open for appending; `None` when the next append must
    /// start a new segment (none yet, or the tables are ahead of its records).
    tail: Option<Tail>,
    /// The position the next append must carry; `None` until `recover` has
    /// run, at open and after a failed append.
    next: Option<Position>,
    /// The sum of the segments' bytes (`Segment::bytes`).
    bytes: u64,
    /// The frame being written, kept to reuse its allocation.
    frame: Vec<u8>,
    /// Opened to read only (`hongbao audit`): recovery passes the records on
    /// and changes nothing (a torn tail is left in place, not cut), and
    /// appends are refused.
    read_only: bool,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    first: Position,
    /// Its header's and records' bytes: where its next frame would go. The
    /// file's size until recovery has read the segment; a sealed segment's
    /// file holds exactly these, the last one's a zero tail past them.
    bytes: u64,
}

/// The last segment's file, open for writing past its records.
struct Tail {
    file: File,
    /// The file's size: its records, then zeros to here.
    file_bytes: u64,
}

impl Tail {
    /// Opens the segment at `path` to write frames into its zero tail.
    fn open(path: &Path) -> io::Result<Tail> {
        let file = OpenOptions::new().write(true).open(path)?;
        let file_bytes = file.metadata()?.len();
        Ok(Tail { file, file_bytes })
    }

    /// Grows the file by zeros, durably, until it reaches `end` or past: to
    /// the next multiple of `GROW_BYTES`.
    fn make_room(&mut self, end: u64) -> io::Result<()> {
        if end <= self.file_bytes {
            return Ok(());
        }
        let grown = end.div_ceil(GROW_BYTES) * GROW_BYTES;
        let mut at = self.file_bytes;
        while at < grown {
            let zeros = &ZEROS[..ZEROS.len().min(usize::try_from(grown - at).unwrap_or(usize::MAX))];
            self.file.write_all_at(zeros, at)?;
            at += zeros.len() as u64;
        }
        self.file.sync_all()?;
        self.file_bytes = grown;
        Ok(())
    }

    /// Cuts the file's zero tail off at `used`, its records' end, durably:
    /// the segment is done with.
    fn seal(&mut self, used: u64) -> io::Result<()> {
        if self.file_bytes > used {
            self.file.set_len(used)?;
            self.file.sync_data()?;
            self.file_bytes = used;
        }
        Ok(())
    }
}

/// What `recover` passes each record to.
type Each<'a> = dyn FnMut(Position, &[u8]) -> Result<(), JournalError> + 'a;

/// How far a recovery has read, across the segments.
struct Scan<'a> {
    after: Position,
    /// The last intact record read, if any (`None` again after a segment
    /// skipped unread, whose records are all at or below `after`).
    last: Option<Position>,
    each: &'a mut Each<'a>,
    payload: Vec<u8>,
}

impl FileJournal {
    /// Opens (creating if absent, with fsync of the parent) the journal
    /// directory `dir`. Does not scan: `recover` must be called before the
    /// first append.
    pub fn open(dir: &Path) -> Result<FileJournal, JournalError> {
        FileJournal::with_segment_bytes(dir, SEGMENT_BYTES)
    }

    /// Same, with the size past which a new segment is started.
    pub fn with_segment_bytes(dir: &Path, segment_bytes: u64) -> Result<FileJournal, JournalError> {
        if !dir.try_exists().map_err(io_error("looking for", dir))? {
            fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
            let parent = match dir.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            sync_dir(parent).map_err(io_error("syncing", parent))?;
        }
        let mut journal = FileJournal {
            dir: dir.to_owned(),
            segment_bytes,
            segments: list_segments(dir)?,
            tail: None,
            next: None,
            bytes: 0,
            frame: Vec::new(),
            read_only: false,
        };
        journal.bytes = journal.segments_bytes();
        Ok(journal)
    }

    /// Opens the journal `dir` to read it without changing anything, for
    /// audits of a stopped (or crashed) data directory, which may be on a
    /// read-only disk. A missing directory is an empty journal.
    pub fn open_read_only(dir: &Path) -> Result<FileJournal, JournalError> {
        let segments = match dir.try_exists().map_err(io_error("looking for", dir))? {
            true => list_segments(dir)?,
            false => Vec::new(),
        };
        let mut journal = FileJournal {
            dir: dir.to_owned(),
            segment_bytes: SEGMENT_BYTES,
            segments,
            tail: None,
            next: None,
            bytes: 0,
            frame: Vec::new(),
            read_only: true,
        };
        journal.bytes = journal.segments_bytes();
        Ok(journal)
    }

    /// The bytes of the segments' headers and records, not of the zero tail
    /// after them; until `recover` has run, the files' sizes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn segments_bytes(&self) -> u64 {
        self.segments.iter().map(|segment| segment.bytes).sum()
    }

    fn segment_path(&self, first: Position) -> PathBuf {
        self.dir.join(segment_name(first))
    }

    /// Writes the frame of the record at `position` after the last segment's
    /// records (a new segment if it is full or cannot take it), over its zero
    /// tail, growing the file first if the tail is too short, and syncs it.
    fn write_record(&mut self, position: Position, payload: &[u8]) -> io::Result<()> {
        let full = match (self.segments.last(), &self.tail) {
            (Some(segment), Some(_)) => segment.bytes >= self.segment_bytes,
            _ => true,
        };
        if full {
            self.start_segment(position)?;
        }
        encode_frame(&mut self.frame, position, payload);
        let frame_bytes = self.frame.len() as u64;
        let segment = self.segments.last_mut().expect("the segment appended to is listed");
        let tail = self.tail.as_mut().expect("a segment is open for appending");
        tail.make_room(segment.bytes + frame_bytes)?;
        tail.file.write_all_at(&self.frame, segment.bytes)?;
        tail.file.sync_data()?;
        segment.bytes += frame_bytes;
        self.bytes += frame_bytes;
        Ok(())
    }

    /// Seals the segment appended to (if one is open), then creates the
    /// segment whose first record is at `first`, durably (its header and its
    /// directory entry), and makes it the one appended to.
    fn start_segment(&mut self, first: Position) -> io::Result<()> {
        if let Some(mut tail) = self.tail.take() {
            tail.seal(self.segments.last().expect("the segment appended to is listed").bytes)?;
        }
        let mut file = OpenOptions::new().write(true).create_new(true).open(self.segment_path(first))?;
        file.write_all(&segment_header(first))?;
        file.sync_data()?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment { first, bytes: SEGMENT_HEADER_BYTES });
        self.bytes += SEGMENT_HEADER_BYTES;
        self.tail = Some(Tail { file, file_bytes: SEGMENT_HEADER_BYTES });
        Ok(())
    }

    /// Removes a last segment shorter than its header: its creation was torn,
    /// so no record was ever appended to it.
    fn drop_torn_creation(&mut self) -> Result<(), JournalError> {
        let Some(&last) = self.segments.last() else { return Ok(()) };
        if last.bytes >= SEGMENT_HEADER_BYTES {
            return Ok(());
        }
        if self.read_only {
            self.segments.pop();
            return Ok(());
        }
        let path = self.segment_path(last.first);
        fs::remove_file(&path).map_err(io_error("removing", &path))?;
        sync_dir(&self.dir).map_err(io_error("syncing", &self.dir))?;
        warn!(file = %path.display(), bytes = last.bytes, "removed a segment whose creation was torn");
        self.segments.pop();
        Ok(())
    }

    /// Reads the segment at `index`, passing its records past `scan.after` on,
    /// and sets its bytes to its records' end. Returns the position its next
    /// record would carry.
    fn scan_segment(&mut self, index: usize, scan: &mut Scan<'_>) -> Result<Position, JournalError> {
        let first = self.segments[index].first;
        let path = self.segment_path(first);
        let corrupt = |offset, why| JournalError::Corrupt { file: path.display().to_string(), offset, why };
        let mut reader = match SegmentReader::open(&path, first).map_err(io_error("reading", &path))? {
            Ok(reader) => reader,
            Err(why) => return Err(corrupt(0, why)),
        };
        check_continuity(first, scan.last, scan.after).map_err(|why| corrupt(0, why))?;
        let mut expected = first;
        loop {
            let offset = reader.offset();
            match reader.next_frame(&mut scan.payload).map_err(io_error("reading", &path))? {
                Frame::End => {
                    self.segments[index].bytes = offset;
                    return Ok(expected);
                }
                Frame::Record(position) if position != expected => {
                    return Err(corrupt(offset, format!("record {position} where {expected} was due")));
                }
                Frame::Record(position) => {
                    if position > scan.after {
                        (scan.each)(position, &scan.payload)?;
                    }
                    scan.last = Some(position);
                    expected += 1;
                }
                Frame::Bad(why) => {
                    self.end_at_bad_frame(index, offset, expected, why)?;
                    self.segments[index].bytes = offset;
                    return Ok(expected);
                }
            }
        }
    }

    /// Tells what the bad frame at `offset` in the segment at `index` is: the
    /// segment's end if only zeros follow (its zero tail); a torn last write,
    /// cut off, if the segment is the last; else damage, `Corrupt`.
    fn end_at_bad_frame(
        &mut self,
        index: usize,
        offset: u64,
        expected: Position,
        why: String,
    ) -> Result<(), JournalError> {
        let path = self.segment_path(self.segments[index].first);
        if zeros_to_end(&path, offset).map_err(io_error("reading", &path))? {
            return Ok(());
        }
        if index + 1 < self.segments.len() {
            return Err(JournalError::Corrupt { file: path.display().to_string(), offset, why });
        }
        self.cut_torn_tail(index, offset, expected, why)
    }

    /// Cuts the last segment off at `offset`, where a bad frame starts (with
    /// the zero tail after it, so that only zeros follow the records: none),
    /// if that frame is a torn last write: if no intact record at `expected`
    /// or later follows it. If one does, the bad frame is damage: `Corrupt`.
    fn cut_torn_tail(
        &mut self,
        index: usize,
        offset: u64,
        expected: Position,
        why: String,
    ) -> Result<(), JournalError> {
        let path = self.segment_path(self.segments[index].first);
        if let Some(later) = find_later_record(&path, offset, expected).map_err(io_error("reading", &path))? {
            let why = format!("{why}, and an intact later record follows at offset {later}");
            return Err(JournalError::Corrupt { file: path.display().to_string(), offset, why });
        }
        if self.read_only {
            return Ok(());
        }
        let file = OpenOptions::new().write(true).open(&path).map_err(io_error("opening", &path))?;
        let file_bytes = file.metadata().map_err(io_error("reading", &path))?.len();
        file.set_len(offset).map_err(io_error("truncating", &path))?;
        file.sync_data().map_err(io_error("syncing", &path))?;
        let bytes_cut = file_bytes - offset;
        warn!(file = %path.display(), offset, bytes_cut, why, "cut a torn record off the journal's tail");
        Ok(())
    }

    /// Readies the journal for the append at `next`: into the last segment
    /// if its records end just before `next` (`tail_next` is the position its
    /// next record would carry), else into a new segment, the last one being
    /// sealed first.
    fn resume(&mut self, next: Position, tail_next: Option<Position>) -> Result<(), JournalError> {
        self.tail = None;
        if let Some(&segment) = self.segments.last() {
            let path = self.segment_path(segment.first);
            let mut tail = Tail::open(&path).map_err(io_error("opening", &path))?;
            if tail_next == Some(next) {
                self.tail = Some(tail);
            } else {
                tail.seal(segment.bytes).map_err(io_error("sealing", &path))?;
            }
        }
        self.next = Some(next);
        Ok(())
    }
}

impl Journal for FileJournal {
    fn append(&mut self, position: Position, payload: &[u8]) -> Result<(), JournalError> {
        let Some(next) = self.next else {
            let why = match self.read_only {
                true => "append to a journal opened read-only".to_owned(),
                false => "append before recover (at open, or after a failed append)".to_owned(),
            };
            return Err(JournalError::Invalid { position, why });
        };
        if position != next {
            return Err(JournalError::Invalid { position, why: format!("appended where {next} was due") });
        }
        if payload.len() as u64 > PAYLOAD_BYTES_MAX {
            let why = format!("a payload of {} bytes, more than {PAYLOAD_BYTES_MAX}", payload.len());
            return Err(JournalError::Invalid { position, why });
        }
        if let Err(error) = self.write_record(position, payload) {
            // The record may be in the file whole, torn, or not at all: only
            // a recovery can tell, and it must come before the next append.
            self.next = None;
            self.tail = None;
            let dir = self.dir.display();
            return Err(JournalError::Io(format!("appending record {position} in {dir}: {error}")));
        }
        self.next = Some(position + 1);
        Ok(())
    }

    fn recover(
        &mut self,
        after: Position,
        each: &mut hongbao_engine::journal::EachRecord<'_>,
    ) -> Result<Position, JournalError> {
        self.next = None;
        self.tail = None;
        self.segments = list_segments(&self.dir)?;
        self.bytes = self.segments_bytes();
        self.drop_torn_creation()?;
        let mut scan = Scan { after, last: None, each, payload: Vec::new() };
        let mut tail_next = None;
        for index in 0..self.segments.len() {
            // A segment followed by one that starts at or below `after + 1`
            // holds only records the tables have: it need not be read.
            if self.segments.get(index + 1).is_some_and(|next| next.first <= after.saturating_add(1)) {
                scan.last = None;
                continue;
            }
            tail_next = Some(self.scan_segment(index, &mut scan)?);
        }
        // The segments read now count their records, not their zero tails;
        // recovery may also have cut a torn tail or removed a torn segment.
        self.bytes = self.segments_bytes();
        let recovered = scan.last.map_or(after, |last| last.max(after));
        if !self.read_only {
            self.resume(recovered + 1, tail_next)?;
        }
        Ok(recovered)
    }

    fn trim(&mut self, upto: Position) -> Result<(), JournalError> {
        // A segment's records are all at or below `upto` when the next one
        // starts at or below `upto + 1`; the last segment always stays.
        let floor = upto.saturating_add(1);
        let removable = self.segments.windows(2).take_while(|pair| pair[1].first <= floor).count();
        let mut result = Ok(());
        let mut removed = 0;
        for segment in &self.segments[..removable] {
            let path = self.segment_path(segment.first);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    result = Err(io_error("removing", &path)(error));
                    break;
                }
            }
            removed += 1;
        }
        self.segments.drain(..removed);
        self.bytes = self.segments_bytes();
        if removed > 0 {
            sync_dir(&self.dir).map_err(io_error("syncing", &self.dir))?;
        }
        result
    }
}

impl fmt::Debug for FileJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileJournal")
            .field("dir", &self.dir)
            .field("segment_bytes", &self.segment_bytes)
            .field("segments", &self.segments.len())
            .field("next", &self.next)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// Checks that a segment starting at `first` follows the records read before
/// it (`last`), or that any records missing between them are at or below
/// `after`, in the tables. `Err` says what is wrong.
fn check_continuity(first: Position, last: Option<Position>, after: Position) -> Result<(), String> {
    let floor = after.saturating_add(1);
    match last {
        Some(last) if first <= last => Err(format!("the segment starts at {first}, at or before record {last}")),
        Some(last) if first > last + 1 && first > floor => {
            Err(format!("records {} to {} are missing before the segment", last + 1, first - 1))
        }
        None if first > floor => Err(format!("records {floor} to {} are missing before the segment", first - 1)),
        _ => Ok(()),
    }
}

/// The segment files of the journal in `dir`, in order of position (the
/// last is the one appended to): for a copy of the journal (`hongbao
/// backup`). Every segment but the last is sealed and never changes again;
/// a trim may remove the first ones.
pub fn segment_files(dir: &Path) -> Result<Vec<PathBuf>, JournalError> {
    Ok(list_segments(dir)?.into_iter().map(|segment| dir.join(segment_name(segment.first))).collect())
}

/// The segments in `dir`, in order of position, with their sizes.
fn list_segments(dir: &Path) -> Result<Vec<Segment>, JournalError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error("listing", dir))? {
        let entry = entry.map_err(io_error("listing", dir))?;
        let Some(first) = entry.file_name().to_str().and_then(parse_segment_name) else { continue };
        let bytes = entry.metadata().map_err(io_error("reading", &entry.path()))?.len();
        segments.push(Segment { first, bytes });
    }
    segments.sort_by_key(|segment| segment.first);
    Ok(segments)
}

/// Makes `dir`'s entries (files created, removed) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Turns an i/o error into the journal's, saying what was being done to what.
fn io_error(doing: &'static str, path: &Path) -> impl FnOnce(io::Error) -> JournalError + use<> {
    let path = path.display().to_string();
    move |error| JournalError::Io(format!("{doing} {path}: {error}"))
}
