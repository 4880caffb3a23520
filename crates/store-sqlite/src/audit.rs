//! Reads a set's database whole, as raw rows, for `hongbao audit`.

use std::path::{Path, PathBuf};

use hongbao_domain::SetId;
use hongbao_domain::audit::{AccountRow, ClaimRow, LedgerRow, OutboxRow, PacketRow, SetSnapshot};
use hongbao_engine::StoreError;
use rusqlite::{Connection, OpenFlags, Row};

use crate::failed;
use crate::layout::set_path;

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

/// Everything one set holds, read from a stopped data directory.
pub fn snapshot(dir: &Path, set: SetId) -> Result<SetSnapshot, StoreError> {
    let path = set_path(dir, set);
    if !path.exists() {
        return Err(StoreError::new(format!("{} is missing", path.display())));
    }
    let connection =
        open_stopped(&path).map_err(|e| StoreError::new(format!("cannot open {}: {e}", path.display())))?;
    Ok(SetSnapshot {
        set: set.0,
        accounts: rows(&connection, "SELECT user, balance FROM accounts", |row| {
            Ok(AccountRow { user: row.get(0)?, balance: row.get(1)? })
        })?,
        ledger: rows(&connection, "SELECT reference, user, amount, kind FROM ledger", |row| {
            Ok(LedgerRow { reference: row.get(0)?, user: row.get(1)?, amount: row.get(2)?, kind: row.get(3)? })
        })?,
        packets: rows(
            &connection,
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
            &connection,
            "SELECT COALESCE(p.id, 'missing packet seq ' || c.packet_seq), c.user, c.idx, c.amount \
             FROM claims c LEFT JOIN packets p ON p.seq = c.packet_seq",
            |row| Ok(ClaimRow { packet_id: row.get(0)?, user: row.get(1)?, index: row.get(2)?, amount: row.get(3)? }),
        )?,
        outbox: rows(&connection, "SELECT reference, user, amount FROM outbox", |row| {
            Ok(OutboxRow { reference: row.get(0)?, user: row.get(1)?, amount: row.get(2)? })
        })?,
    })
}
