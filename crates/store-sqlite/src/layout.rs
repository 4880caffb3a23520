//! The data directory: one database per set, and a small metadata file that
//! fixes the number of sets when the directory is created (changing it later
//! would move every user to another set).

use std::fs;
use std::path::{Path, PathBuf};

use hongbao_domain::SetId;
use hongbao_domain::id::SETS_MAX;
use hongbao_engine::StoreError;

const META_FILE: &str = "hongbao.meta";
const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDir {
    pub path: PathBuf,
    pub sets: u16,
}

impl DataDir {
    /// Opens an existing data directory, or creates it with `sets_if_new`
    /// sets. `sets_requested`, when given, must match an existing directory.
    pub fn open_or_create(path: &Path, sets_requested: Option<u16>, sets_if_new: u16) -> Result<DataDir, StoreError> {
        let meta_path = path.join(META_FILE);
        if meta_path.exists() {
            let dir = DataDir::open(path)?;
            if let Some(requested) = sets_requested.filter(|requested| *requested != dir.sets) {
                return Err(StoreError::new(format!(
                    "{} was created with {} sets; it cannot be served with {requested}",
                    path.display(),
                    dir.sets
                )));
            }
            return Ok(dir);
        }
        let sets = sets_requested.unwrap_or(sets_if_new);
        if sets == 0 || sets > SETS_MAX {
            return Err(StoreError::new(format!("sets must be 1 to {SETS_MAX}, not {sets}")));
        }
        fs::create_dir_all(path).map_err(|e| StoreError::new(format!("cannot create {}: {e}", path.display())))?;
        let text = format!("format={FORMAT}\nsets={sets}\n");
        let temporary = path.join(format!("{META_FILE}.new"));
        fs::write(&temporary, text)
            .and_then(|()| fs::File::open(&temporary)?.sync_all())
            .and_then(|()| fs::rename(&temporary, &meta_path))
            .map_err(|e| StoreError::new(format!("cannot write {}: {e}", meta_path.display())))?;
        Ok(DataDir { path: path.to_owned(), sets })
    }

    /// Opens an existing data directory; fails if it is not one.
    pub fn open(path: &Path) -> Result<DataDir, StoreError> {
        let meta_path = path.join(META_FILE);
        let text = fs::read_to_string(&meta_path)
            .map_err(|e| StoreError::new(format!("{} is not a hongbao data directory: {e}", path.display())))?;
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                .and_then(|value| value.trim().parse::<u32>().ok())
        };
        match (field("format"), field("sets")) {
            (Some(FORMAT), Some(sets)) if (1..=u32::from(SETS_MAX)).contains(&sets) => {
                Ok(DataDir { path: path.to_owned(), sets: sets as u16 })
            }
            _ => Err(StoreError::new(format!("{} is unreadable or of another format", meta_path.display()))),
        }
    }
}

/// The database file of one set.
pub fn set_path(dir: &Path, set: SetId) -> PathBuf {
    dir.join(format!("set-{:03}.db", set.0))
}
