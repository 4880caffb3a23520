//! Copies of a set's files, for `hongbao backup` and for the copies
//! `hongbao migrate` keeps to undo a migration: the tables by SQLite's
//! online backup API, the journal's segment files as they are.
//!
//! The tables are copied in one backup step: one read transaction, so the
//! copy is one instant of the tables however the materializer writes
//! meanwhile (WAL readers do not block it). `VACUUM INTO` was the other
//! way: it rebuilds every table and index into the copy, where the backup
//! API copies pages, and the tables need no compaction here.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hongbao_domain::SetId;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::audit::open_stopped;
use crate::failed;
use crate::layout::journal_path;
use hongbao_engine::StoreError;

/// How long a copy waits for a lock on the database it copies.
const BUSY_WAIT: Duration = Duration::from_secs(5);

/// Whether the database may be written while it is copied (by a running
/// node's materializer), or nothing writes it (a stopped directory, whose
/// lock the caller holds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Live,
    Stopped,
}

/// Copies the database `from` into the new file `to` (one instant of it,
/// WAL included) and syncs the copy; answers its size in bytes.
pub fn copy_database(from: &Path, to: &Path, source: Source) -> Result<u64, StoreError> {
    let opened = match source {
        Source::Live => Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY),
        Source::Stopped => open_stopped(from),
    };
    let connection = opened.map_err(|e| StoreError::new(format!("cannot open {}: {e}", from.display())))?;
    connection.busy_timeout(BUSY_WAIT).map_err(failed("configuring the copy's reader"))?;
    let mut copy = Connection::open(to).map_err(|e| StoreError::new(format!("cannot make {}: {e}", to.display())))?;
    {
        let backup = Backup::new(&connection, &mut copy).map_err(failed("starting a copy of the tables"))?;
        // Every page in one step: one read transaction, one instant. A
        // step refused busy copied nothing, and is tried again.
        let deadline = Instant::now() + BUSY_WAIT;
        loop {
            match backup.step(-1).map_err(failed("copying the tables"))? {
                StepResult::Done => break,
                StepResult::Busy | StepResult::Locked if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => {
                    let why = format!("copying {}: the copy did not finish ({other:?})", from.display());
                    return Err(StoreError::new(why));
                }
            }
        }
    }
    drop(copy);
    let file = File::open(to).map_err(|e| StoreError::new(format!("{}: {e}", to.display())))?;
    file.sync_all().map_err(|e| StoreError::new(format!("syncing {}: {e}", to.display())))?;
    Ok(file.metadata().map_err(|e| StoreError::new(format!("{}: {e}", to.display())))?.len())
}

/// The segment files of `set`'s journal in the data directory `dir`, in
/// order (every one but the last sealed, and never changed again).
pub fn journal_segments(dir: &Path, set: SetId) -> Result<Vec<PathBuf>, StoreError> {
    hongbao_journal::segment_files(&journal_path(dir, set)).map_err(|e| StoreError::new(e.to_string()))
}
