//! Days on SQLite: the day keeper's pass (`keep_days`), which moves old
//! settled days out of the sets' tables into a file per set and day
//! (`cold.rs`), where they stay readable (`reader.rs`, `rows.rs`) and
//! audited (`audit.rs`).
//!
//! A packet's day is the `yyyymmdd` its id starts with; a ledger entry's is
//! its packet's, or a deposit's UTC day (`LedgerEntry::business_day`). A day
//! goes cold once it is older than the retention and, in every set, all its
//! packets are settled (nothing left to claim or refund), expired more than
//! `COLD_MARGIN_MS` ago, and none of its credits waits in an outbox. Then,
//! in each set that holds rows of it:
//!
//! 1. its packets, claims and ledger entries are copied into a new file,
//!    which is synced and renamed into place (a crash leaves no file or a
//!    whole one);
//! 2. one transaction marks the day 'moving', records its entries' totals
//!    (`ledger_day_totals`) and its users' list days (`cold_lists`),
//!    deletes its rows (the tables' triggers allow a delete only of a day
//!    moving), checks that exactly the file's rows left and nothing of the
//!    day stayed, and marks it 'cold'.
//!
//! A crash between the two leaves the day hot (its file unread), and the
//! next pass writes the file again and moves it. The keeper uses its own
//! connections: the sets' readers are never blocked (WAL), and the
//! materializer waits for the transaction of step 2 as for any writer.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use hongbao_domain::ledger::{CLAIM_REF_PREFIX, REFUND_REF_PREFIX, SEND_REF_PREFIX};
use hongbao_domain::time::{DAY_MS, civil_day_start, is_valid_civil_day};
use hongbao_domain::{Millis, SetId};
use hongbao_engine::{COLD_MARGIN_MS, StoreError};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tracing::info;

use crate::cold::{CLAIM_ROW_COLUMNS, COLD_FILE_SCHEMA, LEDGER_ROW_COLUMNS, PACKET_ROW_COLUMNS};
use crate::failed;
use crate::layout::{cold_day_path, cold_day_temporary_path, cold_dir, cold_root, keeper_lock_path, set_path};
use crate::rows::is_cold;
use crate::schema::{day_range, entry_day_sql, prepare};

/// The references of a packet's entries: each of these followed by its id
/// (`domain/src/ledger.rs`), so a day's entries are ranges of the ledger's
/// key.
const PACKET_ENTRY_PREFIXES: [&str; 3] = [SEND_REF_PREFIX, CLAIM_REF_PREFIX, REFUND_REF_PREFIX];

/// One pass of the day keeper over the sets of the data directory `dir`:
/// moves cold every day older than `retention_days` before `now` that is
/// settled in every set. Answers the days that went cold. Blocking (it
/// reads and writes the sets' files); one pass runs at a time.
pub fn keep_days(dir: &Path, sets: u16, now: Millis, retention_days: u32) -> Result<Vec<u32>, StoreError> {
    let _pass = lock_the_keeper(dir)?;
    let keepers = (0..sets).map(|set| SetKeeper::open(dir, SetId(set))).collect::<Result<Vec<_>, _>>()?;
    let cutoff = Millis(now.0.saturating_sub(i64::from(retention_days) * DAY_MS)).civil_day();
    let hot = keepers.iter().map(|keeper| keeper.hot_days_before(cutoff)).collect::<Result<Vec<_>, _>>()?;
    let candidates: BTreeSet<u32> = hot.iter().flatten().copied().collect();
    let mut cooled = Vec::new();
    'days: for day in candidates {
        for keeper in &keepers {
            if !keeper.is_settled(day, now)? {
                continue 'days;
            }
        }
        for (keeper, days) in keepers.iter().zip(&hot) {
            if days.contains(&day) {
                keeper.cool(day)?;
            }
        }
        info!(day, "a day went cold");
        cooled.push(day);
    }
    Ok(cooled)
}

/// Waits for any other pass to end (its lock file is held for the pass).
fn lock_the_keeper(dir: &Path) -> Result<File, StoreError> {
    make_directory(&cold_root(dir))?;
    let path = keeper_lock_path(dir);
    let file = File::options().create(true).truncate(false).write(true).open(&path).map_err(io(&path))?;
    file.lock().map_err(io(&path))?;
    Ok(file)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |error| StoreError::new(format!("{}: {error}", path.display()))
}

/// Makes `directory` if it is missing, and makes its entry durable in its
/// parent (and the parent's in the data directory).
fn make_directory(directory: &Path) -> Result<(), StoreError> {
    if directory.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(directory).map_err(io(directory))?;
    for parent in [directory.parent(), directory.parent().and_then(Path::parent)].into_iter().flatten() {
        File::open(parent).and_then(|parent| parent.sync_all()).map_err(io(parent))?;
    }
    Ok(())
}

/// The keeper's handle on one set's tables.
struct SetKeeper {
    dir: PathBuf,
    set: SetId,
    connection: Connection,
}

impl SetKeeper {
    fn open(dir: &Path, set: SetId) -> Result<SetKeeper, StoreError> {
        let path = set_path(dir, set);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut connection = Connection::open_with_flags(&path, flags)
            .map_err(|e| StoreError::new(format!("cannot open {}: {e}", path.display())))?;
        prepare(&mut connection)?;
        // Checkpoints are the materializer's (`checkpoint.rs`).
        connection.execute_batch("PRAGMA wal_autocheckpoint = 0").map_err(failed("configuring checkpoints"))?;
        Ok(SetKeeper { dir: dir.to_owned(), set, connection })
    }

    /// The days before `cutoff` this set holds hot rows of, found by walking
    /// the indexes a day at a time (packets by id, a packet's entries by
    /// reference, deposits by time), not by reading the rows.
    fn hot_days_before(&self, cutoff: u32) -> Result<BTreeSet<u32>, StoreError> {
        let mut days = BTreeSet::new();
        self.days_of_keys(
            "SELECT id FROM packets WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT 1",
            "",
            cutoff,
            &mut days,
        )?;
        for prefix in PACKET_ENTRY_PREFIXES {
            let sql =
                "SELECT reference FROM ledger WHERE reference >= ?1 AND reference < ?2 ORDER BY reference LIMIT 1";
            self.days_of_keys(sql, prefix, cutoff, &mut days)?;
        }
        let mut statement = self
            .connection
            .prepare("SELECT at FROM ledger WHERE packet_id IS NULL AND at >= ?1 AND at < ?2 ORDER BY at LIMIT 1")
            .map_err(failed("preparing the deposits' days"))?;
        let (mut from, to) = (i64::MIN, civil_day_start(cutoff).0);
        while let Some(at) = statement
            .query_row(params![from, to], |row| row.get::<_, i64>(0))
            .optional()
            .map_err(failed("reading the deposits' days"))?
        {
            let day = Millis(at).civil_day();
            days.insert(day);
            from = civil_day_start(day).0 + DAY_MS;
        }
        let cold: Vec<u32> = self
            .connection
            .prepare("SELECT day FROM cold_days")
            .and_then(|mut statement| statement.query_map([], |row| row.get(0))?.collect())
            .map_err(failed("reading the cold days"))?;
        for day in cold {
            days.remove(&day);
        }
        Ok(days)
    }

    /// Adds the days of the keys `prefix` + `yyyymmdd-…` that `sql` finds
    /// (the first key in `[?1, ?2)`), one probe per day, before `cutoff`.
    fn days_of_keys(&self, sql: &str, prefix: &str, cutoff: u32, days: &mut BTreeSet<u32>) -> Result<(), StoreError> {
        let mut statement = self.connection.prepare(sql).map_err(failed("preparing the days' walk"))?;
        let (mut from, to) = (prefix.to_owned(), format!("{prefix}{cutoff}"));
        while let Some(key) = statement
            .query_row(params![from, to], |row| row.get::<_, String>(0))
            .optional()
            .map_err(failed("walking the days"))?
        {
            let rest = &key[prefix.len().min(key.len())..];
            let day = rest.get(..8).and_then(|day| day.parse().ok()).filter(|day| is_valid_civil_day(*day));
            let Some(day) = day.filter(|_| rest.as_bytes().get(8) == Some(&b'-')) else {
                return Err(StoreError::new(format!("set {}: {key:?} names no day", self.set)));
            };
            days.insert(day);
            from = day_range(prefix, day).1;
        }
        Ok(())
    }

    /// Whether this set holds nothing of `day` that may still change: every
    /// packet settled and expired more than `COLD_MARGIN_MS` ago, and no
    /// credit of the day waiting in the outbox.
    fn is_settled(&self, day: u32, now: Millis) -> Result<bool, StoreError> {
        let (from, to) = day_range("", day);
        self.connection
            .query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM packets WHERE id >= ?1 AND id < ?2 \
                                    AND (remaining_amount > 0 OR expires_at > ?3)) \
                 AND NOT EXISTS (SELECT 1 FROM outbox o JOIN packets p ON p.seq = o.packet_seq \
                                 WHERE p.id >= ?1 AND p.id < ?2)",
                params![from, to, now.0.saturating_sub(COLD_MARGIN_MS)],
                |row| row.get(0),
            )
            .map_err(failed("checking that a day is settled"))
    }

    /// Moves `day` cold in this set: its file, then the transaction.
    fn cool(&self, day: u32) -> Result<(), StoreError> {
        if is_cold(&self.connection, day)? {
            return Ok(());
        }
        self.write_file(day)?;
        let path = cold_day_path(&self.dir, self.set, day);
        self.attached(&path, |keeper| keeper.move_rows(day))
    }

    /// Step 1: the day's rows into a new file, synced, renamed into place.
    fn write_file(&self, day: u32) -> Result<(), StoreError> {
        let directory = cold_dir(&self.dir, self.set);
        make_directory(&directory)?;
        let temporary = cold_day_temporary_path(&self.dir, self.set, day);
        match fs::remove_file(&temporary) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(io(&temporary)(error)),
            _ => {}
        }
        Connection::open(&temporary)
            .and_then(|file| file.execute_batch(COLD_FILE_SCHEMA))
            .map_err(|e| StoreError::new(format!("cannot make {}: {e}", temporary.display())))?;
        let copied = self.attached(&temporary, |keeper| keeper.copy_rows(day));
        if copied.is_err() {
            let _ = fs::remove_file(&temporary);
        }
        copied?;
        File::open(&temporary).and_then(|file| file.sync_all()).map_err(io(&temporary))?;
        let path = cold_day_path(&self.dir, self.set, day);
        fs::rename(&temporary, &path).map_err(io(&path))?;
        File::open(&directory).and_then(|directory| directory.sync_all()).map_err(io(&directory))
    }

    /// Runs `work` with the file `path` attached as `cold`.
    fn attached(&self, path: &Path, work: impl FnOnce(&SetKeeper) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let name = path.to_str().ok_or_else(|| StoreError::new(format!("{} is not UTF-8", path.display())))?;
        self.connection.execute("ATTACH DATABASE ?1 AS cold", params![name]).map_err(failed("attaching a cold day"))?;
        let result = work(self);
        let detached = self.connection.execute_batch("DETACH DATABASE cold").map_err(failed("detaching a cold day"));
        result.and(detached)
    }

    /// Runs `work` in one transaction (`begin` says which), committed if it
    /// succeeds and rolled back if not.
    fn in_transaction(&self, begin: &str, work: impl FnOnce() -> Result<(), StoreError>) -> Result<(), StoreError> {
        self.connection.execute_batch(begin).map_err(failed("starting a transaction"))?;
        match work() {
            Ok(()) => self.connection.execute_batch("COMMIT").map_err(failed("committing")),
            Err(error) => {
                let _ = self.connection.execute_batch("ROLLBACK");
                Err(error)
            }
        }
    }

    /// Copies the day's rows from the tables into the attached file, in one
    /// snapshot of the tables. The file keeps no journal and is not synced
    /// here: it is synced whole before it is renamed, and a failure
    /// discards it.
    fn copy_rows(&self, day: u32) -> Result<(), StoreError> {
        let connection = &self.connection;
        connection
            .execute_batch("PRAGMA cold.journal_mode = OFF; PRAGMA cold.synchronous = OFF;")
            .map_err(failed("configuring a cold day file"))?;
        self.in_transaction("BEGIN", || {
            let (from, to) = day_range("", day);
            let copy = |sql: &str, parameters: &[&dyn rusqlite::ToSql]| {
                connection.execute(sql, parameters).map(drop).map_err(failed("copying a day's rows"))
            };
            copy(
                &format!(
                    "INSERT INTO cold.packets ({PACKET_ROW_COLUMNS}) SELECT {PACKET_ROW_COLUMNS} FROM main.packets \
                     WHERE id >= ?1 AND id < ?2"
                ),
                params![from, to],
            )?;
            copy(
                &format!(
                    "INSERT INTO cold.claims ({CLAIM_ROW_COLUMNS}) SELECT {CLAIM_ROW_COLUMNS} FROM main.claims \
                     WHERE packet_seq IN (SELECT seq FROM main.packets WHERE id >= ?1 AND id < ?2)"
                ),
                params![from, to],
            )?;
            let day_of = entry_day_sql("l");
            for prefix in PACKET_ENTRY_PREFIXES {
                let (from, to) = day_range(prefix, day);
                copy(
                    &format!(
                        "INSERT INTO cold.ledger ({LEDGER_ROW_COLUMNS}) SELECT {LEDGER_ROW_COLUMNS} FROM main.ledger l \
                         WHERE reference >= ?1 AND reference < ?2 AND {day_of} = ?3"
                    ),
                    params![from, to, day],
                )?;
            }
            let start = civil_day_start(day).0;
            copy(
                &format!(
                    "INSERT INTO cold.ledger ({LEDGER_ROW_COLUMNS}) SELECT {LEDGER_ROW_COLUMNS} FROM main.ledger l \
                     WHERE packet_id IS NULL AND at >= ?1 AND at < ?2 AND {day_of} = ?3"
                ),
                params![start, start + DAY_MS, day],
            )
        })
    }

    /// Step 2, with the day's file attached as `cold`: one transaction that
    /// records what the day held and deletes it from the tables. If the
    /// tables changed since the file was written (a row of the day landed
    /// late), nothing is moved, and the next pass writes the file again.
    fn move_rows(&self, day: u32) -> Result<(), StoreError> {
        let connection = &self.connection;
        let run = |sql: &str| connection.execute(sql, params![day]).map_err(failed("moving a day cold"));
        self.in_transaction("BEGIN IMMEDIATE", || {
            if is_cold(connection, day)? {
                return Ok(());
            }
            run("INSERT INTO main.cold_days (day, state) VALUES (?1, 'moving')")?;
            run("INSERT INTO main.ledger_day_totals (day, user, kind, entries, amount) \
                 SELECT ?1, user, kind, count(*), sum(amount) FROM cold.ledger GROUP BY user, kind")?;
            run("INSERT INTO main.cold_lists (user, list, day, newest, oldest) \
                 SELECT sender, 'sent', ?1, max(seq), min(seq) FROM cold.packets GROUP BY sender")?;
            run("INSERT INTO main.cold_lists (user, list, day, newest, oldest) \
                 SELECT user, 'received', ?1, max(at), min(at) FROM cold.claims GROUP BY user")?;
            run("INSERT INTO main.cold_lists (user, list, day, newest, oldest) \
                 SELECT user, 'ledger', ?1, max(at), min(at) FROM cold.ledger GROUP BY user")?;
            // Claims before their packets: a claim's delete finds its day by its packet.
            for (table, delete) in [
                ("ledger", "DELETE FROM main.ledger WHERE reference IN (SELECT reference FROM cold.ledger)"),
                ("claims", "DELETE FROM main.claims WHERE packet_seq IN (SELECT seq FROM cold.packets)"),
                ("packets", "DELETE FROM main.packets WHERE seq IN (SELECT seq FROM cold.packets)"),
            ] {
                let deleted = connection.execute(delete, []).map_err(failed("deleting a day's rows"))?;
                let in_file: i64 = connection
                    .query_row(&format!("SELECT count(*) FROM cold.{table}"), [], |row| row.get(0))
                    .map_err(failed("counting a cold day's rows"))?;
                if i64::try_from(deleted) != Ok(in_file) {
                    return Err(
                        self.changed(day, &format!("{deleted} {table} rows left the tables, the file holds {in_file}"))
                    );
                }
            }
            if self.holds_rows_of(day)? {
                return Err(self.changed(day, "rows of it are still in the tables"));
            }
            run("UPDATE main.cold_days SET state = 'cold' WHERE day = ?1").map(drop)
        })
    }

    fn changed(&self, day: u32, how: &str) -> StoreError {
        StoreError::new(format!(
            "set {}: day {day} changed while its file was written ({how}); it stays hot until the next pass",
            self.set
        ))
    }

    /// Whether the tables hold any row of `day` (by the same index walks as
    /// `hot_days_before`).
    fn holds_rows_of(&self, day: u32) -> Result<bool, StoreError> {
        let exists = |sql: &str, from: &dyn rusqlite::ToSql, to: &dyn rusqlite::ToSql| {
            self.connection
                .query_row(sql, params![from, to], |row| row.get::<_, bool>(0))
                .map_err(failed("looking for a day's rows"))
        };
        let (from, to) = day_range("", day);
        if exists("SELECT EXISTS (SELECT 1 FROM main.packets WHERE id >= ?1 AND id < ?2)", &from, &to)? {
            return Ok(true);
        }
        for prefix in PACKET_ENTRY_PREFIXES {
            let (from, to) = day_range(prefix, day);
            if exists("SELECT EXISTS (SELECT 1 FROM main.ledger WHERE reference >= ?1 AND reference < ?2)", &from, &to)?
            {
                return Ok(true);
            }
        }
        let start = civil_day_start(day).0;
        exists(
            "SELECT EXISTS (SELECT 1 FROM main.ledger WHERE packet_id IS NULL AND at >= ?1 AND at < ?2)",
            &start,
            &(start + DAY_MS),
        )
    }
}
