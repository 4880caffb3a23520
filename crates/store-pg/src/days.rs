//! Days: packets, claims and the ledger are partitioned by day (the day a
//! packet id carries, `yyyymmdd`), and a day's packets and claims by a hash
//! of the packet id. A day's partitions are made ahead of time (the day
//! before, the day itself and the next, when a set recovers) and on demand
//! before a transaction writes into a day that has none, under an advisory
//! lock, recorded in `hongbao_days`; the node's day keeper (`keep_days`)
//! makes today's and tomorrow's ahead, and moves old settled days cold
//! (`migrations/0002_cold_days.sql`). A cold day takes no writes.

use std::collections::HashSet;

use hongbao_domain::Millis;
use hongbao_domain::time::is_valid_civil_day;
use hongbao_engine::StoreError;
use tokio_postgres::Client;

use crate::SetMap;
use crate::pg::{connect, connect_serving, failed, in_transaction};
use crate::schema::{LOCK_CLASS, LOCK_DAYS};

/// Partitions of a day's packets (and of its claims), by packet-id hash:
/// each stays small enough that its indexes stay in memory on a New Year's
/// Eve, and a few of them cost little on a quiet day.
pub const HASH_PARTITIONS: u32 = 4;

/// The days a connection knows to have partitions.
#[derive(Debug, Default)]
pub(crate) struct Days {
    known: HashSet<u32>,
}

impl Days {
    /// Of `days`, those that have no partitions yet.
    async fn missing(&mut self, client: &Client, days: impl IntoIterator<Item = u32>) -> Result<Vec<u32>, StoreError> {
        let mut missing = Vec::new();
        for day in days {
            let known = client
                .query_opt("SELECT 1 FROM hongbao_days WHERE day = $1", &[&day_key(day)])
                .await
                .map_err(failed("reading the days"))?;
            match known {
                Some(_) => drop(self.known.insert(day)),
                None => missing.push(day),
            }
        }
        Ok(missing)
    }

    /// Makes sure every day in `days` has its partitions.
    pub(crate) async fn ensure(
        &mut self,
        client: &Client,
        days: impl IntoIterator<Item = u32>,
    ) -> Result<(), StoreError> {
        let mut missing: Vec<u32> = days.into_iter().filter(|day| !self.known.contains(day)).collect();
        missing.sort_unstable();
        missing.dedup();
        for day in missing {
            make(client, day).await?;
            self.known.insert(day);
        }
        Ok(())
    }
}

async fn make(client: &Client, day: u32) -> Result<(), StoreError> {
    if !is_valid_civil_day(day) {
        return Err(StoreError::refused(format!("{day} is not a day")));
    }
    in_transaction(client, "making a day", make_in_transaction(client, day)).await
}

pub(crate) async fn make_in_transaction(client: &Client, day: u32) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_xact_lock($1, $2)", &[&LOCK_CLASS, &LOCK_DAYS])
        .await
        .map_err(failed("locking the days"))?;
    let key = i32::try_from(day).expect("a yyyymmdd day fits an integer");
    let state: Option<String> = client
        .query_opt("SELECT state FROM hongbao_days WHERE day = $1", &[&key])
        .await
        .map_err(failed("reading a day's state"))?
        .map(|row| row.get(0));
    match state.as_deref() {
        Some("hot") => return Ok(()),
        Some(_) => return Err(StoreError::refused(format!("day {day} is cold: it takes no writes"))),
        None => {}
    }
    // The bounds are the integer day and the next integer: only that day is
    // in them, whatever the calendar's next day is.
    let (from, to) = (day, day + 1);
    let mut sql = format!("CREATE TABLE ledger_d{day} PARTITION OF ledger FOR VALUES FROM ({from}) TO ({to});\n");
    let mut made = vec![format!("ledger_d{day}")];
    for (table, hashed) in [("packets", "id"), ("claims", "packet_id")] {
        sql.push_str(&format!(
            "CREATE TABLE {table}_d{day} PARTITION OF {table} FOR VALUES FROM ({from}) TO ({to}) \
             PARTITION BY HASH ({hashed});\n"
        ));
        made.push(format!("{table}_d{day}"));
        for remainder in 0..HASH_PARTITIONS {
            sql.push_str(&format!(
                "CREATE TABLE {table}_d{day}_h{remainder} PARTITION OF {table}_d{day} \
                 FOR VALUES WITH (MODULUS {HASH_PARTITIONS}, REMAINDER {remainder});\n"
            ));
            made.push(format!("{table}_d{day}_h{remainder}"));
        }
    }
    // The checks are the partitioned tables' triggers: a statement naming a
    // partition would pass them by, so it is refused.
    for partition in made {
        sql.push_str(&format!(
            "CREATE TRIGGER through_parent BEFORE INSERT OR UPDATE OR DELETE ON {partition} \
             FOR EACH STATEMENT EXECUTE FUNCTION through_parent();\n"
        ));
    }
    sql.push_str(&format!("INSERT INTO hongbao_days (day, state) VALUES ({key}, 'hot');"));
    client.batch_execute(&sql).await.map_err(failed("making a day's partitions"))
}

/// One margin for both stores' day keepers (its reasons are in the engine).
pub use hongbao_engine::COLD_MARGIN_MS;

/// The longest a move to cold waits for its locks (and so the longest
/// reads and writes queue behind it).
const COLD_LOCK_WAIT: &str = "2s";

/// What one pass of the day keeper did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DaysKept {
    /// Days whose partitions were made ahead.
    pub made: Vec<u32>,
    /// Days that went cold.
    pub cooled: Vec<u32>,
}

/// One pass of the day keeper over every database of a data set: makes
/// today's and tomorrow's partitions ahead of time, and moves cold every
/// day older than `retention_days` whose packets are all settled (in every
/// database: a day's credits may land in another database's ledger) and
/// whose credits have all landed. Call it off any async runtime.
pub fn keep_days(map: &SetMap, sets: u16, now: Millis, retention_days: u32) -> Result<DaysKept, StoreError> {
    let urls = map.databases(sets);
    let connections = urls.iter().map(|url| connect_serving(url, "hongbao-days")).collect::<Result<Vec<_>, _>>()?;
    let mut kept = DaysKept::default();
    let ahead = [now, Millis(now.0 + 86_400_000)].map(Millis::civil_day);
    for connection in &connections {
        let mut days = Days::default();
        let missing = connection.block_on(days.missing(connection, ahead))?;
        connection.block_on(days.ensure(connection, missing.iter().copied()))?;
        kept.made.extend(missing);
    }
    kept.made.sort_unstable();
    kept.made.dedup();
    let cutoff = Millis(now.0 - i64::from(retention_days) * 86_400_000).civil_day();
    let mut candidates: Vec<u32> = Vec::new();
    for connection in &connections {
        let rows = connection
            .block_on(connection.query(
                "SELECT day FROM hongbao_days WHERE state = 'hot' AND day < $1 ORDER BY day",
                &[&day_key(cutoff)],
            ))
            .map_err(failed("reading the hot days"))?;
        candidates.extend(rows.iter().map(|row| row.get::<_, i32>(0) as u32));
    }
    candidates.sort_unstable();
    candidates.dedup();
    for day in candidates {
        let mut settled = true;
        for connection in &connections {
            settled &= connection.block_on(is_settled(connection, day, now))?;
        }
        if !settled {
            continue;
        }
        for connection in &connections {
            connection.block_on(cool(connection, day))?;
        }
        tracing::info!(day, "a day went cold");
        kept.cooled.push(day);
    }
    Ok(kept)
}

fn day_key(day: u32) -> i32 {
    i32::try_from(day).expect("a yyyymmdd day fits an integer")
}

/// Whether this database holds nothing of `day` that may still change:
/// every packet settled (nothing left to claim or refund) and expired more
/// than `COLD_MARGIN_MS` ago, and no credit of the day waiting in an outbox.
async fn is_settled(client: &Client, day: u32, now: Millis) -> Result<bool, StoreError> {
    let row = client
        .query_one(
            "SELECT NOT EXISTS (SELECT 1 FROM packets WHERE day = $1 AND (remaining_amount > 0 OR expires_at > $2)) \
             AND NOT EXISTS (SELECT 1 FROM outbox WHERE day = $1)",
            &[&day_key(day), &(now.0 - COLD_MARGIN_MS)],
        )
        .await
        .map_err(failed("checking that a day is settled"))?;
    Ok(row.get(0))
}

/// Moves `day` cold in one transaction: its entries' totals recorded, its
/// partitions detached from the hot tables and attached to the archive's.
async fn cool(client: &Client, day: u32) -> Result<(), StoreError> {
    in_transaction(client, "moving a day cold", cool_in_transaction(client, day)).await
}

async fn cool_in_transaction(client: &Client, day: u32) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_xact_lock($1, $2)", &[&LOCK_CLASS, &LOCK_DAYS])
        .await
        .map_err(failed("locking the days"))?;
    let key = day_key(day);
    let state: Option<String> = client
        .query_opt("SELECT state FROM hongbao_days WHERE day = $1", &[&key])
        .await
        .map_err(failed("reading a day's state"))?
        .map(|row| row.get(0));
    if state.as_deref() != Some("hot") {
        return Ok(());
    }
    let (from, to) = (day, day + 1);
    // Every lock the move needs, first, and in the order the materializer
    // and the reads take theirs (entries, then packets, then claims): none
    // of them holds one the move waits for while it waits for one the move
    // holds. Bounded, so what queues behind the move waits at most this
    // long; a move that cannot have its locks gives up until the next pass.
    let mut sql = format!(
        "SET LOCAL lock_timeout = '{COLD_LOCK_WAIT}';\n\
         LOCK TABLE ledger, hongbao_archive.ledger, packets, hongbao_archive.packets, claims, \
         hongbao_archive.claims IN ACCESS EXCLUSIVE MODE;\n\
         INSERT INTO ledger_day_totals (day, user_id, kind, entries, amount) \
         SELECT day, user_id, kind, count(*), sum(amount) FROM ledger_d{day} GROUP BY day, user_id, kind;\n"
    );
    for table in ["ledger", "packets", "claims"] {
        sql.push_str(&format!(
            "ALTER TABLE {table} DETACH PARTITION {table}_d{day};\n\
             ALTER TABLE {table}_d{day} SET SCHEMA hongbao_archive;\n\
             ALTER TABLE hongbao_archive.{table} ATTACH PARTITION hongbao_archive.{table}_d{day} \
             FOR VALUES FROM ({from}) TO ({to});\n"
        ));
        if table != "ledger" {
            for remainder in 0..HASH_PARTITIONS {
                sql.push_str(&format!("ALTER TABLE {table}_d{day}_h{remainder} SET SCHEMA hongbao_archive;\n"));
            }
        }
    }
    sql.push_str(&format!("UPDATE hongbao_days SET state = 'cold' WHERE day = {key};"));
    client.batch_execute(&sql).await.map_err(failed("moving a day cold"))
}

/// How big the day partitions are: the hot tables' and the archive's, with
/// their indexes, over every database of a data set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableSizes {
    pub hot_bytes: u64,
    pub cold_bytes: u64,
    pub hot_days: u64,
    pub cold_days: u64,
}

/// Measures `TableSizes` (for the bench). Call it off any async runtime.
pub fn table_sizes(map: &SetMap, sets: u16) -> Result<TableSizes, StoreError> {
    let mut sizes = TableSizes::default();
    for url in map.databases(sets) {
        let connection = connect(url, "hongbao-sizes")?;
        let row = connection
            .block_on(connection.query_one(
                "SELECT \
                   COALESCE(sum(pg_total_relation_size(c.oid)) FILTER (WHERE n.nspname = 'public'), 0)::bigint, \
                   COALESCE(sum(pg_total_relation_size(c.oid)) FILTER (WHERE n.nspname = 'hongbao_archive'), 0)::bigint, \
                   (SELECT count(*) FROM hongbao_days WHERE state = 'hot'), \
                   (SELECT count(*) FROM hongbao_days WHERE state = 'cold') \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind = 'r' AND c.relname ~ '^(packets|claims|ledger)_d[0-9]{8}'",
                &[],
            ))
            .map_err(failed("measuring the day partitions"))?;
        let count = |column: usize| u64::try_from(row.get::<_, i64>(column)).unwrap_or(0);
        sizes.hot_bytes += count(0);
        sizes.cold_bytes += count(1);
        sizes.hot_days = sizes.hot_days.max(count(2));
        sizes.cold_days = sizes.cold_days.max(count(3));
    }
    Ok(sizes)
}
