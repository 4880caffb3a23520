//! Reads a set whole, as raw rows, for `hongbao audit`: its tables, with its
//! journal replayed past them. After a crash (SIGKILL) the tables lag the
//! journal; the audit copies the database into memory, materializes the
//! journal's records past the tables' position into the copy (the same
//! writes and constraints as the materializer), and reads the copy. Nothing
//! in the directory is written: a torn journal tail is left for the next
//! start to cut, and a read-only directory can be audited.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hongbao_domain::SetId;
use hongbao_domain::audit::{AccountRow, ClaimRow, LedgerRow, OutboxRow, PacketRow, SetSnapshot};
use hongbao_engine::journal::replay;
use hongbao_engine::{BATCHES_PER_TRANSACTION_MAX, JournalError, Store, StoreError};
use hongbao_journal::FileJournal;
use rusqlite::backup::Backup;
use rusqlite::{Connection, OpenFlags, Row};

use crate::failed;
use crate::layout::{journal_path, set_path};
use crate::writer::{SqliteStore, journal_position};

fn rows<T>(
    connection: &Connection,
    sql: &str,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    connection
        .prepare(sql)
        .and_then(|mut statement| statement.query_map([], map)?.collect())
        .map_err(failed("reading for the audit"))
}

/// Opens a set's database in a stopped data directory to read it. Without a
/// WAL beside it (a clean stop removes it) the file alone is the whole
/// database and nothing writes it while the directory is locked, so it opens
/// immutable: no `-shm` or `-wal` is made, and a read-only directory (a
/// backup, a full or failed disk remounted read-only) can be read. With a
/// WAL (after a crash), SQLite reads the WAL too, as it must.
fn open_stopped(path: &Path) -> rusqlite::Result<Connection> {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    if wal.exists() {
        return Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY);
    }
    let escaped = path.display().to_string().replace('%', "%25").replace('?', "%3f").replace('#', "%23");
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
    Connection::open_with_flags(format!("file:{escaped}?immutable=1"), flags)
}

/// Everything one set holds, read from a stopped data directory: its
/// tables, with its journal's records past them applied.
pub fn snapshot(dir: &Path, set: SetId) -> Result<SetSnapshot, StoreError> {
    let path = set_path(dir, set);
    if !path.exists() {
        return Err(StoreError::new(format!("{} is missing", path.display())));
    }
    let connection =
        open_stopped(&path).map_err(|e| StoreError::new(format!("cannot open {}: {e}", path.display())))?;
    match replayed_copy(dir, set, &connection)? {
        Some(store) => read_rows(store.connection(), set),
        None => read_rows(&connection, set),
    }
}

/// A copy of the tables in memory with the journal's records past them
/// applied; `None` when the tables hold the whole journal.
fn replayed_copy(dir: &Path, set: SetId, connection: &Connection) -> Result<Option<SqliteStore>, StoreError> {
    let position = journal_position(connection)?;
    let mut journal =
        FileJournal::open_read_only(&journal_path(dir, set)).map_err(|e| StoreError::new(e.to_string()))?;
    let mut copy: Option<SqliteStore> = None;
    replay(&mut journal, position, BATCHES_PER_TRANSACTION_MAX, &mut |batches| {
        let store = match &mut copy {
            Some(store) => store,
            None => copy.insert(in_memory_copy(connection, set).map_err(|e| JournalError::Io(e.message))?),
        };
        let why = |e: StoreError| format!("the journal does not apply over the tables: {}", e.message);
        store.materialize(batches).map_err(|e| JournalError::Invalid { position: batches[0].position, why: why(e) })
    })
    .map_err(|e| StoreError::new(format!("set {set}: replaying the journal: {e}")))?;
    Ok(copy)
}

/// The set's database copied into memory, to replay the journal into.
fn in_memory_copy(connection: &Connection, set: SetId) -> Result<SqliteStore, StoreError> {
    let mut copy = Connection::open_in_memory().map_err(failed("opening a copy in memory"))?;
    Backup::new(connection, &mut copy)
        .and_then(|backup| backup.run_to_completion(1024, Duration::ZERO, None))
        .map_err(failed("copying the database into memory"))?;
    Ok(SqliteStore::over(copy, set))
}

fn read_rows(connection: &Connection, set: SetId) -> Result<SetSnapshot, StoreError> {
    Ok(SetSnapshot {
        set: set.0,
        accounts: rows(connection, "SELECT user, balance FROM accounts", |row| {
            Ok(AccountRow { user: row.get(0)?, balance: row.get(1)? })
        })?,
        ledger: rows(connection, "SELECT reference, user, amount, kind FROM ledger", |row| {
            Ok(LedgerRow { reference: row.get(0)?, user: row.get(1)?, amount: row.get(2)?, kind: row.get(3)? })
        })?,
        packets: rows(
            connection,
            "SELECT id, sender, kind, total_amount, count, remaining_amount, remaining_count, refunded_amount, \
             seed, recipient, expires_at FROM packets",
            |row| {
                Ok(PacketRow {
                    id: row.get(0)?,
                    sender: row.get(1)?,
                    kind: row.get(2)?,
                    total_amount: row.get(3)?,
                    count: row.get(4)?,
                    remaining_amount: row.get(5)?,
                    remaining_count: row.get(6)?,
                    refunded_amount: row.get(7)?,
                    seed: row.get::<_, i64>(8)? as u64,
                    recipient: row.get(9)?,
                    expires_at: row.get(10)?,
                })
            },
        )?,
        claims: rows(
            connection,
            "SELECT COALESCE(p.id, 'missing packet seq ' || c.packet_seq), c.user, c.idx, c.amount \
             FROM claims c LEFT JOIN packets p ON p.seq = c.packet_seq",
            |row| Ok(ClaimRow { packet_id: row.get(0)?, user: row.get(1)?, index: row.get(2)?, amount: row.get(3)? }),
        )?,
        outbox: rows(connection, "SELECT reference, user, amount FROM outbox", |row| {
            Ok(OutboxRow { reference: row.get(0)?, user: row.get(1)?, amount: row.get(2)? })
        })?,
        ..SetSnapshot::default()
    })
}
