//! Days: packets, claims and the ledger are partitioned by day (the day a
//! packet id carries, `yyyymmdd`), and a day's packets and claims by a hash
//! of the packet id. A day's partitions are made ahead of time (the day
//! before, the day itself and the next, when a set recovers) and on demand
//! before a transaction writes into a day that has none, under an advisory
//! lock, recorded in `hongbao_days`. A cold day takes no writes.

use std::collections::HashSet;

use hongbao_domain::time::is_valid_civil_day;
use hongbao_engine::StoreError;
use tokio_postgres::Client;

use crate::pg::failed;
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
    client.batch_execute("BEGIN").await.map_err(failed("starting to make a day"))?;
    let result = make_in_transaction(client, day).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    client.batch_execute(end).await.map_err(failed("ending the making of a day"))?;
    result
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
    for (table, hashed) in [("packets", "id"), ("claims", "packet_id")] {
        sql.push_str(&format!(
            "CREATE TABLE {table}_d{day} PARTITION OF {table} FOR VALUES FROM ({from}) TO ({to}) \
             PARTITION BY HASH ({hashed});\n"
        ));
        for remainder in 0..HASH_PARTITIONS {
            sql.push_str(&format!(
                "CREATE TABLE {table}_d{day}_h{remainder} PARTITION OF {table}_d{day} \
                 FOR VALUES WITH (MODULUS {HASH_PARTITIONS}, REMAINDER {remainder});\n"
            ));
        }
    }
    sql.push_str(&format!("INSERT INTO hongbao_days (day, state) VALUES ({key}, 'hot');"));
    client.batch_execute(&sql).await.map_err(failed("making a day's partitions"))
}
