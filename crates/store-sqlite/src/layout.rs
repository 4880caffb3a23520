//! Where a set's database and journal live in the data directory (the directory
//! itself, its metadata and its lock are `hongbao_node::data_dir`'s).

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
