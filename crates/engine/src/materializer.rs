//! Tables follow: one thread per set writes the journaled batches into the
//! tables, many batches per transaction, recording in the same transaction
//! the position reached. It is behind the commit point: a client was
//! answered when its batch's record was durable, and nothing here can
//! change that answer.
//!
//! If the tables refuse a batch (a constraint caught a broken invariant),
//! the set halts: the refused record is found by writing the batches one by
//! one, it is named in the log and in readiness, and the set takes no more
//! writes. It is never skipped or repaired silently: that is an engine bug.
//! Other failures (i/o, a busy database) are retried.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use hongbao_domain::SetId;
use tracing::{error, info, warn};

use crate::journal::{BATCHES_PER_TRANSACTION_MAX, Journal, JournalError, Position, replay};
use crate::progress::Progress;
use crate::store::{Journaled, Store, StoreError};

/// How long a transaction waits, from its first batch, for more to join it.
/// A transaction's fixed costs (the pages it dirties again, its WAL frames)
/// are paid once for all its batches; a read after a write waits for the
/// transaction that holds the write, so this is most of that wait.
const GATHER: Duration = Duration::from_millis(5);

/// How long a failed transaction waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(200);

pub(crate) enum ToMaterializer {
    Batch(Journaled),
    /// Write what is queued before this, then stop.
    Stop,
}

pub(crate) struct Materializer<S: Store> {
    set: SetId,
    store: S,
    position: Position,
    progress: Arc<Progress>,
}

impl<S: Store> Materializer<S> {
    pub(crate) fn new(set: SetId, mut store: S, progress: Arc<Progress>) -> Result<Materializer<S>, StoreError> {
        let position = store.materialized()?;
        progress.set_materialized(position);
        progress.set_durable(store.durable());
        Ok(Materializer { set, store, position, progress })
    }

    pub(crate) fn position(&self) -> Position {
        self.position
    }

    /// The loop: gather what comes within `GATHER` of a first batch, write
    /// it in one transaction, publish.
    pub(crate) fn run(mut self, queue: Receiver<ToMaterializer>) {
        let mut pending = Vec::new();
        let mut stop = false;
        while !stop {
            if pending.is_empty() {
                match queue.recv() {
                    Ok(ToMaterializer::Batch(batch)) => pending.push(batch),
                    Ok(ToMaterializer::Stop) | Err(_) => stop = true,
                }
            }
            let gathered_by = Instant::now() + GATHER;
            while !stop && pending.len() < BATCHES_PER_TRANSACTION_MAX {
                match queue.recv_deadline(gathered_by) {
                    Ok(ToMaterializer::Batch(batch)) => pending.push(batch),
                    Ok(ToMaterializer::Stop) | Err(RecvTimeoutError::Disconnected) => stop = true,
                    Err(RecvTimeoutError::Timeout) => break,
                }
            }
            while !pending.is_empty() && self.progress.halted().is_none() {
                match self.step(&pending) {
                    Ok(()) => pending.clear(),
                    // Stopping need not wait for the tables: the journal
                    // holds every batch, and the next start replays them.
                    Err(failure) if stop || self.progress.stopping() => {
                        stop = true;
                        warn!(set = %self.set, %failure, batches = pending.len(), "stopping with batches the journal holds and the tables do not");
                        break;
                    }
                    Err(failure) => {
                        warn!(set = %self.set, %failure, "materializing failed; retrying");
                        std::thread::sleep(RETRY_AFTER);
                        self.reread_position();
                    }
                }
            }
            pending.clear();
        }
        info!(set = %self.set, position = self.position, "tables stopped");
    }

    /// After a failure whose outcome is unknown (a commit whose answer was
    /// lost with the connection), the tables may hold the transaction after
    /// all: the retry starts from the position they hold, not from the one
    /// this thread last saw, or it would rewrite the batches and be refused.
    fn reread_position(&mut self) {
        match self.store.materialized() {
            Ok(position) if position > self.position => {
                info!(set = %self.set, position, "the failed transaction had committed");
                self.position = position;
                self.progress.set_materialized(position);
            }
            Ok(_) => {}
            Err(failure) => warn!(set = %self.set, %failure, "reading the tables' position failed"),
        }
    }

    /// Writes `batches` (those past the tables' position) in one
    /// transaction. A refusal halts the set; any other failure is returned
    /// for a retry, with nothing written.
    pub(crate) fn step(&mut self, batches: &[Journaled]) -> Result<(), StoreError> {
        let fresh = batches.iter().position(|batch| batch.position > self.position).unwrap_or(batches.len());
        let batches = &batches[fresh..];
        let Some(last) = batches.last() else { return Ok(()) };
        for (offset, batch) in batches.iter().enumerate() {
            assert_eq!(batch.position, self.position + 1 + offset as u64, "set {}: a gap in the journal", self.set);
        }
        match self.store.materialize(batches) {
            Ok(()) => {
                self.position = last.position;
                self.progress.set_materialized(self.position);
                self.store.maintain();
                self.progress.set_durable(self.store.durable());
                Ok(())
            }
            Err(failure) if failure.refused => {
                self.halt_on_the_refused_record(batches);
                Ok(())
            }
            Err(failure) => Err(failure),
        }
    }

    /// Writes the batches one by one up to the one refused, and halts there.
    fn halt_on_the_refused_record(&mut self, batches: &[Journaled]) {
        for batch in batches {
            match self.store.materialize(std::slice::from_ref(batch)) {
                Ok(()) => {
                    self.position = batch.position;
                    self.progress.set_materialized(self.position);
                }
                Err(failure) => {
                    let why = format!(
                        "set {}: the tables refused journal record {}: {}; the set takes no writes \
                         (an engine bug: the record is kept, never skipped)",
                        self.set, batch.position, failure.message
                    );
                    error!("{why}");
                    self.progress.halt(why);
                    return;
                }
            }
        }
    }
}

/// Brings the tables up to the end of the journal (at start, and in the
/// simulation after a crash): reads the records past the tables' position
/// and writes them in large transactions. Returns the journal's last
/// position. A record the tables refuse stops the start with its reason.
pub(crate) fn catch_up<S: Store>(
    materializer: &mut Materializer<S>,
    journal: &mut dyn Journal,
) -> Result<Position, JournalError> {
    let after = materializer.position;
    replay(journal, after, BATCHES_PER_TRANSACTION_MAX, &mut |batches| {
        let result = materializer.step(batches);
        match (result, materializer.progress.halted()) {
            (Ok(()), None) => Ok(()),
            (Ok(()), Some(why)) => Err(JournalError::Invalid { position: materializer.position + 1, why }),
            (Err(failure), _) => Err(JournalError::Io(format!("materializing: {failure}"))),
        }
    })
}
