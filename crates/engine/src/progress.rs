//! How far one set has come, shared by its writer, its materializer and the
//! readers: the last position answered, the last materialized, and whether
//! the set serves writes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::journal::Position;

#[derive(Debug)]
pub(crate) struct Progress {
    /// The last position whose batch was durable before it was answered.
    acked: AtomicU64,
    /// The last position the tables hold (mirrored in `changes` for waiters).
    materialized: AtomicU64,
    /// The last position the tables hold across a power failure: the
    /// journal is trimmed up to it.
    durable: AtomicU64,
    changes: watch::Sender<Position>,
    /// False while the writer recovers from a failed append.
    healthy: AtomicBool,
    /// Set once the engine stops: a materializer that cannot write gives
    /// up then (the journal holds the rest for the next start).
    stopping: AtomicBool,
    /// Why the materializer stopped, if a record was refused by the tables:
    /// an engine bug, which stops the set's writes until an operator acts.
    halted: Mutex<Option<String>>,
    /// Set when the journal fenced the writer (another node took the set):
    /// the writer stops, and never appends again.
    fenced: AtomicBool,
}

impl Progress {
    /// Nothing acknowledged or materialized yet: the materializer publishes
    /// the tables' position when it starts, the writer each append.
    pub(crate) fn new() -> Progress {
        Progress {
            acked: AtomicU64::new(0),
            materialized: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            changes: watch::Sender::new(0),
            healthy: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            halted: Mutex::new(None),
            fenced: AtomicBool::new(false),
        }
    }

    pub(crate) fn acked(&self) -> Position {
        self.acked.load(Ordering::Acquire)
    }

    /// Called after a batch is durable and before it is answered, so a
    /// client that was answered reads a position at least its batch's.
    pub(crate) fn ack(&self, position: Position) {
        self.acked.store(position, Ordering::Release);
    }

    pub(crate) fn materialized(&self) -> Position {
        self.materialized.load(Ordering::Acquire)
    }

    pub(crate) fn set_materialized(&self, position: Position) {
        self.materialized.store(position, Ordering::Release);
        self.changes.send_replace(position);
    }

    pub(crate) fn durable(&self) -> Position {
        self.durable.load(Ordering::Acquire)
    }

    pub(crate) fn set_durable(&self, position: Position) {
        self.durable.store(position, Ordering::Release);
    }

    /// Waits until the tables hold `position`, for at most `wait`.
    pub(crate) async fn materialized_past(&self, position: Position, wait: Duration) -> bool {
        if self.materialized() >= position {
            return true;
        }
        let mut changes = self.changes.subscribe();
        let reached = changes.wait_for(|materialized| *materialized >= position);
        matches!(tokio::time::timeout(wait, reached).await, Ok(Ok(_)))
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.halted().is_none()
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    pub(crate) fn fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    pub(crate) fn fence(&self) {
        self.fenced.store(true, Ordering::Release);
    }

    pub(crate) fn halted(&self) -> Option<String> {
        self.halted.lock().expect("halt lock").clone()
    }

    pub(crate) fn halt(&self, why: String) {
        *self.halted.lock().expect("halt lock") = Some(why);
    }
}
