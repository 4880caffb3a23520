//! The tables of a set: the writer's handle recovers and prefetches; the
//! materializer's writes journaled batches, many per transaction, with the
//! journal position they reach (`meta.journal_position`), on disk when
//! `materialize` returns.
//!
//! Credits that are added and acknowledged within one transaction's batches
//! never touch the outbox table: the transaction writes the net of the
//! batches' outbox changes. (How many credits that spares in practice is not
//! measured yet: an acknowledgement's record lands a few milliseconds after
//! its claim's, so often, not always, in the same 5 ms transaction.)

use std::path::Path;

use std::collections::HashSet;

use hongbao_domain::{Millis, SetId, UserId};
use hongbao_engine::{
    Credit, Effects, Fetched, IdempotencyOp, IdempotencyRecord, IdempotencyResult, Journaled, Position, Recovered,
    Store, StoreError, Wants,
};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, params};

use crate::checkpoint::{Checkpoints, WAL_FILE_BYTES_MAX};
use crate::cold::ColdFiles;
use crate::failed;
use crate::layout::set_path;
use crate::rows::{CLAIM_COLUMNS, PACKET_COLUMNS, balance, claim_from_row, load_packet, packet_from_row, packet_id};
use crate::schema::prepare;
use crate::withdrawals;
use hongbao_engine::stored::assemble;

pub struct SqliteStore {
    connection: Connection,
    set: SetId,
    /// The set's cold days, where the prefetch finds a settled packet whose
    /// day has left the tables.
    cold: ColdFiles,
    checkpoints: Checkpoints,
    /// The position the database file holds durably: the tables' position
    /// at the last checkpoint that copied the whole WAL.
    durable: Position,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("set", &self.set).finish()
    }
}

impl SqliteStore {
    /// Opens (creating if new) the tables of `set` in the data directory
    /// `dir`; an older schema is refused (`schema::prepare`).
    pub fn open(dir: &Path, set: SetId) -> Result<SqliteStore, StoreError> {
        let path = set_path(dir, set);
        let mut connection =
            Connection::open(&path).map_err(|e| StoreError::new(format!("cannot open {}: {e}", path.display())))?;
        prepare(&mut connection)?;
        // The writer checkpoints between batches (`maintain`), never inside a commit.
        connection.execute_batch("PRAGMA wal_autocheckpoint = 0").map_err(failed("configuring checkpoints"))?;
        connection.pragma_update(None, "journal_size_limit", WAL_FILE_BYTES_MAX).map_err(failed("limiting the WAL"))?;
        Ok(SqliteStore { connection, set, cold: ColdFiles::new(dir, set), checkpoints: Checkpoints::new(), durable: 0 })
    }

    /// The materializer's handle: its commits are not synced
    /// (`synchronous=NORMAL`), since the journal holds every batch they
    /// hold and is trimmed only below what a checkpoint has synced
    /// (`Store::durable`). Measured: see BENCHMARKS.md, session 4.
    pub fn for_materializing(self) -> Result<SqliteStore, StoreError> {
        self.connection.pragma_update(None, "synchronous", "NORMAL").map_err(failed("configuring the materializer"))?;
        Ok(self)
    }

    /// The tables of `set` of the data directory `dir` in `connection`,
    /// already migrated (an audit's copy in memory).
    pub(crate) fn over(connection: Connection, dir: &Path, set: SetId) -> SqliteStore {
        SqliteStore { connection, set, cold: ColdFiles::new(dir, set), checkpoints: Checkpoints::new(), durable: 0 }
    }

    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }

    fn next_seq(&self) -> Result<u64, StoreError> {
        let stored: Option<i64> = self
            .connection
            .query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |row| row.get(0))
            .optional()
            .map_err(failed("reading next_seq"))?;
        let highest: Option<i64> = self
            .connection
            .query_row("SELECT MAX(seq) FROM packets", [], |row| row.get(0))
            .map_err(failed("reading the highest packet seq"))?;
        // Never reuse a sequence number, even if the meta row were lost.
        Ok(stored.unwrap_or(1).max(highest.map_or(1, |seq| seq + 1)) as u64)
    }

    fn outbox(&self) -> Result<Vec<Credit>, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached(
                "SELECT o.reference, o.user, o.amount, p.id, o.at FROM outbox o JOIN packets p ON p.seq = o.packet_seq",
            )
            .map_err(failed("preparing the outbox read"))?;
        let rows = statement
            .query_map([], |row| {
                let user: String = row.get(1)?;
                let amount: i64 = row.get(2)?;
                Ok((row.get::<_, String>(0)?, user, amount, packet_id(row, 3)?, Millis(row.get(4)?)))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(failed("reading the outbox"))?;
        rows.into_iter()
            .map(|(reference, user, amount, packet_id, at)| {
                let user =
                    UserId::parse(&user).map_err(|_| StoreError::new(format!("outbox user {user} is invalid")))?;
                let amount = hongbao_domain::Amount::from_signed(amount)
                    .ok_or_else(|| StoreError::new(format!("outbox amount {amount} is invalid")))?;
                Ok(Credit { reference, user, amount, packet_id, at })
            })
            .collect()
    }

    fn idempotency(
        &self,
        user: &UserId,
        op: IdempotencyOp,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT fingerprint, result FROM idempotency WHERE user = ?1 AND op = ?2 AND key = ?3")
            .map_err(failed("preparing an idempotency read"))?;
        let row: Option<(String, String)> = statement
            .query_row(params![user.as_str(), op.as_str(), key], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()
            .map_err(failed("reading an idempotency key"))?;
        let Some((fingerprint, result)) = row else { return Ok(None) };
        let result = IdempotencyResult::parse(op, &result)?;
        Ok(Some(IdempotencyRecord { user: user.clone(), key: key.to_owned(), fingerprint, result }))
    }
}

impl Store for SqliteStore {
    fn recover(&mut self, now: Millis) -> Result<Recovered, StoreError> {
        // One snapshot: the position and the rows it covers.
        self.connection.execute_batch("BEGIN").map_err(failed("starting a recovery read"))?;
        let recovered = self.load(now);
        self.connection.execute_batch("COMMIT").map_err(failed("ending a recovery read"))?;
        recovered
    }

    fn prefetch(&mut self, wants: &Wants) -> Result<Fetched, StoreError> {
        let mut fetched = Fetched::default();
        for user in &wants.accounts {
            fetched.accounts.push((user.clone(), balance(&self.connection, user)?));
        }
        for (user, op, key) in &wants.idempotency {
            if let Some(record) = self.idempotency(user, *op, key)? {
                match record.result {
                    IdempotencyResult::Sent(id) => {
                        fetched.packets.extend(load_packet(&self.connection, &self.cold, &id)?);
                    }
                    IdempotencyResult::Withdrew(id) => {
                        fetched.withdrawals.extend(withdrawals::load(&self.connection, &id)?);
                    }
                    IdempotencyResult::Deposited(_) => {}
                }
                fetched.idempotency.push(record);
            }
        }
        for id in &wants.packets {
            fetched.packets.extend(load_packet(&self.connection, &self.cold, id)?);
        }
        for id in &wants.withdrawals {
            fetched.withdrawals.extend(withdrawals::load(&self.connection, id)?);
        }
        for (user, reference) in &wants.deposits {
            if let Some((amount, reversed)) = withdrawals::deposit(&self.connection, user, reference)? {
                fetched.deposits.push((reference.clone(), amount, reversed));
            }
        }
        for (user, day) in &wants.sent_today {
            let (count, amount) = crate::bills::sent_on(&self.connection, user, *day)?;
            fetched.sent_today.push((user.clone(), *day, count, amount));
        }
        let mut statement = self
            .connection
            .prepare_cached("SELECT 1 FROM ledger WHERE reference = ?1")
            .map_err(failed("preparing a reference read"))?;
        for credit in &wants.credits {
            let present = statement.exists(params![credit.reference]).map_err(failed("reading a reference"))?;
            if present {
                fetched.references_present.push(credit.reference.clone());
            }
        }
        Ok(fetched)
    }

    fn materialized(&mut self) -> Result<Position, StoreError> {
        journal_position(&self.connection)
    }

    fn materialize(&mut self, batches: &[Journaled]) -> Result<(), StoreError> {
        let Some(last) = batches.last() else { return Ok(()) };
        let transaction = self.connection.transaction().map_err(failed("starting a materialization"))?;
        let position = journal_position(&transaction)?;
        if batches[0].position != position + 1 {
            return Err(StoreError::refused(format!(
                "batch {} does not follow the tables' position {position}",
                batches[0].position
            )));
        }
        for batch in batches {
            write_effects(&transaction, &batch.effects)?;
        }
        write_outbox(&transaction, batches)?;
        transaction
            .execute(
                "INSERT INTO meta (key, value) VALUES ('journal_position', ?1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![last.position as i64],
            )
            .map_err(failed("recording the journal position"))?;
        transaction.commit().map_err(failed("committing a materialization"))
    }

    fn maintain(&mut self) {
        // The materializer is this connection's only writer: the position
        // read after the checkpoint is the one the checkpoint synced.
        if self.checkpoints.run_if_due(&self.connection)
            && let Ok(position) = journal_position(&self.connection)
        {
            self.durable = self.durable.max(position);
        }
    }

    fn durable(&mut self) -> Position {
        self.durable
    }
}

/// The journal position the tables have materialized (`meta`; 0 before the
/// first materialization).
pub(crate) fn journal_position(connection: &Connection) -> Result<Position, StoreError> {
    let stored: Option<i64> = connection
        .query_row("SELECT value FROM meta WHERE key = 'journal_position'", [], |row| row.get(0))
        .optional()
        .map_err(failed("reading the journal position"))?;
    Ok(stored.unwrap_or(0) as u64)
}

impl SqliteStore {
    fn load(&self, now: Millis) -> Result<Recovered, StoreError> {
        let unsettled = "expires_at > ?1 OR (remaining_amount > 0 AND refunded_amount = 0)";
        let sql = format!("SELECT {PACKET_COLUMNS} FROM packets WHERE {unsettled}");
        let rows = self
            .connection
            .prepare(&sql)
            .and_then(|mut statement| statement.query_map(params![now.0], packet_from_row)?.collect())
            .map_err(failed("loading live packets"))?;
        let sql =
            format!("SELECT {CLAIM_COLUMNS} FROM claims c JOIN packets p ON p.seq = c.packet_seq WHERE {unsettled}");
        let claims = self
            .connection
            .prepare(&sql)
            .and_then(|mut statement| statement.query_map(params![now.0], claim_from_row)?.collect())
            .map_err(failed("loading live claims"))?;
        Ok(Recovered {
            position: journal_position(&self.connection)?,
            next_seq: self.next_seq()?,
            packets: assemble(rows, claims)?,
            outbox: self.outbox()?,
            withdrawals: withdrawals::pending(&self.connection)?,
            frozen: withdrawals::frozen(&self.connection)?,
        })
    }
}

/// A write error: a constraint's refusal (an engine bug, never retried) or a
/// failure that may pass.
fn written(context: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |error| match error.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => StoreError::refused(format!("{context}: {error}")),
        _ => StoreError::new(format!("{context}: {error}")),
    }
}

fn write_effects(tx: &Transaction<'_>, effects: &Effects) -> Result<(), StoreError> {
    let mut ledger = tx
        .prepare_cached(
            "INSERT OR ROLLBACK INTO ledger (reference, user, amount, kind, packet_id, at, balance_after) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(failed("preparing ledger writes"))?;
    for entry in &effects.ledger {
        let packet = entry.packet_id.map(|id| id.to_string());
        ledger
            .execute(params![
                entry.reference,
                entry.user.as_str(),
                entry.amount,
                entry.kind.as_str(),
                packet,
                entry.at.0,
                entry.balance_after.map(hongbao_domain::Amount::signed),
            ])
            .map_err(written("writing a ledger entry"))?;
    }
    let mut packets = tx
        .prepare_cached(
            "INSERT OR ROLLBACK INTO packets (seq, id, sender, kind, total_amount, count, remaining_amount, remaining_count, \
             seed, greeting, password_digest, recipient, created_at, expires_at, group_id, members) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )
        .map_err(failed("preparing packet writes"))?;
    for packet in &effects.packets {
        let info = &packet.info;
        packets
            .execute(params![
                info.id.seq as i64,
                info.id.to_string(),
                info.sender.as_str(),
                info.kind.as_str(),
                info.total_amount.signed(),
                info.count,
                packet.seed as i64,
                info.greeting,
                packet.password.map(|digest| digest.0.to_vec()),
                info.recipient.as_ref().map(UserId::as_str),
                info.created_at.0,
                info.expires_at.0,
                info.group.as_ref().map(|group| group.id.as_str()),
                info.group.as_ref().map(|group| group.members.joined()),
            ])
            .map_err(written("writing a packet"))?;
    }
    let mut claims = tx
        .prepare_cached(
            "INSERT OR ROLLBACK INTO claims (packet_seq, user, idx, amount, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(failed("preparing claim writes"))?;
    for (id, claim) in &effects.claims {
        claims
            .execute(params![id.seq as i64, claim.user.as_str(), claim.index, claim.amount.signed(), claim.at.0])
            .map_err(written("writing a claim"))?;
    }
    let mut refunds = tx
        .prepare_cached("UPDATE OR ROLLBACK packets SET refunded_amount = remaining_amount, remaining_amount = 0 WHERE seq = ?1 AND remaining_amount = ?2")
        .map_err(failed("preparing refunds"))?;
    for (id, amount) in &effects.refunds {
        let changed = refunds.execute(params![id.seq as i64, amount.signed()]).map_err(written("writing a refund"))?;
        if changed != 1 {
            return Err(StoreError::refused(format!("refund of {id} for {} matched no packet", amount.fen())));
        }
    }
    withdrawals::write_wallet(tx, effects, written("writing a withdrawal"))?;
    write_keys(tx, effects)
}

/// The net outbox change of a transaction's batches: credits both added and
/// acknowledged in them are never written.
fn write_outbox(tx: &Transaction<'_>, batches: &[Journaled]) -> Result<(), StoreError> {
    let added: HashSet<&str> =
        batches.iter().flat_map(|b| &b.effects.outbox_added).map(|credit| credit.reference.as_str()).collect();
    let removed: HashSet<&str> = batches.iter().flat_map(|b| &b.effects.outbox_removed).map(String::as_str).collect();
    let mut insert = tx
        .prepare_cached(
            "INSERT OR ROLLBACK INTO outbox (reference, user, amount, packet_seq, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(failed("preparing outbox writes"))?;
    for credit in batches.iter().flat_map(|b| &b.effects.outbox_added) {
        if removed.contains(credit.reference.as_str()) {
            continue;
        }
        insert
            .execute(params![
                credit.reference,
                credit.user.as_str(),
                credit.amount.signed(),
                credit.packet_id.seq as i64,
                credit.at.0
            ])
            .map_err(written("writing an outbox credit"))?;
    }
    let mut delete =
        tx.prepare_cached("DELETE FROM outbox WHERE reference = ?1").map_err(failed("preparing outbox deletes"))?;
    for reference in removed.iter().filter(|reference| !added.contains(*reference)) {
        delete.execute(params![reference]).map_err(failed("deleting an outbox credit"))?;
    }
    Ok(())
}

fn write_keys(tx: &Transaction<'_>, effects: &Effects) -> Result<(), StoreError> {
    let mut keys = tx
        .prepare_cached(
            "INSERT OR ROLLBACK INTO idempotency (user, key, op, fingerprint, result) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(failed("preparing idempotency writes"))?;
    for record in &effects.idempotency {
        let (op, result) = (record.op().as_str(), record.result.text());
        keys.execute(params![record.user.as_str(), record.key, op, record.fingerprint, result])
            .map_err(written("writing an idempotency key"))?;
    }
    // The sequence moves only when packets are made; a batch without one
    // leaves the meta page alone (one page less to write).
    if !effects.packets.is_empty() {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('next_seq', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![effects.next_seq as i64],
        )
        .map_err(failed("writing next_seq"))?;
    }
    Ok(())
}
