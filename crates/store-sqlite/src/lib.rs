//! The embedded store of hongbao: per set, a journal of segment files (the
//! commit point, `hongbao_journal`) and one SQLite database (the tables it
//! materializes, in WAL mode with `synchronous=FULL`), and a file per cold
//! day (`days.rs`, `cold.rs`).
//!
//! The schema enforces the invariants itself (unique claims and ledger
//! references, no negative balance or remaining amount, balances changed
//! only through ledger entries), so an engine bug fails a commit loudly
//! instead of moving money.

mod audit;
mod bills;
mod checkpoint;
mod cold;
mod copy;
mod days;
mod layout;
mod reader;
mod rows;
mod schema;
mod withdrawals;
mod writer;

pub use audit::snapshot;
pub use copy::{Source, copy_database, journal_segments};
pub use days::keep_days;
pub use hongbao_engine::ColdDays;
pub use layout::{
    cold_day_path, cold_day_temporary_path, cold_dir, cold_root, journal_path, keeper_lock_path, set_path,
};
pub use reader::SqliteReader;
pub use schema::{SCHEMA_VERSION, migrate_set, schema_version};
pub use writer::SqliteStore;

use std::path::Path;
use std::sync::Arc;

use hongbao_domain::SetId;
use hongbao_engine::{SetStores, StoreError};
use hongbao_journal::FileJournal;
use rusqlite::{Connection, OpenFlags};

/// Opens (creating if new) the database and the journal of one set, whose
/// schema must be this build's (`hongbao migrate` brings an older one up),
/// with the writer's and the materializer's handles and the readers.
pub fn open_set(dir: &Path, set: SetId) -> Result<SetStores<SqliteStore>, StoreError> {
    let writer = SqliteStore::open(dir, set)?;
    let materializer = SqliteStore::open(dir, set)?.for_materializing()?;
    let journal = FileJournal::open(&journal_path(dir, set)).map_err(|e| StoreError::new(e.to_string()))?;
    let reader = SqliteReader::new(dir, set);
    Ok(SetStores { journal: Box::new(journal), writer, materializer, reader: Arc::new(reader) })
}

pub(crate) fn failed(context: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |error| StoreError::new(format!("{context}: {error}"))
}

/// Opens a database file that nothing writes while it is open, read-only and
/// immutable: SQLite takes no lock and makes no `-shm` or `-wal` beside it,
/// so a read-only directory can be read too.
pub(crate) fn open_immutable(path: &Path) -> rusqlite::Result<Connection> {
    let escaped = path.display().to_string().replace('%', "%25").replace('?', "%3f").replace('#', "%23");
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags(format!("file:{escaped}?immutable=1"), flags)
}
