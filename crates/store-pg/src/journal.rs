//! A set's journal as a table: one row per batch, keyed by set and
//! position, appended with one INSERT that returns once PostgreSQL has
//! committed it (`synchronous_commit` on: the commit's WAL record is flushed,
//! and PostgreSQL's own group commit shares the flush between sets). The key
//! refuses a second row at a position, so two writers of one set can never
//! both append it. PostgreSQL checks its pages; the record's own format is
//! validated when it is decoded (`hongbao_engine::journal::record`).
//!
//! Each append carries the epoch its writer holds the set at (`pg::Hold`);
//! the table's fence (`migrations/0003_leases.sql`) refuses it once the set's
//! lease has moved on, and the append answers `JournalError::Fenced`: this
//! writer never appends again, and nothing is retried.

use std::sync::Arc;

use hongbao_domain::SetId;
use hongbao_engine::journal::EachRecord;
use hongbao_engine::{Journal, JournalError, Position};
use tokio_postgres::{Client, Statement};

use crate::pg::{Current, WriterConnection};
use crate::schema::set_number;

/// Records read per query while recovering.
const RECOVER_PAGE: i64 = 4096;

/// Trims wait until this many records can go at once: one DELETE per
/// thousand batches rather than one per batch on the writer's connection.
const TRIM_STEP: Position = 1024;

pub struct PgJournal {
    connection: Arc<WriterConnection>,
    set: SetId,
    /// The append, prepared on the connection of this generation.
    append: Option<(u64, Statement)>,
    trimmed: Position,
}

impl std::fmt::Debug for PgJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgJournal").field("set", &self.set).finish()
    }
}

fn io(context: &'static str) -> impl Fn(tokio_postgres::Error) -> JournalError {
    move |error| JournalError::Io(format!("{context}: {error}"))
}

/// The SQLSTATE the journal's fence raises (`migrations/0003_leases.sql`).
const FENCED: &str = "HB409";

/// An append's failure: fenced (another holder of the set took over), or
/// one that `recover` sorts out.
fn append_failed(error: tokio_postgres::Error) -> JournalError {
    match error.as_db_error() {
        Some(db) if db.code().code() == FENCED => JournalError::Fenced(db.message().to_owned()),
        _ => io("appending to the journal")(error),
    }
}

impl PgJournal {
    /// The journal of `set` on the set's writer's connection.
    pub(crate) fn new(connection: Arc<WriterConnection>, set: SetId) -> PgJournal {
        PgJournal { connection, set, append: None, trimmed: 0 }
    }

    fn client(&self) -> Result<Current, JournalError> {
        self.connection.get().map_err(|e| JournalError::Io(e.message))
    }
}

/// Reads `set`'s records after `after`, in order, checking that they
/// follow each other without a gap; answers the last position.
pub(crate) async fn read_records(
    client: &Client,
    set: SetId,
    after: Position,
    each: &mut EachRecord<'_>,
) -> Result<Position, JournalError> {
    let statement = client
        .prepare("SELECT position, record FROM journal WHERE set_id = $1 AND position > $2 ORDER BY position LIMIT $3")
        .await
        .map_err(io("preparing the journal read"))?;
    let mut last = after;
    loop {
        let from = i64::try_from(last).map_err(|_| JournalError::Io("position out of range".into()))?;
        let rows = client
            .query(&statement, &[&set_number(set), &from, &RECOVER_PAGE])
            .await
            .map_err(io("reading the journal"))?;
        for row in &rows {
            let position = row.get::<_, i64>(0) as Position;
            if position != last + 1 {
                return Err(JournalError::Invalid {
                    position,
                    why: format!("set {set}'s journal skips from {last} to {position}: records are missing"),
                });
            }
            each(position, row.get::<_, &[u8]>(1))?;
            last = position;
        }
        if (rows.len() as i64) < RECOVER_PAGE {
            return Ok(last);
        }
    }
}

impl Journal for PgJournal {
    fn append(&mut self, position: Position, payload: &[u8]) -> Result<(), JournalError> {
        let position = i64::try_from(position).map_err(|_| JournalError::Io("position out of range".into()))?;
        let (Current { connection: client, generation, epoch }, set) = (self.client()?, set_number(self.set));
        let prepared = self.append.as_ref().filter(|(on, _)| *on == generation).map(|(_, statement)| statement.clone());
        let statement = match prepared {
            Some(statement) => statement,
            None => {
                let statement = client
                    .block_on(
                        client.prepare("INSERT INTO journal (set_id, position, record, epoch) VALUES ($1, $2, $3, $4)"),
                    )
                    .map_err(io("preparing the journal append"))?;
                self.append = Some((generation, statement.clone()));
                statement
            }
        };
        client.block_on(client.execute(&statement, &[&set, &position, &payload, &epoch])).map_err(append_failed)?;
        Ok(())
    }

    fn recover(&mut self, after: Position, each: &mut EachRecord<'_>) -> Result<Position, JournalError> {
        // Called at start and after a failed append: the connection is
        // checked, and reopened (holding the set again) if it was lost.
        let client = self.connection.get_checked().map_err(|e| JournalError::Io(e.message))?.connection;
        client.block_on(read_records(&client, self.set, after, each))
    }

    fn trim(&mut self, upto: Position) -> Result<(), JournalError> {
        if upto < self.trimmed + TRIM_STEP {
            return Ok(());
        }
        let bound = i64::try_from(upto).map_err(|_| JournalError::Io("position out of range".into()))?;
        let client = self.client()?.connection;
        client
            .block_on(
                client.execute(
                    "DELETE FROM journal WHERE set_id = $1 AND position <= $2",
                    &[&set_number(self.set), &bound],
                ),
            )
            .map_err(io("trimming the journal"))?;
        self.trimmed = upto;
        Ok(())
    }
}
