//! Cold day files: one SQLite file per set and cold day
//! (`cold/set-NNN/dYYYYMMDD.db`) holding that day's packets, claims and
//! ledger entries with the hot tables' columns and names, so every read of
//! the hot tables reads a cold file as it is. A file is written whole by the
//! day keeper (`days.rs`) before its day leaves the hot tables and is never
//! changed after: it is opened read-only and immutable (no lock, no `-shm`,
//! no `-wal`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hongbao_domain::SetId;
use hongbao_engine::StoreError;
use rusqlite::Connection;

use crate::layout::cold_day_path;
use crate::{failed, open_immutable};

/// The tables of a cold file: the hot tables' columns, keys and the indexes
/// the reads use, without the hot tables' checks and triggers (the rows
/// passed them when written, and a cold file takes no writes).
pub(crate) const COLD_FILE_SCHEMA: &str = "
CREATE TABLE packets (
    seq              INTEGER PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    sender           TEXT NOT NULL,
    kind             TEXT NOT NULL,
    total_amount     INTEGER NOT NULL,
    count            INTEGER NOT NULL,
    remaining_amount INTEGER NOT NULL,
    remaining_count  INTEGER NOT NULL,
    refunded_amount  INTEGER NOT NULL,
    seed             INTEGER NOT NULL,
    greeting         TEXT,
    password_digest  BLOB,
    recipient        TEXT,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    group_id         TEXT,
    members          TEXT
);
CREATE INDEX packets_by_sender ON packets (sender, seq);
CREATE TABLE claims (
    packet_seq INTEGER NOT NULL,
    user       TEXT NOT NULL,
    idx        INTEGER NOT NULL,
    amount     INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    PRIMARY KEY (packet_seq, user)
) WITHOUT ROWID;
CREATE INDEX claims_by_user ON claims (user, at);
CREATE TABLE ledger (
    reference     TEXT PRIMARY KEY,
    user          TEXT NOT NULL,
    amount        INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    packet_id     TEXT,
    at            INTEGER NOT NULL,
    balance_after INTEGER
) WITHOUT ROWID;
CREATE INDEX ledger_by_user ON ledger (user, at);
PRAGMA user_version = 3;
";

/// The version `COLD_FILE_SCHEMA` writes (1: before group packets; 2:
/// before entries kept their balance after).
const COLD_FILE_VERSION: i64 = 3;

/// The columns a day's packets are copied with, in the hot tables' order.
pub(crate) const PACKET_ROW_COLUMNS: &str = "seq, id, sender, kind, total_amount, count, remaining_amount, \
     remaining_count, refunded_amount, seed, greeting, password_digest, recipient, created_at, expires_at, \
     group_id, members";

/// The columns a day's claims and entries are copied with.
pub(crate) const CLAIM_ROW_COLUMNS: &str = "packet_seq, user, idx, amount, at";
pub(crate) const LEDGER_ROW_COLUMNS: &str = "reference, user, amount, kind, packet_id, at, balance_after";

/// Cold files a set keeps open: a list read opens the few days it pages
/// through, and the writer the day of a settled packet opened again; more
/// would hold a file descriptor and a page cache each for days seldom read.
const COLD_FILES_OPEN_MAX: usize = 4;

/// The cold files of one set, read through a few cached read-only
/// connections (most recently used first).
pub(crate) struct ColdFiles {
    dir: PathBuf,
    set: SetId,
    open: Mutex<Vec<(u32, Connection)>>,
}

impl ColdFiles {
    pub(crate) fn new(dir: &Path, set: SetId) -> ColdFiles {
        ColdFiles { dir: dir.to_owned(), set, open: Mutex::new(Vec::new()) }
    }

    /// Runs `read` on the file of the cold day `day`. The caller knows the
    /// day is cold (from `cold_days`, in the snapshot it read the hot tables
    /// in), so its file is whole; a missing file is an error, never an
    /// empty day.
    pub(crate) fn read<T>(
        &self,
        day: u32,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let cached = {
            let mut open = self.open.lock().expect("cold files lock");
            open.iter().position(|(open_day, _)| *open_day == day).map(|index| open.remove(index).1)
        };
        let connection = match cached {
            Some(connection) => connection,
            None => open_cold_file(&cold_day_path(&self.dir, self.set, day))?,
        };
        let result = read(&connection);
        let mut open = self.open.lock().expect("cold files lock");
        open.insert(0, (day, connection));
        open.truncate(COLD_FILES_OPEN_MAX);
        result
    }
}

/// Opens a cold day's file to read: read-only and immutable, since nothing
/// writes it once it is in place.
pub(crate) fn open_cold_file(path: &Path) -> Result<Connection, StoreError> {
    if !path.exists() {
        return Err(StoreError::new(format!("the cold day file {} is missing", path.display())));
    }
    let connection =
        open_immutable(path).map_err(|e| StoreError::new(format!("cannot open {} to read: {e}", path.display())))?;
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(failed("reading a cold day file's version"))?;
    match version {
        COLD_FILE_VERSION => {}
        // Written before group packets: no day of it holds one. A view in
        // the connection's own temporary schema (the file stays untouched)
        // gives its packets the group's columns, empty.
        1 => connection
            .execute_batch("CREATE TEMP VIEW packets AS SELECT *, NULL AS group_id, NULL AS members FROM main.packets")
            .map_err(failed("reading a cold day file of version 1"))?,
        _ => {
            return Err(StoreError::new(format!("{} is a cold day file of unknown version {version}", path.display())));
        }
    }
    Ok(connection)
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::{COLD_FILE_SCHEMA, open_cold_file};
    use crate::rows::{PACKET_COLUMNS, packet_from_row};

    /// A cold file written before group packets (version 1, without the
    /// group's columns) still reads, its packets in no group.
    #[test]
    fn a_cold_file_from_before_groups_reads_its_packets_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d20270128.db");
        let file = Connection::open(&path).unwrap();
        file.execute_batch(COLD_FILE_SCHEMA).unwrap();
        file.execute_batch(
            "ALTER TABLE packets DROP COLUMN members; ALTER TABLE packets DROP COLUMN group_id; \
             PRAGMA user_version = 1; \
             INSERT INTO packets (seq, id, sender, kind, total_amount, count, remaining_amount, remaining_count, \
             refunded_amount, seed, created_at, expires_at) \
             VALUES (1, '20270128-0-1-9f3a1c2e77b04d15', 'alice', 'fixed', 200, 2, 0, 2, 200, 7, 1000, 2000)",
        )
        .unwrap();
        drop(file);
        let cold = open_cold_file(&path).unwrap();
        let packet = cold.query_row(&format!("SELECT {PACKET_COLUMNS} FROM packets"), [], packet_from_row).unwrap();
        assert_eq!((packet.info.sender.as_str(), packet.info.group), ("alice", None));
    }
}
