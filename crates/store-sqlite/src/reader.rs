//! The read side of a set's database: a small pool of read-only connections
//! that see committed data only (WAL readers never block the writer), and
//! the set's cold day files behind them.
//!
//! A read takes the hot rows and the cold days it may need in one snapshot,
//! so a day that goes cold meanwhile is read once, from one side: before
//! the move its rows are hot and it is not cold yet; after, its rows are in
//! its file, which was whole before the move committed. The lists read the
//! cold files a user has rows in (`cold_lists`), newest first, and stop as
//! soon as no unread day can hold an item of the page.

use std::cmp::Reverse;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hongbao_domain::withdrawal::{Withdrawal, WithdrawalId};
use hongbao_domain::{Amount, Millis, Packet, PacketId, SetId, UserId};
use hongbao_engine::{
    LedgerEntry, LedgerQuery, ReceivedBound, ReceivedItem, SentItem, StoreError, StoreReader, Totals,
};
use rusqlite::{Connection, OpenFlags, params};

use crate::bills;
use crate::cold::ColdFiles;
use crate::failed;
use crate::layout::set_path;
use crate::rows::{PACKET_COLUMNS, balance, in_snapshot, load_packet, packet_from_row, packet_id};

/// Idle read connections kept per set; more are opened under load and
/// closed when the pool is full.
const READERS_IDLE_MAX: usize = 4;

pub struct SqliteReader {
    path: PathBuf,
    set: SetId,
    idle: Mutex<Vec<Connection>>,
    cold: ColdFiles,
}

/// A cold day that holds a user's rows of one list, and the newest and
/// oldest of them (seq for sent, the claim's time for received, the
/// entry's time for the bill).
#[derive(Clone, Copy, Debug)]
struct ListDay {
    day: u32,
    newest: i64,
    oldest: i64,
}

impl SqliteReader {
    /// The reader of `set` in the data directory `dir`.
    pub fn new(dir: &Path, set: SetId) -> SqliteReader {
        SqliteReader { path: set_path(dir, set), set, idle: Mutex::new(Vec::new()), cold: ColdFiles::new(dir, set) }
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
        self.with(|connection| load_packet(connection, &self.cold, id))
    }

    fn withdrawal(&self, id: &WithdrawalId) -> Result<Option<Withdrawal>, StoreError> {
        self.with(|connection| crate::withdrawals::load(connection, id))
    }

    fn ledger(&self, user: &UserId, query: &LedgerQuery) -> Result<Vec<LedgerEntry>, StoreError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let (mut items, days) = self.with(|connection| {
            in_snapshot(connection, |connection| {
                Ok((bills::page_in(connection, user, query)?, list_days(connection, user, "ledger")?))
            })
        })?;
        let (before, _, from, to) = query.bounds();
        for day in days {
            // A day none of whose entries can be on the page is not opened.
            if day.oldest >= before || day.oldest >= to || day.newest < from {
                continue;
            }
            if items.len() >= query.limit && items[query.limit - 1].at.0 > day.newest {
                break;
            }
            items.extend(self.cold.read(day.day, |file| bills::page_in(file, user, query))?);
            items.sort_by(|a, b| (b.at, &b.reference).cmp(&(a.at, &a.reference)));
            items.truncate(query.limit);
        }
        Ok(items)
    }

    fn totals(&self, user: &UserId, from: Millis, to: Millis) -> Result<Totals, StoreError> {
        self.with(|connection| in_snapshot(connection, |connection| bills::totals(connection, user, from, to)))
    }

    fn best_lucks(&self, user: &UserId, from: Millis, to: Millis) -> Result<u64, StoreError> {
        let (hot, days) = self.with(|connection| {
            in_snapshot(connection, |connection| {
                Ok((bills::best_lucks_in(connection, user, from, to)?, list_days(connection, user, "received")?))
            })
        })?;
        let mut count = hot;
        for day in days.iter().filter(|day| day.newest >= from.0 && day.oldest < to.0) {
            count += self.cold.read(day.day, |file| bills::best_lucks_in(file, user, from, to))?;
        }
        Ok(count)
    }

    fn sent(&self, user: &UserId, before_seq: Option<u64>, limit: usize) -> Result<Vec<SentItem>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let before = before_seq.map_or(i64::MAX, |seq| seq.min(i64::MAX as u64) as i64);
        let (mut items, days) = self.with(|connection| {
            in_snapshot(connection, |connection| {
                Ok((sent_in(connection, user, before, limit)?, list_days(connection, user, "sent")?))
            })
        })?;
        for day in days {
            if day.oldest >= before {
                continue;
            }
            if items.len() >= limit && items[limit - 1].info.id.seq as i64 > day.newest {
                break;
            }
            items.extend(self.cold.read(day.day, |file| sent_in(file, user, before, limit))?);
            items.sort_by_key(|item| Reverse(item.info.id.seq));
            items.truncate(limit);
        }
        Ok(items)
    }

    fn received(
        &self,
        user: &UserId,
        before: Option<(Millis, PacketId)>,
        limit: usize,
    ) -> Result<Vec<ReceivedItem>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let cursor = ReceivedBound::of(self.set, before);
        let (mut items, days) = self.with(|connection| {
            in_snapshot(connection, |connection| {
                Ok((received_in(connection, user, cursor, limit)?, list_days(connection, user, "received")?))
            })
        })?;
        for day in days {
            // Every claim of the day is at or after its oldest: none is
            // before a cursor earlier than that.
            if !cursor.open_ended && day.oldest > cursor.at {
                continue;
            }
            if items.len() >= limit && items[limit - 1].at.0 > day.newest {
                break;
            }
            items.extend(self.cold.read(day.day, |file| received_in(file, user, cursor, limit))?);
            items.sort_by_key(|item| Reverse((item.at, item.packet_id.seq)));
            items.truncate(limit);
        }
        Ok(items)
    }
}

/// The cold days holding `user`'s rows of `list` in this set, newest first.
fn list_days(connection: &Connection, user: &UserId, list: &str) -> Result<Vec<ListDay>, StoreError> {
    let mut statement = connection
        .prepare_cached("SELECT day, newest, oldest FROM cold_lists WHERE user = ?1 AND list = ?2")
        .map_err(failed("preparing a cold days read"))?;
    let mut days = statement
        .query_map(params![user.as_str(), list], |row| {
            Ok(ListDay { day: row.get(0)?, newest: row.get(1)?, oldest: row.get(2)? })
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(failed("reading a user's cold days"))?;
    days.sort_by_key(|day| Reverse(day.newest));
    Ok(days)
}

/// Packets sent by `user` with a seq below `before`, newest first, from the
/// tables of `connection` (the hot ones or a cold day's).
fn sent_in(connection: &Connection, user: &UserId, before: i64, limit: usize) -> Result<Vec<SentItem>, StoreError> {
    let sql = format!("SELECT {PACKET_COLUMNS} FROM packets WHERE sender = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3");
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
}

/// Shares opened by `user` before `cursor`, newest first, from the tables
/// of `connection` (the hot ones or a cold day's).
fn received_in(
    connection: &Connection,
    user: &UserId,
    cursor: ReceivedBound,
    limit: usize,
) -> Result<Vec<ReceivedItem>, StoreError> {
    let mut statement = connection
        .prepare_cached(
            "SELECT p.id, p.sender, p.greeting, c.amount, c.at FROM claims c \
             JOIN packets p ON p.seq = c.packet_seq \
             WHERE c.user = ?1 AND (?5 OR c.at < ?2 OR (c.at = ?2 AND p.seq < ?3)) \
             ORDER BY c.at DESC, p.seq DESC LIMIT ?4",
        )
        .map_err(failed("preparing the received list"))?;
    let rows = statement
        .query_map(params![user.as_str(), cursor.at, cursor.seq, limit as i64, cursor.open_ended], |row| {
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
}
