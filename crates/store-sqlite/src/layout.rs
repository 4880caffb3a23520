//! Where a set's database lives in the data directory (the directory
//! itself, its metadata and its lock are `hongbao_node::data_dir`'s).

use std::path::{Path, PathBuf};

use hongbao_domain::SetId;

/// The database file of one set.
pub fn set_path(dir: &Path, set: SetId) -> PathBuf {
    dir.join(format!("set-{:03}.db", set.0))
}
