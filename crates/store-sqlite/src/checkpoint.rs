//! The background checkpointer: copies a set's WAL back into its database
//! off the writer's thread, so a batch commit never pays for a checkpoint.
//! The writer's connection has automatic checkpoints turned off.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use tracing::warn;

/// How often the WAL is copied back. Often enough that the WAL stays small
/// (reads stay fast), rarely enough that it costs little.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// The WAL size past which the checkpointer also rewinds the WAL. Passive
/// checkpoints copy pages but, under steady writes, never find the WAL fully
/// copied at the moment the writer starts its next batch, so the WAL would
/// grow without bound (and every read would search it). A TRUNCATE
/// checkpoint holds the writer back only while it copies the few frames
/// the last passive run missed.
const WAL_BYTES_MAX: u64 = 8 * 1024 * 1024;

pub(crate) struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub(crate) fn start(path: PathBuf) -> Checkpointer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("hongbao-checkpoint".into())
            .spawn(move || run(&path, &flag))
            .map_err(|error| warn!(%error, "no checkpointer thread; the WAL grows until restart"))
            .ok();
        Checkpointer { stop, thread }
    }
}

fn run(path: &PathBuf, stop: &AtomicBool) {
    let mut connection: Option<Connection> = None;
    let wal_path = PathBuf::from(format!("{}-wal", path.display()));
    while !stop.load(Ordering::Acquire) {
        std::thread::park_timeout(CHECKPOINT_INTERVAL);
        if connection.is_none() {
            connection = Connection::open(path).ok();
            if let Some(connection) = &connection {
                let _ = connection.busy_timeout(Duration::from_secs(5));
            }
        }
        if let Some(connection) = &connection {
            // PASSIVE never blocks the writer or readers; what it cannot copy
            // now it copies next time.
            if let Err(error) = connection.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
                warn!(%error, path = %path.display(), "checkpoint failed; retrying");
            }
            let wal = wal_path.metadata().map_or(0, |metadata| metadata.len());
            if wal > WAL_BYTES_MAX
                && let Err(error) = connection.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            {
                warn!(%error, path = %path.display(), "WAL rewind failed; retrying");
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
