//! The schema and its migrations, versioned by SQLite's `user_version`.
//! Constraints and triggers make the store a second line of defence: the
//! engine decides, but a wrong decision cannot be written.

use std::path::Path;

use hongbao_domain::SetId;
use rusqlite::{Connection, OpenFlags};

use crate::failed;
use crate::layout::set_path;
use hongbao_engine::StoreError;

/// Each migration, in order; `user_version` counts those applied.
///
/// Writes use `OR ROLLBACK` and the triggers `RAISE(ROLLBACK)`: a broken
/// invariant aborts the whole batch (the engine then recovers), and SQLite
/// needs no statement journal for the partial undo of one statement.
const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    r#"
-- Cold days (`days.rs`). A day whose packets are all settled and that is
-- older than the retention leaves these tables for a file of its own
-- (`cold/set-NNN/dYYYYMMDD.db`, written first): one transaction marks it
-- 'moving', records its entries' totals and its users' list days, deletes
-- its rows and marks it 'cold'. Rows are deleted there only, and a cold day
-- takes no writes. A packet's day is the `yyyymmdd` its id starts with; an
-- entry's is its packet's, or a deposit's UTC day (`LedgerEntry::business_day`).
CREATE TABLE cold_days (
    day   INTEGER PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('moving', 'cold'))
);

-- Per cold day, user and kind of entry: how many entries and their sum, so
-- the audit checks "balance = sum of entries" without reading the cold files.
CREATE TABLE ledger_day_totals (
    day     INTEGER NOT NULL,
    user    TEXT NOT NULL,
    kind    TEXT NOT NULL CHECK (kind IN ('deposit', 'send', 'credit', 'refund')),
    entries INTEGER NOT NULL CHECK (entries > 0),
    amount  INTEGER NOT NULL,
    PRIMARY KEY (day, user, kind)
) WITHOUT ROWID;

-- Per user, the cold days whose file holds packets they sent or shares they
-- opened in this set, with the newest and oldest of them (seq for sent, the
-- claim's time for received): a list opens only the files that can hold its
-- next items, however many days have gone cold.
CREATE TABLE cold_lists (
    user   TEXT NOT NULL,
    list   TEXT NOT NULL CHECK (list IN ('sent', 'received')),
    day    INTEGER NOT NULL,
    newest INTEGER NOT NULL,
    oldest INTEGER NOT NULL,
    PRIMARY KEY (user, list, day)
) WITHOUT ROWID;

-- Deposits by time, so the keeper finds a day's deposits without reading the
-- whole ledger (a packet's entries it finds by their references). Only
-- deposits are in it: the entries of opens pay nothing for it.
CREATE INDEX ledger_deposits_by_at ON ledger (at) WHERE packet_id IS NULL;

DROP TRIGGER ledger_no_delete;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger BEGIN
    SELECT RAISE(ROLLBACK, 'ledger entries are immutable (but for a day moving cold)')
    WHERE NOT EXISTS (SELECT 1 FROM cold_days WHERE state = 'moving' AND day = CASE WHEN OLD.packet_id IS NULL THEN CAST(strftime('%Y%m%d', OLD.at / 1000, 'unixepoch') AS INTEGER) ELSE CAST(substr(OLD.packet_id, 1, 8) AS INTEGER) END);
END;
CREATE TRIGGER packets_no_delete BEFORE DELETE ON packets BEGIN
    SELECT RAISE(ROLLBACK, 'packets are deleted only when their day moves cold')
    WHERE NOT EXISTS (SELECT 1 FROM cold_days WHERE state = 'moving' AND day = CAST(substr(OLD.id, 1, 8) AS INTEGER));
END;
-- (Claims go before their packets, so their packet still names the day.)
CREATE TRIGGER claims_no_delete BEFORE DELETE ON claims BEGIN
    SELECT RAISE(ROLLBACK, 'claims are deleted only when their day moves cold')
    WHERE NOT EXISTS (SELECT 1 FROM packets p JOIN cold_days d ON d.day = CAST(substr(p.id, 1, 8) AS INTEGER)
                      WHERE p.seq = OLD.packet_seq AND d.state = 'moving');
END;

-- A cold day takes no writes: a set whose tables lag its journal by more
-- than the keeper's margin halts here rather than write beside a moved day.
-- (A claim, a refund or an outbox credit of a cold day finds no packet or
-- claim, and is refused for that.)
CREATE TRIGGER ledger_day_not_cold BEFORE INSERT ON ledger BEGIN
    SELECT RAISE(ROLLBACK, 'day ' || d.day || ' is cold: it takes no writes')
    FROM cold_days d WHERE d.day = CASE WHEN NEW.packet_id IS NULL THEN CAST(strftime('%Y%m%d', NEW.at / 1000, 'unixepoch') AS INTEGER) ELSE CAST(substr(NEW.packet_id, 1, 8) AS INTEGER) END;
END;
CREATE TRIGGER packets_day_not_cold BEFORE INSERT ON packets BEGIN
    SELECT RAISE(ROLLBACK, 'day ' || d.day || ' is cold: it takes no writes')
    FROM cold_days d WHERE d.day = CAST(substr(NEW.id, 1, 8) AS INTEGER);
END;
"#,
    r#"
-- Group packets (`hongbao_domain::group`): the group's id and its members,
-- the sorted names joined by commas, once per packet. Only a member may
-- claim a share of one (a name never holds a comma, so the search is exact).
ALTER TABLE packets ADD COLUMN group_id TEXT;
ALTER TABLE packets ADD COLUMN members TEXT CHECK ((members IS NULL) = (group_id IS NULL) AND members <> '');

DROP TRIGGER claims_allowed;
CREATE TRIGGER claims_allowed BEFORE INSERT ON claims BEGIN
    SELECT CASE
        WHEN p.seq IS NULL THEN RAISE(ROLLBACK, 'claim on an unknown packet')
        WHEN p.recipient IS NOT NULL AND p.recipient <> NEW.user
            THEN RAISE(ROLLBACK, 'claim by someone other than the recipient')
        WHEN p.members IS NOT NULL
             AND (instr(NEW.user, ',') > 0 OR instr(',' || p.members || ',', ',' || NEW.user || ',') = 0)
            THEN RAISE(ROLLBACK, 'claim by someone outside the packet''s group')
        WHEN NEW.at >= p.expires_at OR p.refunded_amount <> 0
            THEN RAISE(ROLLBACK, 'claim at or after expiry, or after the refund')
        WHEN NEW.idx <> p.count - p.remaining_count THEN RAISE(ROLLBACK, 'claim out of share order')
    END
    FROM (SELECT NEW.packet_seq AS wanted) LEFT JOIN packets p ON p.seq = wanted;
END;
"#,
    r#"
-- Withdrawals (`hongbao_domain::withdrawal`): asked for pending, with the
-- debit of their money (`withdrawal:<id>`); settled once, completed, or
-- failed with their money's return (`withdrawal_return:<id>`). Kept for
-- good (their entries go cold with their day; the rows stay). The ledger's
-- new kinds are let in by `widen_checks` (below), in the same transaction.
CREATE TABLE withdrawals (
    id         TEXT PRIMARY KEY,
    user       TEXT NOT NULL,
    amount     INTEGER NOT NULL CHECK (amount > 0),
    status     TEXT NOT NULL CHECK (status IN ('pending', 'completed', 'failed')),
    created_at INTEGER NOT NULL,
    settled_at INTEGER,
    CHECK ((status = 'pending') = (settled_at IS NULL))
) WITHOUT ROWID;
CREATE INDEX withdrawals_pending ON withdrawals (id) WHERE status = 'pending';

CREATE TRIGGER withdrawals_start BEFORE INSERT ON withdrawals BEGIN
    SELECT RAISE(ROLLBACK, 'a withdrawal starts pending, after its debit')
    WHERE NEW.status <> 'pending'
       OR NOT EXISTS (SELECT 1 FROM ledger WHERE reference = 'withdrawal:' || NEW.id
                      AND user = NEW.user AND amount = -NEW.amount AND kind = 'withdrawal');
END;
CREATE TRIGGER withdrawals_settle BEFORE UPDATE ON withdrawals BEGIN
    SELECT RAISE(ROLLBACK, 'a withdrawal is settled once, and a failed one with its return')
    WHERE OLD.status <> 'pending' OR NEW.status = 'pending'
       OR NEW.id <> OLD.id OR NEW.user <> OLD.user OR NEW.amount <> OLD.amount OR NEW.created_at <> OLD.created_at
       OR (NEW.status = 'failed') <> EXISTS (SELECT 1 FROM ledger WHERE reference = 'withdrawal_return:' || NEW.id
                                              AND user = NEW.user AND amount = NEW.amount
                                              AND kind = 'withdrawal_return');
END;
CREATE TRIGGER withdrawals_kept BEFORE DELETE ON withdrawals BEGIN
    SELECT RAISE(ROLLBACK, 'withdrawals are kept');
END;

-- Deposits taken back by an admin: one row each (kept for good, so a
-- deposit is reversed once even after its entries went cold), after the
-- reversal's entry, of the deposit's amount.
CREATE TABLE reversals (
    deposit TEXT PRIMARY KEY,
    user    TEXT NOT NULL,
    amount  INTEGER NOT NULL CHECK (amount > 0),
    at      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER reversals_entry BEFORE INSERT ON reversals BEGIN
    SELECT RAISE(ROLLBACK, 'a reversal needs its entry, of its deposit''s amount')
    WHERE NOT EXISTS (SELECT 1 FROM ledger WHERE reference = 'reversal:' || NEW.deposit
                      AND user = NEW.user AND amount = -NEW.amount AND kind = 'reversal')
       OR NOT EXISTS (SELECT 1 FROM ledger WHERE reference = NEW.deposit
                      AND user = NEW.user AND amount = NEW.amount AND kind = 'deposit');
END;
CREATE TRIGGER reversals_kept BEFORE UPDATE ON reversals BEGIN
    SELECT RAISE(ROLLBACK, 'reversals are immutable');
END;

-- Frozen accounts (`hongbao_engine::frozen`): a row while an admin's freeze
-- lasts.
CREATE TABLE frozen_accounts (
    user  TEXT PRIMARY KEY,
    since INTEGER NOT NULL
) WITHOUT ROWID;

-- Bills (`GET /v1/ledger`): each entry keeps the balance it left, checked
-- as the entry applies it (NULL only for entries from before); a user's
-- entries by time; and the cold days that hold a user's entries, as for
-- the other lists (the days already cold are listed by their totals, their
-- whole day as the span).
ALTER TABLE ledger ADD COLUMN balance_after INTEGER CHECK (balance_after IS NULL OR balance_after >= 0);
CREATE INDEX ledger_by_user ON ledger (user, at);
DROP TRIGGER ledger_credits;
CREATE TRIGGER ledger_credits AFTER INSERT ON ledger WHEN NEW.amount > 0 BEGIN
    INSERT INTO accounts (user, balance) VALUES (NEW.user, NEW.amount)
    ON CONFLICT (user) DO UPDATE SET balance = balance + excluded.balance;
    SELECT RAISE(ROLLBACK, 'an entry''s balance_after is not the balance it left')
    WHERE NEW.balance_after IS NOT NULL AND NEW.balance_after <> (SELECT balance FROM accounts WHERE user = NEW.user);
END;
DROP TRIGGER ledger_debits;
CREATE TRIGGER ledger_debits AFTER INSERT ON ledger WHEN NEW.amount < 0 BEGIN
    SELECT RAISE(ROLLBACK, 'a debit of an account that does not exist')
    WHERE NOT EXISTS (SELECT 1 FROM accounts WHERE user = NEW.user);
    UPDATE accounts SET balance = balance + NEW.amount WHERE user = NEW.user;
    SELECT RAISE(ROLLBACK, 'an entry''s balance_after is not the balance it left')
    WHERE NEW.balance_after IS NOT NULL AND NEW.balance_after <> (SELECT balance FROM accounts WHERE user = NEW.user);
END;
INSERT INTO cold_lists (user, list, day, newest, oldest)
SELECT user, 'ledger', day,
       CAST((julianday(printf('%04d-%02d-%02d', day / 10000, day / 100 % 100, day % 100)) - 2440587.5) * 86400000
            AS INTEGER) + 86399999,
       CAST((julianday(printf('%04d-%02d-%02d', day / 10000, day / 100 % 100, day % 100)) - 2440587.5) * 86400000
            AS INTEGER)
FROM ledger_day_totals GROUP BY day, user;
"#,
];

/// The migration (`MIGRATIONS[WITHDRAWALS_VERSION - 1]`) whose ledger kinds
/// (and bills' lists) need wider CHECKs than the tables were made with:
/// widened just before it.
pub(crate) const WITHDRAWALS_VERSION: i64 = 4;

/// The CHECKs the withdrawals' migration widens: (table, as made, as
/// widened). Each new CHECK holds for every row the old one let in.
const WIDENED: &[(&str, &str, &str)] = &[
    (
        "ledger",
        "CHECK (kind IN ('deposit', 'send', 'credit', 'refund'))",
        "CHECK (kind IN ('deposit', 'send', 'credit', 'refund', 'withdrawal', 'withdrawal_return', 'reversal'))",
    ),
    (
        "ledger",
        "CHECK ((kind = 'send') = (amount < 0))",
        "CHECK ((kind IN ('send', 'withdrawal', 'reversal')) = (amount < 0))",
    ),
    (
        "ledger",
        "CHECK ((kind = 'deposit') = (packet_id IS NULL))",
        "CHECK ((kind IN ('send', 'credit', 'refund')) = (packet_id IS NOT NULL))",
    ),
    (
        "ledger_day_totals",
        "CHECK (kind IN ('deposit', 'send', 'credit', 'refund'))",
        "CHECK (kind IN ('deposit', 'send', 'credit', 'refund', 'withdrawal', 'withdrawal_return', 'reversal'))",
    ),
    ("idempotency", "CHECK (op IN ('deposit', 'send'))", "CHECK (op IN ('deposit', 'send', 'withdraw'))"),
    ("cold_lists", "CHECK (list IN ('sent', 'received'))", "CHECK (list IN ('sent', 'received', 'ledger'))"),
];

/// Widens CHECK constraints in place, as SQLite documents for a change that
/// leaves every stored row valid ("Making Other Kinds Of Table Schema
/// Changes"): the tables' SQL is rewritten under `writable_schema` and the
/// schema version moved on, so every connection reads the new SQL. No row
/// is copied: rebuilding the ledger would rewrite every entry. Each rewrite
/// must find its CHECK exactly once, or the migration fails whole.
fn widen_checks(transaction: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    let schema_version: i64 =
        transaction.query_row("PRAGMA schema_version", [], |row| row.get(0)).map_err(failed("reading the schema"))?;
    transaction.pragma_update(None, "writable_schema", true).map_err(failed("opening the schema"))?;
    let rewritten = (|| {
        for (table, old, new) in WIDENED {
            let sql: String = transaction
                .query_row("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1", [table], |row| {
                    row.get(0)
                })
                .map_err(failed("reading a table's SQL"))?;
            if sql.matches(old).count() != 1 {
                return Err(StoreError::new(format!("table {table} does not have the CHECK {old} once")));
            }
            transaction
                .execute(
                    "UPDATE sqlite_schema SET sql = ?2 WHERE type = 'table' AND name = ?1",
                    rusqlite::params![table, sql.replace(old, new)],
                )
                .map_err(failed("rewriting a table's SQL"))?;
        }
        Ok(())
    })();
    transaction.pragma_update(None, "writable_schema", false).map_err(failed("closing the schema"))?;
    rewritten?;
    transaction.pragma_update(None, "schema_version", schema_version + 1).map_err(failed("moving the schema on"))
}

/// The schema version that has cold days (`MIGRATIONS[1]`).
pub(crate) const COLD_DAYS_VERSION: i64 = 2;
/// The schema version that has group packets (`MIGRATIONS[2]`).
pub(crate) const GROUPS_VERSION: i64 = 3;

/// The day (`yyyymmdd`) of the ledger entry `row` in SQL: its packet's, or a
/// deposit's UTC day (`LedgerEntry::business_day`, pinned by a test below;
/// for instants after 1970, where integer division floors).
pub(crate) fn entry_day_sql(row: &str) -> String {
    format!(
        "CASE WHEN {row}.packet_id IS NULL THEN CAST(strftime('%Y%m%d', {row}.at / 1000, 'unixepoch') AS INTEGER) \
         ELSE CAST(substr({row}.packet_id, 1, 8) AS INTEGER) END"
    )
}

/// The day (`yyyymmdd`) of the packet `row` in SQL: its id's first part.
pub(crate) fn packet_day_sql(row: &str) -> String {
    format!("CAST(substr({row}.id, 1, 8) AS INTEGER)")
}

/// The range of ids (or of references `prefix` + id) of a day's packets:
/// every id of day D starts `D-`, and `.` sorts right after `-`, so the
/// range is one walk of the index.
pub(crate) fn day_range(prefix: &str, day: u32) -> (String, String) {
    (format!("{prefix}{day}-"), format!("{prefix}{day}."))
}

/// The schema version this build reads and writes: the migrations it knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Sets the connection up for durability and checks its schema: a new
/// database (version 0) gets the whole schema at once; an older one is
/// refused, since migrating is an operator's explicit step (`migrate`,
/// through `hongbao migrate` or `serve --migrate`), and so is a newer one.
/// The page cache is 16 MiB per connection: it is memory that grows with
/// the live packets until it is full (at 64 MiB it was a third of the bytes
/// per live packet at a million), and the materializer took its
/// transactions no slower for it (`open-tables` 93k → 97k opens/s, one run
/// each; a transaction larger than the cache spills into the WAL, which WAL
/// mode allows). Statement journals stay in memory; reads map the file.
pub(crate) fn prepare(connection: &mut Connection) -> Result<(), StoreError> {
    configure(connection)?;
    match version(connection)? {
        0 => migrate(connection).map(drop),
        SCHEMA_VERSION => Ok(()),
        version => Err(StoreError::new(unusable(version))),
    }
}

/// Why a database of `version` cannot be served by this build.
pub(crate) fn unusable(version: i64) -> String {
    if version > SCHEMA_VERSION {
        format!("the database has schema version {version}, newer than this build knows ({SCHEMA_VERSION})")
    } else {
        format!(
            "the database has schema version {version} and this build needs {SCHEMA_VERSION}: \
             migrate it first (`hongbao migrate`, or `hongbao serve --migrate`)"
        )
    }
}

fn configure(connection: &Connection) -> Result<(), StoreError> {
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
        .map_err(failed("configuring SQLite"))
}

pub(crate) fn version(connection: &Connection) -> Result<i64, StoreError> {
    connection.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(failed("reading the schema version"))
}

/// The schema version of `set`'s database in the data directory `dir`
/// (0: no database yet, a set that is new), read without changing it.
pub fn schema_version(dir: &Path, set: SetId) -> Result<i64, StoreError> {
    let path = set_path(dir, set);
    if !path.exists() {
        return Ok(0);
    }
    let connection = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| StoreError::new(format!("cannot open {}: {e}", path.display())))?;
    version(&connection)
}

/// Brings `set`'s database in the data directory `dir` to this build's
/// schema (`migrate`), which nothing else may have open; answers the
/// version it was at.
pub fn migrate_set(dir: &Path, set: SetId) -> Result<i64, StoreError> {
    let path = set_path(dir, set);
    let mut connection =
        Connection::open(&path).map_err(|e| StoreError::new(format!("cannot open {}: {e}", path.display())))?;
    configure(&connection)?;
    migrate(&mut connection)
}

/// Applies every migration past the database's version in one
/// transaction, so the database is at its old version or at the new one,
/// never between; answers the version it was at. A newer version than this
/// build knows is refused.
pub(crate) fn migrate(connection: &mut Connection) -> Result<i64, StoreError> {
    let transaction = connection.transaction().map_err(failed("starting a migration"))?;
    let from = version(&transaction)?;
    let skip = usize::try_from(from).map_err(|_| StoreError::new("negative schema version"))?;
    if from > SCHEMA_VERSION {
        return Err(StoreError::new(unusable(from)));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(skip) {
        if index + 1 == WITHDRAWALS_VERSION as usize {
            widen_checks(&transaction)?;
        }
        transaction.execute_batch(migration).map_err(failed("migrating"))?;
    }
    transaction.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(failed("recording the migration"))?;
    transaction.commit().map_err(failed("committing a migration"))?;
    Ok(from)
}

#[cfg(test)]
mod tests {
    use hongbao_domain::ledger::{
        EntryKind, REFUND_REF_PREFIX, REVERSAL_REF_PREFIX, SEND_REF_PREFIX, WITHDRAWAL_REF_PREFIX,
        WITHDRAWAL_RETURN_REF_PREFIX, refund_ref, reversal_ref, send_ref, withdrawal_ref, withdrawal_return_ref,
    };
    use hongbao_domain::time::DAY_MS;
    use hongbao_domain::{Millis, PacketId, SetId, UserId};
    use hongbao_engine::LedgerEntry;
    use rusqlite::{Connection, params};

    use super::{
        COLD_DAYS_VERSION, GROUPS_VERSION, MIGRATIONS, day_range, entry_day_sql, migrate, packet_day_sql, prepare,
    };

    /// The triggers find a packet's send and refund entries by their
    /// references, spelled in SQL; the Rust that writes those entries must
    /// spell them the same (`domain/src/ledger.rs`).
    #[test]
    fn the_sql_spells_the_ledger_references_as_the_rust_does() {
        let sql = MIGRATIONS.concat();
        for (prefix, reference) in [
            (SEND_REF_PREFIX, send_ref("ID")),
            (REFUND_REF_PREFIX, refund_ref("ID")),
            (WITHDRAWAL_REF_PREFIX, withdrawal_ref("ID")),
            (WITHDRAWAL_RETURN_REF_PREFIX, withdrawal_return_ref("ID")),
        ] {
            assert!(sql.contains(&format!("reference = '{prefix}' || NEW.id")), "{prefix} in the triggers");
            assert_eq!(reference, format!("{prefix}ID"));
        }
        assert!(sql.contains(&format!("reference = '{REVERSAL_REF_PREFIX}' || NEW.deposit")));
        assert_eq!(reversal_ref("D"), format!("{REVERSAL_REF_PREFIX}D"));
        let spelled = sql.matches("reference = '").count();
        assert_eq!(spelled, 5, "a reference spelled in SQL that this test does not pin");
        for kind in hongbao_domain::ledger::EntryKind::ALL {
            assert!(super::WIDENED[0].2.contains(&format!("'{}'", kind.as_str())), "{kind:?} in the ledger's CHECK");
        }
    }

    /// The triggers and the day keeper file rows under their day in SQL;
    /// the Rust that files them (`LedgerEntry::business_day`, a packet id's
    /// day) must agree, around midnights and leap days.
    #[test]
    fn the_sql_files_rows_under_the_days_the_rust_does() {
        let sql = MIGRATIONS.concat();
        for row in ["NEW", "OLD"] {
            assert!(sql.contains(&entry_day_sql(row)), "an entry's day of {row} in the triggers");
            assert!(sql.contains(&packet_day_sql(row)), "a packet's day of {row} in the triggers");
        }
        assert!(sql.contains(&packet_day_sql("p")));
        assert_eq!(sql.matches("strftime(").count(), 2, "a day spelled in SQL that this test does not pin");
        assert_eq!(sql.matches("substr(").count(), 5, "a day spelled in SQL that this test does not pin");
        let connection = Connection::open_in_memory().unwrap();
        let midnight = 1_485_561_600_000; // 2017-01-28
        let instants = [
            0,
            1,
            DAY_MS - 1,
            DAY_MS,
            midnight - 1,
            midnight,
            midnight + 999,
            1_709_164_800_000 + 5,
            4_102_444_799_999,
        ];
        let packet = PacketId::new(20_240_229, SetId(3), 9, 7);
        for at in instants {
            for packet_id in [None, Some(packet)] {
                let kind = if packet_id.is_some() { EntryKind::Refund } else { EntryKind::Deposit };
                let user = UserId::parse("alice").unwrap();
                let entry = LedgerEntry {
                    reference: "r".into(),
                    user,
                    amount: 1,
                    kind,
                    packet_id,
                    at: Millis(at),
                    balance_after: None,
                };
                let sql = format!("SELECT {} FROM (SELECT ?1 AS packet_id, ?2 AS at) e", entry_day_sql("e"));
                let id = packet_id.map(|id| id.to_string());
                let day: u32 = connection.query_row(&sql, params![id, at], |row| row.get(0)).unwrap();
                assert_eq!(day, entry.business_day(), "{entry:?}");
            }
        }
        let sql = format!("SELECT {} FROM (SELECT ?1 AS id) p", packet_day_sql("p"));
        let day: u32 = connection.query_row(&sql, params![packet.to_string()], |row| row.get(0)).unwrap();
        assert_eq!(day, packet.day);
        let (from, to) = day_range("claim:", packet.day);
        let reference = hongbao_domain::ledger::claim_ref(packet, "bob");
        assert!(from < reference && reference < to, "{reference} in [{from}, {to})");
        let next = PacketId::new(20_240_301, SetId(0), 1, 1);
        assert!(to < hongbao_domain::ledger::claim_ref(next, "bob"), "the next day's entries are past the range");
        assert!(day_range("", packet.day).1 < next.to_string(), "the next day's packets are past the range");
    }

    /// A database made by a build before cold days is refused as it is,
    /// takes the new migration in place when told to, its rows kept, and is
    /// guarded as a new one is.
    #[test]
    fn a_database_of_the_first_schema_migrates_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut connection = Connection::open(dir.path().join("set-000.db")).unwrap();
        connection.execute_batch(MIGRATIONS[0]).unwrap();
        connection.pragma_update(None, "user_version", 1).unwrap();
        connection
            .execute_batch(
                "INSERT INTO ledger (reference, user, amount, kind, packet_id, at) \
                 VALUES ('deposit:alice:key:1', 'alice', 500, 'deposit', NULL, 1000)",
            )
            .unwrap();
        let refused = prepare(&mut connection).unwrap_err().message;
        assert!(refused.contains("hongbao migrate"), "{refused}");
        assert_eq!(migrate(&mut connection).unwrap(), 1);
        let version: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap();
        assert_eq!(version, super::SCHEMA_VERSION);
        assert!(version > COLD_DAYS_VERSION);
        let balance: i64 = connection.query_row("SELECT balance FROM accounts", [], |row| row.get(0)).unwrap();
        assert_eq!(balance, 500);
        let deposits: i64 = connection
            .query_row("SELECT count(*) FROM ledger WHERE packet_id IS NULL AND at >= 0", [], |row| row.get(0))
            .unwrap();
        assert_eq!(deposits, 1, "the deposit is in the new index");
        let error = connection.execute("DELETE FROM ledger", []).unwrap_err().to_string();
        assert!(error.contains("immutable"), "{error}");
        prepare(&mut connection).unwrap();
        connection.pragma_update(None, "user_version", 99).unwrap();
        let newer = prepare(&mut connection).unwrap_err().message;
        assert!(newer.contains("newer than this build knows"), "{newer}");
        assert!(migrate(&mut connection).is_err(), "a newer version is never migrated");
    }

    /// A database from before group packets takes the migration with its
    /// packets (none in a group), and then refuses a claim by anyone
    /// outside a packet's group.
    #[test]
    fn a_database_from_before_groups_migrates_and_then_guards_them() {
        let mut connection = Connection::open_in_memory().unwrap();
        connection.execute_batch(&MIGRATIONS[..2].concat()).unwrap();
        connection.pragma_update(None, "user_version", COLD_DAYS_VERSION).unwrap();
        let packet = |seq: i64, group: &str| {
            format!(
                "INSERT INTO ledger (reference, user, amount, kind, packet_id, at) \
                 VALUES ('send:20270128-0-{seq}-1', 'alice', -200, 'send', '20270128-0-{seq}-1', 1000); \
                 INSERT INTO packets (seq, id, sender, kind, total_amount, count, remaining_amount, remaining_count, \
                 seed, created_at, expires_at{group}) VALUES ({seq}, '20270128-0-{seq}-1', 'alice', 'fixed', 200, 2, \
                 200, 2, 7, 1000, 9000000000000{members})",
                group = if group.is_empty() { "" } else { ", group_id, members" },
                members = if group.is_empty() { String::new() } else { format!(", 'family', '{group}'") },
            )
        };
        connection
            .execute_batch(&format!(
                "INSERT INTO ledger (reference, user, amount, kind, packet_id, at) \
                 VALUES ('deposit:alice:key:1', 'alice', 1000, 'deposit', NULL, 1000); {}",
                packet(1, "")
            ))
            .unwrap();
        assert_eq!(migrate(&mut connection).unwrap(), COLD_DAYS_VERSION);
        let version: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap();
        assert_eq!(version, super::SCHEMA_VERSION);
        assert!(version >= GROUPS_VERSION);
        let groups: i64 =
            connection.query_row("SELECT count(*) FROM packets WHERE group_id IS NULL", [], |row| row.get(0)).unwrap();
        assert_eq!(groups, 1, "the packet from before is in no group");
        connection.execute_batch(&packet(2, "bob,carol")).unwrap();
        let claim = |user: &str| {
            format!(
                "INSERT OR ROLLBACK INTO claims (packet_seq, user, idx, amount, at) VALUES (2, '{user}', 0, 100, 2000)"
            )
        };
        for outsider in ["dave", "bo", "bob,carol", "alice"] {
            let refused = connection.execute_batch(&claim(outsider)).unwrap_err().to_string();
            assert!(refused.contains("outside the packet's group"), "{outsider}: {refused}");
        }
        connection.execute_batch(&claim("carol")).unwrap();
        let half = connection.execute_batch(&packet(3, "bob").replace("'bob')", "NULL)"));
        assert!(half.is_err(), "a group without its members is refused");
    }

    /// A withdrawal starts pending after its debit, and is settled once: a
    /// failed one with its return. The ledger takes the new kinds, with
    /// their signs, in the connection that migrated (the schema reloaded).
    #[test]
    fn withdrawals_move_money_only_as_their_entries_say() {
        let mut connection = Connection::open_in_memory().unwrap();
        migrate(&mut connection).unwrap();
        let run = |sql: &str| connection.execute_batch(sql).map_err(|e| e.to_string());
        run("INSERT INTO ledger (reference, user, amount, kind, packet_id, at) \
             VALUES ('deposit:alice:key:1', 'alice', 1000, 'deposit', NULL, 1000)")
        .unwrap();
        let withdrawal = "INSERT OR ROLLBACK INTO withdrawals (id, user, amount, status, created_at) \
                          VALUES ('wd-1', 'alice', 300, 'pending', 2000)";
        assert!(run(withdrawal).unwrap_err().contains("after its debit"));
        let debit = |amount: i64| {
            format!(
                "INSERT OR ROLLBACK INTO ledger (reference, user, amount, kind, packet_id, at) \
                 VALUES ('withdrawal:wd-1', 'alice', {amount}, 'withdrawal', NULL, 2000)"
            )
        };
        assert!(run(&debit(300)).unwrap_err().contains("CHECK"), "a withdrawal is a debit");
        assert!(run(&debit(-2000)).is_err(), "never past the balance");
        run(&debit(-300)).unwrap();
        run(withdrawal).unwrap();
        let settle = |status: &str| {
            format!("UPDATE OR ROLLBACK withdrawals SET status = '{status}', settled_at = 3000 WHERE id = 'wd-1'")
        };
        assert!(run(&settle("failed")).unwrap_err().contains("with its return"));
        run("INSERT INTO ledger (reference, user, amount, kind, packet_id, at) \
             VALUES ('withdrawal_return:wd-1', 'alice', 300, 'withdrawal_return', NULL, 3000)")
        .unwrap();
        assert!(run(&settle("completed")).unwrap_err().contains("with its return"), "returned, so not completed");
        run(&settle("failed")).unwrap();
        assert!(run(&settle("completed")).unwrap_err().contains("settled once"));
        assert!(run("DELETE FROM withdrawals").unwrap_err().contains("kept"));
        let balance: i64 = connection.query_row("SELECT balance FROM accounts", [], |row| row.get(0)).unwrap();
        assert_eq!(balance, 1000);
        run("INSERT INTO idempotency (user, key, op, fingerprint, result) VALUES ('alice', 'k', 'withdraw', '300', 'wd-1')")
            .unwrap();
    }
}
