//! Set ownership by lease on PostgreSQL (`Leases`, `open_leased_set`): one
//! node holds a set at a time, until its lease runs out unrenewed or it
//! lets go; every takeover raises the set's epoch, and the journal refuses
//! an append at any other (`JournalError::Fenced`), an append in flight
//! holding the takeover off until it commits. The single-node mode raises
//! the epoch too, so a writer before it is fenced.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use hongbao_domain::SetId;
use hongbao_engine::{Journal, JournalError, Position, SharedPositions};
use hongbao_store_pg::testing::TestDatabase;
use hongbao_store_pg::{Epoch, Leases, SetMap, open_leased_set, open_sets, readers};
use tokio_postgres::{Client, NoTls};

/// A lease short enough that tests see it run out.
const LEASE: Duration = Duration::from_millis(300);

/// A lease no test outlives.
const LEASE_LONG: Duration = Duration::from_secs(60);

/// The longest a test waits for what the database decides (a lease running
/// out, a takeover blocking): far past it, something is wrong.
const PATIENCE: Duration = Duration::from_secs(20);

/// How often a test asks again while it waits.
const POLL: Duration = Duration::from_millis(10);

fn join(map: &SetMap, sets: u16, node: &str, lease: Duration) -> Leases {
    Leases::join(map, sets, node, &format!("{node}.test:7000"), lease).unwrap()
}

/// Asks for `set` until it is taken (the lease before it ran out).
fn acquire_once_expired(leases: &Leases, set: SetId) -> Epoch {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(epoch) = leases.acquire(set).unwrap() {
            return epoch;
        }
        assert!(Instant::now() < deadline, "set {set}'s lease never ran out");
        std::thread::sleep(POLL);
    }
}

/// Every record of a journal, as `recover` hands them on.
fn records(journal: &mut dyn Journal) -> Vec<(Position, Vec<u8>)> {
    let mut records = Vec::new();
    journal
        .recover(0, &mut |position, bytes| {
            records.push((position, bytes.to_vec()));
            Ok(())
        })
        .unwrap();
    records
}

/// Each record's position and the epoch it was appended at.
fn epochs(url: &str) -> Vec<Vec<Option<String>>> {
    common::sql(url, "SELECT position, epoch FROM journal ORDER BY set_id, position").unwrap()
}

fn row(position: i64, epoch: Epoch) -> Vec<Option<String>> {
    vec![Some(position.to_string()), Some(epoch.to_string())]
}

/// A connection of the test's own that keeps a transaction open between
/// calls, as a writer's append in flight does.
struct Session {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl Session {
    fn open(url: &str) -> Session {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (client, connection) = runtime.block_on(tokio_postgres::connect(url, NoTls)).unwrap();
        runtime.spawn(connection);
        Session { runtime, client }
    }

    /// Runs `sql`; a failure as `SQLSTATE: message`.
    fn run(&self, sql: &str) -> Result<(), String> {
        self.runtime.block_on(self.client.batch_execute(sql)).map_err(|error| match error.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => error.to_string(),
        })
    }
}

#[test]
fn only_one_node_acquires_a_free_set_and_another_only_once_its_lease_ran_out_at_a_higher_epoch() {
    let name = "only_one_node_acquires_a_free_set_and_another_only_once_its_lease_ran_out_at_a_higher_epoch";
    let Some(db) = TestDatabase::create(name) else { return };
    let map = SetMap::single(db.url());
    let (a, b) = (join(&map, 1, "a", LEASE), join(&map, 1, "b", LEASE));
    let started = Instant::now();
    let first = a.acquire(SetId(0)).unwrap().expect("a free set is taken");
    assert_eq!(b.acquire(SetId(0)).unwrap(), None, "a set held is not taken");
    // Its holder takes it back at once, at a new epoch: a node restarting
    // after a crash does not wait out its own leases.
    let again = a.acquire(SetId(0)).unwrap().expect("its holder takes it back");
    let second = acquire_once_expired(&b, SetId(0));
    assert!(started.elapsed() >= LEASE, "taken after {:?}, before the lease ran out", started.elapsed());
    assert_eq!((first, again, second), (1, 2, 3), "each takeover raises the epoch");
    assert_eq!(a.acquire(SetId(0)).unwrap(), None, "the new holder's lease runs");
}

#[test]
fn renewing_keeps_a_nodes_sets_and_a_set_taken_once_expired_leaves_the_old_nodes_renewal() {
    let name = "renewing_keeps_a_nodes_sets_and_a_set_taken_once_expired_leaves_the_old_nodes_renewal";
    let Some(db) = TestDatabase::create(name) else { return };
    // Long enough that a slow round of renewals cannot let a lease run out.
    let lease = Duration::from_secs(1);
    let map = SetMap::single(db.url());
    let (a, b) = (join(&map, 2, "a", lease), join(&map, 2, "b", lease));
    let held_by_a = a.acquire(SetId(0)).unwrap().unwrap();
    let held_by_b = b.acquire(SetId(1)).unwrap().unwrap();
    // For three lease lengths both renew, several times a lease: each keeps
    // its own set and only it, and neither can take the other's.
    let until = Instant::now() + 3 * lease;
    while Instant::now() < until {
        assert_eq!(a.renew().unwrap(), vec![(SetId(0), held_by_a)]);
        assert_eq!(b.renew().unwrap(), vec![(SetId(1), held_by_b)]);
        assert_eq!(b.acquire(SetId(0)).unwrap(), None);
        assert_eq!(a.acquire(SetId(1)).unwrap(), None);
        std::thread::sleep(lease / 10);
    }
    // `a` stops renewing: `b`, renewing on, takes set 0 once it ran out.
    let deadline = Instant::now() + PATIENCE;
    let taken = loop {
        assert_eq!(b.renew().unwrap().len(), 1, "b keeps its own set meanwhile");
        if let Some(epoch) = b.acquire(SetId(0)).unwrap() {
            break epoch;
        }
        assert!(Instant::now() < deadline, "a's lease never ran out");
        std::thread::sleep(POLL);
    };
    assert_eq!(taken, held_by_a + 1);
    assert_eq!(a.renew().unwrap(), vec![], "the set taken is gone from the old node's renewal");
    assert_eq!(b.renew().unwrap(), vec![(SetId(0), taken), (SetId(1), held_by_b)]);
}

#[test]
fn an_expired_lease_nobody_took_is_not_renewed_yet_safe_to_write_until_taken_again() {
    let name = "an_expired_lease_nobody_took_is_not_renewed_yet_safe_to_write_until_taken_again";
    let Some(db) = TestDatabase::create(name) else { return };
    let map = SetMap::single(db.url());
    let a = join(&map, 1, "a", LEASE);
    let epoch = a.acquire(SetId(0)).unwrap().unwrap();
    let mut writer = open_leased_set(&map, 1, SetId(0), epoch).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while a.status().unwrap().leases[0].expires_in_ms >= 0 {
        assert!(Instant::now() < deadline, "the lease never ran out");
        std::thread::sleep(POLL);
    }
    assert_eq!(a.renew().unwrap(), vec![], "an expired lease is not extended");
    // Nobody else can have written: the fence is the epoch, not the expiry.
    writer.journal.append(1, b"one").unwrap();
    let again = a.acquire(SetId(0)).unwrap().expect("an expired lease is taken again");
    assert_eq!(again, epoch + 1);
    assert!(matches!(writer.journal.append(2, b"two"), Err(JournalError::Fenced(_))));
}

#[test]
fn an_append_at_an_old_epoch_after_a_takeover_is_fenced_and_leaves_no_record() {
    let name = "an_append_at_an_old_epoch_after_a_takeover_is_fenced_and_leaves_no_record";
    let Some(db) = TestDatabase::create(name) else { return };
    let (url, map) = (db.url(), SetMap::single(db.url()));
    let (a, b) = (join(&map, 1, "a", LEASE), join(&map, 1, "b", LEASE));
    let old = a.acquire(SetId(0)).unwrap().unwrap();
    let mut old_writer = open_leased_set(&map, 1, SetId(0), old).unwrap();
    old_writer.journal.append(1, b"one").unwrap();
    let new = acquire_once_expired(&b, SetId(0));
    let mut new_writer = open_leased_set(&map, 1, SetId(0), new).unwrap();
    match old_writer.journal.append(2, b"two, from the old writer") {
        Err(JournalError::Fenced(message)) => {
            let says = |text: String| message.contains(&text);
            assert!(says(format!("epoch {old}")) && says(format!("epoch {new}")), "{message}");
        }
        other => panic!("an append at an old epoch must be fenced, got {other:?}"),
    }
    assert_eq!(epochs(&url), vec![row(1, old)], "the fenced record is not in the journal");
    // The new writer reads the old one's record and appends at its epoch.
    assert_eq!(records(new_writer.journal.as_mut()), vec![(1, b"one".to_vec())]);
    new_writer.journal.append(2, b"two").unwrap();
    assert_eq!(epochs(&url), vec![row(1, old), row(2, new)]);
    // The old writer stays fenced, at any position, after a recovery too.
    assert_eq!(records(old_writer.journal.as_mut()).len(), 2);
    assert!(matches!(old_writer.journal.append(3, b"three"), Err(JournalError::Fenced(_))));
}

#[test]
fn an_append_in_flight_holds_a_takeover_off_until_it_commits_and_the_new_holder_reads_it() {
    let name = "an_append_in_flight_holds_a_takeover_off_until_it_commits_and_the_new_holder_reads_it";
    let Some(db) = TestDatabase::create(name) else { return };
    let (url, map) = (db.url(), SetMap::single(db.url()));
    let (a, b) = (join(&map, 1, "a", LEASE), join(&map, 1, "b", LEASE));
    let old = a.acquire(SetId(0)).unwrap().unwrap();
    // The append is in, not yet committed: its fence holds the lease row.
    let append = Session::open(&url);
    let insert = |position: u64| {
        format!("INSERT INTO journal (set_id, position, record, epoch) VALUES (0, {position}, 'in flight', {old})")
    };
    append.run(&format!("BEGIN; {}", insert(1))).unwrap();
    let (sender, taken) = mpsc::channel();
    let takeover = std::thread::spawn(move || sender.send(acquire_once_expired(&b, SetId(0))).unwrap());
    // Once the lease ran out, the takeover waits for the append's lock.
    let deadline = Instant::now() + PATIENCE;
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                   AND application_name = 'hongbao-lease-b' AND wait_event_type = 'Lock'";
    while common::value(&url, waiting) != "1" {
        assert!(Instant::now() < deadline, "the takeover never waited for the append");
        std::thread::sleep(POLL);
    }
    assert!(taken.try_recv().is_err(), "the takeover went through an append in flight");
    append.run("COMMIT").unwrap();
    let new = taken.recv_timeout(PATIENCE).expect("the takeover, once the append committed");
    takeover.join().unwrap();
    assert_eq!(new, old + 1);
    let mut holder = open_leased_set(&map, 1, SetId(0), new).unwrap();
    assert_eq!(records(holder.journal.as_mut()), vec![(1, b"in flight".to_vec())], "the new holder reads it");
    // An append after the takeover meets the new epoch.
    let refused = append.run(&insert(2)).unwrap_err();
    assert!(refused.starts_with("HB409:"), "{refused}");
    assert_eq!(epochs(&url), vec![row(1, old)]);
}

#[test]
fn a_standalone_writer_raises_the_epoch_and_fences_a_leased_writer_opened_before_it() {
    let name = "a_standalone_writer_raises_the_epoch_and_fences_a_leased_writer_opened_before_it";
    let Some(db) = TestDatabase::create(name) else { return };
    let (url, map) = (db.url(), SetMap::single(db.url()));
    let a = join(&map, 1, "a", LEASE_LONG);
    let leased = a.acquire(SetId(0)).unwrap().unwrap();
    let mut leased_writer = open_leased_set(&map, 1, SetId(0), leased).unwrap();
    leased_writer.journal.append(1, b"leased").unwrap();
    let mut standalone = open_sets(&map, 1).unwrap().remove(0);
    assert!(matches!(leased_writer.journal.append(2, b"fenced"), Err(JournalError::Fenced(_))));
    standalone.journal.append(2, b"standalone").unwrap();
    assert_eq!(epochs(&url), vec![row(1, leased), row(2, leased + 1)]);
    // A standalone writer holds its set without end: no node takes it, and
    // the node that held it no longer renews it.
    let lease = a.status().unwrap().leases.remove(0);
    assert_eq!((lease.owner.as_deref(), lease.epoch, lease.expires_in_ms), (Some("standalone"), leased + 1, i64::MAX));
    assert_eq!(a.acquire(SetId(0)).unwrap(), None);
    assert_eq!(a.renew().unwrap(), vec![]);
}

#[test]
fn every_standalone_open_raises_the_epoch_and_each_record_carries_its_writers() {
    let name = "every_standalone_open_raises_the_epoch_and_each_record_carries_its_writers";
    let Some(db) = TestDatabase::create(name) else { return };
    let (url, map) = (db.url(), SetMap::single(db.url()));
    let mut stores = open_sets(&map, 1).unwrap();
    stores[0].journal.append(1, b"first run").unwrap();
    drop(stores);
    let mut stores = open_sets(&map, 1).unwrap();
    stores[0].journal.append(2, b"second run").unwrap();
    assert_eq!(epochs(&url), vec![row(1, 1), row(2, 2)]);
}

#[test]
fn a_released_set_is_taken_by_another_node_at_once_and_status_shows_nodes_and_leases() {
    let name = "a_released_set_is_taken_by_another_node_at_once_and_status_shows_nodes_and_leases";
    let Some(db) = TestDatabase::create(name) else { return };
    let map = SetMap::single(db.url());
    let (a, b) = (join(&map, 2, "a", LEASE_LONG), join(&map, 2, "b", LEASE_LONG));
    let held = a.acquire(SetId(0)).unwrap().unwrap();
    assert_eq!(b.acquire(SetId(0)).unwrap(), None);
    assert!(!a.release(SetId(0), held + 1).unwrap(), "a release at another epoch is not one");
    assert!(!b.release(SetId(0), held).unwrap(), "nor one by another node");
    assert!(a.release(SetId(0), held).unwrap());
    let taken = b.acquire(SetId(0)).unwrap().expect("a released set is taken at once");
    assert_eq!(taken, held + 1);
    assert!(!a.release(SetId(0), held).unwrap(), "a set given up is not given up twice");

    let status = a.status().unwrap();
    let nodes: Vec<(&str, &str)> =
        status.nodes.iter().map(|node| (node.node.as_str(), node.advertise.as_str())).collect();
    assert_eq!(nodes, vec![("a", "a.test:7000"), ("b", "b.test:7000")]);
    assert_eq!(status.live_nodes(LEASE_LONG).len(), 2);
    assert!(status.nodes.iter().all(|node| node.heartbeat_age_ms >= 0 && node.started_at_ms > 1_700_000_000_000));
    let (set_0, set_1) = (&status.leases[0], &status.leases[1]);
    assert_eq!((set_0.set, set_0.owner.as_deref(), set_0.epoch), (SetId(0), Some("b"), taken));
    assert!(0 < set_0.expires_in_ms && set_0.expires_in_ms <= 60_000, "{set_0:?}");
    assert!(set_0.held_for_ms.is_some_and(|held| held >= 0), "{set_0:?}");
    assert_eq!(
        (set_1.set, set_1.owner.as_deref(), set_1.epoch, set_1.expires_in_ms, set_1.held_for_ms),
        (SetId(1), None, 0, i64::MIN, None),
        "a set never taken"
    );

    // A node that leaves gives its sets up and is gone from the status.
    b.leave().unwrap();
    let status = a.status().unwrap();
    assert_eq!(status.nodes.iter().map(|node| node.node.as_str()).collect::<Vec<_>>(), vec!["a"]);
    assert_eq!(status.leases[0].owner, None);
    assert_eq!(a.acquire(SetId(0)).unwrap(), Some(taken + 1));
}

#[test]
fn a_sets_lease_lives_in_its_own_database_and_the_nodes_in_set_0s() {
    let name = "a_sets_lease_lives_in_its_own_database_and_the_nodes_in_set_0s";
    let (Some(first), Some(second)) = (TestDatabase::create(name), TestDatabase::create(name)) else { return };
    let map = SetMap::single(first.url()).place(1, 1, second.url());
    let a = join(&map, 2, "a", LEASE_LONG);
    let epoch = a.acquire(SetId(1)).unwrap().unwrap();
    let lease_of_1 = "SELECT coalesce(owner, '-') || ' ' || epoch FROM hongbao_leases WHERE set_id = 1";
    assert_eq!(common::value(&second.url(), lease_of_1), format!("a {epoch}"));
    assert_eq!(common::value(&first.url(), lease_of_1), "- 0", "the row where set 1 does not live is unused");
    let mut writer = open_leased_set(&map, 2, SetId(1), epoch).unwrap();
    writer.journal.append(1, b"set 1").unwrap();
    assert_eq!(a.renew().unwrap(), vec![(SetId(1), epoch)]);
    assert_eq!(common::value(&first.url(), "SELECT count(*) FROM hongbao_nodes"), "1");
    assert_eq!(common::value(&second.url(), "SELECT count(*) FROM hongbao_nodes"), "0");
    let status = a.status().unwrap();
    assert_eq!(status.leases.iter().map(|lease| lease.epoch).collect::<Vec<_>>(), vec![0, epoch]);
}

/// The lease connection that is lost (here ended by the server, as a
/// database restart ends it) fails a call at most; the next opens a new one.
#[test]
fn a_lost_lease_connection_is_reopened_by_the_next_call() {
    let Some(db) = TestDatabase::create("a_lost_lease_connection_is_reopened_by_the_next_call") else { return };
    let map = SetMap::single(db.url());
    let a = join(&map, 1, "a", LEASE_LONG);
    let epoch = a.acquire(SetId(0)).unwrap().unwrap();
    let ended = common::value(
        &db.url(),
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'hongbao-lease-a'",
    );
    assert_eq!(ended, "1", "the node's lease connection, found by its name");
    let mut failures = 0;
    let held = loop {
        match a.renew() {
            Ok(held) => break held,
            Err(_) => failures += 1,
        }
        assert!(failures < 2, "the renewal never went through on a new connection");
    };
    assert_eq!(held, vec![(SetId(0), epoch)]);
}

#[test]
fn shared_positions_read_the_journals_last_record_and_the_tables_position() {
    let name = "shared_positions_read_the_journals_last_record_and_the_tables_position";
    let Some(db) = TestDatabase::create(name) else { return };
    let (url, map) = (db.url(), SetMap::single(db.url()));
    let mut stores = open_sets(&map, 2).unwrap();
    let readers = readers(&map, 2).unwrap();
    let positions = |set: usize| readers[set].shared_positions().unwrap();
    assert_eq!(positions(0), SharedPositions { journal: 0, tables: 0 });
    for position in 1..=3 {
        stores[0].journal.append(position, b"record").unwrap();
    }
    stores[1].journal.append(1, b"record").unwrap();
    assert_eq!(positions(0), SharedPositions { journal: 3, tables: 0 });
    assert_eq!(positions(1), SharedPositions { journal: 1, tables: 0 }, "each set its own");
    // As the materializer moves the tables on and the journal is trimmed
    // below them, empty at last: the journal is then where the tables are.
    common::sql(&url, "UPDATE hongbao_sets SET position = 2 WHERE set_id = 0").unwrap();
    assert_eq!(positions(0), SharedPositions { journal: 3, tables: 2 });
    common::sql(&url, "UPDATE hongbao_sets SET position = 3 WHERE set_id = 0; DELETE FROM journal WHERE set_id = 0")
        .unwrap();
    assert_eq!(positions(0), SharedPositions { journal: 3, tables: 3 });
}

#[test]
fn the_audit_refuses_a_data_set_whose_sets_a_cluster_node_holds_until_it_lets_go() {
    let name = "the_audit_refuses_a_data_set_whose_sets_a_cluster_node_holds_until_it_lets_go";
    let Some(db) = TestDatabase::create(name) else { return };
    let map = SetMap::single(db.url());
    let node = join(&map, 2, "a", LEASE_LONG);
    let held = node.acquire(SetId(1)).unwrap().unwrap();
    // A node of several takes no advisory lock: its lease says it serves.
    let refused = hongbao_store_pg::snapshot(&map, 2, hongbao_store_pg::ColdDays::Totals).unwrap_err();
    assert!(refused.message.contains("held by the cluster node a"), "{refused}");
    assert!(node.release(SetId(1), held).unwrap());
    let snapshots = hongbao_store_pg::snapshot(&map, 2, hongbao_store_pg::ColdDays::Totals).unwrap();
    assert_eq!(snapshots.len(), 2);
}
