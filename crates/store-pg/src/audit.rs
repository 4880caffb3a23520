//! Reads a data set whole, as raw rows, for `hongbao audit`: each
//! database's tables with its sets' journals replayed past them. After a
//! crash the tables lag the journal; the audit applies the journal's
//! records past the tables' position with the materializer's own writes and
//! constraints, inside one transaction that it then rolls back, and reads
//! the rows in between. Nothing is changed.
//!
//! A set served by a running node is refused (its lock is held, or on a
//! node of several, its lease runs): the audit needs the data set at rest,
//! as on SQLite.
//!
//! Cold days are counted by their ledger totals (`ledger_day_totals`,
//! written when the day went cold): the audit reads the hot days whole and
//! need not read all history every time. With `ColdDays::Rows` it reads
//! the cold days' rows too, checks every invariant on them, and checks that
//! the totals are their sums.

use hongbao_domain::audit::{
    AccountRow, ClaimRow, ColdTotalRow, LedgerRow, OutboxRow, PacketRow, SetSnapshot, WithdrawalRow,
};
use hongbao_domain::{SetId, UserId};
use hongbao_engine::{BATCHES_PER_TRANSACTION_MAX, Journaled, Position, StoreError};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::days::make_in_transaction;
use crate::journal::read_records;
use crate::pg::{connect, failed};
use crate::schema::{LOCK_CLASS, LOCK_WAIT, set_number};
use crate::set_map::SetMap;
use crate::writer::{Statements, days_written, write_batches};

/// How the audit reads the cold days: one definition for both stores.
pub use hongbao_engine::ColdDays;

/// Every set's rows, read from the databases of `map`.
pub fn snapshot(map: &SetMap, sets: u16, cold: ColdDays) -> Result<Vec<SetSnapshot>, StoreError> {
    let mut snapshots: Vec<SetSnapshot> = (0..sets).map(|set| SetSnapshot { set, ..SetSnapshot::default() }).collect();
    for url in map.databases(sets) {
        let here: Vec<SetId> = (0..sets).map(SetId).filter(|set| map.url(*set) == url).collect();
        let client = connect(url, "hongbao-audit")?;
        client.block_on(async {
            // The sets' locks first, then the snapshot: a transaction's
            // snapshot is taken by its first statement, and one taken while
            // waiting for a stopping node's locks would miss its last commits.
            lock_sets(&client, &here).await?;
            refuse_leased(&client, &here).await?;
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                .await
                .map_err(failed("starting the audit"))?;
            let result = read_database(&client, &here, sets, cold, &mut snapshots).await;
            let _ = client.batch_execute("ROLLBACK").await;
            let _ = client.batch_execute("SELECT pg_advisory_unlock_all()").await;
            result
        })?;
    }
    Ok(snapshots)
}

async fn read_database(
    client: &Client,
    here: &[SetId],
    sets: u16,
    cold: ColdDays,
    snapshots: &mut [SetSnapshot],
) -> Result<(), StoreError> {
    let recorded: Option<i64> = client
        .query_opt("SELECT value FROM hongbao_meta WHERE key = 'sets'", &[])
        .await
        .map_err(failed("reading the data set's set count"))?
        .map(|row| row.get(0));
    if recorded != Some(i64::from(sets)) {
        return Err(StoreError::new(format!(
            "the database holds a data set of {recorded:?} sets, not {sets}: its rows would be read into the wrong sets"
        )));
    }
    let statements = Statements::prepare(client).await?;
    for set in here {
        replay_tail(client, &statements, *set).await?;
    }
    read_rows(client, here, sets, cold, snapshots).await?;
    match cold {
        ColdDays::Totals => read_cold_totals(client, here[0], sets, snapshots).await,
        ColdDays::Rows => check_cold_totals(client, here[0], sets, snapshots).await,
    }
}

async fn read_cold_totals(
    client: &Client,
    first: SetId,
    sets: u16,
    snapshots: &mut [SetSnapshot],
) -> Result<(), StoreError> {
    let rows = client
        .query("SELECT day, user_id, kind, entries, amount FROM ledger_day_totals", &[])
        .await
        .map_err(failed("reading the cold days' totals"))?;
    for row in rows {
        let total = ColdTotalRow {
            day: row.get::<_, i32>(0) as u32,
            user: row.get(1),
            kind: row.get(2),
            entries: row.get(3),
            amount: row.get(4),
        };
        snapshots[set_of_user(&total.user, sets, first)].cold.push(total);
    }
    Ok(())
}

/// Every cold day's totals against the sums of its rows.
async fn check_cold_totals(
    client: &Client,
    first: SetId,
    sets: u16,
    snapshots: &mut [SetSnapshot],
) -> Result<(), StoreError> {
    let rows = client
        .query(
            "SELECT day, user_id, kind, t.entries, r.entries, t.amount, r.amount FROM ledger_day_totals t \
             FULL JOIN (SELECT day, user_id, kind, count(*) AS entries, sum(amount)::bigint AS amount \
                        FROM hongbao_archive.ledger GROUP BY day, user_id, kind) r USING (day, user_id, kind) \
             WHERE t.entries IS DISTINCT FROM r.entries OR t.amount IS DISTINCT FROM r.amount",
            &[],
        )
        .await
        .map_err(failed("checking the cold days' totals"))?;
    for row in rows {
        let (day, user, kind): (i32, String, String) = (row.get(0), row.get(1), row.get(2));
        let (kept, counted): (Option<i64>, Option<i64>) = (row.get(3), row.get(4));
        let (kept_sum, counted_sum): (Option<i64>, Option<i64>) = (row.get(5), row.get(6));
        snapshots[set_of_user(&user, sets, first)].problems.push(format!(
            "cold day {day}: {user}'s {kind} total says {kept:?} entries of {kept_sum:?} fen, its rows {counted:?} of {counted_sum:?}"
        ));
    }
    Ok(())
}

/// Takes the sets' locks for this connection (a node that just stopped lets
/// go of its locks a moment later: wait as long as a restart would).
async fn lock_sets(client: &Client, here: &[SetId]) -> Result<(), StoreError> {
    client
        .batch_execute(&format!("SET lock_timeout = '{LOCK_WAIT}'"))
        .await
        .map_err(failed("bounding the wait for the sets' locks"))?;
    for set in here {
        let locked = client.execute("SELECT pg_advisory_lock($1, $2)", &[&LOCK_CLASS, &i32::from(set.0)]).await;
        match locked {
            Ok(_) => {}
            Err(error) if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                return Err(StoreError::new(format!(
                    "set {set} is served by a running node; the audit needs it stopped"
                )));
            }
            Err(error) => return Err(failed("locking a set for the audit")(error)),
        }
    }
    client.batch_execute("RESET lock_timeout").await.map_err(failed("resetting the lock timeout"))
}

/// Refuses sets a node of a cluster holds: those nodes take no advisory
/// lock (their leases fence them), so the lock alone does not tell that
/// the data set is at rest. A lease of a node that died runs out within
/// its length: the audit can run then.
async fn refuse_leased(client: &Client, here: &[SetId]) -> Result<(), StoreError> {
    let leases: bool = client
        .query_one("SELECT to_regclass('hongbao_leases') IS NOT NULL", &[])
        .await
        .map_err(failed("looking for the leases"))?
        .get(0);
    if !leases {
        return Ok(());
    }
    let sets: Vec<i16> = here.iter().map(|set| set_number(*set)).collect();
    let held = client
        .query(
            "SELECT set_id, owner FROM hongbao_leases WHERE set_id = ANY($1) AND owner IS NOT NULL \
             AND owner <> $2 AND expires_at > clock_timestamp() ORDER BY set_id",
            &[&sets, &crate::lease::STANDALONE],
        )
        .await
        .map_err(failed("reading the leases"))?;
    match held.first() {
        None => Ok(()),
        Some(row) => Err(StoreError::new(format!(
            "set {} is held by the cluster node {} ({} sets held in all); the audit needs the data set stopped",
            row.get::<_, i16>(0),
            row.get::<_, String>(1),
            held.len()
        ))),
    }
}

/// Applies the set's journal records past its tables' position.
async fn replay_tail(client: &Client, statements: &Statements, set: SetId) -> Result<(), StoreError> {
    let position: Option<i64> = client
        .query_opt("SELECT position FROM hongbao_sets WHERE set_id = $1", &[&set_number(set)])
        .await
        .map_err(failed("reading a set's position"))?
        .map(|row| row.get(0));
    let Some(position) = position else { return Ok(()) };
    let mut tail: Vec<Journaled> = Vec::new();
    read_records(client, set, position as Position, &mut |position, payload| {
        tail.push(Journaled::decode(position, payload)?);
        Ok(())
    })
    .await
    .map_err(|e| StoreError::new(format!("set {set}: reading the journal: {e}")))?;
    for chunk in tail.chunks(BATCHES_PER_TRANSACTION_MAX) {
        for day in days_written(chunk) {
            make_in_transaction(client, day).await?;
        }
        write_batches(client, statements, set, chunk, false).await.map_err(|e| {
            StoreError::new(format!("set {set}: the journal does not apply over the tables: {}", e.message))
        })?;
    }
    Ok(())
}

/// The index of the snapshot a user's rows belong to: their set, or (for a
/// name that no longer parses, which the audit then reports) the first set
/// of this database.
fn set_of_user(name: &str, sets: u16, fallback: SetId) -> usize {
    UserId::parse(name).map_or(fallback, |user| SetId::of_user(&user, sets)).index()
}

async fn read_rows(
    client: &Client,
    here: &[SetId],
    sets: u16,
    cold: ColdDays,
    snapshots: &mut [SetSnapshot],
) -> Result<(), StoreError> {
    let first = here[0];
    // The hot tables, or with the cold days' rows: the archive's tables
    // beside them (the views, for packets and claims).
    let (ledger, packet_rows, claims) = match cold {
        ColdDays::Totals => ("ledger", "packets", "claims"),
        ColdDays::Rows => {
            ("(SELECT * FROM ledger UNION ALL SELECT * FROM hongbao_archive.ledger) l", "packets_all", "claims_all")
        }
    };
    let read = |sql: String| async move { client.query(&sql, &[]).await.map_err(failed("reading for the audit")) };
    for row in read("SELECT user_id, balance FROM accounts".into()).await? {
        let account = AccountRow { user: row.get(0), balance: row.get(1) };
        snapshots[set_of_user(&account.user, sets, first)].accounts.push(account);
    }
    for row in read(format!("SELECT reference, user_id, amount, kind FROM {ledger}")).await? {
        let entry = LedgerRow { reference: row.get(0), user: row.get(1), amount: row.get(2), kind: row.get(3) };
        snapshots[set_of_user(&entry.user, sets, first)].ledger.push(entry);
    }
    let packets = read(format!(
        "SELECT id, sender, kind, total_amount, count, remaining_amount, remaining_count, refunded_amount, seed, \
         recipient, expires_at, set_id, members FROM {packet_rows}"
    ))
    .await?;
    for row in packets {
        let packet = PacketRow {
            id: row.get(0),
            sender: row.get(1),
            kind: row.get(2),
            total_amount: row.get(3),
            count: i64::from(row.get::<_, i32>(4)),
            remaining_amount: row.get(5),
            remaining_count: i64::from(row.get::<_, i32>(6)),
            refunded_amount: row.get(7),
            seed: row.get::<_, i64>(8) as u64,
            recipient: row.get(9),
            expires_at: row.get(10),
            members: row.get(12),
        };
        snapshots[snapshot_of(row.get(11), first)].packets.push(packet);
    }
    let claims = read(format!(
        "SELECT COALESCE(p.id, 'missing packet ' || c.packet_id), c.user_id, c.idx, c.amount, p.set_id \
         FROM {claims} c LEFT JOIN {packet_rows} p ON p.day = c.day AND p.id = c.packet_id"
    ))
    .await?;
    for row in claims {
        let claim = ClaimRow {
            packet_id: row.get(0),
            user: row.get(1),
            index: i64::from(row.get::<_, i32>(2)),
            amount: row.get(3),
        };
        snapshots[snapshot_of(row.get(4), first)].claims.push(claim);
    }
    for row in read("SELECT id, user_id, amount, status, set_id FROM withdrawals".into()).await? {
        let withdrawal = WithdrawalRow { id: row.get(0), user: row.get(1), amount: row.get(2), status: row.get(3) };
        snapshots[snapshot_of(row.get(4), first)].withdrawals.push(withdrawal);
    }
    for row in read("SELECT reference, user_id, amount, set_id FROM outbox".into()).await? {
        let credit = OutboxRow { reference: row.get(0), user: row.get(1), amount: row.get(2) };
        snapshots[snapshot_of(row.get(3), first)].outbox.push(credit);
    }
    Ok(())
}

fn snapshot_of(set: Option<i16>, fallback: SetId) -> usize {
    set.and_then(|set| u16::try_from(set).ok()).map_or(fallback, SetId).index()
}
