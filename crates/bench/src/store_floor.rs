//! `open-store` (only when `--only` names it): what the commit point and
//! the tables alone cost for the opens `open-engine` makes, to show how much
//! of the engine's time is theirs.
//!
//! An engine runs the `open-engine` workload on journals that record every
//! batch appended. Those records are then replayed into a fresh data
//! directory by one thread per set (as the writers run), with nothing else
//! running: no engine, no clients. First appended to fresh journals, one
//! fdatasync each (`open-journal`: the commit point's ceiling), then
//! materialized into fresh tables in the materializer's transactions
//! (`open-tables`: what bounds a sustained rate, since the tables must keep
//! up with the journal for it to be trimmed).

use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use hongbao_domain::SetId;
use hongbao_engine::{
    BATCHES_PER_TRANSACTION_MAX, Engine, Journal, JournalError, Journaled, OsEntropy, Position, SetStores, Store,
    StoreError, SystemClock,
};
use hongbao_journal::FileJournal;
use hongbao_node::DataDir;
use hongbao_node::data_dir::StoreKind;
use hongbao_store_sqlite::{journal_path, open_set};
use indicatif::ProgressBar;

use crate::hongbao::{OpenEngine, bench_config, prepare};
use crate::load::{Mode, drive, histogram};
use crate::report::RunResult;

type Records = Arc<Mutex<Vec<(Position, Vec<u8>)>>>;

/// A set's journal, keeping a copy of every record it appends.
struct Recording {
    inner: Box<dyn Journal>,
    records: Records,
}

impl Journal for Recording {
    fn append(&mut self, position: Position, payload: &[u8]) -> Result<(), JournalError> {
        self.inner.append(position, payload)?;
        self.records.lock().expect("records lock").push((position, payload.to_vec()));
        Ok(())
    }

    fn recover(
        &mut self,
        after: Position,
        each: &mut hongbao_engine::journal::EachRecord<'_>,
    ) -> Result<Position, JournalError> {
        self.inner.recover(after, each)
    }

    fn trim(&mut self, upto: Position) -> Result<(), JournalError> {
        self.inner.trim(upto)
    }
}

/// What the passes measured.
pub struct StoreFloor {
    /// The engine's opens per second while recording (`open-engine`'s run).
    pub engine: RunResult,
    /// Appending the records alone; latency is per append.
    pub journal: RunResult,
    /// Materializing them alone; latency is per transaction.
    pub tables: RunResult,
    /// Starting an engine over a journal that holds every record and tables
    /// that hold none: what a restart after a crash replays.
    pub recovery: RunResult,
    pub batches: usize,
}

fn data_dir(root: &std::path::Path, sets: u16) -> Result<DataDir> {
    Ok(DataDir::open_or_create(&root.join("data"), Some(sets), sets, StoreKind::Sqlite)?)
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
    let logs: Vec<Records> = (0..sets).map(|_| Arc::default()).collect();
    let stores = (0..sets)
        .map(|set| {
            let stores = open_set(&dir.path, SetId(set))?;
            let journal = Recording { inner: stores.journal, records: logs[usize::from(set)].clone() };
            Ok(SetStores { journal: Box::new(journal), ..stores })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let engine = Engine::start(bench_config(), stores, Arc::new(SystemClock), |_| Box::new(OsEntropy))?;
    let plan = Arc::new(prepare(&engine, packets, count).await?);
    // Batches up to here set the packets up; the replay commits them untimed.
    let setup: Vec<usize> = logs.iter().map(|log| log.lock().expect("records lock").len()).collect();
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
    let logs: Vec<Vec<(Position, Vec<u8>)>> =
        logs.into_iter().map(|log| std::mem::take(&mut *log.lock().expect("records lock"))).collect();
    tokio::task::spawn_blocking(move || replay(sets, logs, setup, engine_run)).await?
}

/// One set's share of a replay: opens, batches and per-item latencies.
type Replayed = (u64, usize, Histogram<u64>);

/// Replays every set's records into a fresh directory, one thread per set,
/// timing only the records after setup: appended to journals, then
/// materialized into tables.
fn replay(sets: u16, logs: Vec<Vec<(Position, Vec<u8>)>>, setup: Vec<usize>, engine: RunResult) -> Result<StoreFloor> {
    let fresh = tempfile::tempdir().context("making a temporary data directory")?;
    let dir = data_dir(fresh.path(), sets)?;
    let logs = Arc::new(logs);
    let journal = timed(sets, "open-journal", {
        let (path, logs, setup) = (dir.path.clone(), logs.clone(), setup.clone());
        move |set, start| append_all(&path, set, &logs[set], setup[set], start)
    })?;
    let tables = timed(sets, "open-tables", {
        let (path, logs) = (dir.path.clone(), logs.clone());
        move |set, start| materialize_all(&path, set, &logs[set], setup[set], start)
    })?;
    let batches = journal.1.iter().sum();
    let recovery = recover_all(sets, &logs)?;
    Ok(StoreFloor { engine, journal: journal.0, tables: tables.0, recovery, batches })
}

/// Appends every record to fresh journals (untimed), then times an engine's
/// start over them: the tables materialized from the journal, then memory
/// loaded from the tables.
fn recover_all(sets: u16, logs: &[Vec<(Position, Vec<u8>)>]) -> Result<RunResult> {
    let fresh = tempfile::tempdir().context("making a temporary data directory")?;
    let dir = data_dir(fresh.path(), sets)?;
    let mut opens = 0;
    for (set, log) in logs.iter().enumerate() {
        let mut journal = FileJournal::open(&journal_path(&dir.path, SetId(set as u16)))?;
        journal.recover(0, &mut |_, _| Ok(()))?;
        for (position, payload) in log {
            journal.append(*position, payload)?;
        }
        opens += decoded(log)?.iter().map(|batch| batch.effects.claims.len() as u64).sum::<u64>();
    }
    let stores = (0..sets).map(|set| open_set(&dir.path, SetId(set))).collect::<Result<Vec<_>, _>>()?;
    let began = Instant::now();
    let engine = Engine::start(bench_config(), stores, Arc::new(SystemClock), |_| Box::new(OsEntropy))?;
    let elapsed = began.elapsed();
    engine.shutdown();
    eprintln!("recovery: {opens} journaled opens (none materialized) replayed and served again in {elapsed:.2?}");
    let mut latency = histogram();
    latency.saturating_record((elapsed.as_micros() as u64).max(1));
    Ok(RunResult::timed("recovery", usize::from(sets), opens, elapsed, &latency))
}

/// Runs `each` on one thread per set; each prepares, waits at the barrier
/// (on every path, so a failed preparation cannot hang the others), and
/// runs. Opens over the wall time from the barrier to the last thread's end.
fn timed(
    sets: u16,
    name: &str,
    each: impl Fn(usize, &Barrier) -> Result<Replayed> + Send + Sync + 'static,
) -> Result<(RunResult, Vec<usize>)> {
    let start = Arc::new(Barrier::new(usize::from(sets) + 1));
    let each = Arc::new(each);
    let threads: Vec<_> = (0..usize::from(sets))
        .map(|set| {
            let (each, start) = (each.clone(), start.clone());
            std::thread::spawn(move || each(set, &start))
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let (mut opens, mut batches, mut latency) = (0, Vec::new(), histogram());
    for thread in threads {
        let (set_opens, set_batches, set_latency) =
            thread.join().map_err(|_| anyhow::anyhow!("a replay thread panicked"))??;
        opens += set_opens;
        batches.push(set_batches);
        latency.add(&set_latency).expect("same bounds");
    }
    let run = RunResult::timed(name, usize::from(sets), opens, began.elapsed(), &latency);
    Ok((run, batches))
}

/// The records decoded (untimed), with the opens each holds.
fn decoded(log: &[(Position, Vec<u8>)]) -> Result<Vec<Journaled>> {
    Ok(log.iter().map(|(position, payload)| Journaled::decode(*position, payload)).collect::<Result<_, _>>()?)
}

fn append_all(
    path: &std::path::Path,
    set: usize,
    log: &[(Position, Vec<u8>)],
    setup: usize,
    start: &Barrier,
) -> Result<Replayed> {
    let prepared = (|| -> Result<_> {
        let opens: Vec<u64> = decoded(log)?.iter().map(|batch| batch.effects.claims.len() as u64).collect();
        let mut journal = FileJournal::open(&journal_path(path, SetId(set as u16)))?;
        journal.recover(0, &mut |_, _| Ok(()))?;
        for (position, payload) in &log[..setup] {
            journal.append(*position, payload)?;
        }
        Ok((journal, opens))
    })();
    start.wait();
    let (mut journal, opens) = prepared?;
    let mut per_append = histogram();
    for (position, payload) in &log[setup..] {
        let began = Instant::now();
        journal.append(*position, payload)?;
        per_append.saturating_record((began.elapsed().as_micros() as u64).max(1));
    }
    Ok((opens[setup..].iter().sum(), log.len() - setup, per_append))
}

fn materialize_all(
    path: &std::path::Path,
    set: usize,
    log: &[(Position, Vec<u8>)],
    setup: usize,
    start: &Barrier,
) -> Result<Replayed> {
    let prepared = (|| -> Result<_> {
        let batches = decoded(log)?;
        let mut tables = open_set(path, SetId(set as u16))?.materializer;
        for chunk in batches[..setup].chunks(BATCHES_PER_TRANSACTION_MAX) {
            tables.materialize(chunk)?;
        }
        Ok((tables, batches))
    })();
    start.wait();
    let (mut tables, batches) = prepared?;
    let mut per_transaction = histogram();
    let mut opens = 0;
    for chunk in batches[setup..].chunks(BATCHES_PER_TRANSACTION_MAX) {
        let began = Instant::now();
        tables.materialize(chunk)?;
        tables.maintain();
        per_transaction.saturating_record((began.elapsed().as_micros() as u64).max(1));
        opens += chunk.iter().map(|batch| batch.effects.claims.len() as u64).sum::<u64>();
    }
    Ok((opens, batches.len() - setup, per_transaction))
}
