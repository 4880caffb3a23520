//! The commit point: a batch's effects become one journal record, appended
//! and made durable, and only then are its commands answered and its mail
//! sent. The record goes on to the materializer, which writes the tables.
//!
//! After a failed append the record may be in the journal whole, torn, or
//! not at all, and memory holds effects that may never have become durable.
//! The set refuses writes until it has read the journal back (cutting a torn
//! tail), handed every record found to the materializer, waited for the
//! tables to hold them, and rebuilt memory from the tables.

use std::sync::Arc;

use crossbeam_channel::TrySendError;

use tracing::{error, warn};

use hongbao_domain::SetId;

use crate::command::{Mail, Pending};
use crate::error::EngineError;
use crate::journal::record::encode;
use crate::journal::{BATCHES_PER_TRANSACTION_MAX, JournalError, Position, replay};
use crate::materializer::{Materializer, ToMaterializer, catch_up};
use crate::store::{Journaled, Store};

use super::state::State;
use super::{Batch, Writer};

impl<S: Store> Writer<S> {
    pub(super) fn commit(&mut self, batch: Batch) {
        if batch.effects.is_empty() {
            self.answer(batch.pending, batch.mail);
            return;
        }
        let position = batch.position;
        self.buffer.clear();
        encode(&batch.effects, &mut self.buffer);
        let started = self.clock.monotonic();
        match self.journal.append(position, &self.buffer) {
            Ok(()) => {
                self.metrics.committed(self.clock.monotonic().saturating_sub(started), &batch.effects);
                self.state.position = position;
                self.links.progress.ack(position);
                let Batch { effects, pending, mail, now, .. } = batch;
                // Before the answers: an open after a freeze's answer is refused.
                for (user, frozen, _) in &effects.frozen {
                    self.links.frozen.set(user, *frozen);
                }
                self.publish_events(position, &effects, now);
                self.hand_to_tables(Journaled { position, effects: Arc::new(effects) });
                self.answer(pending, mail);
            }
            Err(JournalError::Fenced(why)) => {
                // Another node holds the set at a newer epoch: nothing of
                // the batch is in the journal, and this writer stops.
                warn!(set = %self.set, %why, position, commands = batch.pending.len(), "append fenced; the set moved to another node");
                batch.pending.into_iter().for_each(|pending| pending.deliver(Some(EngineError::Fenced)));
                self.links.progress.fence();
            }
            Err(failure) => {
                error!(set = %self.set, %failure, position, "journal append failed; set refuses writes until recovered");
                batch.pending.into_iter().for_each(|pending| pending.deliver(Some(EngineError::Unavailable)));
                self.links.progress.set_healthy(false);
                self.journal_unsure = true;
                self.recover();
            }
        }
    }

    /// Answers a durable (or effect-free) batch and sends its mail.
    fn answer(&mut self, pending: Vec<Pending>, mail: Vec<(SetId, Mail)>) {
        pending.into_iter().for_each(|pending| pending.deliver(None));
        self.post(mail);
    }

    fn hand_to_tables(&mut self, batch: Journaled) {
        self.sent = batch.position;
        self.to_tables.push_back(batch);
        self.flush_to_tables();
    }

    /// Hands the materializer what it has room for; answers whether it took
    /// everything. Never blocks: tables that cannot keep up (or cannot
    /// write at all, on a full disk, while the journal still has room) make
    /// the set refuse commands (`process`), not hang them.
    pub(super) fn flush_to_tables(&mut self) -> bool {
        while let Some(batch) = self.to_tables.pop_front() {
            match self.links.materializer.try_send(ToMaterializer::Batch(batch)) {
                Ok(()) => {}
                Err(TrySendError::Full(ToMaterializer::Batch(batch))) => {
                    self.to_tables.push_front(batch);
                    return false;
                }
                Err(TrySendError::Full(ToMaterializer::Stop) | TrySendError::Disconnected(_)) => {
                    // Stopped: the journal holds the batch for the next start.
                    error!(set = %self.set, "the materializer has stopped");
                    self.to_tables.clear();
                    return false;
                }
            }
        }
        true
    }

    /// At stop: waits for the materializer to take what is left, then tells
    /// it to stop. A materializer that cannot write (and is told the engine
    /// stops) leaves the rest to the journal and the next start.
    pub(super) fn stop_tables(&mut self) {
        for batch in std::mem::take(&mut self.to_tables) {
            if self.links.materializer.send(ToMaterializer::Batch(batch)).is_err() {
                return;
            }
        }
        let _ = self.links.materializer.send(ToMaterializer::Stop);
    }

    /// Rebuilds memory once the tables hold the whole journal. Returns
    /// whether the set serves writes again.
    pub(super) fn recover(&mut self) -> bool {
        if let Some(why) = self.links.progress.halted() {
            error!(set = %self.set, %why, "set halted");
            return false;
        }
        if self.journal_unsure && !self.read_back() {
            return false;
        }
        if self.links.progress.materialized() < self.sent {
            return false;
        }
        match self.store.recover(self.clock.now()) {
            Ok(recovered) => {
                assert_eq!(recovered.position, self.sent, "set {}: the tables stopped short of the journal", self.set);
                self.state = State::recovered(recovered);
                self.links.frozen.load(self.set, self.sets, &self.state.frozen);
                self.metrics.recovered(self.state.packets.locked_fen());
                self.links.progress.set_healthy(true);
                warn!(set = %self.set, position = self.sent, "set recovered from its journal and tables");
                self.resend_credits(true);
                true
            }
            Err(failure) => {
                error!(set = %self.set, %failure, "recovery failed; set stays unavailable");
                false
            }
        }
    }

    /// Reads the journal back past what the materializer was handed, and
    /// hands it what a failed append left whole.
    fn read_back(&mut self) -> bool {
        let mut found = Vec::new();
        let read = replay(&mut *self.journal, self.sent, BATCHES_PER_TRANSACTION_MAX, &mut |batches| {
            found.extend_from_slice(batches);
            Ok(())
        });
        match read {
            Ok(last) => {
                found.into_iter().for_each(|batch| self.hand_to_tables(batch));
                self.sent = last;
                // A record kept whole after its failed append published no
                // events: streams behind it are told they missed some.
                self.links.events.restart(last);
                self.journal_unsure = false;
                true
            }
            Err(failure) => {
                error!(set = %self.set, %failure, "reading the journal back failed; set stays unavailable");
                false
            }
        }
    }

    /// As after a crash (for the simulation): memory is lost, the tables are
    /// brought up to the journal's end by `materializer`, and memory is
    /// rebuilt from them.
    pub(crate) fn restart(&mut self, materializer: &mut Materializer<S>) -> Result<Position, JournalError> {
        self.links.progress.set_healthy(false);
        let last = catch_up(materializer, &mut *self.journal)?;
        self.sent = last;
        self.links.events.restart(last);
        self.to_tables.clear();
        self.journal_unsure = false;
        self.trimmed = 0;
        if !self.recover() {
            return Err(JournalError::Io("the set did not recover".into()));
        }
        Ok(last)
    }
}
