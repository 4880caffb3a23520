//! Checkpoints: copying a set's WAL back into its database.
//!
//! The set's materializer runs them itself, between its transactions
//! (`Store::maintain`), never inside one. Being the only writer, its passive
//! checkpoint finds no transaction racing it, copies the whole WAL, and so
//! the next transaction starts the WAL again from its beginning. A
//! checkpoint that copied the whole WAL also synced it and the database:
//! what was committed before it is durable, and the journal may be trimmed
//! up to there (the materializer commits with `synchronous=NORMAL`).
//! (The day keeper writes too, one transaction per set and cold day, synced
//! and outside the journal: a checkpoint that meets it copies less, and the
//! durable position waits for the next one.)
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

    /// Checkpoints if the interval has passed; answers whether it copied
    /// the whole WAL (so everything committed before is on disk). A failure
    /// is logged and retried next time: the WAL still holds every committed
    /// frame.
    pub(crate) fn run_if_due(&mut self, connection: &Connection) -> bool {
        if self.last.elapsed() < CHECKPOINT_INTERVAL {
            return false;
        }
        self.last = Instant::now();
        let outcome = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        });
        match outcome {
            // Not busy, and every frame of the log copied back.
            Ok((busy, log, copied)) => busy == 0 && log == copied,
            Err(error) => {
                warn!(%error, "checkpoint failed; retrying at the next");
                false
            }
        }
    }
}
