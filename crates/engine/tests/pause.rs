//! Pausing every set (what `hongbao backup` does while it copies the
//! journals): a write queued during the pause is answered only once the
//! sets go on, and applied then; a pause that outlives its deadline is
//! known not to have held.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use hongbao_domain::{Amount, DepositOutcome, SetId, UserId};
use hongbao_engine::{Engine, EngineConfig, SeededEntropy, SystemClock};
use hongbao_store_sqlite::open_set;

fn start(dir: &std::path::Path, sets: u16) -> Engine {
    let stores = (0..sets).map(|set| open_set(dir, SetId(set)).unwrap()).collect();
    let config = EngineConfig { queue_wait_max: Duration::from_secs(10), ..EngineConfig::default() };
    Engine::start(config, stores, Arc::new(SystemClock), |set| Box::new(SeededEntropy::new(u64::from(set.0)))).unwrap()
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_a_pause_is_answered_only_after_the_sets_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path(), 4);
    engine.deposit(user("alice"), Amount::from_fen(100).unwrap(), None).await.unwrap();
    let pausing = engine.clone();
    let paused = tokio::task::spawn_blocking(move || pausing.pause(Instant::now() + Duration::from_secs(5)))
        .await
        .unwrap()
        .unwrap();
    let writing = engine.clone();
    let mut deposit =
        tokio::spawn(async move { writing.deposit(user("alice"), Amount::from_fen(50).unwrap(), None).await });
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut deposit).await;
    assert!(waited.is_err(), "a write was answered while every set was paused");
    let lasted = paused.resume().unwrap();
    assert!(lasted >= Duration::from_millis(300), "{lasted:?}");
    let answer = tokio::time::timeout(Duration::from_secs(5), deposit).await.unwrap().unwrap().unwrap();
    assert!(matches!(answer, DepositOutcome::Deposited { balance, .. } if balance.fen() == 150), "{answer:?}");
    tokio::task::spawn_blocking(move || engine.shutdown()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_past_its_deadline_did_not_hold_and_the_sets_went_on_by_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path(), 2);
    let pausing = engine.clone();
    let paused = tokio::task::spawn_blocking(move || pausing.pause(Instant::now() + Duration::from_millis(200)))
        .await
        .unwrap()
        .unwrap();
    // Past the deadline, the writers serve without being resumed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer =
        tokio::time::timeout(Duration::from_secs(5), engine.deposit(user("bob"), Amount::from_fen(7).unwrap(), None))
            .await
            .unwrap()
            .unwrap();
    assert!(matches!(answer, DepositOutcome::Deposited { balance, .. } if balance.fen() == 7), "{answer:?}");
    assert!(paused.resume().is_err(), "a copy taken across the deadline is torn");
    tokio::task::spawn_blocking(move || engine.shutdown()).await.unwrap();
}
