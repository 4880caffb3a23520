//! Opening a data set's sets on PostgreSQL, and reading them for the audit:
//! migrations apply once however often (and from however many nodes) a
//! database is opened; a database belongs to a data set of one set count;
//! a set is served by one node at a time; and the audit needs the sets at
//! rest, sees every journaled batch (replaying the journal past the tables)
//! and writes nothing.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hongbao_domain::audit::SetSnapshot;
use hongbao_domain::ledger::{EntryKind, claim_ref, send_ref};
use hongbao_domain::packet::SpecInput;
use hongbao_domain::{Amount, Claim, Limits, Millis, Packet, PacketId, PacketSpec, SetId, UserId};
use hongbao_engine::journal::record::encode;
use hongbao_engine::{Effects, Journaled, LedgerEntry, Position, SetStores, Store, StoreError};
use hongbao_store_pg::testing::TestDatabase;
use hongbao_store_pg::{ColdDays, PgStore, SetMap, open_sets, snapshot};

const NOW: Millis = Millis(1_800_000_000_000);

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn entry(
    reference: String,
    who: &str,
    amount: i64,
    kind: EntryKind,
    packet: Option<PacketId>,
    at: Millis,
) -> LedgerEntry {
    LedgerEntry { reference, user: user(who), amount, kind, packet_id: packet, at, balance_after: None }
}

fn deposit(key: &str, amount: i64, at: Millis) -> Effects {
    let entry = entry(format!("deposit:alice:key:{key}"), "alice", amount, EntryKind::Deposit, None, at);
    Effects { next_seq: 1, ledger: vec![entry], ..Effects::default() }
}

/// Journals `effects` at `position` of the set's journal, as its writer
/// does, without materializing them.
fn journal(stores: &mut SetStores<PgStore>, position: Position, effects: &Effects) {
    let mut record = Vec::new();
    encode(effects, &mut record);
    stores.journal.append(position, &record).unwrap();
}

/// Journals and materializes `effects` as the set's next batch.
fn commit(stores: &mut SetStores<PgStore>, effects: Effects) {
    let position = stores.materializer.materialized().unwrap() + 1;
    journal(stores, position, &effects);
    stores.materializer.materialize(&[Journaled { position, effects: Arc::new(effects) }]).unwrap();
}

/// The audit's rows of every set, the cold days' too (these tests make
/// none cold: the two ways of reading them read the same here).
fn audit(map: &SetMap, sets: u16) -> Result<Vec<SetSnapshot>, StoreError> {
    snapshot(map, sets, ColdDays::Rows)
}

/// The refusal `open_sets` answers (its stores have no `Debug`).
fn refused_to_open(map: &SetMap, sets: u16) -> StoreError {
    match open_sets(map, sets) {
        Ok(_) => panic!("opening {sets} sets must be refused"),
        Err(error) => error,
    }
}

/// Whether each migration the database records was applied once: as many
/// rows as the highest version, and at least one.
const MIGRATED_ONCE: &str = "SELECT count(*) = max(version) AND count(*) > 0 FROM hongbao_schema";

/// What the audit must leave as it found it: the tables, the journal, the
/// days made and the partitions.
fn at_rest(url: &str) -> Vec<String> {
    let mut rows = common::tables(url);
    for query in [
        "SELECT count(*) || ' journal records, last ' || COALESCE(max(position), 0) FROM journal",
        "SELECT COALESCE(string_agg(day || ' ' || state, ', ' ORDER BY day), 'no days') FROM hongbao_days",
        "SELECT string_agg(relname, ', ' ORDER BY relname) FROM pg_class WHERE relkind IN ('r', 'p')",
    ] {
        rows.push(common::value(url, query));
    }
    rows
}

#[test]
fn opening_a_database_again_applies_no_migration_twice_and_keeps_its_rows() {
    let name = "opening_a_database_again_applies_no_migration_twice_and_keeps_its_rows";
    let Some(db) = TestDatabase::create(name) else { return };
    let map = SetMap::single(db.url());
    let mut stores = open_sets(&map, 2).unwrap();
    commit(&mut stores[0], deposit("1", 500, NOW));
    drop(stores);
    let rows = common::tables(&db.url());
    let versions = "SELECT string_agg(version || ' at ' || applied_at, ', ' ORDER BY version) FROM hongbao_schema";
    let applied = common::value(&db.url(), versions);
    for _ in 0..2 {
        let mut stores = open_sets(&map, 2).unwrap();
        assert_eq!(stores[0].materializer.materialized().unwrap(), 1);
        assert_eq!(stores[1].materializer.materialized().unwrap(), 0);
        assert_eq!(stores[0].reader.balance(&user("alice")).unwrap(), Amount::from_fen(500).unwrap());
        drop(stores);
        assert_eq!(common::tables(&db.url()), rows);
    }
    assert_eq!(common::value(&db.url(), versions), applied, "no migration ran again");
    assert_eq!(common::value(&db.url(), MIGRATED_ONCE), "t");
}

#[test]
fn two_nodes_opening_a_new_database_at_once_migrate_it_once_and_one_serves_it() {
    let name = "two_nodes_opening_a_new_database_at_once_migrate_it_once_and_one_serves_it";
    let Some(db) = TestDatabase::create(name) else { return };
    let start = Arc::new(std::sync::Barrier::new(2));
    let nodes: Vec<_> = (0..2)
        .map(|_| {
            let (map, start) = (SetMap::single(db.url()), start.clone());
            std::thread::spawn(move || {
                start.wait();
                open_sets(&map, 2)
            })
        })
        .collect();
    let opened: Vec<_> = nodes.into_iter().map(|node| node.join().unwrap()).collect();
    let refusals: Vec<String> =
        opened.iter().filter_map(|opened| opened.as_ref().err()).map(|e| e.message.clone()).collect();
    assert_eq!(refusals.len(), 1, "exactly one node serves the sets: {refusals:?}");
    assert!(refusals[0].contains("served by another node"), "the other is refused for the lock alone: {}", refusals[0]);
    assert_eq!(common::value(&db.url(), MIGRATED_ONCE), "t");
}

#[test]
fn a_database_made_for_4_sets_refuses_to_be_opened_with_8() {
    let Some(db) = TestDatabase::create("a_database_made_for_4_sets_refuses_to_be_opened_with_8") else { return };
    let map = SetMap::single(db.url());
    drop(open_sets(&map, 4).unwrap());
    for sets in [8, 2] {
        let error = refused_to_open(&map, sets);
        let counts = format!("a data set of 4 sets; it cannot be served with {sets}");
        assert!(error.message.contains(&counts), "{error}");
    }
    // The refusals changed nothing: the database still opens with its own
    // count, and records no other.
    assert_eq!(open_sets(&map, 4).unwrap().len(), 4);
    assert_eq!(common::value(&db.url(), "SELECT value FROM hongbao_meta WHERE key = 'sets'"), "4");
    assert_eq!(common::value(&db.url(), "SELECT count(*) FROM hongbao_sets"), "4");
}

#[test]
fn a_set_served_by_a_node_is_refused_to_a_second_until_the_first_lets_go() {
    let name = "a_set_served_by_a_node_is_refused_to_a_second_until_the_first_lets_go";
    let Some(db) = TestDatabase::create(name) else { return };
    let map = SetMap::single(db.url());
    let first = open_sets(&map, 2).unwrap();
    // The second waits for the lock (5 s, as long as a restart might need)
    // before it decides another node serves the set.
    let error = refused_to_open(&map, 2);
    assert!(error.message.contains("served by another node"), "{error}");
    assert!(!error.refused, "a busy set is not a broken invariant: {error}");
    drop(first);
    let mut second = open_sets(&map, 2).unwrap();
    commit(&mut second[1], deposit("1", 5, NOW));
}

#[test]
fn the_audit_refuses_sets_a_node_serves_and_reads_them_once_it_has_stopped() {
    let name = "the_audit_refuses_sets_a_node_serves_and_reads_them_once_it_has_stopped";
    let Some(db) = TestDatabase::create(name) else { return };
    let map = SetMap::single(db.url());
    let mut stores = open_sets(&map, 1).unwrap();
    commit(&mut stores[0], deposit("1", 500, NOW));
    let error = audit(&map, 1).unwrap_err();
    assert!(error.message.contains("served by a running node"), "{error}");
    drop(stores);
    let rows = audit(&map, 1).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].accounts.len(), 1);
    assert_eq!(rows[0].accounts[0].balance, 500);
    assert_eq!(rows[0].ledger.len(), 1);
}

#[test]
fn the_audit_replays_the_journal_past_the_tables_and_writes_nothing() {
    let name = "the_audit_replays_the_journal_past_the_tables_and_writes_nothing";
    let Some(db) = TestDatabase::create(name) else { return };
    let map = SetMap::single(db.url());
    let mut stores = open_sets(&map, 1).unwrap();
    commit(&mut stores[0], deposit("1", 1000, NOW));
    // Journaled, never materialized, as a SIGKILL leaves a set: a deposit
    // on a day the tables have no partitions for, a packet, and a claim of
    // it with its credit.
    let input = SpecInput { kind: "lucky".into(), total_amount: 300, count: 3, ..SpecInput::default() };
    let spec = PacketSpec::parse(&input, &user("alice"), &Limits::default()).unwrap();
    let id = PacketId::new(20_270_128, SetId(0), 1, 7);
    let packet = Packet::new(id, user("alice"), &spec, 42, NOW);
    let sent = Effects {
        next_seq: 2,
        ledger: vec![entry(send_ref(id), "alice", -300, EntryKind::Send, Some(id), NOW)],
        packets: vec![packet],
        ..Effects::default()
    };
    let share = Claim { user: user("bob"), index: 0, amount: Amount::from_fen(100).unwrap(), at: NOW };
    let claimed = Effects {
        next_seq: 2,
        ledger: vec![entry(claim_ref(id, "bob"), "bob", 100, EntryKind::Credit, Some(id), NOW)],
        claims: vec![(id, share)],
        ..Effects::default()
    };
    for (position, effects) in [(2, deposit("2", 300, Millis(1))), (3, sent), (4, claimed)] {
        journal(&mut stores[0], position, &effects);
    }
    drop(stores);
    let url = db.url();
    let before = at_rest(&url);

    let rows = audit(&map, 1).unwrap().pop().unwrap();
    let mut balances: Vec<(String, i64)> = rows.accounts.iter().map(|a| (a.user.clone(), a.balance)).collect();
    balances.sort();
    assert_eq!(balances, [("alice".to_owned(), 1000), ("bob".to_owned(), 100)], "every journaled batch is seen");
    assert_eq!(rows.ledger.len(), 4);
    assert_eq!(rows.packets.len(), 1);
    assert_eq!((rows.packets[0].remaining_amount, rows.packets[0].remaining_count), (200, 2));
    assert_eq!(rows.claims.len(), 1);

    assert_eq!(at_rest(&url), before, "the audit wrote nothing, and made no day");
    let mut stores = open_sets(&map, 1).unwrap();
    assert_eq!(stores[0].materializer.materialized().unwrap(), 1, "the tables were not written");
}

#[test]
fn the_audit_refuses_a_journal_that_does_not_apply_over_the_tables() {
    let name = "the_audit_refuses_a_journal_that_does_not_apply_over_the_tables";
    let Some(db) = TestDatabase::create(name) else { return };
    let map = SetMap::single(db.url());
    let mut stores = open_sets(&map, 1).unwrap();
    commit(&mut stores[0], deposit("1", 100, NOW));
    journal(&mut stores[0], 2, &deposit("2", 50, NOW));
    // A debit of more than the balance, journaled: the audit must say so,
    // not show the rows before it.
    let id = PacketId::new(20_270_128, SetId(0), 1, 7);
    let overdraft = entry(send_ref(id), "alice", -151, EntryKind::Send, Some(id), NOW);
    journal(&mut stores[0], 3, &Effects { next_seq: 2, ledger: vec![overdraft], ..Effects::default() });
    drop(stores);
    let before = at_rest(&db.url());
    let error = audit(&map, 1).unwrap_err();
    assert!(error.message.contains("does not apply over the tables"), "{error}");
    assert_eq!(at_rest(&db.url()), before);
}

#[test]
fn the_audit_sees_what_a_stopping_node_journaled_while_the_audit_waited_for_it() {
    let name = "the_audit_sees_what_a_stopping_node_journaled_while_the_audit_waited_for_it";
    let Some(db) = TestDatabase::create(name) else { return };
    let map = SetMap::single(db.url());
    let mut stores = open_sets(&map, 1).unwrap();
    commit(&mut stores[0], deposit("1", 100, NOW));
    let audit = {
        let map = map.clone();
        std::thread::spawn(move || audit(&map, 1))
    };
    // The audit waits for the set's lock (up to 5 s); meanwhile the node
    // journals its last batch, then stops.
    let waiting = "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
                   WHERE d.datname = current_database() AND l.locktype = 'advisory' AND NOT l.granted";
    let deadline = Instant::now() + Duration::from_secs(4);
    while common::value(&db.url(), waiting) == "0" {
        assert!(Instant::now() < deadline, "the audit never waited for the set's lock");
        std::thread::sleep(Duration::from_millis(10));
    }
    journal(&mut stores[0], 2, &deposit("2", 50, NOW));
    drop(stores);
    let rows = audit.join().unwrap().unwrap().pop().unwrap();
    assert_eq!(rows.ledger.len(), 2, "the audit reads the sets as the node left them: {:?}", rows.ledger);
    assert_eq!(rows.accounts[0].balance, 150);
}

/// The materializer commits without waiting for its WAL flush; what it
/// reports durable (the journal is trimmed up to it) is only what
/// PostgreSQL has flushed, never past what it materialized, and it
/// catches up once the flush is done.
#[test]
fn the_tables_are_durable_only_as_far_as_postgresql_has_flushed_them() {
    let Some(db) = TestDatabase::create("the_tables_are_durable_only_as_far_as_postgresql_has_flushed_them") else {
        return;
    };
    let map = SetMap::single(db.url());
    let mut stores = open_sets(&map, 1).unwrap().pop().unwrap();
    for key in 0..20 {
        commit(&mut stores, deposit(&key.to_string(), 10, NOW));
        let (durable, materialized) = (stores.materializer.durable(), stores.materializer.materialized().unwrap());
        assert!(durable <= materialized, "durable {durable} past materialized {materialized}");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while stores.materializer.durable() < 20 {
        assert!(Instant::now() < deadline, "the flush never reached the last materialization");
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(stores.materializer.durable(), 20);
    assert_eq!(
        common::value(&db.url(), "SHOW synchronous_commit"),
        "on",
        "only the materializer's session is unsynced"
    );
}
