//! A journaled batch the tables refuse is an engine bug: the set halts on
//! it, names the record, takes no writes and answers no stale read, and the
//! record is kept (never skipped), so a fixed build replays it.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hongbao_domain::{Amount, DepositOutcome, Millis, SetId, UserId};
use hongbao_engine::{
    Engine, EngineConfig, EngineError, Fetched, Journaled, Position, Recovered, SeededEntropy, SetStores, Store,
    StoreError, SystemClock, Wants,
};
use hongbao_store_sqlite::{SqliteStore, open_set, snapshot};

/// SQLite's tables, refusing (as a constraint would) the batch at one
/// journal position, as long as `refuse` holds it.
struct Refusing {
    inner: SqliteStore,
    refuse: Arc<AtomicU64>,
}

impl Store for Refusing {
    fn recover(&mut self, now: Millis) -> Result<Recovered, StoreError> {
        self.inner.recover(now)
    }

    fn prefetch(&mut self, wants: &Wants) -> Result<Fetched, StoreError> {
        self.inner.prefetch(wants)
    }

    fn materialized(&mut self) -> Result<Position, StoreError> {
        self.inner.materialized()
    }

    fn materialize(&mut self, batches: &[Journaled]) -> Result<(), StoreError> {
        let refused = self.refuse.load(Ordering::SeqCst);
        if batches.iter().any(|batch| batch.position == refused) {
            return Err(StoreError::refused("injected: CHECK constraint failed: balance >= 0"));
        }
        self.inner.materialize(batches)
    }

    fn durable(&mut self) -> Position {
        self.inner.durable()
    }
}

fn start(dir: &std::path::Path, refuse: &Arc<AtomicU64>) -> Engine {
    let stores = vec![{
        let stores = open_set(dir, SetId(0)).unwrap();
        let wrap = |inner| Refusing { inner, refuse: refuse.clone() };
        SetStores {
            journal: stores.journal,
            writer: wrap(stores.writer),
            materializer: wrap(stores.materializer),
            reader: stores.reader,
        }
    }];
    let clock = Arc::new(SystemClock);
    Engine::start(EngineConfig::default(), stores, clock, |_| Box::new(SeededEntropy::new(1))).unwrap()
}

async fn deposit(engine: &Engine, who: &str, fen: u64) -> Result<DepositOutcome, EngineError> {
    engine.deposit(UserId::parse(who).unwrap(), Amount::from_fen(fen).unwrap(), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_record_halts_its_set_by_name_and_is_replayed_once_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let refuse = Arc::new(AtomicU64::new(3));
    let engine = start(dir.path(), &refuse);
    // Three batches: the third is journaled and answered, then refused by the tables.
    for n in 0..3 {
        assert!(matches!(deposit(&engine, "alice", 100).await, Ok(DepositOutcome::Deposited { .. })), "{n}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.halted().is_empty() {
        assert!(Instant::now() < deadline, "the set did not halt");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let why = engine.halted().join("; ");
    assert!(why.contains("journal record 3") && why.contains("balance >= 0"), "{why}");
    assert_eq!(engine.unavailable_sets(), [SetId(0)]);
    assert_eq!(deposit(&engine, "bob", 1).await, Err(EngineError::Unavailable), "no writes");
    let read = engine.balance(UserId::parse("alice").unwrap()).await;
    assert_eq!(read, Err(EngineError::Unavailable), "no read that misses an acknowledged write");
    tokio::task::spawn_blocking(move || engine.shutdown()).await.unwrap();
    assert_eq!(
        snapshot(dir.path(), SetId(0), hongbao_engine::ColdDays::Rows).unwrap().accounts[0].balance,
        300,
        "the audit replays record 3"
    );

    // A build that does not refuse it replays it: nothing was skipped.
    refuse.store(0, Ordering::SeqCst);
    let engine = start(dir.path(), &refuse);
    assert_eq!(engine.balance(UserId::parse("alice").unwrap()).await, Ok(Amount::from_fen(300).unwrap()));
    assert!(matches!(deposit(&engine, "bob", 1).await, Ok(DepositOutcome::Deposited { .. })));
    tokio::task::spawn_blocking(move || engine.shutdown()).await.unwrap();
}
