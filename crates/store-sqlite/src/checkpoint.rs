//! Checkpoints: copying a set's WAL back into its database.
//!
//! The set's writer runs them itself, between batches and after the last
//! batch's replies (`Store::maintain`), never inside a commit. Being the only
//! writer, its passive checkpoint finds no transaction racing it, copies the
//! whole WAL, and so the next batch starts the WAL again from its beginning.
//! A checkpointer on another thread cannot do that under steady writes: the
//! writer always appends before it finishes, the WAL only grows, and
//! rewinding it (a TRUNCATE checkpoint) locks the writer out for tens to
//! hundreds of milliseconds (measured: commits of one claim waiting 20-35 ms
//! on the busy handler, rewinds of up to 760 ms, at 7,500 opens/s).

use std::time::{Duration, Instant};

use rusqlite::Connection;
use tracing::warn;

/// How often the writer copies the WAL back. Each checkpoint costs one fsync
/// of the database file plus the pages written since the last one; at 1,000
/// opens/s per set, 100 ms of WAL is about 1 MiB, a millisecond or two.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// The WAL file is cut back to this size when it restarts, so one burst does
/// not leave a large file behind.
pub(crate) const WAL_FILE_BYTES_MAX: i64 = 16 * 1024 * 1024;

pub(crate) struct Checkpoints {
    last: Instant,
}

impl Checkpoints {
    pub(crate) fn new() -> Checkpoints {
        Checkpoints { last: Instant::now() }
    }

    /// Checkpoints if the interval has passed. A failure is logged and
    /// retried next time: the WAL still holds every committed frame.
    pub(crate) fn run_if_due(&mut self, connection: &Connection) {
        if self.last.elapsed() < CHECKPOINT_INTERVAL {
            return;
        }
        self.last = Instant::now();

        if let Err(error) = connection.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
            warn!(%error, "checkpoint failed; retrying at the next");
        }
    }
}
