//! Where a set's database, journal and cold days live in the data directory
//! (the directory itself, its metadata and its lock are
//! `hongbao_node::data_dir`'s).

use std::path::{Path, PathBuf};

use hongbao_domain::SetId;

/// The database file of one set.
pub fn set_path(dir: &Path, set: SetId) -> PathBuf {
    dir.join(format!("set-{:03}.db", set.0))
}

/// The journal directory of one set (its segment files are
/// `hongbao_journal`'s).
pub fn journal_path(dir: &Path, set: SetId) -> PathBuf {
    dir.join(format!("set-{:03}.journal", set.0))
}

/// The directory of the cold days of every set, and of the day keeper's lock.
pub fn cold_root(dir: &Path) -> PathBuf {
    dir.join("cold")
}

/// The cold days of one set: a file per day.
pub fn cold_dir(dir: &Path, set: SetId) -> PathBuf {
    cold_root(dir).join(format!("set-{:03}", set.0))
}

/// One cold day of one set: its packets, claims and ledger entries, as they
/// were in the set's tables (`cold.rs`).
pub fn cold_day_path(dir: &Path, set: SetId, day: u32) -> PathBuf {
    cold_dir(dir, set).join(format!("d{day}.db"))
}

/// Where a cold day's file is written before it is renamed into place, so
/// a crash leaves no file or a whole one.
pub fn cold_day_temporary_path(dir: &Path, set: SetId, day: u32) -> PathBuf {
    cold_dir(dir, set).join(format!("d{day}.db.new"))
}

/// Held by the day keeper for its pass: one pass at a time.
pub fn keeper_lock_path(dir: &Path) -> PathBuf {
    cold_root(dir).join("lock")
}
