//! A set's journal as a table: one row per batch, keyed by set and
//! position, appended with one INSERT that returns once PostgreSQL has
//! committed it (`synchronous_commit` on: the commit's WAL record is flushed,
//! and PostgreSQL's own group commit shares the flush between sets). The key
//! refuses a second row at a position, so two writers of one set can never
//! both append it. PostgreSQL checks its pages; the record's own format is
//! validated when it is decoded (`hongbao_engine::journal::record`).

use std::sync::Arc;

use hongbao_domain::SetId;
use hongbao_engine::journal::EachRecord;
use hongbao_engine::{Journal, JournalError, Position};
use tokio_postgres::{Client, Statement};

use crate::pg::Connection;
use crate::schema::set_number;

/// Records read per query while recovering.
const RECOVER_PAGE: i64 = 4096;

/// Trims wait until this many records can go at once: one DELETE per
/// thousand batches rather than one per batch on the writer's connection.
const TRIM_STEP: Position = 1024;

pub struct PgJournal {
    client: Arc<Connection>,
    set: SetId,
    append: Option<Statement>,
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

impl PgJournal {
    /// The journal of `set` on `client` (the set's writer's connection).
    pub(crate) fn new(client: Arc<Connection>, set: SetId) -> PgJournal {
        PgJournal { client, set, append: None, trimmed: 0 }
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
        let (client, set) = (&self.client, set_number(self.set));
        let append = &mut self.append;
        self.client.block_on(async {
            let statement = match append {
                Some(statement) => statement.clone(),
                None => {
                    let prepared = client
                        .prepare("INSERT INTO journal (set_id, position, record) VALUES ($1, $2, $3)")
                        .await
                        .map_err(io("preparing the journal append"))?;
                    append.insert(prepared).clone()
                }
            };
            client.execute(&statement, &[&set, &position, &payload]).await.map_err(io("appending to the journal"))
        })?;
        Ok(())
    }

    fn recover(&mut self, after: Position, each: &mut EachRecord<'_>) -> Result<Position, JournalError> {
        self.client.block_on(read_records(&self.client, self.set, after, each))
    }

    fn trim(&mut self, upto: Position) -> Result<(), JournalError> {
        if upto < self.trimmed + TRIM_STEP {
            return Ok(());
        }
        let bound = i64::try_from(upto).map_err(|_| JournalError::Io("position out of range".into()))?;
        self.client
            .block_on(
                self.client.execute(
                    "DELETE FROM journal WHERE set_id = $1 AND position <= $2",
                    &[&set_number(self.set), &bound],
                ),
            )
            .map_err(io("trimming the journal"))?;
        self.trimmed = upto;
        Ok(())
    }
}
