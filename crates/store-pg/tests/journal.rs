//! A set's journal on PostgreSQL (`PgJournal`, as `open_sets` hands it out)
//! against the contract of `hongbao_engine::Journal`: records come back in
//! order, from any position; a position is written once; a gap is refused,
//! never skipped; a trim never lets go of a record above its bound.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use hongbao_engine::{Journal, JournalError, Position};
use hongbao_store_pg::testing::TestDatabase;
use hongbao_store_pg::{SetMap, open_sets};

fn payload(position: Position) -> Vec<u8> {
    format!("record {position}").into_bytes()
}

/// Records as `recover` hands them on: each position with its bytes.
type Records = Vec<(Position, Vec<u8>)>;

/// The records past `after` and the last position `recover` answers.
fn recovered(journal: &mut dyn Journal, after: Position) -> Result<(Records, Position), JournalError> {
    let mut records = Vec::new();
    let last = journal.recover(after, &mut |position, bytes| {
        records.push((position, bytes.to_vec()));
        Ok(())
    })?;
    Ok((records, last))
}

fn expected(positions: impl IntoIterator<Item = Position>) -> Records {
    positions.into_iter().map(|position| (position, payload(position))).collect()
}

/// Writes records `first..=last` of set 0 beside the journal, in one
/// statement: many records quickly, each the same as `payload` makes, at
/// the set's epoch (the fence refuses any other).
fn insert_records(url: &str, first: Position, last: Position) {
    let sql = format!(
        "INSERT INTO journal (set_id, position, record, epoch) \
         SELECT 0, g, convert_to('record ' || g, 'UTF8'), (SELECT epoch FROM hongbao_leases WHERE set_id = 0) \
         FROM generate_series({first}, {last}) g"
    );
    common::sql(url, &sql).unwrap();
}

#[test]
fn appended_records_are_recovered_in_order_after_any_position() {
    let Some(db) = TestDatabase::create("appended_records_are_recovered_in_order_after_any_position") else { return };
    let mut stores = open_sets(&SetMap::single(db.url()), 1).unwrap();
    let journal = &mut stores[0].journal;
    assert_eq!(recovered(journal.as_mut(), 0).unwrap(), (vec![], 0), "a new journal is empty");
    for position in 1..=5 {
        journal.append(position, &payload(position)).unwrap();
    }
    assert_eq!(recovered(journal.as_mut(), 0).unwrap(), (expected(1..=5), 5));
    assert_eq!(recovered(journal.as_mut(), 3).unwrap(), (expected(4..=5), 5));
    assert_eq!(recovered(journal.as_mut(), 5).unwrap(), (vec![], 5), "nothing past the last record");
    // Appends go on after a recovery.
    journal.append(6, &payload(6)).unwrap();
    assert_eq!(recovered(journal.as_mut(), 4).unwrap(), (expected(5..=6), 6));
    // An empty record is a record too.
    journal.append(7, &[]).unwrap();
    let (records, last) = recovered(journal.as_mut(), 6).unwrap();
    assert_eq!((records, last), (vec![(7, Vec::new())], 7));
}

#[test]
fn records_survive_the_stores_being_dropped_and_reopened() {
    let Some(db) = TestDatabase::create("records_survive_the_stores_being_dropped_and_reopened") else { return };
    let map = SetMap::single(db.url());
    let mut stores = open_sets(&map, 1).unwrap();
    for position in 1..=3 {
        stores[0].journal.append(position, &payload(position)).unwrap();
    }
    drop(stores);
    let mut stores = open_sets(&map, 1).unwrap();
    assert_eq!(recovered(stores[0].journal.as_mut(), 0).unwrap(), (expected(1..=3), 3));
}

#[test]
fn recovery_reads_every_record_in_order_across_its_pages() {
    let Some(db) = TestDatabase::create("recovery_reads_every_record_in_order_across_its_pages") else { return };
    let mut stores = open_sets(&SetMap::single(db.url()), 1).unwrap();
    // More than one page of the recovery's reads (4096 records a page),
    // with a page boundary met exactly once more from position 4096.
    insert_records(&db.url(), 1, 10_000);
    let journal = stores[0].journal.as_mut();
    assert_eq!(recovered(journal, 0).unwrap(), (expected(1..=10_000), 10_000));
    assert_eq!(recovered(journal, 4096).unwrap(), (expected(4097..=10_000), 10_000));
    assert_eq!(recovered(journal, 9_999).unwrap(), (expected([10_000]), 10_000));
}

#[test]
fn an_append_at_a_written_position_fails_and_keeps_the_first_record() {
    let name = "an_append_at_a_written_position_fails_and_keeps_the_first_record";
    let Some(db) = TestDatabase::create(name) else { return };
    let mut stores = open_sets(&SetMap::single(db.url()), 1).unwrap();
    let journal = stores[0].journal.as_mut();
    journal.append(1, &payload(1)).unwrap();
    journal.append(2, &payload(2)).unwrap();
    for position in [1, 2] {
        let error = journal.append(position, b"a second record").unwrap_err();
        assert!(matches!(error, JournalError::Io(_)), "{error}");
    }
    assert_eq!(recovered(journal, 0).unwrap(), (expected(1..=2), 2), "the first records stand");
    // After the failed appends (and the recovery they call for), the next
    // position is written as usual.
    journal.append(3, &payload(3)).unwrap();
    assert_eq!(recovered(journal, 0).unwrap(), (expected(1..=3), 3));
}

#[test]
fn the_journals_of_two_sets_are_kept_apart() {
    let Some(db) = TestDatabase::create("the_journals_of_two_sets_are_kept_apart") else { return };
    let mut stores = open_sets(&SetMap::single(db.url()), 2).unwrap();
    stores[0].journal.append(1, b"set 0").unwrap();
    stores[1].journal.append(1, b"set 1").unwrap();
    stores[1].journal.append(2, b"set 1 again").unwrap();
    assert_eq!(recovered(stores[0].journal.as_mut(), 0).unwrap(), (vec![(1, b"set 0".to_vec())], 1));
    let set_1 = vec![(1, b"set 1".to_vec()), (2, b"set 1 again".to_vec())];
    assert_eq!(recovered(stores[1].journal.as_mut(), 0).unwrap(), (set_1, 2));
}

#[test]
fn recovery_refuses_a_journal_with_a_record_missing() {
    let Some(db) = TestDatabase::create("recovery_refuses_a_journal_with_a_record_missing") else { return };
    let mut stores = open_sets(&SetMap::single(db.url()), 1).unwrap();
    let journal = stores[0].journal.as_mut();
    for position in 1..=4 {
        journal.append(position, &payload(position)).unwrap();
    }
    common::sql(&db.url(), "DELETE FROM journal WHERE set_id = 0 AND position = 2").unwrap();
    match recovered(journal, 0) {
        Err(JournalError::Invalid { position: 3, why }) => assert!(why.contains("missing"), "{why}"),
        other => panic!("a gap must be refused at the record after it, got {other:?}"),
    }
    // The first record missing is a gap too.
    common::sql(&db.url(), "DELETE FROM journal WHERE set_id = 0 AND position = 1").unwrap();
    assert!(matches!(recovered(journal, 0), Err(JournalError::Invalid { position: 3, .. })));
    // Past the gap, the records follow each other again.
    assert_eq!(recovered(journal, 2).unwrap(), (expected(3..=4), 4));
}

#[test]
fn a_trim_keeps_every_record_above_its_bound() {
    let Some(db) = TestDatabase::create("a_trim_keeps_every_record_above_its_bound") else { return };
    let mut stores = open_sets(&SetMap::single(db.url()), 1).unwrap();
    let url = db.url();
    insert_records(&url, 1, 5_000);
    let journal = stores[0].journal.as_mut();
    journal.trim(10).unwrap();
    assert_eq!(recovered(journal, 10).unwrap(), (expected(11..=5_000), 5_000));
    journal.trim(4_990).unwrap();
    assert_eq!(recovered(journal, 4_990).unwrap(), (expected(4_991..=5_000), 5_000));
    // Thousands of records below the bound are let go of, not kept forever.
    assert_eq!(common::value(&url, "SELECT count(*) FROM journal WHERE position <= 4990"), "0");
    // Appends go on after a trim.
    journal.append(5_001, &payload(5_001)).unwrap();
    assert_eq!(recovered(journal, 4_990).unwrap(), (expected(4_991..=5_001), 5_001));
}

/// A set's writer connection that is lost (here ended by the server, as a
/// database restart ends it) fails the append in flight; the recovery that
/// follows (the engine's, after a failed append) opens a new connection,
/// takes the set's lock again, and the journal and the prefetches go on.
#[test]
fn a_lost_writer_connection_is_reopened_with_the_sets_lock_and_the_journal_goes_on() {
    let name = "a_lost_writer_connection_is_reopened_with_the_sets_lock_and_the_journal_goes_on";
    let Some(db) = TestDatabase::create(name) else { return };
    let mut stores = open_sets(&SetMap::single(db.url()), 1).unwrap();
    let set = &mut stores[0];
    set.journal.append(1, &payload(1)).unwrap();
    let ended = common::value(
        &db.url(),
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'hongbao-set-0'",
    );
    assert_eq!(ended, "1", "the set's writer connection, found by its name");
    // The server may end the connection between statements: the next use
    // finds it closed, or fails and the one after does.
    let mut failures = 0;
    while set.journal.append(2, &payload(2)).is_err() {
        failures += 1;
        assert!(failures < 3, "the append never went through on a new connection");
        recovered(set.journal.as_mut(), 0).unwrap();
    }
    assert_eq!(recovered(set.journal.as_mut(), 0).unwrap(), (expected(1..=2), 2));
    let held = common::value(
        &db.url(),
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND a.datname = current_database() AND a.application_name = 'hongbao-set-0'",
    );
    assert_eq!(held, "1", "the new connection holds the set's lock");
    let wants = hongbao_engine::Wants {
        accounts: vec![hongbao_domain::UserId::parse("alice").unwrap()],
        ..hongbao_engine::Wants::default()
    };
    hongbao_engine::Store::prefetch(&mut set.writer, &wants).unwrap();
}
