//! hongbao on PostgreSQL: per set, a journal that is a table (one row per
//! batch, keyed by set and position: the commit point) and the tables it is
//! materialized into, partitioned by day and, within a day, by a hash of the
//! packet id (`migrations/`, `days.rs`). The same contract as the SQLite
//! store (`hongbao_engine::Store`), so the same engine runs on either.
//!
//! Connections: per set, one for its writer (journal appends, prefetches)
//! and one for its materializer, both dedicated; readers share a small pool
//! per database. Several databases can hold one data set's sets
//! (`SetMap`); all sets of one database share its tables.
//!
//! The store is synchronous, as the engine's threads are: each call runs
//! its queries on its connection's own runtime (`pg.rs`) and waits.

mod audit;
mod days;
mod journal;
mod pg;
mod reader;
mod rows;
mod schema;
pub mod set_map;
pub mod testing;
mod writer;

pub use audit::{ColdDays, snapshot};
pub use days::{COLD_MARGIN_MS, DaysKept, HASH_PARTITIONS, TableSizes, keep_days, table_sizes};
pub use journal::PgJournal;
pub use reader::PgReader;
pub use set_map::SetMap;
pub use writer::PgStore;

use std::collections::HashMap;
use std::sync::Arc;

use hongbao_domain::SetId;
use hongbao_engine::{SetStores, StoreError};

/// Opens every set of a data set of `sets` sets on the databases `map`
/// names: migrates each database (once, whoever comes first), checks that
/// it belongs to a data set of this many sets, and takes each set's lock so
/// no other node serves it.
pub fn open_sets(map: &SetMap, sets: u16) -> Result<Vec<SetStores<PgStore>>, StoreError> {
    let mut readers: HashMap<&str, Arc<reader::Pool>> = HashMap::new();
    let mut opened = Vec::with_capacity(usize::from(sets));
    for set in (0..sets).map(SetId) {
        let url = map.url(set);
        let pool = match readers.get(url) {
            Some(pool) => pool.clone(),
            None => {
                let client = pg::connect(url, "hongbao-migrations")?;
                client.block_on(schema::migrate(&client, sets))?;
                let pool = Arc::new(reader::Pool::new(url.to_owned()));
                readers.insert(url, pool.clone());
                pool
            }
        };
        let connection = Arc::new(pg::WriterConnection::open(url, set)?);
        let writer = PgStore::open_writer(connection.clone(), set)?;
        let materializer = PgStore::open_materializer(url, set)?;
        let journal = PgJournal::new(connection, set);
        opened.push(SetStores {
            journal: Box::new(journal),
            writer,
            materializer,
            reader: Arc::new(PgReader::new(pool, set)),
        });
    }
    Ok(opened)
}
