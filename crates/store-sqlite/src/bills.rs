//! A user's bill (账单) and year in red packets, read from their set: the
//! ledger's hot rows and the cold days' files that hold their entries
//! (`cold_lists`, list `ledger`), newest first; and, in every set, the
//! packets where their share was the best luck.

use hongbao_domain::ledger::EntryKind;
use hongbao_domain::{Amount, Millis, UserId};
use hongbao_engine::{LedgerEntry, LedgerQuery, StoreError, StoredEntry, Totals};
use rusqlite::{Connection, params};

use crate::failed;

const SELECT: &str = "SELECT reference, user, amount, kind, packet_id, at, balance_after FROM ledger";

/// Entries of `user` on `query`'s page from the tables of `connection`
/// (the hot ones or a cold day's).
pub(crate) fn page_in(
    connection: &Connection,
    user: &UserId,
    query: &LedgerQuery,
) -> Result<Vec<LedgerEntry>, StoreError> {
    let (before_at, before_reference, from, to) = query.bounds();
    let sql = format!(
        "{SELECT} WHERE user = ?1 AND (at < ?2 OR (at = ?2 AND reference < ?3)) AND (?4 IS NULL OR kind = ?4) \
         AND at >= ?5 AND at < ?6 ORDER BY at DESC, reference DESC LIMIT ?7"
    );
    let mut statement = connection.prepare_cached(&sql).map_err(failed("preparing a bill read"))?;
    let kind = query.kind.map(EntryKind::as_str);
    let rows = statement
        .query_map(params![user.as_str(), before_at, before_reference, kind, from, to, query.limit as i64], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, Option<String>>(4)?,
                row.get::<_, i64>(5)?,
                row.get::<_, Option<i64>>(6)?,
            ))
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(failed("reading a bill"))?;
    rows.into_iter()
        .map(|(reference, user, amount, kind, packet, at, balance_after)| {
            LedgerEntry::from_stored(StoredEntry {
                reference,
                user: &user,
                amount,
                kind: &kind,
                packet_id: packet.as_deref(),
                at,
                balance_after,
            })
        })
        .collect()
}

/// `user`'s sends and credits in `[from, to)`: the hot entries, and the
/// cold days' totals (a day is inside the span or outside it: spans are
/// whole UTC days or years).
pub(crate) fn totals(connection: &Connection, user: &UserId, from: Millis, to: Millis) -> Result<Totals, StoreError> {
    let mut totals = Totals::default();
    let mut add = |kind: String, count: i64, sum: i64| {
        let (count, fen) = (count.unsigned_abs(), sum.unsigned_abs());
        match kind.as_str() {
            "send" => (totals.sent_count, totals.sent_fen) = (totals.sent_count + count, totals.sent_fen + fen),
            "credit" => {
                (totals.received_count, totals.received_fen) =
                    (totals.received_count + count, totals.received_fen + fen);
            }
            _ => {}
        }
    };
    let hot = "SELECT kind, count(*), COALESCE(sum(amount), 0) FROM ledger \
               WHERE user = ?1 AND kind IN ('send', 'credit') AND at >= ?2 AND at < ?3 GROUP BY kind";
    let cold = "SELECT kind, sum(entries), sum(amount) FROM ledger_day_totals \
                WHERE user = ?1 AND kind IN ('send', 'credit') AND day >= ?2 AND day < ?3 GROUP BY kind";
    for (sql, low, high) in
        [(hot, from.0, to.0), (cold, i64::from(from.civil_day()), i64::from(Millis(to.0 - 1).civil_day()) + 1)]
    {
        let mut statement = connection.prepare_cached(sql).map_err(failed("preparing a summary"))?;
        let rows = statement
            .query_map(params![user.as_str(), low, high], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .and_then(|rows| rows.collect::<Result<Vec<(String, i64, i64)>, _>>())
            .map_err(failed("reading a summary"))?;
        for (kind, count, sum) in rows {
            add(kind, count, sum);
        }
    }
    Ok(totals)
}

/// How many of the packets in the tables of `connection` `user` opened in
/// `[from, to)` and had the best luck of (fully opened; the largest share,
/// the earliest among equals).
pub(crate) fn best_lucks_in(
    connection: &Connection,
    user: &UserId,
    from: Millis,
    to: Millis,
) -> Result<u64, StoreError> {
    let mut statement = connection
        .prepare_cached(
            "SELECT count(*) FROM claims c JOIN packets p ON p.seq = c.packet_seq \
             WHERE c.user = ?1 AND c.at >= ?2 AND c.at < ?3 AND p.remaining_count = 0 \
             AND NOT EXISTS (SELECT 1 FROM claims o WHERE o.packet_seq = c.packet_seq \
                             AND (o.amount > c.amount OR (o.amount = c.amount AND o.idx < c.idx)))",
        )
        .map_err(failed("preparing a best-luck count"))?;
    let count: i64 = statement
        .query_row(params![user.as_str(), from.0, to.0], |row| row.get(0))
        .map_err(failed("counting best lucks"))?;
    Ok(count.unsigned_abs())
}

/// The packets `user` sent on `day` (UTC `yyyymmdd`), and their money: for
/// the daily limits (`hongbao_engine`'s `writer/limits.rs`). Today is never
/// cold.
pub(crate) fn sent_on(connection: &Connection, user: &UserId, day: u32) -> Result<(u32, Amount), StoreError> {
    let start = hongbao_domain::time::civil_day_start(day).0;
    let mut statement = connection
        .prepare_cached(
            "SELECT count(*), COALESCE(-sum(amount), 0) FROM ledger \
             WHERE user = ?1 AND kind = 'send' AND at >= ?2 AND at < ?3",
        )
        .map_err(failed("preparing a day's sends"))?;
    let (count, fen): (i64, i64) = statement
        .query_row(params![user.as_str(), start, start + hongbao_domain::time::DAY_MS], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .map_err(failed("reading a day's sends"))?;
    let count = u32::try_from(count).map_err(|_| StoreError::new("a day's sends overflow"))?;
    Ok((count, Amount::from_signed(fen).ok_or_else(|| StoreError::new("a day's sends are negative"))?))
}
