//! An in-memory journal for the simulation, with the faults a disk gives: an
//! append that fails before anything is written, one written whole that
//! reports failure (the ambiguous fsync), one torn half-way (the process or
//! the disk stopped mid-write: recovery must cut it), and a slow fsync.

use std::sync::{Arc, Mutex};

use crate::clock::ManualClock;
use crate::journal::{Journal, JournalError, Position};

/// A fault to inject into the next append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The append fails and nothing is written.
    FailBefore,
    /// The record is written whole, but the append reports failure.
    FailAfter,
    /// Half the record reaches the journal, then the append fails.
    Torn,
    /// The append succeeds but takes this many milliseconds of the clock:
    /// expiries pass and queued commands age while it runs.
    Slow(i64),
}

#[derive(Debug, Default)]
struct Log {
    records: Vec<(Position, Vec<u8>)>,
    /// A record cut short, at the tail: never acknowledged.
    torn: Option<Vec<u8>>,
    /// Records at or below this were trimmed.
    trimmed: Position,
    fault: Option<Fault>,
}

/// Clones share one log, as a process's restarts share one disk.
#[derive(Clone, Debug, Default)]
pub struct MemJournal {
    log: Arc<Mutex<Log>>,
    clock: Option<ManualClock>,
    /// Set by a failed append until `recover`: no append may follow a torn one.
    needs_recovery: bool,
}

impl MemJournal {
    /// A journal whose slow appends take time on `clock`.
    pub fn on_clock(clock: ManualClock) -> MemJournal {
        MemJournal { clock: Some(clock), ..MemJournal::default() }
    }

    pub fn inject(&self, fault: Fault) {
        self.log.lock().expect("journal lock").fault = Some(fault);
    }

    /// The whole records past `after`, read without recovering (a torn tail
    /// stays): what a check replays over the tables.
    pub fn records_after(&self, after: Position) -> Vec<(Position, Vec<u8>)> {
        self.log.lock().expect("journal lock").after(after)
    }
}

impl Log {
    fn after(&self, after: Position) -> Vec<(Position, Vec<u8>)> {
        self.records.iter().filter(|(position, _)| *position > after).cloned().collect()
    }
}

impl Journal for MemJournal {
    fn append(&mut self, position: Position, payload: &[u8]) -> Result<(), JournalError> {
        let mut log = self.log.lock().expect("journal lock");
        let last = log.records.last().map_or(log.trimmed, |(position, _)| *position);
        if self.needs_recovery || position != last + 1 || log.torn.is_some() {
            return Err(JournalError::Invalid { position, why: format!("append after {last} without recovery") });
        }
        match log.fault.take() {
            Some(Fault::FailBefore) => {
                self.needs_recovery = true;
                Err(JournalError::Io("injected: the write failed".into()))
            }
            Some(Fault::FailAfter) => {
                log.records.push((position, payload.to_vec()));
                self.needs_recovery = true;
                Err(JournalError::Io("injected: fdatasync failed after the write".into()))
            }
            Some(Fault::Torn) => {
                log.torn = Some(payload[..payload.len() / 2].to_vec());
                self.needs_recovery = true;
                Err(JournalError::Io("injected: the write was torn half-way".into()))
            }
            Some(Fault::Slow(ms)) => {
                if let Some(clock) = &self.clock {
                    clock.advance_ms(ms);
                }
                log.records.push((position, payload.to_vec()));
                Ok(())
            }
            None => {
                log.records.push((position, payload.to_vec()));
                Ok(())
            }
        }
    }

    fn recover(
        &mut self,
        after: Position,
        each: &mut crate::journal::EachRecord<'_>,
    ) -> Result<Position, JournalError> {
        let records = {
            let mut log = self.log.lock().expect("journal lock");
            // A torn tail was never acknowledged: cut it.
            log.torn = None;
            if log.trimmed > after {
                return Err(JournalError::Invalid {
                    position: after + 1,
                    why: format!("trimmed through {}, past the tables' {after}", log.trimmed),
                });
            }
            log.after(after)
        };
        self.needs_recovery = false;
        let mut last = after;
        for (position, payload) in records {
            each(position, &payload)?;
            last = position;
        }
        Ok(last)
    }

    fn trim(&mut self, upto: Position) -> Result<(), JournalError> {
        let mut log = self.log.lock().expect("journal lock");
        log.records.retain(|(position, _)| *position > upto);
        log.trimmed = log.trimmed.max(upto);
        Ok(())
    }
}
