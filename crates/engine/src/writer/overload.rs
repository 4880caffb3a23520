//! The overload policy: while a queue stands, a command that waited longer
//! than `queue_wait_max` is refused unapplied (503 `overloaded`), so its
//! client is told at once instead of after a wait that grows with the queue.
//! The door (`Engine::call`) refuses new commands while the last batch's
//! wait says the queue is that slow.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::warn;

use crate::command::{Command, Queued};
use crate::error::EngineError;
use crate::store::Store;

use super::Writer;

impl<S: Store> Writer<S> {
    /// A batch that empties the queue is served whole however long it
    /// waited: a short stall (a slow fsync) with a few commands behind it is
    /// not overload, and refusing them would help no one (the first
    /// hostile-input run at a million requests per target caught grabs
    /// refused so, with four clients).
    pub(super) fn admit(&mut self, queued: Vec<Queued>, backlog: bool) -> Vec<Command> {
        let now = self.clock.monotonic();
        // The first command of a batch is its oldest: its wait is the
        // queue's delay, for the door. Without a backlog, newcomers wait for
        // nothing but this batch.
        let delay = match (queued.first(), backlog) {
            (Some(first), true) => now.saturating_sub(first.at),
            _ => Duration::ZERO,
        };
        let delay_us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.links.queue_delay_us.store(delay_us, Ordering::Relaxed);
        let mut commands = Vec::with_capacity(queued.len());
        let mut shed = 0usize;
        for Queued { at, command } in queued {
            if backlog && now.saturating_sub(at) > self.config.queue_wait_max {
                command.refuse(EngineError::Overloaded);
                shed += 1;
            } else {
                commands.push(command);
            }
        }
        self.metrics.admitted(delay, commands.len(), self.links.commands.len());
        self.shed_unlogged += shed;
        if self.shed_unlogged > 0 && now.saturating_sub(self.shed_logged_at) >= Duration::from_secs(1) {
            warn!(set = %self.set, shed = self.shed_unlogged, "overloaded: commands that waited too long were refused");
            (self.shed_unlogged, self.shed_logged_at) = (0, now);
        }
        commands
    }

    /// Refuses a batch's commands while the materializer's queue is full:
    /// the tables are too far behind the journal (or cannot write).
    pub(super) fn tables_behind(&mut self, commands: Vec<Command>) {
        let now = self.clock.monotonic();
        self.shed_unlogged += commands.len();
        commands.into_iter().for_each(|command| command.refuse(EngineError::Overloaded));
        if now.saturating_sub(self.shed_logged_at) >= Duration::from_secs(1) {
            let behind = self.to_tables.len();
            warn!(set = %self.set, shed = self.shed_unlogged, behind, "the tables are a full queue behind the journal: commands refused");
            (self.shed_unlogged, self.shed_logged_at) = (0, now);
        }
    }
}
