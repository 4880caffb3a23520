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
//!
//! A set has one writer at a time. A single node holds each set by an
//! advisory lock (`open_sets`); the nodes of a cluster hold sets by lease
//! (`lease.rs`, `open_leased_set`) and read the others' (`readers`). In
//! both modes the journal's appends are fenced by the set's epoch, so a
//! writer that lost its set cannot append behind its new one.

mod audit;
mod days;
mod journal;
pub mod lease;
mod pg;
mod reader;
mod rows;
mod schema;
pub mod set_map;
pub mod testing;
mod withdrawals;
mod writer;

pub use audit::{ColdDays, snapshot};
pub use days::{COLD_MARGIN_MS, DaysKept, HASH_PARTITIONS, TableSizes, keep_days, table_sizes};
pub use journal::PgJournal;
pub use lease::{ClusterStatus, Epoch, LeaseRow, Leases, NodeRow};
pub use reader::PgReader;
pub use schema::SCHEMA_VERSION;
pub use set_map::SetMap;
pub use writer::PgStore;

use std::sync::Arc;

use hongbao_domain::SetId;
use hongbao_engine::{SetStores, StoreError, StoreReader};

use crate::pg::Hold;

/// Opens every set of a data set of `sets` sets on the databases `map`
/// names, for a single node: migrates each database (once, whoever comes
/// first), checks that it belongs to a data set of this many sets, and
/// takes each set's lock so no other node serves it (raising each set's
/// epoch, which fences any writer before it).
pub fn open_sets(map: &SetMap, sets: u16) -> Result<Vec<SetStores<PgStore>>, StoreError> {
    let mut migrated: Vec<&str> = Vec::new();
    let mut opened = Vec::with_capacity(usize::from(sets));
    for set in (0..sets).map(SetId) {
        let url = map.url(set);
        if !migrated.contains(&url) {
            migrate(url, sets)?;
            migrated.push(url);
        }
        opened.push(open_set(url, set, Hold::Lock)?);
    }
    Ok(opened)
}

/// Opens one set of a data set of `sets` sets for a node of a cluster that
/// has just acquired its lease at `epoch` (`Leases::acquire`): its journal
/// appends at that epoch, and is fenced once the lease moves on. No lock is
/// taken. The set's database is migrated first, as `open_sets` does (it is
/// idempotent, and a set is opened only when it is taken over), so the
/// set count is checked here too.
pub fn open_leased_set(map: &SetMap, sets: u16, set: SetId, epoch: Epoch) -> Result<SetStores<PgStore>, StoreError> {
    if set.0 >= sets {
        return Err(StoreError::new(format!("set {set} is not in a data set of {sets} sets")));
    }
    let url = map.url(set);
    migrate(url, sets)?;
    open_set(url, set, Hold::Lease { epoch })
}

/// A reader for every set of a data set of `sets` sets, held here or not,
/// for a node of a cluster that reads the sets other nodes hold (waiting on
/// `StoreReader::shared_positions`). The readers of one database share its
/// pool (with the sets opened here too); connections open on the first
/// read, so nothing fails here today.
pub fn readers(map: &SetMap, sets: u16) -> Result<Vec<Arc<dyn StoreReader>>, StoreError> {
    Ok((0..sets)
        .map(SetId)
        .map(|set| Arc::new(PgReader::new(reader::Pool::shared(map.url(set)), set)) as Arc<dyn StoreReader>)
        .collect())
}

/// Each database of a data set of `sets` sets on `map` (its connection
/// string without the password), with its schema version (0: a new
/// database), read without changing anything: what
/// `hongbao serve` checks before it serves (an older schema is migrated
/// only when told to) and `hongbao migrate` before it migrates.
pub fn schema_versions(map: &SetMap, sets: u16) -> Result<Vec<(String, i64)>, StoreError> {
    map.databases(sets)
        .into_iter()
        .map(|url| {
            let client = pg::connect(url, "hongbao-migrations")?;
            let version = client.block_on(schema::version(&client))?;
            Ok((pg::redacted(url), version))
        })
        .collect()
}

/// Brings every database of a data set of `sets` sets on `map` to this
/// build's schema: each in one transaction (all of its pending migrations
/// or none), one database after another.
pub fn migrate_databases(map: &SetMap, sets: u16) -> Result<(), StoreError> {
    map.databases(sets).into_iter().try_for_each(|url| migrate(url, sets))
}

/// Brings the database's schema up to date for a data set of `sets` sets.
fn migrate(url: &str, sets: u16) -> Result<(), StoreError> {
    let client = pg::connect(url, "hongbao-migrations")?;
    client.block_on(schema::migrate(&client, sets))
}

/// One set's stores on `url`: its writer's connection holding the set
/// (`hold`), shared by the journal and the prefetches; the materializer's;
/// a reader on the database's pool.
fn open_set(url: &str, set: SetId, hold: Hold) -> Result<SetStores<PgStore>, StoreError> {
    let connection = Arc::new(pg::WriterConnection::open(url, set, hold)?);
    let writer = PgStore::open_writer(connection.clone(), set)?;
    let materializer = PgStore::open_materializer(url, set)?;
    let journal = PgJournal::new(connection, set);
    Ok(SetStores {
        journal: Box::new(journal),
        writer,
        materializer,
        reader: Arc::new(PgReader::new(reader::Pool::shared(url), set)),
    })
}
