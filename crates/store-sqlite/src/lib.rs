//! The embedded store of hongbao: one SQLite database per set, in WAL mode
//! with `synchronous=FULL`, so a commit returns only once it is on disk.
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
pub use layout::set_path;
pub use reader::SqliteReader;
pub use writer::SqliteStore;

use std::path::Path;
use std::sync::Arc;

use hongbao_domain::SetId;
use hongbao_engine::{SetStores, StoreError};

/// Opens (creating and migrating if needed) the database of one set, with
/// its writer and its readers.
pub fn open_set(dir: &Path, set: SetId) -> Result<SetStores<SqliteStore>, StoreError> {
    let path = set_path(dir, set);
    let store = SqliteStore::open(&path, set)?;
    let reader = SqliteReader::new(path, set);
    Ok(SetStores { store, reader: Arc::new(reader) })
}

pub(crate) fn failed(context: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |error| StoreError::new(format!("{context}: {error}"))
}
