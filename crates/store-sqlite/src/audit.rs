//! Reads a set whole, as raw rows, for `hongbao audit`: its tables, with its
//! journal replayed past them. After a crash (SIGKILL) the tables lag the
//! journal; the audit copies the database into memory, materializes the
//! journal's records past the tables' position into the copy (the same
//! writes and constraints as the materializer), and reads the copy. Nothing
//! in the directory is written: a torn journal tail is left for the next
//! start to cut, and a read-only directory can be audited.
//!
//! Cold days are counted by their ledger totals (`ledger_day_totals`,
//! written in the transaction that moved the day): the audit reads the hot
//! tables whole and need not read all history every time. With
//! `ColdDays::Rows` it reads every cold day's file too, checks every
//! invariant on its rows, and checks that the totals (and the users' list
//! days, `cold_lists`) are what the rows make.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hongbao_domain::SetId;
use hongbao_domain::audit::{AccountRow, ClaimRow, ColdTotalRow, LedgerRow, OutboxRow, PacketRow, SetSnapshot};
use hongbao_engine::journal::replay;
use hongbao_engine::{BATCHES_PER_TRANSACTION_MAX, ColdDays, JournalError, Store, StoreError};
use hongbao_journal::FileJournal;
use rusqlite::backup::Backup;
use rusqlite::{Connection, OpenFlags, Row, params};

use crate::cold::open_cold_file;
use crate::layout::{cold_day_path, journal_path, set_path};
use crate::schema::{COLD_DAYS_VERSION, GROUPS_VERSION, WITHDRAWALS_VERSION, entry_day_sql, packet_day_sql};
use crate::writer::{SqliteStore, journal_position};
use crate::{failed, open_immutable};

fn rows<T>(
    connection: &Connection,
    sql: &str,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    rows_of(connection, sql, [], map)
}

fn rows_of<T>(
    connection: &Connection,
    sql: &str,
    parameters: impl rusqlite::Params,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    connection
        .prepare(sql)
        .and_then(|mut statement| statement.query_map(parameters, map)?.collect())
        .map_err(failed("reading for the audit"))
}

/// Opens a set's database in a stopped data directory to read it. Without a
/// WAL beside it (a clean stop removes it) the file alone is the whole
/// database and nothing writes it while the directory is locked, so it opens
/// immutable: no `-shm` or `-wal` is made, and a read-only directory (a
/// backup, a full or failed disk remounted read-only) can be read. With a
/// WAL (after a crash), SQLite reads the WAL too, as it must.
pub(crate) fn open_stopped(path: &Path) -> rusqlite::Result<Connection> {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    if wal.exists() {
        return Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY);
    }
    open_immutable(path)
}

/// Everything one set holds, read from a stopped data directory: its
/// tables, with its journal's records past them applied, and its cold days
/// as `cold` says.
pub fn snapshot(dir: &Path, set: SetId, cold: ColdDays) -> Result<SetSnapshot, StoreError> {
    let path = set_path(dir, set);
    if !path.exists() {
        return Err(StoreError::new(format!("{} is missing", path.display())));
    }
    let connection =
        open_stopped(&path).map_err(|e| StoreError::new(format!("cannot open {}: {e}", path.display())))?;
    let copy = replayed_copy(dir, set, &connection)?;
    let tables = copy.as_ref().map_or(&connection, SqliteStore::connection);
    let mut snapshot = SetSnapshot { set: set.0, ..SetSnapshot::default() };
    let version: i64 =
        tables.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(failed("reading the schema version"))?;
    read_hot_rows(tables, &mut snapshot)?;
    // A database from before groups (never served by this build) has no
    // packet in one.
    let members = if version < GROUPS_VERSION { "NULL" } else { "members" };
    read_day_rows(tables, members, &mut snapshot)?;
    if version >= WITHDRAWALS_VERSION {
        snapshot.withdrawals = crate::withdrawals::audit_rows(tables)?;
    }
    // A database of the first schema has no cold days.
    if version < COLD_DAYS_VERSION {
        return Ok(snapshot);
    }
    match cold {
        ColdDays::Totals => snapshot.cold = read_cold_totals(tables)?,
        ColdDays::Rows => read_cold_days(dir, set, tables, &mut snapshot)?,
    }
    Ok(snapshot)
}

/// A copy of the tables in memory with the journal's records past them
/// applied; `None` when the tables hold the whole journal.
fn replayed_copy(dir: &Path, set: SetId, connection: &Connection) -> Result<Option<SqliteStore>, StoreError> {
    let position = journal_position(connection)?;
    let mut journal =
        FileJournal::open_read_only(&journal_path(dir, set)).map_err(|e| StoreError::new(e.to_string()))?;
    let mut copy: Option<SqliteStore> = None;
    replay(&mut journal, position, BATCHES_PER_TRANSACTION_MAX, &mut |batches| {
        let store = match &mut copy {
            Some(store) => store,
            None => copy.insert(in_memory_copy(connection, dir, set).map_err(|e| JournalError::Io(e.message))?),
        };
        let why = |e: StoreError| format!("the journal does not apply over the tables: {}", e.message);
        store.materialize(batches).map_err(|e| JournalError::Invalid { position: batches[0].position, why: why(e) })
    })
    .map_err(|e| StoreError::new(format!("set {set}: replaying the journal: {e}")))?;
    Ok(copy)
}

/// The set's database copied into memory, to replay the journal into.
fn in_memory_copy(connection: &Connection, dir: &Path, set: SetId) -> Result<SqliteStore, StoreError> {
    let mut copy = Connection::open_in_memory().map_err(failed("opening a copy in memory"))?;
    Backup::new(connection, &mut copy)
        .and_then(|backup| backup.run_to_completion(1024, Duration::ZERO, None))
        .map_err(failed("copying the database into memory"))?;
    Ok(SqliteStore::over(copy, dir, set))
}

/// The rows only the hot tables hold: accounts and the outbox.
fn read_hot_rows(connection: &Connection, snapshot: &mut SetSnapshot) -> Result<(), StoreError> {
    snapshot.accounts.extend(rows(connection, "SELECT user, balance FROM accounts", |row| {
        Ok(AccountRow { user: row.get(0)?, balance: row.get(1)? })
    })?);
    snapshot.outbox.extend(rows(connection, "SELECT reference, user, amount FROM outbox", |row| {
        Ok(OutboxRow { reference: row.get(0)?, user: row.get(1)?, amount: row.get(2)? })
    })?);
    Ok(())
}

/// The ledger entries, packets and claims of `connection`: the hot tables or
/// a cold day's file (the same tables and columns).
fn read_day_rows(connection: &Connection, members: &str, snapshot: &mut SetSnapshot) -> Result<(), StoreError> {
    snapshot.ledger.extend(rows(connection, "SELECT reference, user, amount, kind FROM ledger", |row| {
        Ok(LedgerRow { reference: row.get(0)?, user: row.get(1)?, amount: row.get(2)?, kind: row.get(3)? })
    })?);
    let packets = format!(
        "SELECT id, sender, kind, total_amount, count, remaining_amount, remaining_count, refunded_amount, \
         seed, recipient, expires_at, {members} FROM packets"
    );
    snapshot.packets.extend(rows(connection, &packets, |row| {
        Ok(PacketRow {
            id: row.get(0)?,
            sender: row.get(1)?,
            kind: row.get(2)?,
            total_amount: row.get(3)?,
            count: row.get(4)?,
            remaining_amount: row.get(5)?,
            remaining_count: row.get(6)?,
            refunded_amount: row.get(7)?,
            seed: row.get::<_, i64>(8)? as u64,
            recipient: row.get(9)?,
            expires_at: row.get(10)?,
            members: row.get(11)?,
        })
    })?);
    snapshot.claims.extend(rows(
        connection,
        "SELECT COALESCE(p.id, 'missing packet seq ' || c.packet_seq), c.user, c.idx, c.amount \
         FROM claims c LEFT JOIN packets p ON p.seq = c.packet_seq",
        |row| Ok(ClaimRow { packet_id: row.get(0)?, user: row.get(1)?, index: row.get(2)?, amount: row.get(3)? }),
    )?);
    Ok(())
}

fn read_cold_totals(connection: &Connection) -> Result<Vec<ColdTotalRow>, StoreError> {
    rows(connection, "SELECT day, user, kind, entries, amount FROM ledger_day_totals", |row| {
        Ok(ColdTotalRow {
            day: row.get(0)?,
            user: row.get(1)?,
            kind: row.get(2)?,
            entries: row.get(3)?,
            amount: row.get(4)?,
        })
    })
}

/// What a cold day records of its rows, keyed by (user, kind) for the
/// ledger totals and (user, list) for the list days: two counts each
/// (entries and amount; newest and oldest).
type Recorded = BTreeMap<(u32, String, String), (i64, i64)>;

/// Every cold day's rows, read from its file into `snapshot`, and what the
/// set recorded of them checked against them (into `snapshot.problems`).
fn read_cold_days(dir: &Path, set: SetId, tables: &Connection, snapshot: &mut SetSnapshot) -> Result<(), StoreError> {
    let states = rows(tables, "SELECT day, state FROM cold_days ORDER BY day", |row| {
        Ok((row.get::<_, u32>(0)?, row.get::<_, String>(1)?))
    })?;
    let pair = |row: &Row<'_>| Ok(((row.get(0)?, row.get(1)?, row.get(2)?), (row.get(3)?, row.get(4)?)));
    let totals: Recorded =
        rows(tables, "SELECT day, user, kind, entries, amount FROM ledger_day_totals", pair)?.into_iter().collect();
    let lists: Recorded =
        rows(tables, "SELECT day, user, list, newest, oldest FROM cold_lists", pair)?.into_iter().collect();
    let cold: BTreeSet<u32> = states.iter().filter(|(_, state)| state == "cold").map(|(day, _)| *day).collect();
    for (day, state) in states.iter().filter(|(_, state)| state != "cold") {
        snapshot.problems.push(format!("day {day} was left {state}"));
    }
    for (day, user, what) in totals.keys().chain(lists.keys()).filter(|(day, ..)| !cold.contains(day)) {
        snapshot.problems.push(format!("day {day} is not cold, but {user}'s {what} of it is recorded as cold"));
    }
    for day in cold {
        let path = cold_day_path(dir, set, day);
        let file = match open_cold_file(&path) {
            Ok(file) => file,
            Err(error) => {
                snapshot.problems.push(format!("cold day {day}: {}", error.message));
                continue;
            }
        };
        read_day_rows(&file, "members", snapshot)?;
        check_cold_day(&file, day, &totals, &lists, &mut snapshot.problems)?;
    }
    Ok(())
}

/// A cold day's file against what the set recorded when the day moved: the
/// ledger totals, the users' list days, and that every row is of that day.
fn check_cold_day(
    file: &Connection,
    day: u32,
    totals: &Recorded,
    lists: &Recorded,
    problems: &mut Vec<String>,
) -> Result<(), StoreError> {
    let pair = |row: &Row<'_>| Ok(((day, row.get(0)?, row.get(1)?), (row.get(2)?, row.get(3)?)));
    let counted = rows(file, "SELECT user, kind, count(*), sum(amount) FROM ledger GROUP BY user, kind", pair)?;
    compare(day, totals, counted.into_iter().collect(), "total", "entries of", problems);
    let made = rows(
        file,
        "SELECT sender, 'sent', max(seq), min(seq) FROM packets GROUP BY sender \
         UNION ALL SELECT user, 'received', max(at), min(at) FROM claims GROUP BY user",
        pair,
    )?;
    let (bills, others): (Recorded, Recorded) = lists.clone().into_iter().partition(|((.., list), _)| list == "ledger");
    compare(day, &others, made.into_iter().collect(), "list day", "newest and oldest", problems);
    // A bill's day spans its entries (the days listed by the migration that
    // began bills span their whole day).
    let entries = rows(file, "SELECT user, 'ledger', max(at), min(at) FROM ledger GROUP BY user", pair)?;
    for ((_, user, _), (newest, oldest)) in &entries {
        let spanned = bills.get(&(day, user.clone(), "ledger".to_owned()));
        if !spanned.is_some_and(|(kept_newest, kept_oldest)| kept_newest >= newest && kept_oldest <= oldest) {
            problems.push(format!(
                "cold day {day}: {user}'s entries ({oldest}..{newest}) are not in its bill days {spanned:?}"
            ));
        }
    }
    let elsewhere = rows_of(
        file,
        &format!(
            "SELECT (SELECT count(*) FROM packets WHERE {} <> ?1) + (SELECT count(*) FROM ledger WHERE {} <> ?1)",
            packet_day_sql("packets"),
            entry_day_sql("ledger")
        ),
        params![day],
        |row| row.get::<_, i64>(0),
    )?;
    if elsewhere[0] > 0 {
        problems.push(format!("cold day {day}'s file holds {} rows of other days", elsewhere[0]));
    }
    Ok(())
}

/// Reports every (user, what) of `day` whose recorded pair differs from the
/// one its rows make.
fn compare(day: u32, recorded: &Recorded, made: Recorded, what: &str, pair: &str, problems: &mut Vec<String>) {
    let of_day = |map: &Recorded| -> BTreeMap<(String, String), (i64, i64)> {
        map.iter()
            .filter(|((d, ..), _)| *d == day)
            .map(|((_, user, kind), pair)| ((user.clone(), kind.clone()), *pair))
            .collect()
    };
    let (recorded, made) = (of_day(recorded), of_day(&made));
    for key in recorded.keys().chain(made.keys()).collect::<BTreeSet<_>>() {
        let (kept, counted) = (recorded.get(key), made.get(key));
        if kept != counted {
            let (user, kind) = key;
            problems.push(format!("cold day {day}: {user}'s {kind} {what} says {pair} {kept:?}, its rows {counted:?}"));
        }
    }
}
