//! Cold days on SQLite, on real files: a settled day past the retention
//! leaves the sets' tables for its files and reads as it did; a day that
//! may still change stays hot; a crash between the file and the
//! transaction leaves the day hot for the next pass; a cold day takes no
//! writes, and rows leave the tables only by a move.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::sync::Arc;

use hongbao_domain::audit::{AuditReport, SetSnapshot, audit};
use hongbao_domain::ledger::{EntryKind, claim_ref, refund_ref, send_ref};
use hongbao_domain::packet::SpecInput;
use hongbao_domain::time::{DAY_MS, civil_day_start};
use hongbao_domain::{Amount, Claim, Limits, Millis, Packet, PacketId, PacketSpec, SetId, UserId};
use hongbao_engine::{
    COLD_MARGIN_MS, ColdDays, Credit, Effects, Journaled, LedgerEntry, ReceivedItem, SentItem, SetStores, Store,
    StoreError, StoreReader, Wants,
};
use hongbao_store_sqlite::{SqliteStore, cold_day_path, keep_days, open_set, set_path, snapshot};
use rusqlite::Connection;

const SETS: u16 = 2;
/// The day that goes cold, and a later one that stays hot.
const DAY: u32 = 20_270_128;
const LATER: u32 = 20_270_207;
const RETENTION_DAYS: u32 = 7;

fn noon(day: u32) -> Millis {
    Millis(civil_day_start(day).0 + DAY_MS / 2)
}

/// When the keeper runs: past the retention for `DAY`, not for `LATER`.
fn keeper_time() -> Millis {
    noon(LATER)
}

fn fen(value: u64) -> Amount {
    Amount::from_fen(value).unwrap()
}

/// A user whose wallet lives in `set`.
fn user_in(set: u16, name: &str) -> UserId {
    (0..)
        .map(|n| UserId::parse(&format!("{name}{n}")).unwrap())
        .find(|user| SetId::of_user(user, SETS) == SetId(set))
        .unwrap()
}

/// Two sets on real files: alice and carol live in set 0, bob in set 1.
struct World {
    dir: tempfile::TempDir,
    sets: Vec<SetStores<SqliteStore>>,
    alice: UserId,
    bob: UserId,
    carol: UserId,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let sets = (0..SETS).map(|set| open_set(dir.path(), SetId(set)).unwrap()).collect();
        World { dir, sets, alice: user_in(0, "alice"), bob: user_in(1, "bob"), carol: user_in(0, "carol") }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Materializes `effects` as `set`'s next journal position.
    fn commit(&mut self, set: u16, effects: Effects) -> Result<(), StoreError> {
        let store = &mut self.sets[usize::from(set)].materializer;
        let position = store.materialized().unwrap() + 1;
        store.materialize(&[Journaled { position, effects: Arc::new(effects) }])
    }

    fn reader(&self, set: u16) -> &dyn StoreReader {
        &*self.sets[usize::from(set)].reader
    }

    /// The keeper's pass at `now`.
    fn keep(&self, now: Millis) -> Vec<u32> {
        keep_days(self.path(), SETS, now, RETENTION_DAYS).unwrap()
    }

    /// Alice deposits 1000 at noon of `day` and sends a fixed packet of 300
    /// in 3 shares (seq `seq`), expiring a minute later.
    fn send(&mut self, day: u32, seq: u64) -> Packet {
        self.send_at(noon(day), seq)
    }

    fn send_at(&mut self, now: Millis, seq: u64) -> Packet {
        let day = now.civil_day();
        let input = SpecInput {
            kind: "fixed".into(),
            total_amount: 300,
            count: 3,
            expires_in_s: Some(60),
            ..SpecInput::default()
        };
        let spec = PacketSpec::parse(&input, &self.alice, &Limits::default()).unwrap();
        let id = PacketId::new(day, SetId(0), seq, 7);
        let packet = Packet::new(id, self.alice.clone(), &spec, 42, now);
        let deposit = format!("deposit:{}:key:{day}", self.alice);
        let effects = Effects {
            next_seq: seq + 1,
            ledger: vec![
                entry(deposit, &self.alice, 1000, EntryKind::Deposit, None, now),
                entry(send_ref(id), &self.alice, -300, EntryKind::Send, Some(id), now),
            ],
            packets: vec![packet.clone()],
            ..Effects::default()
        };
        self.commit(0, effects).unwrap();
        packet
    }

    /// Bob (set 1, through the outbox) and carol (set 0) open a share each;
    /// bob's credit lands in set 1 but stays unacknowledged in set 0.
    fn open(&mut self, packet: &Packet) {
        let id = packet.info.id;
        let at = |seconds: u32| packet.info.created_at.plus_seconds(seconds);
        let (bob, carol) = (self.bob.clone(), self.carol.clone());
        let credit =
            Credit { reference: claim_ref(id, &bob), user: bob.clone(), amount: fen(100), packet_id: id, at: at(1) };
        let effects = Effects {
            next_seq: id.seq + 1,
            ledger: vec![entry(claim_ref(id, &carol), &carol, 100, EntryKind::Credit, Some(id), at(2))],
            claims: vec![(id, claim(&bob, 0, at(1))), (id, claim(&carol, 1, at(2)))],
            outbox_added: vec![credit],
            ..Effects::default()
        };
        self.commit(0, effects).unwrap();
        let landed = Effects {
            next_seq: 1,
            ledger: vec![entry(claim_ref(id, &bob), &bob, 100, EntryKind::Credit, Some(id), at(1))],
            ..Effects::default()
        };
        self.commit(1, landed).unwrap();
    }

    /// Set 0 hears that bob's credit landed.
    fn acknowledge(&mut self, packet: &Packet) {
        let reference = claim_ref(packet.info.id, &self.bob);
        let effects =
            Effects { next_seq: packet.info.id.seq + 1, outbox_removed: vec![reference], ..Effects::default() };
        self.commit(0, effects).unwrap();
    }

    /// The packet's expiry: what is left goes back to alice.
    fn refund(&mut self, packet: &Packet, left: u64) {
        let id = packet.info.id;
        let at = packet.info.expires_at;
        let effects = Effects {
            next_seq: id.seq + 1,
            ledger: vec![entry(refund_ref(id), &self.alice, left as i64, EntryKind::Refund, Some(id), at)],
            refunds: vec![(id, fen(left))],
            ..Effects::default()
        };
        self.commit(0, effects).unwrap();
    }

    /// Rows of `table` in `set`'s tables.
    fn count(&self, set: u16, table: &str) -> i64 {
        let connection = Connection::open(set_path(self.path(), SetId(set))).unwrap();
        connection.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0)).unwrap()
    }

    fn audit(&self, cold: ColdDays) -> AuditReport {
        let snapshots: Vec<SetSnapshot> =
            (0..SETS).map(|set| snapshot(self.path(), SetId(set), cold).unwrap()).collect();
        let report = audit(&snapshots, Limits::default().share_min, keeper_time().0);
        assert!(report.ok(), "{cold:?}: {report}");
        report
    }
}

fn entry(
    reference: String,
    user: &UserId,
    amount: i64,
    kind: EntryKind,
    packet: Option<PacketId>,
    at: Millis,
) -> LedgerEntry {
    LedgerEntry { reference, user: user.clone(), amount, kind, packet_id: packet, at, balance_after: None }
}

fn claim(user: &UserId, index: u32, at: Millis) -> Claim {
    Claim { user: user.clone(), index, amount: fen(100), at }
}

/// Rows of `table` in a cold day's file.
fn count_in_file(path: &Path, table: &str) -> i64 {
    let connection = Connection::open(path).unwrap();
    connection.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0)).unwrap()
}

/// What a packet reads as: every field and its claims.
type Read = Option<(hongbao_domain::packet::PacketInfo, u64, Amount, u32, Amount, Vec<Claim>)>;

fn read(packet: Option<Packet>) -> Read {
    packet.map(|p| {
        let claims = p.claims().to_vec();
        (p.info, p.seed, p.remaining_amount, p.remaining_count, p.refunded_amount, claims)
    })
}

/// Everything the readers answer about alice's and bob's packets and
/// shares, every page of one item and the whole lists.
#[derive(Debug, PartialEq)]
struct Lists {
    packet: Read,
    sent: Vec<SentItem>,
    sent_paged: Vec<SentItem>,
    received: Vec<ReceivedItem>,
    received_paged: Vec<ReceivedItem>,
}

fn lists(world: &World, id: PacketId) -> Lists {
    let set0 = world.reader(0);
    let mut sent_paged = Vec::new();
    let mut before = None;
    while let Some(item) = set0.sent(&world.alice, before, 1).unwrap().pop() {
        before = Some(item.info.id.seq);
        sent_paged.push(item);
    }
    let mut received_paged = Vec::new();
    let mut cursor = None;
    while let Some(item) = set0.received(&world.bob, cursor, 1).unwrap().pop() {
        cursor = Some((item.at, item.packet_id));
        received_paged.push(item);
    }
    Lists {
        packet: read(set0.packet(&id).unwrap()),
        sent: set0.sent(&world.alice, None, 10).unwrap(),
        sent_paged,
        received: set0.received(&world.bob, None, 10).unwrap(),
        received_paged,
    }
}

/// A settled day, and a later one still live: alice sent a packet each day,
/// bob and carol opened a share of each; the first was acknowledged and
/// refunded.
fn two_days() -> (World, Packet, Packet) {
    let mut world = World::new();
    let old = world.send(DAY, 1);
    world.open(&old);
    world.acknowledge(&old);
    world.refund(&old, 100);
    let new = world.send(LATER, 2);
    world.open(&new);
    (world, old, new)
}

#[test]
fn a_settled_day_past_the_retention_moves_to_its_files_and_reads_as_before() {
    let (mut world, old, new) = two_days();
    let before = lists(&world, old.info.id);
    assert_eq!(before.sent.len(), 2);
    assert_eq!(before.received.len(), 2);
    assert_eq!((world.count(0, "packets"), world.count(0, "claims"), world.count(0, "ledger")), (2, 4, 7));
    assert_eq!(world.count(1, "ledger"), 2);
    let totals_before = (world.audit(ColdDays::Totals), world.audit(ColdDays::Rows));
    assert_eq!(totals_before.0.cold_entries, 0);

    assert!(world.keep(Millis(keeper_time().0 - 3 * DAY_MS)).is_empty(), "within the retention nothing moves");
    assert_eq!(world.keep(keeper_time()), [DAY]);
    assert_eq!(world.keep(keeper_time()), Vec::<u32>::new(), "a cold day moves once");

    // The day left the tables: set 0 keeps the later day's packet, its two
    // claims, and its deposit, send and carol's credit; set 1 bob's later credit.
    assert_eq!((world.count(0, "packets"), world.count(0, "claims"), world.count(0, "ledger")), (1, 2, 3));
    assert_eq!(world.count(1, "ledger"), 1);
    assert_eq!(world.count(0, "cold_days WHERE state = 'cold'"), 1);
    assert_eq!(world.count(0, "ledger_day_totals"), 4, "alice's deposit, send and refund, carol's credit");
    assert_eq!(world.count(1, "ledger_day_totals"), 1, "bob's credit");
    let file = cold_day_path(world.path(), SetId(0), DAY);
    assert_eq!(
        (count_in_file(&file, "packets"), count_in_file(&file, "claims"), count_in_file(&file, "ledger")),
        (1, 2, 4)
    );
    let file = cold_day_path(world.path(), SetId(1), DAY);
    assert_eq!(
        (count_in_file(&file, "packets"), count_in_file(&file, "claims"), count_in_file(&file, "ledger")),
        (0, 0, 1)
    );

    // Reads are as before: detail, both lists whole and page by page, and
    // the writer's prefetch of the settled packet.
    assert_eq!(lists(&world, old.info.id), before);
    let hot = world.reader(0).packet(&new.info.id).unwrap().unwrap();
    assert_eq!((hot.remaining_amount, hot.claims().len()), (fen(100), 2), "the later day's packet, hot");
    let wants = Wants { packets: vec![old.info.id], ..Wants::default() };
    let fetched = world.sets[0].writer.prefetch(&wants).unwrap();
    let fetched: Vec<Read> = fetched.packets.into_iter().map(Some).map(read).collect();
    assert_eq!(fetched.first(), Some(&before.packet));
    assert_eq!(fetched.len(), 1);

    // The audit passes both ways: by the totals, counting the cold entries,
    // and reading the files whole.
    let by_totals = world.audit(ColdDays::Totals);
    assert_eq!(by_totals.cold_entries, 5);
    assert_eq!(by_totals.ledger_entries, totals_before.0.ledger_entries);
    assert_eq!((by_totals.packets, by_totals.claims), (1, 2), "the cold day's packet is counted by its totals");
    let by_rows = world.audit(ColdDays::Rows);
    assert_eq!(by_rows.cold_entries, 0);
    assert_eq!((by_rows.ledger_entries, by_rows.packets, by_rows.claims), (9, 2, 4));
    assert_eq!(by_rows.deposits, totals_before.1.deposits);

    // The hot day still takes its writes.
    world.refund(&new, 100);
}

#[test]
fn the_audit_reads_cold_files_whole_and_names_totals_that_disagree() {
    let (world, _old, _new) = two_days();
    assert_eq!(world.keep(keeper_time()), [DAY]);
    let path = set_path(world.path(), SetId(0));
    let connection = Connection::open(&path).unwrap();
    connection.execute("UPDATE ledger_day_totals SET amount = amount + 1 WHERE kind = 'refund'", []).unwrap();
    let bob = world.bob.as_str();
    let bumped = "UPDATE cold_lists SET newest = newest + 1 WHERE list = 'received' AND user = ?1";
    connection.execute(bumped, [bob]).unwrap();
    drop(connection);
    let rows = snapshot(world.path(), SetId(0), ColdDays::Rows).unwrap();
    assert_eq!(rows.problems.len(), 2, "{:?}", rows.problems);
    assert!(rows.problems[0].contains(&format!("cold day {DAY}")) && rows.problems[0].contains("refund total"));
    assert!(rows.problems[1].contains("received list day"), "{:?}", rows.problems);
    std::fs::remove_file(cold_day_path(world.path(), SetId(1), DAY)).unwrap();
    let rows = snapshot(world.path(), SetId(1), ColdDays::Rows).unwrap();
    assert!(rows.problems[0].contains("is missing"), "{:?}", rows.problems);
}

#[test]
fn a_day_that_may_still_change_stays_hot() {
    let mut world = World::new();
    // Bob's credit is still in set 0's outbox.
    let old = world.send(DAY, 1);
    world.open(&old);
    world.refund(&old, 100);
    // The next day's packet expired but is not refunded yet.
    let next = world.send(DAY + 1, 2);
    assert!(world.keep(keeper_time()).is_empty(), "an unacknowledged credit and an unrefunded packet");
    assert_eq!(world.count(0, "packets"), 2);
    world.acknowledge(&old);
    assert_eq!(world.keep(keeper_time()), [DAY]);
    world.refund(&next, 300);
    assert_eq!(world.keep(keeper_time()), [DAY + 1]);
    assert_eq!(world.count(0, "packets") + world.count(0, "ledger") + world.count(1, "ledger"), 0);
    world.audit(ColdDays::Rows);

    // Without a retention, a day goes cold once it is over and its last
    // packet has been expired for the margin (credits may be on their way):
    // this one expires at midnight.
    let midnight = civil_day_start(LATER + 1);
    let last = world.send_at(Millis(midnight.0 - 60_000), 3);
    assert_eq!(last.info.expires_at, midnight);
    world.refund(&last, 300);
    let keep = |now: i64| keep_days(world.path(), SETS, Millis(now), 0).unwrap();
    assert!(keep(midnight.0 + COLD_MARGIN_MS - 1).is_empty(), "within the margin");
    assert_eq!(keep(midnight.0 + COLD_MARGIN_MS), [LATER]);
}

#[test]
fn a_crash_between_the_file_and_the_transaction_leaves_the_day_hot_for_the_next_pass() {
    let (world, old, _new) = two_days();
    let before = lists(&world, old.info.id);
    // What a crash after the rename leaves: the day's whole file in place,
    // and the tables untouched. Made by moving the day in a copy of the
    // directory and taking the copy's file.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(world.path(), copy.path());
    assert_eq!(keep_days(copy.path(), SETS, keeper_time(), RETENTION_DAYS).unwrap(), [DAY]);
    for set in 0..SETS {
        let (from, to) = (cold_day_path(copy.path(), SetId(set), DAY), cold_day_path(world.path(), SetId(set), DAY));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap();
    }
    // And a torn file of an earlier attempt, not yet renamed.
    let torn = hongbao_store_sqlite::cold_day_temporary_path(world.path(), SetId(0), DAY);
    std::fs::write(&torn, b"SQLite format 3\0torn").unwrap();

    // The day is hot: read from the tables, audited once.
    assert_eq!(world.count(0, "packets"), 2);
    assert_eq!(lists(&world, old.info.id), before);
    let report = world.audit(ColdDays::Rows);
    assert_eq!((report.packets, report.claims, report.cold_entries), (2, 4, 0));

    // The next pass writes the file again and moves the day.
    assert_eq!(world.keep(keeper_time()), [DAY]);
    assert!(!torn.exists());
    assert_eq!(world.count(0, "packets"), 1);
    assert_eq!(lists(&world, old.info.id), before);
    assert_eq!(world.audit(ColdDays::Totals).cold_entries, 5);
    world.audit(ColdDays::Rows);
}

#[test]
fn a_cold_day_takes_no_writes_and_rows_leave_the_tables_only_by_a_move() {
    let (mut world, old, _new) = two_days();
    let path = set_path(world.path(), SetId(0));
    let raw = Connection::open(&path).unwrap();
    for (sql, why) in [
        ("DELETE FROM ledger WHERE kind = 'deposit'", "immutable"),
        ("DELETE FROM claims", "deleted only when their day moves cold"),
        ("DELETE FROM packets", "deleted only when their day moves cold"),
    ] {
        let error = raw.execute(sql, []).unwrap_err().to_string();
        assert!(error.contains(why), "{sql}: {error}");
    }
    drop(raw);
    assert_eq!(world.keep(keeper_time()), [DAY]);

    let id = old.info.id;
    let late = |reference: String, user: &UserId, kind: EntryKind, packet: Option<PacketId>| Effects {
        next_seq: 3,
        ledger: vec![entry(reference, user, 5, kind, packet, noon(DAY))],
        ..Effects::default()
    };
    // A credit of the cold day landing late in set 1, a deposit filed under
    // it, and a packet of it: each refused, as a constraint (the set halts).
    let (dave, alice) = (user_in(1, "dave"), world.alice.clone());
    let credit = world.commit(1, late(claim_ref(id, &dave), &dave, EntryKind::Credit, Some(id))).unwrap_err();
    let deposit = world.commit(0, late("deposit:x:key:late".into(), &alice, EntryKind::Deposit, None));
    let mut again = old.clone();
    again.info.id = PacketId::new(DAY, SetId(0), 9, 7);
    let packet = world.commit(0, Effects { next_seq: 10, packets: vec![again], ..Effects::default() }).unwrap_err();
    for error in [credit, deposit.unwrap_err(), packet] {
        assert!(error.refused, "{error}");
        assert!(error.message.contains(&format!("day {DAY} is cold: it takes no writes")), "{error}");
    }
    // A claim on a cold packet finds no packet.
    let claim = Effects { next_seq: 3, claims: vec![(id, claim(&dave, 2, noon(DAY)))], ..Effects::default() };
    let error = world.commit(0, claim).unwrap_err();
    assert!(error.refused && error.message.contains("unknown packet"), "{error}");
    world.audit(ColdDays::Rows);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        // Without its index file, SQLite rebuilds a WAL's index from the WAL.
        if entry.file_name().to_string_lossy().ends_with("-shm") {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
