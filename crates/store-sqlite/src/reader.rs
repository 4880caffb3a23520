//! The read side of a set's database: a small pool of read-only connections
//! that see committed data only (WAL readers never block the writer).

use std::path::PathBuf;
use std::sync::Mutex;

use hongbao_domain::{Amount, Millis, Packet, PacketId, SetId, UserId};
use hongbao_engine::{ReceivedItem, SentItem, StoreError, StoreReader};
use rusqlite::{Connection, OpenFlags, params};

use crate::failed;
use crate::rows::{PACKET_COLUMNS, balance, load_packet, packet_from_row, packet_id};

/// Idle read connections kept per set; more are opened under load and
/// closed when the pool is full.
const READERS_IDLE_MAX: usize = 4;

pub struct SqliteReader {
    path: PathBuf,
    set: SetId,
    idle: Mutex<Vec<Connection>>,
}

impl SqliteReader {
    pub fn new(path: PathBuf, set: SetId) -> SqliteReader {
        SqliteReader { path, set, idle: Mutex::new(Vec::new()) }
    }

    fn with<T>(&self, read: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let pooled = self.idle.lock().expect("reader pool lock").pop();
        let connection = match pooled {
            Some(connection) => connection,
            None => {
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let connection = Connection::open_with_flags(&self.path, flags)
                    .map_err(|e| StoreError::new(format!("cannot open {} to read: {e}", self.path.display())))?;
                connection.busy_timeout(std::time::Duration::from_secs(5)).map_err(failed("configuring a reader"))?;
                connection
            }
        };
        let result = read(&connection);
        let mut idle = self.idle.lock().expect("reader pool lock");
        if idle.len() < READERS_IDLE_MAX {
            idle.push(connection);
        }
        result
    }
}

impl std::fmt::Debug for SqliteReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteReader").field("set", &self.set).finish()
    }
}

impl StoreReader for SqliteReader {
    fn balance(&self, user: &UserId) -> Result<Amount, StoreError> {
        self.with(|connection| balance(connection, user))
    }

    fn packet(&self, id: &PacketId) -> Result<Option<Packet>, StoreError> {
        self.with(|connection| load_packet(connection, id))
    }

    fn sent(&self, user: &UserId, before_seq: Option<u64>, limit: usize) -> Result<Vec<SentItem>, StoreError> {
        let before = before_seq.map_or(i64::MAX, |seq| seq.min(i64::MAX as u64) as i64);
        self.with(|connection| {
            let sql = format!(
                "SELECT {PACKET_COLUMNS} FROM packets WHERE sender = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
            );
            let mut statement = connection.prepare_cached(&sql).map_err(failed("preparing the sent list"))?;
            let rows = statement
                .query_map(params![user.as_str(), before, limit as i64], packet_from_row)
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(failed("reading the sent list"))?;
            Ok(rows
                .into_iter()
                .map(|row| SentItem {
                    info: row.info,
                    remaining_amount: row.remaining_amount,
                    remaining_count: row.remaining_count,
                    refunded_amount: row.refunded_amount,
                })
                .collect())
        })
    }

    fn received(
        &self,
        user: &UserId,
        before: Option<(Millis, PacketId)>,
        limit: usize,
    ) -> Result<Vec<ReceivedItem>, StoreError> {
        // The order is (at, set, seq) descending across all sets; within this
        // set, a cursor from a lower set admits equal times, a higher one not.
        let (at, seq) = match before {
            None => (i64::MAX, i64::MAX),
            Some((at, id)) if self.set < id.set => (at.0, i64::MAX),
            Some((at, id)) if self.set > id.set => (at.0, i64::MIN),
            Some((at, id)) => (at.0, id.seq.min(i64::MAX as u64) as i64),
        };
        let open_ended = before.is_none();
        self.with(|connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT p.id, p.sender, p.greeting, c.amount, c.at FROM claims c \
                     JOIN packets p ON p.seq = c.packet_seq \
                     WHERE c.user = ?1 AND (?5 OR c.at < ?2 OR (c.at = ?2 AND p.seq < ?3)) \
                     ORDER BY c.at DESC, p.seq DESC LIMIT ?4",
                )
                .map_err(failed("preparing the received list"))?;
            let rows = statement
                .query_map(params![user.as_str(), at, seq, limit as i64, open_ended], |row| {
                    let sender: String = row.get(1)?;
                    let amount: i64 = row.get(3)?;
                    Ok((packet_id(row, 0)?, sender, row.get::<_, Option<String>>(2)?, amount, Millis(row.get(4)?)))
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(failed("reading the received list"))?;
            rows.into_iter()
                .map(|(packet_id, sender, greeting, amount, at)| {
                    let sender = UserId::parse(&sender).map_err(|_| StoreError::new("corrupt sender"))?;
                    let amount = Amount::from_signed(amount).ok_or_else(|| StoreError::new("corrupt claim amount"))?;
                    Ok(ReceivedItem { packet_id, sender, greeting, amount, at })
                })
                .collect()
        })
    }
}
