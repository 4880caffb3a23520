//! Reads a data set whole, as raw rows, for `hongbao audit`: each
//! database's tables with its sets' journals replayed past them. After a
//! crash the tables lag the journal; the audit applies the journal's
//! records past the tables' position with the materializer's own writes and
//! constraints, inside one transaction that it then rolls back, and reads
//! the rows in between. Nothing is changed.
//!
//! A set served by a running node is refused (its lock is held): the audit
//! needs the data set at rest, as on SQLite.

use hongbao_domain::audit::{AccountRow, ClaimRow, LedgerRow, OutboxRow, PacketRow, SetSnapshot};
use hongbao_domain::{SetId, UserId};
use hongbao_engine::{BATCHES_PER_TRANSACTION_MAX, Journaled, Position, StoreError};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::days::make_in_transaction;
use crate::journal::read_records;
use crate::pg::{block_on, connect, failed};
use crate::schema::{LOCK_CLASS, LOCK_WAIT, set_number};
use crate::set_map::SetMap;
use crate::writer::{Statements, days_written, write_batches};

/// Every set's rows, read from the databases of `map`.
pub fn snapshot(map: &SetMap, sets: u16) -> Result<Vec<SetSnapshot>, StoreError> {
    let mut snapshots: Vec<SetSnapshot> = (0..sets).map(|set| SetSnapshot { set, ..SetSnapshot::default() }).collect();
    for url in map.databases(sets) {
        let here: Vec<SetId> = (0..sets).map(SetId).filter(|set| map.url(*set) == url).collect();
        let client = connect(url)?;
        block_on(async {
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                .await
                .map_err(failed("starting the audit"))?;
            let result = read_database(&client, &here, sets, &mut snapshots).await;
            let _ = client.batch_execute("ROLLBACK").await;
            result
        })?;
    }
    Ok(snapshots)
}

async fn read_database(
    client: &Client,
    here: &[SetId],
    sets: u16,
    snapshots: &mut [SetSnapshot],
) -> Result<(), StoreError> {
    // A node that just stopped lets go of its locks a moment later: wait
    // for them as long as a restart would.
    client
        .batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
        .await
        .map_err(failed("bounding the wait for the sets' locks"))?;
    for set in here {
        let locked = client.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&LOCK_CLASS, &i32::from(set.0)]).await;
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
    let statements = Statements::prepare(client).await?;
    for set in here {
        replay_tail(client, &statements, *set).await?;
    }
    read_rows(client, here, sets, snapshots).await
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
        write_batches(client, statements, set, chunk).await.map_err(|e| {
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
    snapshots: &mut [SetSnapshot],
) -> Result<(), StoreError> {
    let first = here[0];
    let read = |sql: &'static str| async move { client.query(sql, &[]).await.map_err(failed("reading for the audit")) };
    for row in read("SELECT user_id, balance FROM accounts").await? {
        let account = AccountRow { user: row.get(0), balance: row.get(1) };
        snapshots[set_of_user(&account.user, sets, first)].accounts.push(account);
    }
    for row in read("SELECT reference, user_id, amount, kind FROM ledger").await? {
        let entry = LedgerRow { reference: row.get(0), user: row.get(1), amount: row.get(2), kind: row.get(3) };
        snapshots[set_of_user(&entry.user, sets, first)].ledger.push(entry);
    }
    let packets = read(
        "SELECT id, sender, kind, total_amount, count, remaining_amount, remaining_count, refunded_amount, seed, \
         recipient, expires_at, set_id FROM packets",
    )
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
        };
        snapshots[snapshot_of(row.get(11), first)].packets.push(packet);
    }
    let claims = read(
        "SELECT COALESCE(p.id, 'missing packet ' || c.packet_id), c.user_id, c.idx, c.amount, p.set_id \
         FROM claims c LEFT JOIN packets p ON p.day = c.day AND p.id = c.packet_id",
    )
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
    for row in read("SELECT reference, user_id, amount, set_id FROM outbox").await? {
        let credit = OutboxRow { reference: row.get(0), user: row.get(1), amount: row.get(2) };
        snapshots[snapshot_of(row.get(3), first)].outbox.push(credit);
    }
    Ok(())
}

fn snapshot_of(set: Option<i16>, fallback: SetId) -> usize {
    set.and_then(|set| u16::try_from(set).ok()).map_or(fallback, SetId).index()
}
