//! One segment file's bytes: its name, its header, and the frames of its
//! records, written and read back with their checksums checked, and the zero
//! tail after them told apart from a frame. The layout is
//! defined once, in the crate's doc (`lib.rs`); this module knows nothing of
//! positions across segments, torn tails or trimming, which are the journal's.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use hongbao_engine::journal::Position;

/// The first four bytes of every segment.
const MAGIC: &[u8; 4] = b"HBJ1";

/// The version of the layout written here; any other is refused.
const FORMAT_VERSION: u16 = 1;

/// A segment's header: magic, version, reserved, first position.
pub(crate) const SEGMENT_HEADER_BYTES: u64 = 16;

/// A frame's header: its checksum, the payload's length, the position.
const FRAME_HEADER_BYTES: usize = 16;

/// The payload's checksum, between the frame header and the payload.
const PAYLOAD_CRC_BYTES: usize = 4;

/// A record's bytes on disk besides its payload.
pub(crate) const FRAME_OVERHEAD_BYTES: u64 = (FRAME_HEADER_BYTES + PAYLOAD_CRC_BYTES) as u64;

/// The largest payload a frame may carry. A batch's record is far smaller;
/// the bound keeps a damaged length from making recovery allocate gigabytes.
pub const PAYLOAD_BYTES_MAX: u64 = 256 << 20;

/// Digits in a segment's name: enough for any `u64`, so that the names sort
/// as their positions do.
const NAME_DIGITS: usize = 20;

/// The end of every segment's name.
const NAME_SUFFIX: &str = ".seg";

/// The buffer of a segment being scanned: large enough that a scan makes few
/// reads, small enough to cost nothing next to the segment itself.
const SCAN_BUFFER_BYTES: usize = 256 << 10;

/// The file name of the segment whose first record is at `first`.
pub(crate) fn segment_name(first: Position) -> String {
    format!("{first:0NAME_DIGITS$}{NAME_SUFFIX}")
}

/// The first position of the segment named `name`, or `None` if it is not a
/// segment's name (other files in the directory are left alone).
pub(crate) fn parse_segment_name(name: &str) -> Option<Position> {
    let digits = name.strip_suffix(NAME_SUFFIX)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header that starts the segment whose first record is at `first`.
pub(crate) fn segment_header(first: Position) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut header = [0; SEGMENT_HEADER_BYTES as usize];
    header[0..4].copy_from_slice(MAGIC);
    header[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    // Bytes 6..8 are reserved and stay zero.
    header[8..16].copy_from_slice(&first.to_le_bytes());
    header
}

/// Checks a segment's header against the first position its name gives.
fn check_segment_header(header: &[u8; SEGMENT_HEADER_BYTES as usize], first: Position) -> Result<(), String> {
    if &header[0..4] != MAGIC {
        return Err(format!("the magic is {:?}, not {MAGIC:?}", &header[0..4]));
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != FORMAT_VERSION {
        return Err(format!("format version {version}, not {FORMAT_VERSION}"));
    }
    if header[6..8] != [0, 0] {
        return Err("the reserved bytes are not zero".to_owned());
    }
    let written = u64::from_le_bytes(le_bytes(&header[8..16]));
    if written != first {
        return Err(format!("the header's first position is {written}, the name's {first}"));
    }
    Ok(())
}

/// Replaces `frame`'s contents with the record at `position` carrying
/// `payload`, ready to be written with one call. The caller has checked the
/// payload against `PAYLOAD_BYTES_MAX`.
pub(crate) fn encode_frame(frame: &mut Vec<u8>, position: Position, payload: &[u8]) {
    let length = u32::try_from(payload.len()).expect("a payload within PAYLOAD_BYTES_MAX fits a u32");
    let mut header = [0; FRAME_HEADER_BYTES];
    header[4..8].copy_from_slice(&length.to_le_bytes());
    header[8..16].copy_from_slice(&position.to_le_bytes());
    let header_crc = crc32c::crc32c(&header[4..]);
    header[0..4].copy_from_slice(&header_crc.to_le_bytes());
    frame.clear();
    frame.extend_from_slice(&header);
    frame.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    frame.extend_from_slice(payload);
}

/// What the next bytes of a segment hold.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A whole record, its checksums right; its payload is in the buffer.
    Record(Position),
    /// The end of the file, exactly at a frame's boundary.
    End,
    /// Not a whole, intact frame, for the reason given: a torn tail or damage.
    Bad(String),
}

/// Reads one frame from `bytes`, of which `remaining` are left before the end
/// of the file, putting its payload into `payload`. Reading fails only on an
/// i/o error; a frame that does not check is `Frame::Bad`.
fn read_frame(bytes: &mut impl Read, remaining: u64, payload: &mut Vec<u8>) -> io::Result<Frame> {
    if remaining == 0 {
        return Ok(Frame::End);
    }
    if remaining < FRAME_OVERHEAD_BYTES {
        return Ok(Frame::Bad(format!(
            "{remaining} bytes at the end, fewer than a frame's {FRAME_OVERHEAD_BYTES} fixed ones"
        )));
    }
    let mut header = [0; FRAME_HEADER_BYTES + PAYLOAD_CRC_BYTES];
    bytes.read_exact(&mut header)?;
    let header_crc = u32::from_le_bytes(le_bytes(&header[0..4]));
    if crc32c::crc32c(&header[4..16]) != header_crc {
        return Ok(Frame::Bad("the frame header's checksum does not match".to_owned()));
    }
    let length = u64::from(u32::from_le_bytes(le_bytes(&header[4..8])));
    let position = u64::from_le_bytes(le_bytes(&header[8..16]));
    if length > PAYLOAD_BYTES_MAX {
        return Ok(Frame::Bad(format!("a payload of {length} bytes, more than {PAYLOAD_BYTES_MAX}")));
    }
    if length > remaining - FRAME_OVERHEAD_BYTES {
        return Ok(Frame::Bad(format!("a payload of {length} bytes runs past the end of the file")));
    }
    payload.resize(usize::try_from(length).expect("PAYLOAD_BYTES_MAX fits a usize"), 0);
    bytes.read_exact(payload)?;
    let payload_crc = u32::from_le_bytes(le_bytes(&header[16..20]));
    if crc32c::crc32c(payload) != payload_crc {
        return Ok(Frame::Bad(format!("the payload's checksum does not match (record {position})")));
    }
    Ok(Frame::Record(position))
}

/// A segment read from its start, frame after frame.
pub(crate) struct SegmentReader {
    reader: BufReader<File>,
    file_bytes: u64,
    offset: u64,
}

impl SegmentReader {
    /// Opens the segment at `path` and checks its header against `first`,
    /// the position its name gives. The header's fault, if any, is the
    /// inner `Err`.
    pub(crate) fn open(path: &Path, first: Position) -> io::Result<Result<SegmentReader, String>> {
        let file = File::open(path)?;
        let file_bytes = file.metadata()?.len();
        if file_bytes < SEGMENT_HEADER_BYTES {
            return Ok(Err(format!("{file_bytes} bytes, fewer than a segment's header")));
        }
        let mut reader = BufReader::with_capacity(SCAN_BUFFER_BYTES, file);
        let mut header = [0; SEGMENT_HEADER_BYTES as usize];
        reader.read_exact(&mut header)?;
        if let Err(why) = check_segment_header(&header, first) {
            return Ok(Err(why));
        }
        Ok(Ok(SegmentReader { reader, file_bytes, offset: SEGMENT_HEADER_BYTES }))
    }

    /// The offset in the file of the next frame.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next frame, putting its payload into `payload`. After
    /// `Frame::Bad` the reader is left where it was: the frame's offset is
    /// still `offset()`, and the caller stops reading.
    pub(crate) fn next_frame(&mut self, payload: &mut Vec<u8>) -> io::Result<Frame> {
        let frame = read_frame(&mut self.reader, self.file_bytes - self.offset, payload)?;
        if let Frame::Record(_) = frame {
            self.offset += FRAME_OVERHEAD_BYTES + payload.len() as u64;
        }
        Ok(frame)
    }
}

/// Looks in the segment at `path`, past the bad frame at `offset`, for an
/// intact record at `position_min` or later: the sign that the bad frame is
/// damage before acknowledged records rather than a torn last write. Every
/// byte is tried as a frame's start. Returns that record's offset.
pub(crate) fn find_later_record(path: &Path, offset: u64, position_min: Position) -> io::Result<Option<u64>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let mut payload = Vec::new();
    for start in 1..tail.len() {
        let mut bytes = &tail[start..];
        let remaining = bytes.len() as u64;
        if let Frame::Record(position) = read_frame(&mut bytes, remaining, &mut payload)?
            && position >= position_min
        {
            return Ok(Some(offset + start as u64));
        }
    }
    Ok(None)
}

/// Whether every byte of the segment at `path` from `offset` to its end is
/// zero: its zero tail, where no frame has been written yet (a frame's header
/// is never all zeros).
pub(crate) fn zeros_to_end(path: &Path, offset: u64) -> io::Result<bool> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut buffer = vec![0; SCAN_BUFFER_BYTES];
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => return Ok(true),
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if buffer[..read].iter().any(|&byte| byte != 0) {
            return Ok(false);
        }
    }
}

/// The bytes of a little-endian field, whose slice has the field's length.
fn le_bytes<const N: usize>(field: &[u8]) -> [u8; N] {
    field.try_into().expect("a field's slice has the field's length")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_as_their_positions_and_parse_back() {
        let names: Vec<String> = [1, 9, 10, 1_000_000, u64::MAX].iter().map(|&p| segment_name(p)).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(segment_name(1), "00000000000000000001.seg");
        for (name, position) in names.iter().zip([1, 9, 10, 1_000_000, u64::MAX]) {
            assert_eq!(parse_segment_name(name), Some(position));
        }
        assert_eq!(parse_segment_name("1.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000000x.seg"), None);
        assert_eq!(parse_segment_name("00000000000000000001.tmp"), None);
    }

    #[test]
    fn a_frame_reads_back_and_any_flipped_bit_is_caught() {
        let mut frame = Vec::new();
        encode_frame(&mut frame, 7, b"payload");
        let mut payload = Vec::new();
        let read = read_frame(&mut frame.as_slice(), frame.len() as u64, &mut payload).expect("in memory");
        assert_eq!((read, payload.as_slice()), (Frame::Record(7), b"payload".as_slice()));
        for bit in 0..frame.len() * 8 {
            let mut damaged = frame.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let read = read_frame(&mut damaged.as_slice(), damaged.len() as u64, &mut payload).expect("in memory");
            assert!(matches!(read, Frame::Bad(_)), "bit {bit} flipped went unseen: {read:?}");
        }
    }

    #[test]
    fn zeros_never_read_as_a_frame() {
        // A frame's header is never all zeros: the checksum of its zero
        // fields is not zero. The zero tail's reading as the end rests on it.
        assert_ne!(crc32c::crc32c(&[0; FRAME_HEADER_BYTES - 4]), 0);
        let zeros = [0; 4 << 10];
        let mut payload = Vec::new();
        for end in [FRAME_OVERHEAD_BYTES as usize, zeros.len()] {
            let read = read_frame(&mut &zeros[..end], end as u64, &mut payload).expect("in memory");
            assert!(matches!(read, Frame::Bad(_)), "{read:?}");
        }
    }

    #[test]
    fn a_segment_header_checks_only_against_its_own_first_position() {
        let header = segment_header(42);
        assert_eq!(check_segment_header(&header, 42), Ok(()));
        assert!(check_segment_header(&header, 43).is_err());
        let mut wrong_magic = header;
        wrong_magic[0] = b'X';
        assert!(check_segment_header(&wrong_magic, 42).is_err());
    }
}
