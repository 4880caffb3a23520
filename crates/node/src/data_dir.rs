//! The data directory: the one place that knows every file in it, and its
//! lock.
//!
//! | file | what | owner of its format |
//! | --- | --- | --- |
//! | `hongbao.meta` | `format=1`, `sets=N`: the set count, fixed at creation (changing it would move every user to another set); `store=postgres` when the sets live on PostgreSQL (absent: SQLite, here) | here |
//! | `set-NNN.journal/` | (SQLite only) one journal per set: segment files, the commit point | `hongbao_store_sqlite::journal_path`, `hongbao_journal` |
//! | `set-NNN.db` (with `-wal`, `-shm`) | (SQLite only) one SQLite database per set: the tables the journal is materialized into | `hongbao_store_sqlite::set_path` |
//! | `cold/set-NNN/dYYYYMMDD.db` | (SQLite only) one cold day of one set: its packets, claims and ledger entries, moved out of the tables by the day keeper; never changed once in place | `hongbao_store_sqlite::cold_day_path`, `cold_dir`, `cold_root` |
//! | `cold/set-NNN/dYYYYMMDD.db.new` | (SQLite only) a cold day's file being written, renamed into place once whole and synced (a crash may leave one; the next pass replaces it) | `hongbao_store_sqlite::cold_day_temporary_path` |
//! | `cold/lock` | (SQLite only) held by the day keeper for its pass | `hongbao_store_sqlite::keeper_lock_path` |
//! | `keys.json` | signing keys, removed key ids, admins | `keys.rs` |
//! | `keys.lock` | held while `keys.json` is edited | `keys.rs` |
//! | `admin.token` | the first admin's token, written once at creation | `keys.rs` |
//! | `token.secret` | before expiring tokens: removed on first start | `keys.rs` |
//! | `lock` | held by the one process that serves (or audits, backs up or migrates) the directory | here |
//! | `control.sock` | (SQLite only) the serving process's control socket, mode 0600: `hongbao backup` asks it for a copy; removed at stop, a stale one at start | `control.rs` |
//! | `set-NNN.db.pre-migration` | (SQLite only) a set's database as it was before `hongbao migrate`, kept while the sets migrate and removed once all have (left only by a migration cut short) | `migrate.rs` |

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use hongbao_domain::SetId;
use hongbao_domain::id::SETS_MAX;

pub const META_FILE: &str = "hongbao.meta";
pub const KEYS_FILE: &str = "keys.json";
pub const KEYS_LOCK_FILE: &str = "keys.lock";
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
pub const LEGACY_SECRET_FILE: &str = "token.secret";
pub const LOCK_FILE: &str = "lock";
pub const CONTROL_SOCKET_FILE: &str = "control.sock";
const FORMAT: u32 = 1;

/// Why a data directory cannot be used; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("{path} is not a hongbao data directory ({source}); `hongbao serve --data {path}` creates one")]
    NotADataDirectory { path: String, source: std::io::Error },
    #[error("{path} is unreadable or of another format")]
    UnknownFormat { path: String },
    #[error("{path} was created with {created} sets; it cannot be served with {requested}")]
    SetCountMismatch { path: String, created: u16, requested: u16 },
    #[error("sets must be 1 to {SETS_MAX}, not {0}")]
    InvalidSetCount(u16),
    #[error(
        "{path} keeps its sets on {created}; it cannot be served on {requested} (give --store as when it was made)"
    )]
    StoreMismatch { path: String, created: StoreKind, requested: StoreKind },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is in use by another hongbao process")]
    InUse { path: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io { path: path.display().to_string(), source }
}

/// Where a data directory's sets (journals and tables) live, fixed at
/// creation: a directory made for PostgreSQL holds only its keys here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreKind::Sqlite => "SQLite (in the directory)",
            StoreKind::Postgres => "PostgreSQL",
        })
    }
}

/// An opened data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDir {
    pub path: PathBuf,
    pub sets: u16,
    pub store: StoreKind,
}

impl DataDir {
    /// Opens an existing data directory, or creates it with `sets_if_new`
    /// sets on `store`. `sets_requested`, when given, and `store` must match
    /// an existing directory.
    pub fn open_or_create(
        path: &Path,
        sets_requested: Option<u16>,
        sets_if_new: u16,
        store: StoreKind,
    ) -> Result<DataDir, DataDirError> {
        if path.join(META_FILE).exists() {
            let dir = DataDir::open(path)?;
            if let Some(requested) = sets_requested.filter(|requested| *requested != dir.sets) {
                let path = path.display().to_string();
                return Err(DataDirError::SetCountMismatch { path, created: dir.sets, requested });
            }
            if dir.store != store {
                let path = path.display().to_string();
                return Err(DataDirError::StoreMismatch { path, created: dir.store, requested: store });
            }
            return Ok(dir);
        }
        let sets = sets_requested.unwrap_or(sets_if_new);
        if sets == 0 || sets > SETS_MAX {
            return Err(DataDirError::InvalidSetCount(sets));
        }
        fs::create_dir_all(path).map_err(io(path))?;
        let meta_path = path.join(META_FILE);
        let temporary = path.join(format!("{META_FILE}.new"));
        let store_line = if store == StoreKind::Postgres { "store=postgres\n" } else { "" };
        fs::write(&temporary, format!("format={FORMAT}\nsets={sets}\n{store_line}"))
            .and_then(|()| File::open(&temporary)?.sync_all())
            .and_then(|()| fs::rename(&temporary, &meta_path))
            .map_err(io(&meta_path))?;
        Ok(DataDir { path: path.to_owned(), sets, store })
    }

    /// Opens an existing data directory; fails if it is not one.
    pub fn open(path: &Path) -> Result<DataDir, DataDirError> {
        let meta_path = path.join(META_FILE);
        let text = fs::read_to_string(&meta_path)
            .map_err(|source| DataDirError::NotADataDirectory { path: path.display().to_string(), source })?;
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                .and_then(|value| value.trim().parse::<u32>().ok())
        };
        let store = match text.lines().find_map(|line| line.strip_prefix("store=")).map(str::trim) {
            None => Some(StoreKind::Sqlite),
            Some("postgres") => Some(StoreKind::Postgres),
            Some(_) => None,
        };
        match (field("format"), field("sets"), store) {
            (Some(FORMAT), Some(sets), Some(store)) if (1..=u32::from(SETS_MAX)).contains(&sets) => {
                Ok(DataDir { path: path.to_owned(), sets: sets as u16, store })
            }
            _ => Err(DataDirError::UnknownFormat { path: meta_path.display().to_string() }),
        }
    }

    /// Every set of the directory.
    pub fn set_ids(&self) -> impl Iterator<Item = SetId> {
        (0..self.sets).map(SetId)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The lock of the process that serves the directory: two servers on
    /// one directory would be two writers for every set.
    pub fn lock_to_serve(&self) -> Result<File, DataDirError> {
        try_lock(&self.path, open_lock_file(&self.file(LOCK_FILE))?)
    }

    /// The lock a reader of a stopped directory takes: the lock file opened
    /// for reading (a lock needs no write access), so a read-only copy of a
    /// data directory can be audited too.
    pub fn lock_to_read(&self) -> Result<File, DataDirError> {
        let path = self.file(LOCK_FILE);
        match File::open(&path) {
            Ok(file) => try_lock(&self.path, file),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => self.lock_to_serve(),
            Err(error) => Err(io(&path)(error)),
        }
    }
}

/// A lock file, made if missing and never truncated (it holds nothing but
/// the lock).
pub(crate) fn open_lock_file(path: &Path) -> Result<File, DataDirError> {
    File::options().create(true).truncate(false).write(true).open(path).map_err(io(path))
}

fn try_lock(dir: &Path, file: File) -> Result<File, DataDirError> {
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => Err(DataDirError::InUse { path: dir.display().to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_count_is_fixed_at_creation_and_the_lock_held_once() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("data");
        assert!(matches!(DataDir::open(&path), Err(DataDirError::NotADataDirectory { .. })));
        let sqlite = StoreKind::Sqlite;
        assert!(matches!(DataDir::open_or_create(&path, Some(0), 8, sqlite), Err(DataDirError::InvalidSetCount(0))));
        let dir = DataDir::open_or_create(&path, None, 4, sqlite).unwrap();
        assert_eq!((dir.sets, dir.set_ids().count()), (4, 4));
        assert_eq!(DataDir::open_or_create(&path, None, 8, sqlite).unwrap(), dir, "the count of an existing directory");
        let elsewhere = DataDir::open_or_create(&path, None, 8, StoreKind::Postgres).unwrap_err();
        assert!(matches!(elsewhere, DataDirError::StoreMismatch { .. }), "{elsewhere}");
        let mismatch = DataDir::open_or_create(&path, Some(8), 8, sqlite).unwrap_err();
        assert!(matches!(mismatch, DataDirError::SetCountMismatch { created: 4, requested: 8, .. }), "{mismatch}");
        let held = dir.lock_to_serve().unwrap();
        assert!(matches!(dir.lock_to_serve(), Err(DataDirError::InUse { .. })));
        assert!(matches!(dir.lock_to_read(), Err(DataDirError::InUse { .. })));
        drop(held);
        assert!(dir.lock_to_read().is_ok());
        fs::write(path.join(META_FILE), "format=2\nsets=4\n").unwrap();
        assert!(matches!(DataDir::open(&path), Err(DataDirError::UnknownFormat { .. })));
    }
}
