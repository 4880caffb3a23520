//! The PostgreSQL store's second line of defence, case by case as on SQLite
//! (`store-sqlite/tests/constraints.rs`): effects that break an invariant
//! are refused whole, whatever the engine decided, and the refusal says so
//! (`StoreError::refused`: the materializer halts the set on it). Each case
//! materializes wrong batches on top of a valid history and checks that
//! nothing of them landed: neither the position nor a row.
//!
//! PostgreSQL checks a statement's rows at once (statement-level triggers),
//! and one materialization writes many batches in one statement per table,
//! so the cases that matter most here span batches of one call: what must
//! pass when its batches are taken together and what must be refused when
//! they are taken in journal order.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use hongbao_domain::ledger::{EntryKind, claim_ref, refund_ref, send_ref};
use hongbao_domain::packet::SpecInput;
use hongbao_domain::{Amount, Claim, Limits, Millis, Packet, PacketId, PacketSpec, SetId, UserId};
use hongbao_engine::{
    Credit, Effects, IdempotencyRecord, IdempotencyResult, Journaled, LedgerEntry, SetStores, Store, StoreError,
};
use hongbao_store_pg::testing::TestDatabase;
use hongbao_store_pg::{PgStore, SetMap, open_sets};

const NOW: Millis = Millis(1_800_000_000_000);

/// The day of the history's packets (`yyyymmdd`), a few days after `NOW`'s.
const DAY: u32 = 20_270_128;

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn fen(value: u64) -> Amount {
    Amount::from_fen(value).unwrap()
}

fn entry(reference: String, who: &str, amount: i64, kind: EntryKind, packet: Option<PacketId>) -> LedgerEntry {
    LedgerEntry { reference, user: user(who), amount, kind, packet_id: packet, at: NOW, balance_after: None }
}

fn deposit(who: &str, key: &str, amount: i64) -> LedgerEntry {
    entry(format!("deposit:{who}:key:{key}"), who, amount, EntryKind::Deposit, None)
}

fn claim(who: &str, index: u32, amount: u64, at: Millis) -> Claim {
    Claim { user: user(who), index, amount: fen(amount), at }
}

/// A packet of set 0 on `DAY`, sent by `sender`.
fn packet(seq: u64, sender: &str, kind: &str, total: i64, count: i64, recipient: Option<&str>) -> Packet {
    let input = SpecInput {
        kind: kind.into(),
        total_amount: total,
        count,
        recipient: recipient.map(str::to_owned),
        expires_in_s: Some(60),
        ..SpecInput::default()
    };
    let spec = PacketSpec::parse(&input, &user(sender), &Limits::default()).unwrap();
    Packet::new(PacketId::new(DAY, SetId(0), seq, 7), user(sender), &spec, 42, NOW)
}

/// The effects of sending `packet`: its sender's debit and the packet.
fn send(packet: &Packet) -> Effects {
    let id = packet.info.id;
    let debit =
        entry(send_ref(id), packet.info.sender.as_str(), -packet.info.total_amount.signed(), EntryKind::Send, Some(id));
    Effects { next_seq: id.seq + 1, ledger: vec![debit], packets: vec![packet.clone()], ..Effects::default() }
}

/// Claims of `id`, in a batch of their own.
fn claims(id: PacketId, claims: Vec<Claim>) -> Effects {
    Effects { next_seq: 2, claims: claims.into_iter().map(|c| (id, c)).collect(), ..Effects::default() }
}

fn ledger(entries: Vec<LedgerEntry>) -> Effects {
    Effects { next_seq: 2, ledger: entries, ..Effects::default() }
}

/// A valid history on a fresh database: alice deposits 1000 and sends a
/// packet of `kind` (300 fen; 3 shares, or 1 for `recipient`).
struct History {
    // Declared before the database, so its connections close before the
    // database is dropped.
    stores: SetStores<PgStore>,
    db: TestDatabase,
    packet: Packet,
}

impl History {
    fn new(test: &str, kind: &str, recipient: Option<&str>) -> Option<History> {
        let db = TestDatabase::create(test)?;
        let mut stores = open_sets(&SetMap::single(db.url()), 1).unwrap().pop().unwrap();
        let packet = packet(1, "alice", kind, 300, if recipient.is_some() { 1 } else { 3 }, recipient);
        let mut effects = send(&packet);
        effects.ledger.insert(0, deposit("alice", "1", 1000));
        commit(&mut stores.materializer, vec![effects]).unwrap();
        Some(History { stores, db, packet })
    }

    fn id(&self) -> PacketId {
        self.packet.info.id
    }

    fn commit(&mut self, batches: Vec<Effects>) -> Result<(), StoreError> {
        commit(&mut self.stores.materializer, batches)
    }

    /// Materializes `batches` in one call and checks it is refused as a
    /// broken invariant that names `why`, with nothing of it written.
    fn refused(&mut self, batches: Vec<Effects>, why: &str) {
        self.refused_for(batches, &[why]);
    }

    /// As `refused`, for batches broken in several ways: the refusal names
    /// one of `reasons`.
    fn refused_for(&mut self, batches: Vec<Effects>, reasons: &[&str]) {
        let url = self.db.url();
        let (position, rows) = (self.stores.materializer.materialized().unwrap(), common::tables(&url));
        let error = self.commit(batches).expect_err("the store must refuse these batches");
        let named = reasons.iter().any(|why| error.message.contains(why));
        assert!(named, "expected one of {reasons:?}, got {error}");
        assert!(error.refused, "a broken invariant is a refusal, not a passing failure: {error}");
        assert_eq!(self.stores.materializer.materialized().unwrap(), position, "a refused call's position never lands");
        assert_eq!(common::tables(&url), rows, "no row of a refused call lands");
    }

    /// Runs `sql` beside the store, as an operator would, and answers the
    /// database's refusal.
    fn tampered(&self, sql: &str) -> String {
        common::sql(&self.db.url(), sql).expect_err("the database must refuse this change")
    }

    fn balance(&self, who: &str) -> Amount {
        self.stores.reader.balance(&user(who)).unwrap()
    }
}

/// Materializes `batches` as the tables' next journal positions, in one call.
fn commit(store: &mut PgStore, batches: Vec<Effects>) -> Result<(), StoreError> {
    let first = store.materialized().unwrap() + 1;
    let journaled: Vec<Journaled> =
        (first..).zip(batches).map(|(position, effects)| Journaled { position, effects: Arc::new(effects) }).collect();
    store.materialize(&journaled)
}

#[test]
fn a_valid_history_commits_and_reads_back() {
    let Some(mut history) = History::new("a_valid_history_commits_and_reads_back", "lucky", None) else { return };
    assert_eq!(history.stores.materializer.materialized().unwrap(), 1);
    assert_eq!(history.balance("alice"), fen(700));
    let stored = history.stores.reader.packet(&history.id()).unwrap().unwrap();
    assert_eq!((stored.remaining_amount, stored.remaining_count), (fen(300), 3));
    let url = history.db.url();
    assert_eq!(common::value(&url, "SELECT count(*) FROM ledger"), "2");
    // The next batch follows: the history's own position moved.
    history.commit(vec![ledger(vec![deposit("alice", "2", 5)])]).unwrap();
    assert_eq!(history.balance("alice"), fen(705));
}

#[test]
fn overdrafts_debits_of_no_account_and_duplicate_references_are_refused() {
    let name = "overdrafts_debits_of_no_account_and_duplicate_references_are_refused";
    let Some(mut history) = History::new(name, "lucky", None) else { return };
    let id = history.id();
    let other = |seq| PacketId { seq, ..id };
    history.refused(vec![ledger(vec![deposit("alice", "x", -1)])], "violates check constraint");
    let debit = entry(send_ref(other(5)), "bob", -1, EntryKind::Send, Some(other(5)));
    history.refused(vec![ledger(vec![debit])], "of an account that does not exist");
    let overdraft = entry(send_ref(other(6)), "alice", -701, EntryKind::Send, Some(other(6)));
    history.refused(vec![ledger(vec![overdraft])], "a debit below zero");
    history.refused(vec![ledger(vec![deposit("alice", "1", 5)])], "duplicate key");
    history.refused(vec![ledger(vec![deposit("alice", "y", 5), deposit("alice", "y", 6)])], "duplicate key");
    history
        .refused(vec![ledger(vec![deposit("alice", "z", 5)]), ledger(vec![deposit("alice", "z", 6)])], "duplicate key");
    // After the refusals, the balance is the history's: nothing half-applied.
    assert_eq!(history.balance("alice"), fen(700));
}

#[test]
fn a_batch_another_materializer_wrote_first_is_retried_not_refused() {
    // A node that lost the set finishes what it had journaled while the new
    // owner catches up on the same records: whichever writes them second
    // is told to retry from the tables' position, never halted.
    let name = "a_batch_another_materializer_wrote_first_is_retried_not_refused";
    let Some(mut history) = History::new(name, "lucky", None) else { return };
    let map = SetMap::single(history.db.url());
    let mut other = hongbao_store_pg::open_leased_set(&map, 1, SetId(0), 0).unwrap().materializer;
    let batch = Journaled { position: 2, effects: Arc::new(ledger(vec![deposit("alice", "2", 5)])) };
    other.materialize(std::slice::from_ref(&batch)).unwrap();
    let error = history.stores.materializer.materialize(&[batch]).unwrap_err();
    assert!(!error.refused && error.message.contains("written by another node"), "{error}");
    assert_eq!(history.stores.materializer.materialized().unwrap(), 2);
    assert_eq!(history.balance("alice"), fen(705), "written once");
}

#[test]
fn a_batch_that_skips_a_position_is_refused() {
    let Some(mut history) = History::new("a_batch_that_skips_a_position_is_refused", "lucky", None) else { return };
    let url = history.db.url();
    let rows = common::tables(&url);
    let skipping = Journaled { position: 3, effects: Arc::new(ledger(vec![deposit("alice", "2", 5)])) };
    let error = history.stores.materializer.materialize(&[skipping]).unwrap_err();
    assert!(error.refused && error.message.contains("does not follow"), "{error}");
    assert_eq!(history.stores.materializer.materialized().unwrap(), 1);
    assert_eq!(common::tables(&url), rows);
}

#[test]
fn ledger_entries_are_immutable() {
    let Some(history) = History::new("ledger_entries_are_immutable", "lucky", None) else { return };
    let url = history.db.url();
    let rows = common::tables(&url);
    let update = history.tampered("UPDATE ledger SET amount = 2000 WHERE reference = 'deposit:alice:key:1'");
    assert!(update.contains("ledger rows are immutable"), "{update}");
    let delete = history.tampered("DELETE FROM ledger WHERE reference = 'deposit:alice:key:1'");
    assert!(delete.contains("ledger rows are immutable"), "{delete}");
    assert_eq!(common::tables(&url), rows);
}

#[test]
fn a_packet_must_start_whole_and_with_its_send_debit() {
    let name = "a_packet_must_start_whole_and_with_its_send_debit";
    let Some(mut history) = History::new(name, "lucky", None) else { return };
    let second = packet(2, "alice", "lucky", 100, 2, None);
    history.refused(vec![Effects { ledger: Vec::new(), ..send(&second) }], "needs its send debit");
    // A debit of the wrong amount, or by someone else, is not its debit.
    let mut short = send(&second);
    short.ledger[0].amount = -99;
    history.refused(vec![short], "needs its send debit");
    let mut by_bob = send(&second);
    by_bob.ledger.insert(0, deposit("bob", "1", 500));
    by_bob.ledger[1].user = user("bob");
    history.refused(vec![by_bob], "needs its send debit");
    // The store writes a packet whole, so a packet that does not start
    // whole can only come from beside it.
    let id = PacketId::new(DAY, SetId(0), 3, 7);
    let debit = format!(
        "INSERT INTO ledger VALUES ({DAY}, 'alice', 'send:{id}', -100, 'send', '{id}', {now}, 99, 0)",
        now = NOW.0
    );
    let insert = format!(
        "{debit}; INSERT INTO packets (day, id, set_id, seq, sender, kind, total_amount, count, \
         remaining_amount, remaining_count, seed, created_at, expires_at, position) \
         VALUES ({DAY}, '{id}', 0, 3, 'alice', 'lucky', 100, 2, 90, 2, 1, {now}, {later}, 1000)",
        now = NOW.0,
        later = NOW.0 + 60_000
    );
    let refused = history.tampered(&insert);
    assert!(refused.contains("must start whole"), "{refused}");
    // The same packet whole, with its debit, passes the same way.
    let valid = insert.replace(", 90, 2, 1,", ", 100, 2, 1,");
    common::sql(&history.db.url(), &valid).unwrap();
}

#[test]
fn claims_that_break_the_packet_rules_are_refused_whole() {
    let name = "claims_that_break_the_packet_rules_are_refused_whole";
    let Some(mut history) = History::new(name, "lucky", None) else { return };
    let (id, expires_at) = (history.id(), history.packet.info.expires_at);
    let one = |list: Vec<Claim>| claims(id, list);
    history.refused(vec![one(vec![claim("bob", 0, 10, NOW), claim("bob", 1, 10, NOW)])], "duplicate key");
    history.refused(vec![one(vec![claim("bob", 0, 10, NOW), claim("carol", 0, 10, NOW)])], "duplicate key");
    history.refused(vec![one(vec![claim("bob", 1, 10, NOW)])], "claim out of share order");
    history.refused(vec![one(vec![claim("bob", 0, 10, NOW), claim("carol", 2, 10, NOW)])], "claim out of share order");
    history.refused(vec![one(vec![claim("bob", 0, 10, expires_at)])], "claim at or after expiry");
    history.refused(vec![one(vec![claim("bob", 0, 10, Millis(expires_at.0 + 1))])], "claim at or after expiry");
    history.refused(vec![one(vec![claim("bob", 0, 301, NOW)])], "violates check constraint");
    history.refused(vec![one(vec![claim("bob", 0, 0, NOW)])], "violates check constraint");
    let unknown = PacketId { seq: 9, ..id };
    history.refused(vec![claims(unknown, vec![claim("bob", 0, 10, NOW)])], "claim on an unknown packet");
    // The last share must take all that is left.
    let all = vec![claim("bob", 0, 100, NOW), claim("carol", 1, 100, NOW), claim("dave", 2, 99, NOW)];
    history.refused(vec![one(all)], "violates check constraint");
    // After all the refusals, a valid claim still fits: nothing half-applied.
    history.commit(vec![one(vec![claim("bob", 0, 10, NOW)])]).unwrap();
    // The same user again, in a later call, and the same share again.
    history.refused(vec![one(vec![claim("bob", 1, 10, NOW)])], "duplicate key");
    history.refused(vec![one(vec![claim("carol", 0, 10, NOW)])], "duplicate key");
    history.refused(vec![one(vec![claim("carol", 2, 10, NOW)])], "claim out of share order");
    let stored = history.stores.reader.packet(&id).unwrap().unwrap();
    assert_eq!((stored.remaining_amount, stored.remaining_count), (fen(290), 2));
}

#[test]
fn claims_are_immutable() {
    let Some(mut history) = History::new("claims_are_immutable", "lucky", None) else { return };
    history.commit(vec![claims(history.id(), vec![claim("bob", 0, 10, NOW)])]).unwrap();
    let url = history.db.url();
    let rows = common::tables(&url);
    let update = history.tampered("UPDATE claims SET amount = 20");
    assert!(update.contains("claims rows are immutable"), "{update}");
    let delete = history.tampered("DELETE FROM claims");
    assert!(delete.contains("claims rows are immutable"), "{delete}");
    assert_eq!(common::tables(&url), rows);
}

#[test]
fn a_packets_terms_are_immutable_and_packets_are_never_deleted() {
    let name = "a_packets_terms_are_immutable_and_packets_are_never_deleted";
    let Some(history) = History::new(name, "lucky", None) else { return };
    let url = history.db.url();
    let rows = common::tables(&url);
    for change in ["total_amount = 600", "expires_at = expires_at + 1", "sender = 'bob'", "seed = 1", "greeting = 'hi'"]
    {
        let refused = history.tampered(&format!("UPDATE packets SET {change}"));
        assert!(refused.contains("terms are immutable"), "{change}: {refused}");
    }
    let delete = history.tampered("DELETE FROM packets");
    assert!(delete.contains("packets rows are immutable"), "{delete}");
    assert_eq!(common::tables(&url), rows);
}

#[test]
fn exclusive_packets_refunds_and_outbox_rows_are_checked() {
    let name = "exclusive_packets_refunds_and_outbox_rows_are_checked";
    let Some(mut history) = History::new(name, "exclusive", Some("bob")) else { return };
    let id = history.id();
    history.refused(vec![claims(id, vec![claim("carol", 0, 300, NOW)])], "claim by someone other than the recipient");
    let refunds = |amount: u64| Effects { next_seq: 2, refunds: vec![(id, fen(amount))], ..Effects::default() };
    history.refused(vec![refunds(300)], "refunded once, for what is left, with its entry");
    let refund = entry(refund_ref(id), "alice", 300, EntryKind::Refund, Some(id));
    let short_entry = LedgerEntry { amount: 200, ..refund.clone() };
    history.refused(vec![Effects { ledger: vec![short_entry], ..refunds(300) }], "refunded once");
    let wrong_amount = LedgerEntry { amount: 200, ..refund.clone() };
    history.refused(vec![Effects { ledger: vec![wrong_amount], ..refunds(200) }], "matched 0 packets");
    let credit = |reference: String, amount: u64| Credit {
        reference,
        user: user("bob"),
        amount: fen(amount),
        packet_id: id,
        at: NOW,
    };
    let outbox = |credit: Credit| Effects { next_seq: 2, outbox_added: vec![credit], ..Effects::default() };
    history.refused(vec![outbox(credit("claim:x:bob".into(), 300))], "violates check constraint");
    history.refused(vec![outbox(credit(claim_ref(id, "bob"), 300))], "an outbox credit must match its claim");
    // A claim with a credit of another amount.
    let mut mismatched = claims(id, vec![claim("bob", 0, 300, NOW)]);
    mismatched.outbox_added.push(credit(claim_ref(id, "bob"), 299));
    history.refused(vec![mismatched], "an outbox credit must match its claim");
    // The refund, valid: once, for all that is left, with its entry.
    history.commit(vec![Effects { ledger: vec![refund.clone()], ..refunds(300) }]).unwrap();
    assert_eq!(history.balance("alice"), fen(1000));
    let again = LedgerEntry { reference: "refund:again".into(), ..refund };
    history.refused(vec![Effects { ledger: vec![again], ..refunds(300) }], "matched 0 packets");
    history.refused(vec![claims(id, vec![claim("bob", 0, 300, NOW)])], "after the refund");
}

#[test]
fn a_claim_with_its_outbox_credit_commits_and_the_credit_is_kept_until_acknowledged() {
    let name = "a_claim_with_its_outbox_credit_commits_and_the_credit_is_kept_until_acknowledged";
    let Some(mut history) = History::new(name, "exclusive", Some("bob")) else { return };
    let (id, url) = (history.id(), history.db.url());
    let credit =
        Credit { reference: claim_ref(id, "bob"), user: user("bob"), amount: fen(300), packet_id: id, at: NOW };
    let mut claimed = claims(id, vec![claim("bob", 0, 300, NOW)]);
    claimed.outbox_added.push(credit.clone());
    history.commit(vec![claimed]).unwrap();
    assert_eq!(common::value(&url, "SELECT count(*) FROM outbox"), "1");
    let acknowledged = Effects { next_seq: 2, outbox_removed: vec![credit.reference], ..Effects::default() };
    history.commit(vec![acknowledged]).unwrap();
    assert_eq!(common::value(&url, "SELECT count(*) FROM outbox"), "0");
}

#[test]
fn a_credit_then_a_debit_in_later_batches_of_one_call_commit() {
    let name = "a_credit_then_a_debit_in_later_batches_of_one_call_commit";
    let Some(mut history) = History::new(name, "lucky", None) else { return };
    // bob has no account until the first batch makes it; the second spends
    // all of it on a packet.
    let bobs = packet(2, "bob", "lucky", 50, 1, None);
    history.commit(vec![ledger(vec![deposit("bob", "1", 50)]), send(&bobs)]).unwrap();
    assert_eq!(history.balance("bob"), fen(0));
    assert!(history.stores.reader.packet(&bobs.info.id).unwrap().is_some());
    // Within one batch too: a deposit entry before the debit.
    let alices = PacketId { seq: 3, ..history.id() };
    let debit = entry(send_ref(alices), "alice", -1_200, EntryKind::Send, Some(alices));
    history.commit(vec![ledger(vec![deposit("alice", "2", 500), debit])]).unwrap();
    assert_eq!(history.balance("alice"), fen(0));
}

#[test]
fn a_balance_below_zero_between_batches_of_one_call_is_refused_though_the_net_is_positive() {
    let name = "a_balance_below_zero_between_batches_of_one_call_is_refused_though_the_net_is_positive";
    let Some(mut history) = History::new(name, "lucky", None) else { return };
    let other = PacketId { seq: 5, ..history.id() };
    let overdraft = || entry(send_ref(other), "alice", -701, EntryKind::Send, Some(other));
    // Journal order: the debit first, the deposit that would cover it after.
    history.refused(vec![ledger(vec![overdraft()]), ledger(vec![deposit("alice", "2", 1000)])], "a debit below zero");
    history.refused(vec![ledger(vec![overdraft(), deposit("alice", "2", 1000)])], "a debit below zero");
    // A new account's first entry a debit, covered by a later batch.
    let bobs = PacketId { seq: 6, ..other };
    let by_bob = entry(send_ref(bobs), "bob", -10, EntryKind::Send, Some(bobs));
    history.refused(
        vec![ledger(vec![by_bob]), ledger(vec![deposit("bob", "1", 50)])],
        "of an account that does not exist",
    );
    // Among other users' entries and across several batches the order
    // holds too: carol dips below zero in the third batch of four.
    let carols = PacketId { seq: 7, ..other };
    let batches = vec![
        ledger(vec![deposit("carol", "1", 100), deposit("dave", "1", 5)]),
        ledger(vec![deposit("dave", "2", 5)]),
        ledger(vec![entry(send_ref(carols), "carol", -150, EntryKind::Send, Some(carols))]),
        ledger(vec![deposit("carol", "2", 100)]),
    ];
    history.refused(batches, "a debit below zero");
    // The same entries in the covering order pass.
    history.commit(vec![ledger(vec![deposit("alice", "2", 1000)]), ledger(vec![overdraft()])]).unwrap();
    assert_eq!(history.balance("alice"), fen(999));
}

#[test]
fn claims_of_one_packet_across_batches_of_one_call_take_its_shares_in_order() {
    let name = "claims_of_one_packet_across_batches_of_one_call_take_its_shares_in_order";
    let Some(mut history) = History::new(name, "lucky", None) else { return };
    let id = history.id();
    let batches = vec![
        claims(id, vec![claim("bob", 0, 100, NOW)]),
        claims(id, vec![claim("carol", 1, 50, NOW), claim("dave", 2, 150, NOW)]),
    ];
    history.commit(batches).unwrap();
    let stored = history.stores.reader.packet(&id).unwrap().unwrap();
    assert_eq!((stored.remaining_amount, stored.remaining_count), (fen(0), 0));
    let openers: Vec<(&str, u32)> = stored.claims().iter().map(|c| (c.user.as_str(), c.index)).collect();
    assert_eq!(openers, [("bob", 0), ("carol", 1), ("dave", 2)]);
}

#[test]
fn a_packet_sent_and_claimed_within_one_call_commits() {
    let name = "a_packet_sent_and_claimed_within_one_call_commits";
    let Some(mut history) = History::new(name, "lucky", None) else { return };
    let second = packet(2, "alice", "lucky", 100, 2, None);
    let id = second.info.id;
    let batches =
        vec![send(&second), claims(id, vec![claim("bob", 0, 30, NOW)]), claims(id, vec![claim("carol", 1, 70, NOW)])];
    history.commit(batches).unwrap();
    let stored = history.stores.reader.packet(&id).unwrap().unwrap();
    assert_eq!((stored.remaining_amount, stored.remaining_count), (fen(0), 0));
    assert_eq!(history.balance("alice"), fen(600));
}

#[test]
fn claims_across_batches_of_one_call_are_refused_when_a_share_is_skipped_or_taken_twice() {
    let name = "claims_across_batches_of_one_call_are_refused_when_a_share_is_skipped_or_taken_twice";
    let Some(mut history) = History::new(name, "lucky", None) else { return };
    let id = history.id();
    let skipped = vec![claims(id, vec![claim("bob", 0, 10, NOW)]), claims(id, vec![claim("carol", 2, 10, NOW)])];
    history.refused(skipped, "claim out of share order");
    let twice = vec![claims(id, vec![claim("bob", 0, 10, NOW)]), claims(id, vec![claim("carol", 0, 10, NOW)])];
    history.refused(twice, "duplicate key");
    let again = vec![claims(id, vec![claim("bob", 0, 10, NOW)]), claims(id, vec![claim("bob", 1, 10, NOW)])];
    history.refused(again, "duplicate key");
}

#[test]
fn a_refund_then_a_claim_within_one_call_is_refused() {
    let name = "a_refund_then_a_claim_within_one_call_is_refused";
    let Some(mut history) = History::new(name, "lucky", None) else { return };
    let id = history.id();
    // The refund of what was left, then a claim journaled after it: a
    // claim after the refund, refused in separate calls, and so in one.
    let refund = |amount: i64| Effects {
        next_seq: 2,
        ledger: vec![entry(refund_ref(id), "alice", amount, EntryKind::Refund, Some(id))],
        refunds: vec![(id, fen(amount as u64))],
        ..Effects::default()
    };
    let reasons = ["after the refund", "refunded once", "matched 0 packets"];
    history.refused_for(vec![refund(300), claims(id, vec![claim("bob", 0, 10, NOW)])], &reasons);
    // A refund of less than was left, which the later claim makes right.
    history.refused_for(vec![refund(290), claims(id, vec![claim("bob", 0, 10, NOW)])], &reasons);
}

#[test]
fn claims_across_batches_of_one_call_are_refused_when_their_shares_run_against_journal_order() {
    let name = "claims_across_batches_of_one_call_are_refused_when_their_shares_run_against_journal_order";
    let Some(mut history) = History::new(name, "lucky", None) else { return };
    let id = history.id();
    // Each batch alone is out of share order (the first takes share 1 of an
    // unopened packet); together they take shares 0 and 1, in the wrong order.
    let reversed = vec![claims(id, vec![claim("carol", 1, 10, NOW)]), claims(id, vec![claim("bob", 0, 10, NOW)])];
    history.refused(reversed, "claim out of share order");
}

#[test]
fn a_packet_whose_send_debit_comes_in_a_later_batch_of_one_call_is_refused() {
    let name = "a_packet_whose_send_debit_comes_in_a_later_batch_of_one_call_is_refused";
    let Some(mut history) = History::new(name, "lucky", None) else { return };
    let second = packet(2, "alice", "lucky", 100, 2, None);
    let sent = send(&second);
    let (unpaid, debit) = (Effects { ledger: Vec::new(), ..sent.clone() }, ledger(sent.ledger));
    history.refused(vec![unpaid, debit], "needs its send debit");
}

#[test]
fn a_refund_twice_within_one_call_is_refused() {
    let Some(mut history) = History::new("a_refund_twice_within_one_call_is_refused", "lucky", None) else { return };
    let id = history.id();
    let refund = |reference: String| Effects {
        next_seq: 2,
        ledger: vec![entry(reference, "alice", 300, EntryKind::Refund, Some(id))],
        refunds: vec![(id, fen(300))],
        ..Effects::default()
    };
    let twice = vec![refund(refund_ref(id)), refund("refund:again".into())];
    // The second refund runs after the first one's update (a call is
    // written in runs that end at each refund), and finds nothing left.
    history.refused(twice, "1 refunds matched 0 packets");
}

#[test]
fn an_idempotency_key_is_remembered_once() {
    let Some(mut history) = History::new("an_idempotency_key_is_remembered_once", "lucky", None) else { return };
    let record = |fingerprint: &str| IdempotencyRecord {
        user: user("alice"),
        key: "k1".into(),
        fingerprint: fingerprint.into(),
        result: IdempotencyResult::Deposited(fen(1000)),
    };
    let remember =
        |records: Vec<IdempotencyRecord>| Effects { next_seq: 2, idempotency: records, ..Effects::default() };
    history.refused(vec![remember(vec![record("a"), record("b")])], "duplicate key");
    history.refused(vec![remember(vec![record("a")]), remember(vec![record("b")])], "duplicate key");
    history.commit(vec![remember(vec![record("a")])]).unwrap();
    history.refused(vec![remember(vec![record("a")])], "duplicate key");
    // The same key for the other operation is another key.
    let sent = IdempotencyRecord { result: IdempotencyResult::Sent(history.id()), ..record("a") };
    history.commit(vec![remember(vec![sent])]).unwrap();
}
