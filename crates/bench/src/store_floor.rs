//! `open-store` (only when `--only` names it): what the store alone costs
//! for the opens `open-engine` makes, to show how much of the engine's time
//! is the store's.
//!
//! An engine runs the `open-engine` workload on SQLite stores that record
//! every batch they commit. Those batches are then committed again, in the
//! same order and sizes, into a fresh data directory by one thread per set
//! (as the writers run), with nothing else running: no engine, no clients.
//! Opens per second of that replay is the store's ceiling for this workload
//! on this machine; the engine cannot be faster than it.

use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use hongbao_domain::{Millis, SetId};
use hongbao_engine::{
    Effects, Engine, Fetched, OsEntropy, Recovered, SetStores, Store, StoreError, SystemClock, Wants,
};
use hongbao_node::DataDir;
use hongbao_store_sqlite::{SqliteStore, open_set};
use indicatif::ProgressBar;

use crate::hongbao::{OpenEngine, bench_config, prepare};
use crate::load::{Mode, drive, histogram};
use crate::report::RunResult;

/// SQLite's store, keeping a copy of every batch it commits.
struct Recording {
    inner: SqliteStore,
    batches: Arc<Mutex<Vec<Effects>>>,
}

impl Store for Recording {
    fn recover(&mut self, now: Millis) -> Result<Recovered, StoreError> {
        self.inner.recover(now)
    }

    fn prefetch(&mut self, wants: &Wants) -> Result<Fetched, StoreError> {
        self.inner.prefetch(wants)
    }

    fn commit(&mut self, effects: &Effects) -> Result<(), StoreError> {
        self.inner.commit(effects)?;
        self.batches.lock().expect("batches lock").push(effects.clone());
        Ok(())
    }

    fn maintain(&mut self) {
        self.inner.maintain();
    }
}

/// What the two passes measured.
pub struct StoreFloor {
    /// The engine's opens per second while recording (`open-engine`'s run).
    pub engine: RunResult,
    /// The replay: opens per second of the store alone; latency is per batch.
    pub store: RunResult,
    pub batches: usize,
}

fn data_dir(root: &std::path::Path, sets: u16) -> Result<DataDir> {
    Ok(DataDir::open_or_create(&root.join("data"), Some(sets), sets)?)
}

pub async fn measure(
    sets: u16,
    packets: usize,
    count: u32,
    clients: usize,
    duration: Duration,
    bar: &ProgressBar,
) -> Result<StoreFloor> {
    let recorded = tempfile::tempdir().context("making a temporary data directory")?;
    let dir = data_dir(recorded.path(), sets)?;
    let logs: Vec<Arc<Mutex<Vec<Effects>>>> = (0..sets).map(|_| Arc::default()).collect();
    let stores = (0..sets)
        .map(|set| {
            let SetStores { store, reader } = open_set(&dir.path, SetId(set))?;
            Ok(SetStores { store: Recording { inner: store, batches: logs[usize::from(set)].clone() }, reader })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let engine = Engine::start(bench_config(), stores, Arc::new(SystemClock), |_| Box::new(OsEntropy))?;
    let plan = Arc::new(prepare(&engine, packets, count).await?);
    // Batches up to here set the packets up; the replay commits them untimed.
    let setup: Vec<usize> = logs.iter().map(|log| log.lock().expect("batches lock").len()).collect();
    let clients: Vec<_> =
        (0..clients).map(|_| OpenEngine { engine: engine.clone(), plan: plan.clone(), acked: Vec::new() }).collect();
    let mode = Mode::Closed { clients: clients.len() };
    let (measured, _) = drive(mode, duration, clients, bar).await;
    let engine_run = RunResult::new("open-store-engine", mode.clients(), &measured);
    tokio::task::spawn_blocking({
        let engine = engine.clone();
        move || engine.shutdown()
    })
    .await?;
    let logs: Vec<Vec<Effects>> =
        logs.into_iter().map(|log| std::mem::take(&mut *log.lock().expect("batches lock"))).collect();
    tokio::task::spawn_blocking(move || replay(sets, logs, setup, engine_run)).await?
}

/// Commits every set's recorded batches into a fresh directory, one thread
/// per set, timing only the batches after setup.
fn replay(sets: u16, logs: Vec<Vec<Effects>>, setup: Vec<usize>, engine: RunResult) -> Result<StoreFloor> {
    let fresh = tempfile::tempdir().context("making a temporary data directory")?;
    let dir = data_dir(fresh.path(), sets)?;
    let start = Arc::new(Barrier::new(usize::from(sets) + 1));
    let threads: Vec<_> = logs
        .into_iter()
        .zip(setup)
        .enumerate()
        .map(|(set, (batches, setup))| {
            let (path, start) = (dir.path.clone(), start.clone());
            std::thread::spawn(move || -> Result<(u64, usize, Histogram<u64>)> {
                let mut store = open_set(&path, SetId(set as u16))?.store;
                store.recover(Millis(0))?;
                for effects in &batches[..setup] {
                    store.commit(effects)?;
                }
                start.wait();
                let mut opens = 0;
                let mut per_batch = histogram();
                for effects in &batches[setup..] {
                    let began = Instant::now();
                    store.commit(effects)?;
                    store.maintain();
                    per_batch.saturating_record((began.elapsed().as_micros() as u64).max(1));
                    opens += effects.claims.len() as u64;
                }
                Ok((opens, batches.len() - setup, per_batch))
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let (mut opens, mut batches) = (0, 0);
    let mut per_batch = histogram();
    for thread in threads {
        let (set_opens, set_batches, histogram) =
            thread.join().map_err(|_| anyhow::anyhow!("a replay thread panicked"))??;
        opens += set_opens;
        batches += set_batches;
        per_batch.add(&histogram).expect("same bounds");
    }
    let elapsed = began.elapsed();
    let store = RunResult {
        name: "open-store".into(),
        ops_per_s: opens as f64 / elapsed.as_secs_f64(),
        p50_us: per_batch.value_at_quantile(0.5),
        p99_us: per_batch.value_at_quantile(0.99),
        p999_us: per_batch.value_at_quantile(0.999),
        errors: 0,
        ops: opens,
        clients: usize::from(sets),
        timeline: Vec::new(),
        overload: None,
    };
    Ok(StoreFloor { engine, store, batches })
}
