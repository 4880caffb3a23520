//! The schema and its migrations, versioned by SQLite's `user_version`.
//! Constraints and triggers make the store a second line of defence: the
//! engine decides, but a wrong decision cannot be written.

use rusqlite::Connection;

use crate::failed;
use hongbao_engine::StoreError;

/// Each migration, in order; `user_version` counts those applied.
///
/// Writes use `OR ROLLBACK` and the triggers `RAISE(ROLLBACK)`: a broken
/// invariant aborts the whole batch (the engine then recovers), and SQLite
/// needs no statement journal for the partial undo of one statement.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE accounts (
    user    TEXT PRIMARY KEY,
    balance INTEGER NOT NULL CHECK (balance >= 0)
) WITHOUT ROWID;

-- Every balance change, under a unique reference (the table is keyed by it).
-- Balances change only here: the trigger below applies each entry, and
-- entries are immutable.
CREATE TABLE ledger (
    reference TEXT PRIMARY KEY,
    user      TEXT NOT NULL,
    amount    INTEGER NOT NULL CHECK (amount <> 0),
    kind      TEXT NOT NULL CHECK (kind IN ('deposit', 'send', 'credit', 'refund')),
    packet_id TEXT,
    at        INTEGER NOT NULL,
    CHECK ((kind = 'send') = (amount < 0)),
    CHECK ((kind = 'deposit') = (packet_id IS NULL))
) WITHOUT ROWID;

-- Credits are one upsert (an upsert clause, not INSERT OR IGNORE: the
-- writer's OR ROLLBACK would override a trigger statement's own conflict
-- algorithm). Debits need an account, and the CHECK refuses an overdraft.
CREATE TRIGGER ledger_credits AFTER INSERT ON ledger WHEN NEW.amount > 0 BEGIN
    INSERT INTO accounts (user, balance) VALUES (NEW.user, NEW.amount)
    ON CONFLICT (user) DO UPDATE SET balance = balance + excluded.balance;
END;
CREATE TRIGGER ledger_debits AFTER INSERT ON ledger WHEN NEW.amount < 0 BEGIN
    SELECT RAISE(ROLLBACK, 'a debit of an account that does not exist')
    WHERE NOT EXISTS (SELECT 1 FROM accounts WHERE user = NEW.user);
    UPDATE accounts SET balance = balance + NEW.amount WHERE user = NEW.user;
END;
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger BEGIN
    SELECT RAISE(ROLLBACK, 'ledger entries are immutable');
END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger BEGIN
    SELECT RAISE(ROLLBACK, 'ledger entries are immutable');
END;

CREATE TABLE packets (
    seq              INTEGER PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    sender           TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('lucky', 'fixed', 'exclusive')),
    total_amount     INTEGER NOT NULL CHECK (total_amount > 0),
    count            INTEGER NOT NULL CHECK (count > 0),
    remaining_amount INTEGER NOT NULL CHECK (remaining_amount >= 0),
    remaining_count  INTEGER NOT NULL CHECK (remaining_count >= 0),
    refunded_amount  INTEGER NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0),
    seed             INTEGER NOT NULL,
    greeting         TEXT,
    password_digest  BLOB CHECK (password_digest IS NULL OR length(password_digest) = 32),
    recipient        TEXT,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL CHECK (expires_at > created_at),
    CHECK (remaining_amount + refunded_amount <= total_amount),
    CHECK (remaining_count <= count),
    CHECK (refunded_amount > 0 OR remaining_amount >= remaining_count),
    CHECK (remaining_count > 0 OR remaining_amount = 0),
    CHECK ((kind = 'exclusive') = (recipient IS NOT NULL)),
    CHECK (kind <> 'exclusive' OR count = 1),
    CHECK (kind <> 'fixed' OR total_amount % count = 0)
);
CREATE INDEX packets_by_sender ON packets (sender, seq);

-- A packet starts whole, and only after its sender paid for it.
CREATE TRIGGER packets_start_whole BEFORE INSERT ON packets BEGIN
    SELECT RAISE(ROLLBACK, 'a new packet must start whole')
    WHERE NEW.remaining_amount <> NEW.total_amount OR NEW.remaining_count <> NEW.count
       OR NEW.refunded_amount <> 0;
    SELECT RAISE(ROLLBACK, 'a packet needs its send debit')
    WHERE NOT EXISTS (SELECT 1 FROM ledger WHERE reference = 'send:' || NEW.id
                      AND user = NEW.sender AND amount = -NEW.total_amount);
END;
-- A refund happens once, after expiry, for exactly what was left, with its
-- ledger entry.
CREATE TRIGGER packets_refund_once BEFORE UPDATE OF refunded_amount ON packets BEGIN
    SELECT RAISE(ROLLBACK, 'a packet is refunded once, for what is left, with its entry')
    WHERE OLD.refunded_amount <> 0 OR NEW.remaining_amount <> 0
       OR NEW.refunded_amount <> OLD.remaining_amount
       OR NOT EXISTS (SELECT 1 FROM ledger WHERE reference = 'refund:' || NEW.id
                      AND user = NEW.sender AND amount = NEW.refunded_amount);
END;

-- One claim per packet and user (the key); share indexes follow each other
-- (the trigger), so one per index too.
CREATE TABLE claims (
    packet_seq INTEGER NOT NULL,
    user       TEXT NOT NULL,
    idx        INTEGER NOT NULL CHECK (idx >= 0),
    amount     INTEGER NOT NULL CHECK (amount >= 1),
    at         INTEGER NOT NULL,
    PRIMARY KEY (packet_seq, user)
) WITHOUT ROWID;
CREATE INDEX claims_by_user ON claims (user, at);

CREATE TRIGGER claims_allowed BEFORE INSERT ON claims BEGIN
    SELECT CASE
        WHEN p.seq IS NULL THEN RAISE(ROLLBACK, 'claim on an unknown packet')
        WHEN p.recipient IS NOT NULL AND p.recipient <> NEW.user
            THEN RAISE(ROLLBACK, 'claim by someone other than the recipient')
        WHEN NEW.at >= p.expires_at OR p.refunded_amount <> 0
            THEN RAISE(ROLLBACK, 'claim at or after expiry, or after the refund')
        WHEN NEW.idx <> p.count - p.remaining_count THEN RAISE(ROLLBACK, 'claim out of share order')
    END
    FROM (SELECT NEW.packet_seq AS wanted) LEFT JOIN packets p ON p.seq = wanted;
END;
CREATE TRIGGER claims_take AFTER INSERT ON claims BEGIN
    UPDATE packets
    SET remaining_amount = remaining_amount - NEW.amount, remaining_count = remaining_count - 1
    WHERE seq = NEW.packet_seq;
END;
CREATE TRIGGER claims_no_update BEFORE UPDATE ON claims BEGIN
    SELECT RAISE(ROLLBACK, 'claims are immutable');
END;

-- Credits for openers whose wallets live in other sets, until acknowledged.
CREATE TABLE outbox (
    reference  TEXT PRIMARY KEY,
    user       TEXT NOT NULL,
    amount     INTEGER NOT NULL CHECK (amount > 0),
    packet_seq INTEGER NOT NULL,
    at         INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER outbox_of_a_claim BEFORE INSERT ON outbox BEGIN
    SELECT RAISE(ROLLBACK, 'an outbox credit must match its claim')
    WHERE NOT EXISTS (SELECT 1 FROM claims WHERE packet_seq = NEW.packet_seq AND user = NEW.user
                      AND amount = NEW.amount);
END;

CREATE TABLE idempotency (
    user        TEXT NOT NULL,
    key         TEXT NOT NULL,
    op          TEXT NOT NULL CHECK (op IN ('deposit', 'send')),
    fingerprint TEXT NOT NULL,
    result      TEXT NOT NULL,
    PRIMARY KEY (user, op, key)
) WITHOUT ROWID;
"#];

/// Sets the connection up for durability and brings the schema up to date.
/// The page cache is 16 MiB per connection: it is memory that grows with
/// the live packets until it is full (at 64 MiB it was a third of the bytes
/// per live packet at a million), and the materializer took its
/// transactions no slower for it (`open-tables` 93k → 97k opens/s, one run
/// each; a transaction larger than the cache spills into the WAL, which WAL
/// mode allows). Statement journals stay in memory; reads map the file.
pub(crate) fn prepare(connection: &mut Connection) -> Result<(), StoreError> {
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;
             PRAGMA cache_size = -16384;
             PRAGMA temp_store = MEMORY;
             PRAGMA mmap_size = 268435456;",
        )
        .map_err(failed("configuring SQLite"))?;
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(failed("reading the schema version"))?;
    let version = usize::try_from(version).map_err(|_| StoreError::new("negative schema version"))?;
    if version > MIGRATIONS.len() {
        return Err(StoreError::new(format!(
            "the database has schema version {version}, newer than this build knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        let transaction = connection.transaction().map_err(failed("starting a migration"))?;
        transaction.execute_batch(migration).map_err(failed("migrating"))?;
        transaction
            .pragma_update(None, "user_version", (index + 1) as i64)
            .map_err(failed("recording the migration"))?;
        transaction.commit().map_err(failed("committing a migration"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use hongbao_domain::ledger::{REFUND_REF_PREFIX, SEND_REF_PREFIX, refund_ref, send_ref};

    use super::MIGRATIONS;

    /// The triggers find a packet's send and refund entries by their
    /// references, spelled in SQL; the Rust that writes those entries must
    /// spell them the same (`domain/src/ledger.rs`).
    #[test]
    fn the_sql_spells_the_ledger_references_as_the_rust_does() {
        let sql = MIGRATIONS.concat();
        for (prefix, reference) in [(SEND_REF_PREFIX, send_ref("ID")), (REFUND_REF_PREFIX, refund_ref("ID"))] {
            assert!(sql.contains(&format!("reference = '{prefix}' || NEW.id")), "{prefix} in the triggers");
            assert_eq!(reference, format!("{prefix}ID"));
        }
        let spelled = sql.matches("reference = '").count();
        assert_eq!(spelled, 2, "a reference spelled in SQL that this test does not pin");
    }
}
