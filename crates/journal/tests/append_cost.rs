//! What one durable append costs on this machine's disk: 2,000 appends of
//! 16 KiB, each `fdatasync`ed, into the journal, and the same writes appended
//! to a plain file (the journal before its segments were zero-filled: each
//! sync also commits the file's new size). Ignored: it measures, it checks
//! nothing, and it must run on the project's disk, not a tmpfs:
//!
//! `cargo test -p hongbao-journal --test append_cost -- --ignored --nocapture`
//!
//! Measured on this project's disk (ext4 on a virtual disk, other work
//! running), four runs each: the journal appending each frame at its file's
//! end (before the zero-filled segments) a mean of 213 to 261 µs per append
//! (median 215 to 256); with them, 137 to 165 µs (median 118 to 142; 132 to
//! 162 built with `--release`), of which 32 appends grew the segment at about
//! 1.1 ms each; a plain file appended to, 165 to 307 µs; a zero-filled file
//! overwritten, 107 to 140 µs.

#![allow(clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use hongbao_engine::journal::Journal;
use hongbao_journal::{FileJournal, GROW_BYTES};

const APPENDS: u64 = 2_000;
const PAYLOAD_BYTES: usize = 16 << 10;

/// A directory on the project's disk (`target/tmp`), where the syncs are real.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort_unstable();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = times.iter().map(|&d| micros(d)).sum::<f64>() / times.len() as f64;
    let at = |q: f64| micros(times[((times.len() - 1) as f64 * q) as usize]);
    println!(
        "{what}: {APPENDS} appends of {PAYLOAD_BYTES} B, µs per append: mean {mean:.0}, p50 {:.0}, p90 {:.0}, p99 {:.0}",
        at(0.5),
        at(0.9),
        at(0.99)
    );
}

/// The journal's appends, and apart from them those that grew its segment
/// (a `GROW_BYTES` write of zeros and an `fsync` before the frame's own): the
/// first, and each whose frame ended past a multiple of `GROW_BYTES`, counting
/// the segment's header (16 bytes) and each frame's 20 (the format's). Not
/// told from the file's size: a `stat` between appends slowed each next one
/// by some 50 µs here.
fn journal_appends(dir: &Path) -> (Vec<Duration>, Vec<Duration>) {
    let mut journal = FileJournal::open(dir).unwrap();
    journal.recover(0, &mut |_, _| Ok(())).unwrap();
    let payload = vec![0x5a; PAYLOAD_BYTES];
    let end = |position: u64| 16 + position * (20 + PAYLOAD_BYTES as u64);
    let (mut times, mut growing) = (Vec::new(), Vec::new());
    for position in 1..=APPENDS {
        let start = Instant::now();
        journal.append(position, &payload).unwrap();
        let time = start.elapsed();
        times.push(time);
        if position == 1 || end(position).div_ceil(GROW_BYTES) != end(position - 1).div_ceil(GROW_BYTES) {
            growing.push(time);
        }
    }
    (times, growing)
}

fn plain_file_appends(path: &Path) -> Vec<Duration> {
    let mut file = OpenOptions::new().append(true).create_new(true).open(path).unwrap();
    let payload = vec![0x5a; PAYLOAD_BYTES + 20];
    (0..APPENDS)
        .map(|_| {
            let start = Instant::now();
            file.write_all(&payload).unwrap();
            file.sync_data().unwrap();
            start.elapsed()
        })
        .collect()
}

/// The same writes over a file zero-filled (and synced) beforehand: the
/// floor the journal's zero-filled segments aim at.
fn zero_filled_file_overwrites(path: &Path) -> Vec<Duration> {
    use std::os::unix::fs::FileExt;
    let frame_bytes = (PAYLOAD_BYTES + 20) as u64;
    let mut file = OpenOptions::new().read(true).write(true).create_new(true).open(path).unwrap();
    let zeros = vec![0; 1 << 20];
    for _ in 0..(APPENDS * frame_bytes).div_ceil(1 << 20) {
        file.write_all(&zeros).unwrap();
    }
    file.sync_all().unwrap();
    let payload = vec![0x5a; PAYLOAD_BYTES + 20];
    (0..APPENDS)
        .map(|nth| {
            let start = Instant::now();
            file.write_all_at(&payload, nth * frame_bytes).unwrap();
            file.sync_data().unwrap();
            start.elapsed()
        })
        .collect()
}

#[test]
#[ignore = "measures the disk; run with --ignored --nocapture"]
fn durable_append_cost() {
    let dir = scratch();
    report("appended to a plain file", plain_file_appends(&dir.path().join("plain")));
    let (times, growing) = journal_appends(&dir.path().join("journal"));
    report("FileJournal", times);
    let mean = growing.iter().map(Duration::as_secs_f64).sum::<f64>() / growing.len() as f64;
    println!("  of which {} grew the segment, {:.0} µs each (mean)", growing.len(), mean * 1e6);
    report("overwriting a zero-filled file", zero_filled_file_overwrites(&dir.path().join("zeros")));
    report("appended to a plain file, again", plain_file_appends(&dir.path().join("plain-again")));
}
