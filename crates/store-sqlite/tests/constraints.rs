//! The store's second line of defence: effects that break an invariant are
//! refused whole, whatever the engine decided, and the refusal says so
//! (`StoreError::refused`: the materializer halts the set on it). Each case
//! materializes one wrong batch on top of a valid history and checks nothing
//! of it landed.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use hongbao_domain::ledger::{EntryKind, send_ref};
use hongbao_domain::packet::SpecInput;
use hongbao_domain::{Amount, Claim, Limits, Millis, Packet, PacketId, PacketSpec, SetId, UserId};
use std::sync::Arc;

use hongbao_engine::{Credit, Effects, Journaled, LedgerEntry, Store, StoreError, StoreReader};
use hongbao_store_sqlite::open_set;

const NOW: Millis = Millis(1_800_000_000_000);

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn fen(value: u64) -> Amount {
    Amount::from_fen(value).unwrap()
}

fn entry(reference: String, who: &str, amount: i64, kind: EntryKind, packet: Option<PacketId>) -> LedgerEntry {
    LedgerEntry { reference, user: user(who), amount, kind, packet_id: packet, at: NOW, balance_after: None }
}

/// A valid history: alice deposits 1000 and sends a packet of `kind`.
fn history(kind: &str, recipient: Option<&str>) -> (tempfile::TempDir, hongbao_store_sqlite::SqliteStore, Packet) {
    let dir = tempfile::tempdir().unwrap();
    let mut stores = open_set(dir.path(), SetId(0)).unwrap();
    let input = SpecInput {
        kind: kind.into(),
        total_amount: 300,
        count: if recipient.is_some() { 1 } else { 3 },
        recipient: recipient.map(str::to_owned),
        expires_in_s: Some(60),
        ..SpecInput::default()
    };
    let spec = PacketSpec::parse(&input, &user("alice"), &Limits::default()).unwrap();
    let id = PacketId::new(20_270_128, SetId(0), 1, 7);
    let packet = Packet::new(id, user("alice"), &spec, 42, NOW);
    let effects = Effects {
        next_seq: 2,
        ledger: vec![
            entry("deposit:alice:key:1".into(), "alice", 1000, EntryKind::Deposit, None),
            entry(send_ref(id), "alice", -300, EntryKind::Send, Some(id)),
        ],
        packets: vec![packet.clone()],
        ..Effects::default()
    };
    commit(&mut stores.materializer, effects).unwrap();
    (dir, stores.materializer, packet)
}

/// Materializes `effects` as the tables' next journal position.
fn commit(store: &mut hongbao_store_sqlite::SqliteStore, effects: Effects) -> Result<(), StoreError> {
    let position = store.materialized().unwrap() + 1;
    store.materialize(&[Journaled { position, effects: Arc::new(effects) }])
}

fn claim(who: &str, index: u32, amount: u64, at: Millis) -> Claim {
    Claim { user: user(who), index, amount: fen(amount), at }
}

fn refused(store: &mut hongbao_store_sqlite::SqliteStore, effects: Effects, why: &str) {
    let before = store.materialized().unwrap();
    let error = commit(store, effects).expect_err("the store must refuse this batch");
    assert!(error.message.contains(why), "expected {why:?}, got {error}");
    assert!(error.refused, "a broken invariant is a refusal, not a passing failure: {error}");
    assert_eq!(store.materialized().unwrap(), before, "nothing of a refused batch lands, nor its position");
}

#[test]
fn a_valid_history_commits() {
    let (dir, _store, packet) = history("lucky", None);
    let reader = hongbao_store_sqlite::SqliteReader::new(dir.path(), SetId(0));
    assert_eq!(reader.balance(&user("alice")).unwrap(), fen(700));
    assert_eq!(reader.packet(&packet.info.id).unwrap().unwrap().remaining_amount, fen(300));
}

#[test]
fn overdrafts_duplicate_references_and_changed_entries_are_refused() {
    let (dir, mut store, packet) = history("lucky", None);
    let id = packet.info.id;
    let overdraft = entry("deposit:alice:key:x".into(), "alice", -1, EntryKind::Deposit, None);
    refused(&mut store, Effects { next_seq: 2, ledger: vec![overdraft], ..Effects::default() }, "CHECK");
    let debit = entry(send_ref(PacketId { seq: 5, ..id }), "bob", -1, EntryKind::Send, Some(id));
    refused(&mut store, Effects { next_seq: 2, ledger: vec![debit], ..Effects::default() }, "does not exist");
    let overdraft = entry(send_ref(PacketId { seq: 6, ..id }), "alice", -701, EntryKind::Send, Some(id));
    refused(&mut store, Effects { next_seq: 2, ledger: vec![overdraft], ..Effects::default() }, "balance >= 0");
    let twice = entry("deposit:alice:key:1".into(), "alice", 5, EntryKind::Deposit, None);
    refused(&mut store, Effects { next_seq: 2, ledger: vec![twice], ..Effects::default() }, "UNIQUE");
    let path = hongbao_store_sqlite::set_path(dir.path(), SetId(0));
    let raw = rusqlite::Connection::open(&path).unwrap();
    let update = raw.execute("UPDATE ledger SET amount = 2000 WHERE reference = 'deposit:alice:key:1'", []);
    assert!(update.unwrap_err().to_string().contains("immutable"));
}

#[test]
fn claims_that_break_the_packet_rules_are_refused_whole() {
    let (_dir, mut store, packet) = history("lucky", None);
    let id = packet.info.id;
    let one = |claims: Vec<Claim>| Effects {
        next_seq: 2,
        claims: claims.into_iter().map(|c| (id, c)).collect(),
        ..Effects::default()
    };
    refused(&mut store, one(vec![claim("bob", 0, 10, NOW), claim("bob", 1, 10, NOW)]), "UNIQUE");
    refused(&mut store, one(vec![claim("bob", 1, 10, NOW)]), "share order");
    refused(&mut store, one(vec![claim("bob", 0, 10, packet.info.expires_at)]), "expiry");
    refused(&mut store, one(vec![claim("bob", 0, 301, NOW)]), "CHECK");
    refused(&mut store, one(vec![claim("bob", 0, 0, NOW)]), "CHECK");
    let unknown = PacketId { seq: 9, ..id };
    let stray = Effects { next_seq: 2, claims: vec![(unknown, claim("bob", 0, 10, NOW))], ..Effects::default() };
    refused(&mut store, stray, "unknown packet");
    // The last share must take all that is left.
    let all = vec![claim("b", 0, 100, NOW), claim("c", 1, 100, NOW), claim("d", 2, 99, NOW)];
    refused(&mut store, one(all), "CHECK");
    // After all the refusals, a valid claim still fits: nothing half-applied.
    commit(&mut store, one(vec![claim("bob", 0, 10, NOW)])).unwrap();
}

#[test]
fn exclusive_packets_refunds_and_outbox_rows_are_checked() {
    let (_dir, mut store, packet) = history("exclusive", Some("bob"));
    let id = packet.info.id;
    let by_carol = Effects { next_seq: 2, claims: vec![(id, claim("carol", 0, 300, NOW))], ..Effects::default() };
    refused(&mut store, by_carol, "recipient");
    let without_entry = Effects { next_seq: 2, refunds: vec![(id, fen(300))], ..Effects::default() };
    refused(&mut store, without_entry, "refunded once");
    let credit =
        Credit { reference: "claim:x:bob".into(), user: user("bob"), amount: fen(300), packet_id: id, at: NOW };
    let stray_credit = Effects { next_seq: 2, outbox_added: vec![credit], ..Effects::default() };
    refused(&mut store, stray_credit, "match its claim");
    let refund = entry(hongbao_domain::ledger::refund_ref(id), "alice", 300, EntryKind::Refund, Some(id));
    let valid =
        Effects { next_seq: 2, ledger: vec![refund.clone()], refunds: vec![(id, fen(300))], ..Effects::default() };
    commit(&mut store, valid).unwrap();
    let again = Effects {
        next_seq: 2,
        ledger: vec![LedgerEntry { reference: "refund:again".into(), ..refund }],
        refunds: vec![(id, fen(300))],
        ..Effects::default()
    };
    refused(&mut store, again, "matched no packet");
}
