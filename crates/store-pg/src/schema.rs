//! The schema's migrations, versioned in `hongbao_schema` and applied at
//! start under an advisory lock, in one transaction each (PostgreSQL's DDL
//! is transactional): applying them twice, or from two nodes at once,
//! applies each once. The tables and their constraints are in
//! `migrations/`.

use hongbao_domain::SetId;
use hongbao_engine::StoreError;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::pg::{failed, in_transaction};

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_tables.sql"),
    include_str!("migrations/0002_cold_days.sql"),
    include_str!("migrations/0003_leases.sql"),
    include_str!("migrations/0004_groups.sql"),
    include_str!("migrations/0005_withdrawals.sql"),
];

/// The schema version this build reads and writes: the migrations it knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The database's schema version (0: no hongbao schema yet, a new
/// database), read without changing anything.
pub(crate) async fn version(client: &Client) -> Result<i64, StoreError> {
    let made: bool = client
        .query_one("SELECT to_regclass('hongbao_schema') IS NOT NULL", &[])
        .await
        .map_err(failed("looking for the schema's version table"))?
        .get(0);
    if !made {
        return Ok(0);
    }
    let version: i32 = client
        .query_one("SELECT COALESCE(max(version), 0) FROM hongbao_schema", &[])
        .await
        .map_err(failed("reading the schema version"))?
        .get(0);
    Ok(i64::from(version))
}

/// The first key of hongbao's advisory locks ("hb"); the second names what
/// is locked: a set (its number), or one of these.
pub(crate) const LOCK_CLASS: i32 = 0x6862;
pub(crate) const LOCK_MIGRATIONS: i32 = -1;
pub(crate) const LOCK_DAYS: i32 = -2;

/// Brings the database's schema up to date and checks that it belongs to a
/// data set of `sets` sets (recording it, if it is new). Every set of the
/// data set gets its lease row here, those of sets another database of the
/// set map holds too (never used there): the journal's fence refuses an
/// append to a set without one.
pub(crate) async fn migrate(client: &Client, sets: u16) -> Result<(), StoreError> {
    in_transaction(client, "migrating", migrate_in_transaction(client, sets)).await
}

async fn migrate_in_transaction(client: &Client, sets: u16) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_xact_lock($1, $2)", &[&LOCK_CLASS, &LOCK_MIGRATIONS])
        .await
        .map_err(failed("locking the schema"))?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS hongbao_schema (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(failed("making the schema's version table"))?;
    let version: i32 = client
        .query_one("SELECT COALESCE(max(version), 0) FROM hongbao_schema", &[])
        .await
        .map_err(failed("reading the schema version"))?
        .get(0);
    let version = usize::try_from(version).map_err(|_| StoreError::new("negative schema version"))?;
    if version > MIGRATIONS.len() {
        return Err(StoreError::new(format!(
            "the database has schema version {version}, newer than this build knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        client.batch_execute(migration).await.map_err(failed("migrating"))?;
        let applied = i32::try_from(index + 1).expect("few migrations");
        client
            .execute("INSERT INTO hongbao_schema (version) VALUES ($1)", &[&applied])
            .await
            .map_err(failed("recording a migration"))?;
    }
    let requested = i64::from(sets);
    let recorded: i64 = client
        .query_one(
            "WITH made AS (INSERT INTO hongbao_meta (key, value) VALUES ('sets', $1) ON CONFLICT (key) DO NOTHING \
             RETURNING value) SELECT value FROM made UNION ALL SELECT value FROM hongbao_meta WHERE key = 'sets'",
            &[&requested],
        )
        .await
        .map_err(failed("reading the data set's set count"))?
        .get(0);
    if recorded != requested {
        return Err(StoreError::new(format!(
            "the database holds a data set of {recorded} sets; it cannot be served with {requested}"
        )));
    }
    client
        .execute(
            "INSERT INTO hongbao_leases (set_id) SELECT generate_series(0, $1 - 1)::smallint \
             ON CONFLICT (set_id) DO NOTHING",
            &[&i32::from(sets)],
        )
        .await
        .map_err(failed("making the sets' lease rows"))?;
    Ok(())
}

/// How long a node waits for a set's lock before it decides another node
/// serves the set. A node that just stopped lets go of its locks when its
/// connections end, a moment after its engine stops: a restart in that
/// moment waits for them rather than failing.
pub(crate) const LOCK_WAIT: &str = "5s";

/// Takes `set`'s lock for this connection's life (a node that dies lets go
/// of it with its connection), and makes the set's row if it is new. Fails
/// if another connection holds it past `LOCK_WAIT`: another node serves the
/// set. (The single-node mode; a cluster's nodes hold sets by lease.)
pub(crate) async fn lock_set(client: &Client, set: SetId) -> Result<(), StoreError> {
    client
        .batch_execute(&format!("SET lock_timeout = '{LOCK_WAIT}'"))
        .await
        .map_err(failed("bounding the wait for the set's lock"))?;
    let locked = client.execute("SELECT pg_advisory_lock($1, $2)", &[&LOCK_CLASS, &i32::from(set.0)]).await;
    client.batch_execute("RESET lock_timeout").await.map_err(failed("resetting the lock timeout"))?;
    match locked {
        Ok(_) => {}
        Err(error) if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            return Err(StoreError::new(format!("set {set} is served by another node (its lock is held)")));
        }
        Err(error) => return Err(failed("locking the set")(error)),
    }
    make_set_row(client, set).await
}

/// Makes the set's row (its tables' position) if it is new.
pub(crate) async fn make_set_row(client: &Client, set: SetId) -> Result<(), StoreError> {
    client
        .execute("INSERT INTO hongbao_sets (set_id) VALUES ($1) ON CONFLICT (set_id) DO NOTHING", &[&set_number(set)])
        .await
        .map_err(failed("making the set's row"))?;
    Ok(())
}

/// A set as the tables spell it (`smallint`).
pub(crate) fn set_number(set: SetId) -> i16 {
    i16::try_from(set.0).expect("set numbers fit a smallint (SETS_MAX is 1024)")
}
