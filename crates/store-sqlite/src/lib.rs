//! The embedded store of hongbao: per set, a journal of segment files (the
//! commit point, `hongbao_journal`) and one SQLite database (the tables it
//! materializes, in WAL mode with `synchronous=FULL`).
//!
//! The schema enforces the invariants itself (unique claims and ledger
//! references, no negative balance or remaining amount, balances changed
//! only through ledger entries), so an engine bug fails a commit loudly
//! instead of moving money.

mod audit;
mod checkpoint;
mod layout;
mod reader;
mod rows;
mod schema;
mod writer;

pub use audit::snapshot;
pub use layout::{journal_path, set_path};
pub use reader::SqliteReader;
pub use writer::SqliteStore;

use std::path::Path;
use std::sync::Arc;

use hongbao_domain::SetId;
use hongbao_engine::{SetStores, StoreError};
use hongbao_journal::FileJournal;

/// Opens (creating and migrating if needed) the database and the journal of
/// one set, with the writer's and the materializer's handles and the readers.
pub fn open_set(dir: &Path, set: SetId) -> Result<SetStores<SqliteStore>, StoreError> {
    let path = set_path(dir, set);
    let writer = SqliteStore::open(&path, set)?;
    let materializer = SqliteStore::open(&path, set)?.for_materializing()?;
    let journal = FileJournal::open(&journal_path(dir, set)).map_err(|e| StoreError::new(e.to_string()))?;
    let reader = SqliteReader::new(path, set);
    Ok(SetStores { journal: Box::new(journal), writer, materializer, reader: Arc::new(reader) })
}

pub(crate) fn failed(context: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |error| StoreError::new(format!("{context}: {error}"))
}
