//! The read side: the materialized tables, hot and cold days alike (the
//! views `packets_all`, `claims_all`), through a small pool of
//! connections per database shared by its sets. Reads run on the engine's
//! blocking pool (`Engine::read`), after the tables hold what was
//! acknowledged before them.
//!
//! A node of a cluster reads sets it does not hold too (`crate::readers`):
//! it waits for their tables to hold what their holder acknowledged,
//! reading both positions from the shared database (`shared_positions`).

use std::sync::{Arc, Mutex, Weak};

use hongbao_domain::ledger::EntryKind;
use hongbao_domain::withdrawal::{Withdrawal, WithdrawalId};
use hongbao_domain::{Amount, Millis, Packet, PacketId, SetId, UserId};
use hongbao_engine::stored::assemble;
use hongbao_engine::{
    LedgerEntry, LedgerQuery, Position, ReceivedBound, ReceivedItem, SentItem, SharedPositions, StoreError,
    StoreReader, StoredEntry, Totals,
};
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use crate::pg::{Connection, connect_serving, failed};
use crate::rows::{CLAIM_COLUMNS, PACKET_COLUMNS, amount, claim_from_row, packet_from_row, packet_id};
use crate::schema::set_number;

/// Idle connections kept per database; more are opened under load and
/// closed when the pool is full.
const READERS_IDLE_MAX: usize = 4;

/// Tries of a read that PostgreSQL ended to break a deadlock.
const READ_ATTEMPTS: usize = 3;

/// How `failed` spells a deadlock's refusal (PostgreSQL's own message).
const DEADLOCK: &str = "deadlock detected";

/// The read connections of one database.
pub(crate) struct Pool {
    url: String,
    idle: Mutex<Vec<Connection>>,
}

/// The pools of this process, one per database, shared by the readers of
/// its sets however they were opened (`open_sets`, `open_leased_set` as
/// sets are taken over, `readers`), so a node's idle read connections are
/// bounded per database, not per set. Weak: a pool goes with its last
/// reader.
static POOLS: Mutex<Vec<(String, Weak<Pool>)>> = Mutex::new(Vec::new());

impl Pool {
    /// The pool of the database `url`, made if no reader uses one.
    pub(crate) fn shared(url: &str) -> Arc<Pool> {
        let mut pools = POOLS.lock().expect("reader pools lock");
        pools.retain(|(_, pool)| pool.strong_count() > 0);
        if let Some(pool) = pools.iter().find(|(at, _)| at == url).and_then(|(_, pool)| pool.upgrade()) {
            return pool;
        }
        let pool = Arc::new(Pool { url: url.to_owned(), idle: Mutex::new(Vec::new()) });
        pools.push((url.to_owned(), Arc::downgrade(&pool)));
        pool
    }

    /// Runs `read` on a pooled connection. A read PostgreSQL chose to end
    /// to break a deadlock (with a day moving cold, whose locks it met
    /// half-way: reads name packets before claims, as the move locks them,
    /// so this should not happen), or one whose connection was lost, is run
    /// again: reads change nothing.
    fn with<T>(&self, read: impl AsyncFn(&Client) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let pooled = self.idle.lock().expect("reader pool lock").pop().filter(|client| !client.is_closed());
        let mut client = match pooled {
            Some(client) => client,
            None => connect_serving(&self.url, "hongbao-reader")?,
        };
        let mut result = client.block_on(read(&client));
        for _ in 1..READ_ATTEMPTS {
            match &result {
                Err(error) if error.message.contains(DEADLOCK) => result = client.block_on(read(&client)),
                // A pooled connection the server ended (a restart) is only
                // known lost once used: the read goes again on a new one.
                Err(error) if !error.refused && client.block_on(client.batch_execute("SELECT 1")).is_err() => {
                    client = connect_serving(&self.url, "hongbao-reader")?;
                    result = client.block_on(read(&client));
                }
                _ => break,
            }
        }
        let mut idle = self.idle.lock().expect("reader pool lock");
        if idle.len() < READERS_IDLE_MAX && !client.is_closed() {
            idle.push(client);
        }
        result
    }
}

pub struct PgReader {
    pool: Arc<Pool>,
    set: SetId,
}

impl PgReader {
    pub(crate) fn new(pool: Arc<Pool>, set: SetId) -> PgReader {
        PgReader { pool, set }
    }
}

impl std::fmt::Debug for PgReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgReader").field("set", &self.set).finish()
    }
}

/// One packet with all its claims, if it exists.
pub(crate) async fn load_packet(client: &Client, id: &PacketId) -> Result<Option<Packet>, StoreError> {
    let (day, text) = (i32::try_from(id.day).unwrap_or(i32::MAX), id.to_string());
    let packet_sql = format!("SELECT {PACKET_COLUMNS} FROM packets_all WHERE day = $1 AND id = $2");
    let claims_sql = format!("SELECT {CLAIM_COLUMNS} FROM claims_all c WHERE c.day = $1 AND c.packet_id = $2");
    let params: [&(dyn ToSql + Sync); 2] = [&day, &text];
    let (rows, claims) = tokio::try_join!(client.query(&packet_sql, &params), client.query(&claims_sql, &params))
        .map_err(failed("reading a packet"))?;
    let rows = rows.iter().map(packet_from_row).collect::<Result<Vec<_>, _>>()?;
    let claims = claims.iter().map(claim_from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(assemble(rows, claims)?.pop())
}

impl StoreReader for PgReader {
    fn balance(&self, user: &UserId) -> Result<Amount, StoreError> {
        self.pool.with(async |client| {
            let row = client
                .query_opt("SELECT balance FROM accounts WHERE user_id = $1", &[&user.as_str()])
                .await
                .map_err(failed("reading a balance"))?;
            match row {
                None => Ok(Amount::ZERO),
                Some(row) => amount(&row, 0),
            }
        })
    }

    fn packet(&self, id: &PacketId) -> Result<Option<Packet>, StoreError> {
        self.pool.with(async |client| load_packet(client, id).await)
    }

    fn withdrawal(&self, id: &WithdrawalId) -> Result<Option<Withdrawal>, StoreError> {
        self.pool.with(async |client| {
            let rows = client
                .query(
                    &format!("SELECT {} FROM withdrawals WHERE id = $1", crate::withdrawals::COLUMNS),
                    &[&id.to_string()],
                )
                .await
                .map_err(crate::pg::failed("reading a withdrawal"))?;
            rows.first().map(crate::withdrawals::from_row).transpose()
        })
    }

    fn sent(&self, user: &UserId, before_seq: Option<u64>, limit: usize) -> Result<Vec<SentItem>, StoreError> {
        let before = before_seq.map_or(i64::MAX, |seq| seq.min(i64::MAX as u64) as i64);
        let (set, limit) = (set_number(self.set), limit as i64);
        self.pool.with(async |client| {
            let rows = client
                .query(
                    &format!(
                        "SELECT {PACKET_COLUMNS} FROM packets_all WHERE sender = $1 AND set_id = $2 AND seq < $3 \
                         ORDER BY seq DESC LIMIT $4"
                    ),
                    &[&user.as_str(), &set, &before, &limit],
                )
                .await
                .map_err(failed("reading the sent list"))?;
            rows.iter()
                .map(|row| {
                    let row = packet_from_row(row)?;
                    Ok(SentItem {
                        info: row.info,
                        remaining_amount: row.remaining_amount,
                        remaining_count: row.remaining_count,
                        refunded_amount: row.refunded_amount,
                    })
                })
                .collect()
        })
    }

    fn received(
        &self,
        user: &UserId,
        before: Option<(Millis, PacketId)>,
        limit: usize,
    ) -> Result<Vec<ReceivedItem>, StoreError> {
        let ReceivedBound { at, seq, open_ended } = ReceivedBound::of(self.set, before);
        let (set, limit) = (set_number(self.set), limit as i64);
        self.pool.with(async |client| {
            let rows = client
                .query(
                    "SELECT p.id, p.sender, p.greeting, c.amount, c.at FROM packets_all p \
                     JOIN claims_all c ON p.day = c.day AND p.id = c.packet_id \
                     WHERE c.user_id = $1 AND p.set_id = $5 AND ($6 OR c.at < $2 OR (c.at = $2 AND p.seq < $3)) \
                     ORDER BY c.at DESC, p.seq DESC LIMIT $4",
                    &[&user.as_str(), &at, &seq, &limit, &set, &open_ended],
                )
                .await
                .map_err(failed("reading the received list"))?;
            rows.iter()
                .map(|row| {
                    Ok(ReceivedItem {
                        packet_id: packet_id(row, 0)?,
                        sender: crate::rows::user(row, 1)?,
                        greeting: row.get(2),
                        amount: amount(row, 3)?,
                        at: Millis(row.get(4)),
                    })
                })
                .collect()
        })
    }

    fn ledger(&self, user: &UserId, query: &LedgerQuery) -> Result<Vec<LedgerEntry>, StoreError> {
        let (before_at, before_reference, from, to) = query.bounds();
        let kind = query.kind.map(EntryKind::as_str);
        let limit = query.limit as i64;
        self.pool.with(async |client| {
            let rows = client
                .query(
                    "SELECT reference, user_id, amount, kind, packet_id, at, balance_after FROM ledger_all \
                     WHERE user_id = $1 AND (at < $2 OR (at = $2 AND reference < $3)) \
                     AND ($4::text IS NULL OR kind = $4) AND at >= $5 AND at < $6 \
                     ORDER BY at DESC, reference DESC LIMIT $7",
                    &[&user.as_str(), &before_at, &before_reference, &kind, &from, &to, &limit],
                )
                .await
                .map_err(failed("reading a bill"))?;
            rows.iter()
                .map(|row| {
                    LedgerEntry::from_stored(StoredEntry {
                        reference: row.get(0),
                        user: row.get(1),
                        amount: row.get(2),
                        kind: row.get(3),
                        packet_id: row.get(4),
                        at: row.get(5),
                        balance_after: row.get(6),
                    })
                })
                .collect()
        })
    }

    fn totals(&self, user: &UserId, from: Millis, to: Millis) -> Result<Totals, StoreError> {
        self.pool.with(async |client| {
            let rows = client
                .query(
                    "SELECT kind, count(*), COALESCE(sum(amount), 0)::bigint FROM ledger_all \
                     WHERE user_id = $1 AND kind IN ('send', 'credit') AND at >= $2 AND at < $3 GROUP BY kind",
                    &[&user.as_str(), &from.0, &to.0],
                )
                .await
                .map_err(failed("reading a summary"))?;
            let mut totals = Totals::default();
            for row in rows {
                let (kind, count, sum): (&str, i64, i64) = (row.get(0), row.get(1), row.get(2));
                match kind {
                    "send" => (totals.sent_count, totals.sent_fen) = (count.unsigned_abs(), sum.unsigned_abs()),
                    _ => (totals.received_count, totals.received_fen) = (count.unsigned_abs(), sum.unsigned_abs()),
                }
            }
            Ok(totals)
        })
    }

    fn best_lucks(&self, user: &UserId, from: Millis, to: Millis) -> Result<u64, StoreError> {
        let set = set_number(self.set);
        self.pool.with(async |client| {
            let row = client
                .query_one(
                    "SELECT count(*) FROM claims_all c JOIN packets_all p ON p.day = c.day AND p.id = c.packet_id \
                     WHERE c.user_id = $1 AND p.set_id = $4 AND c.at >= $2 AND c.at < $3 AND p.remaining_count = 0 \
                     AND NOT EXISTS (SELECT 1 FROM claims_all o WHERE o.day = c.day AND o.packet_id = c.packet_id \
                                     AND (o.amount > c.amount OR (o.amount = c.amount AND o.idx < c.idx)))",
                    &[&user.as_str(), &from.0, &to.0, &set],
                )
                .await
                .map_err(failed("counting best lucks"))?;
            Ok(row.get::<_, i64>(0).unsigned_abs())
        })
    }

    /// Both positions in one statement, so from one snapshot: the journal's
    /// last record (or, with the journal trimmed empty, the tables'
    /// position, which a trim never passes) and the tables' position.
    fn shared_positions(&self) -> Result<SharedPositions, StoreError> {
        let set = set_number(self.set);
        self.pool.with(async |client| {
            let row = client
                .query_one(
                    "SELECT GREATEST(j.last, s.position, 0), COALESCE(s.position, 0) \
                     FROM (SELECT max(position) AS last FROM journal WHERE set_id = $1) j \
                     LEFT JOIN hongbao_sets s ON s.set_id = $1",
                    &[&set],
                )
                .await
                .map_err(failed("reading the set's shared positions"))?;
            let position = |column: usize| {
                Position::try_from(row.get::<_, i64>(column))
                    .map_err(|_| StoreError::new("a negative position in the shared store"))
            };
            Ok(SharedPositions { journal: position(0)?, tables: position(1)? })
        })
    }
}
