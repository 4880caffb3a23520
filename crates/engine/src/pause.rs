//! Pausing every set of a running node at once, for a consistent copy of its
//! data (`hongbao backup`), and holding the journals' trims while the copy
//! is taken.
//!
//! A pause is a command in each set's queue (`Command::Pause`): the writer
//! answers and commits the batch it drained up to it, says it is paused,
//! and waits at the gate. While every writer waits, no set's journal
//! changes, so the journals together are one instant of the whole node: a
//! credit is in its sender's outbox, or applied by its target, or both
//! (then acknowledged later, idempotently), never applied and unsent.
//! Commands arriving meanwhile wait in the queues as always (the queue-wait
//! bound applies when the writers go on).
//!
//! The pause is bounded twice: pausing fails (and resumes whatever paused)
//! if a set does not reach the gate by the deadline, and a writer goes on
//! by itself at the deadline. Whether the copy ended while every writer
//! still waited is decided under the gate's lock (`Paused::resume`), so a
//! copy that took too long is known to be torn and is thrown away.
//!
//! A trim hold (`TrimHold`) stops the writers trimming their journals
//! (`writer/mod.rs::follow_the_tables`), so a copy of a set's tables taken
//! before the pause still finds, in the journal copied during it, every
//! record past the tables' position. A trim that began before the hold
//! removes only records at or below the tables' durable position then,
//! which the copy of the tables, taken after, holds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Where the paused writers wait.
pub(crate) struct Gate {
    resumed: Mutex<bool>,
    woken: Condvar,
    deadline: Instant,
}

impl Gate {
    fn new(deadline: Instant) -> Gate {
        Gate { resumed: Mutex::new(false), woken: Condvar::new(), deadline }
    }

    /// A writer's side: blocks until resumed, or until the deadline.
    pub(crate) fn wait(&self) {
        let mut resumed = self.resumed.lock().expect("pause gate");
        while !*resumed {
            let now = Instant::now();
            if now >= self.deadline {
                tracing::warn!("a pause outlived its deadline; the set goes on");
                return;
            }
            resumed = self.woken.wait_timeout(resumed, self.deadline - now).expect("pause gate").0;
        }
    }

    /// Lets every writer go on; answers whether all were still waiting
    /// (the deadline had not passed: none could have gone on by itself).
    fn resume(&self) -> bool {
        let mut resumed = self.resumed.lock().expect("pause gate");
        let in_time = !*resumed && Instant::now() < self.deadline;
        *resumed = true;
        self.woken.notify_all();
        in_time
    }
}

/// Every set held here, paused at a batch boundary. Dropped, it resumes
/// them.
pub struct Paused {
    gate: Arc<Gate>,
    since: Instant,
}

/// A pause that did not hold: a set did not reach the gate in time, or the
/// deadline passed before the copy ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PauseFailed(pub String);

impl Paused {
    pub(crate) fn new(deadline: Instant) -> (Paused, Arc<Gate>) {
        let gate = Arc::new(Gate::new(deadline));
        (Paused { gate: gate.clone(), since: Instant::now() }, gate)
    }

    /// Resumes every set; answers how long the pause lasted, or that it did
    /// not hold to the end (a writer went on by itself at the deadline).
    pub fn resume(self) -> Result<Duration, PauseFailed> {
        let lasted = self.since.elapsed();
        if self.gate.resume() {
            Ok(lasted)
        } else {
            Err(PauseFailed(format!("the pause outlived its deadline ({} ms): the sets went on", lasted.as_millis())))
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        self.gate.resume();
    }
}

/// While held, no writer trims its journal. Dropped, trims go on.
pub struct TrimHold {
    holds: Arc<AtomicUsize>,
}

impl TrimHold {
    pub(crate) fn new(holds: Arc<AtomicUsize>) -> TrimHold {
        holds.fetch_add(1, Ordering::SeqCst);
        TrimHold { holds }
    }
}

impl Drop for TrimHold {
    fn drop(&mut self) {
        self.holds.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether a trim hold is in force (read by each writer before it trims).
pub(crate) fn trims_held(holds: &AtomicUsize) -> bool {
    holds.load(Ordering::SeqCst) > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_resumed_in_time_holds_and_one_past_its_deadline_does_not() {
        let (paused, gate) = Paused::new(Instant::now() + Duration::from_secs(5));
        let waiter = std::thread::spawn(move || gate.wait());
        assert!(paused.resume().is_ok());
        waiter.join().unwrap();
        let (paused, gate) = Paused::new(Instant::now() + Duration::from_millis(20));
        gate.wait(); // returns by itself at the deadline
        assert!(paused.resume().is_err(), "a writer may have gone on: the copy is torn");
    }
}
