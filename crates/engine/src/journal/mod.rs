//! The commit point: each set's journal, an append-only log with one record
//! per batch. A batch is answered only once its record is durable; nothing
//! else is written on the commit path. The tables follow behind it
//! (`materializer.rs`), and the journal is trimmed below what they hold.
//!
//! This module owns the contract (`Journal`) and the record's contents
//! (`record.rs`); the framing on disk (length, position, checksums, torn-tail
//! detection) belongs to each implementation: `hongbao-journal` for segment
//! files, `mem.rs` for the simulation.

pub mod mem;
pub mod record;

use thiserror::Error;

use crate::store::Journaled;

/// A record's position: 1 for a set's first batch, then one more per batch,
/// without gaps. The tables record the position they have materialized.
pub type Position = u64;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum JournalError {
    /// Reading or writing failed. After a failed append the record may or
    /// may not be in the journal: `recover` tells.
    #[error("journal i/o: {0}")]
    Io(String),
    /// A record before the tail is damaged: start-up stops here, since
    /// acknowledged batches would be lost by going on.
    #[error("the journal {file} is damaged at offset {offset}: {why}")]
    Corrupt { file: String, offset: u64, why: String },
    /// A record could not be decoded, or broke the contract (a gap in the
    /// positions, an append out of order): an engine or format bug.
    #[error("journal record {position}: {why}")]
    Invalid { position: Position, why: String },
    /// The store refused the append because another node took the set
    /// over (its lease moved to a newer epoch than the writer's): the
    /// record is not in the journal, and this writer may never append
    /// again. Only a shared journal (PostgreSQL's) fences.
    #[error("set fenced: {0}")]
    Fenced(String),
}

/// Batches per materializing transaction at most: enough that a
/// transaction's fixed costs (its sync, the hot pages it rewrites) are shared
/// widely, few enough that readers waiting for a position are not held
/// long. Also the chunk in which a journal is replayed into tables.
pub const BATCHES_PER_TRANSACTION_MAX: usize = 4096;

/// Reads the journal's records past `after` (through `Journal::recover`: a
/// torn tail cut, damage refused), decodes them, and hands them on in order,
/// at most `chunk` at a time. Answers the journal's last position. What the
/// tables catch up from at start, what `hongbao audit` replays, and what a
/// writer reads back after a failed append.
pub fn replay(
    journal: &mut dyn Journal,
    after: Position,
    chunk: usize,
    each_chunk: &mut dyn FnMut(&[Journaled]) -> Result<(), JournalError>,
) -> Result<Position, JournalError> {
    let mut pending = Vec::new();
    let last = journal.recover(after, &mut |position, payload| {
        pending.push(Journaled::decode(position, payload)?);
        if pending.len() >= chunk {
            each_chunk(&pending)?;
            pending.clear();
        }
        Ok(())
    })?;
    if !pending.is_empty() {
        each_chunk(&pending)?;
    }
    Ok(last)
}

/// What `Journal::recover` passes each record to.
pub type EachRecord<'a> = dyn FnMut(Position, &[u8]) -> Result<(), JournalError> + 'a;

/// One set's journal, written by its writer only.
pub trait Journal: Send + 'static {
    /// Appends the record at `position` (the last position + 1) and returns
    /// once it is durable (`fdatasync`). On error the record may or may not
    /// be in the journal, perhaps torn: the caller must `recover` before the
    /// next append.
    fn append(&mut self, position: Position, payload: &[u8]) -> Result<(), JournalError>;

    /// Reads the records after `after`, in order, passing each to `each`;
    /// then positions the next append after the last good record and returns
    /// that record's position (or `after` if there is none past it). A torn
    /// last record (never acknowledged) is cut off; a damaged record before
    /// the tail is `Corrupt`. Called at start and after a failed append.
    fn recover(&mut self, after: Position, each: &mut EachRecord<'_>) -> Result<Position, JournalError>;

    /// Lets go of records at or below `upto` (they are in the tables). It may
    /// keep some (a segment is dropped whole); never one above `upto`.
    fn trim(&mut self, upto: Position) -> Result<(), JournalError>;
}
