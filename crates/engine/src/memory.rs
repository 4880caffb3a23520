//! In-memory tables for the simulation: the same contract as SQLite's (a
//! materialization applies whole or not at all, records its position, and
//! refuses what breaks an invariant). Disk faults are the journal's
//! (`journal/mem.rs`): the tables sit behind the commit point.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use hongbao_domain::audit::{AccountRow, ClaimRow, LedgerRow, OutboxRow, PacketRow, SetSnapshot, WithdrawalRow};
use hongbao_domain::ledger::{EntryKind, reversal_ref, withdrawal_ref, withdrawal_return_ref};
use hongbao_domain::withdrawal::{Withdrawal, WithdrawalId, WithdrawalStatus};
use hongbao_domain::{Amount, Claim, Millis, Packet, PacketId, UserId};

use crate::journal::Position;
use crate::store::{
    Credit, Effects, Fetched, IdempotencyOp, IdempotencyRecord, IdempotencyResult, Journaled, Recovered, Store,
    StoreError, Wants,
};

#[derive(Clone, Debug, Default)]
pub struct MemData {
    accounts: BTreeMap<UserId, i64>,
    ledger: BTreeMap<String, (UserId, i64, &'static str)>,
    packets: BTreeMap<PacketId, Packet>,
    outbox: BTreeMap<String, Credit>,
    idempotency: HashMap<(UserId, IdempotencyOp, String), IdempotencyRecord>,
    withdrawals: BTreeMap<WithdrawalId, Withdrawal>,
    frozen: std::collections::BTreeSet<UserId>,
    /// Deposits reversed, by reference.
    reversed: std::collections::BTreeSet<String>,
    next_seq: u64,
    position: Position,
}

#[derive(Clone, Debug, Default)]
pub struct MemStore {
    data: Arc<Mutex<MemData>>,
}

fn refuse(why: impl Into<String>) -> StoreError {
    StoreError::refused(why)
}

impl MemStore {
    /// The rows the audit reads, as SQLite's snapshot gives them.
    pub fn snapshot(&self, set: u16) -> SetSnapshot {
        let data = self.data.lock().expect("store lock");
        let mut snapshot = SetSnapshot { set, ..SetSnapshot::default() };
        snapshot.accounts = data
            .accounts
            .iter()
            .map(|(user, balance)| AccountRow { user: user.to_string(), balance: *balance })
            .collect();
        snapshot.ledger = data
            .ledger
            .iter()
            .map(|(reference, (user, amount, kind))| LedgerRow {
                reference: reference.clone(),
                user: user.to_string(),
                amount: *amount,
                kind: (*kind).to_owned(),
            })
            .collect();
        for packet in data.packets.values() {
            let info = &packet.info;
            snapshot.packets.push(PacketRow {
                id: info.id.to_string(),
                sender: info.sender.to_string(),
                kind: info.kind.as_str().to_owned(),
                total_amount: info.total_amount.signed(),
                count: i64::from(info.count),
                remaining_amount: packet.remaining_amount.signed(),
                remaining_count: i64::from(packet.remaining_count),
                refunded_amount: packet.refunded_amount.signed(),
                seed: packet.seed,
                recipient: info.recipient.as_ref().map(ToString::to_string),
                expires_at: info.expires_at.0,
                members: info.group.as_ref().map(|group| group.members.joined().to_owned()),
            });
            for claim in packet.claims() {
                snapshot.claims.push(ClaimRow {
                    packet_id: info.id.to_string(),
                    user: claim.user.to_string(),
                    index: i64::from(claim.index),
                    amount: claim.amount.signed(),
                });
            }
        }
        snapshot.outbox = data
            .outbox
            .values()
            .map(|credit| OutboxRow {
                reference: credit.reference.clone(),
                user: credit.user.to_string(),
                amount: credit.amount.signed(),
            })
            .collect();
        snapshot.withdrawals = data
            .withdrawals
            .values()
            .map(|withdrawal| WithdrawalRow {
                id: withdrawal.id.to_string(),
                user: withdrawal.user.to_string(),
                amount: withdrawal.amount.signed(),
                status: withdrawal.status.as_str().to_owned(),
            })
            .collect();
        snapshot
    }

    /// A copy with its own data: what the checks replay the journal into,
    /// leaving the tables as they are.
    pub fn fork(&self) -> MemStore {
        MemStore { data: Arc::new(Mutex::new(self.data.lock().expect("store lock").clone())) }
    }
}

/// Freezes (each changing its account), and what the SQL stores'
/// withdrawal triggers check: a new one is pending with its debit; a
/// settling moves a pending one once, a failure with its return.
fn apply_wallet(data: &mut MemData, effects: &Effects) -> Result<(), StoreError> {
    for reversal in &effects.reversals {
        let deposit = data.ledger.get(&reversal.deposit);
        let entry = data.ledger.get(&reversal_ref(&reversal.deposit));
        if deposit != Some(&(reversal.user.clone(), reversal.amount.signed(), "deposit"))
            || entry != Some(&(reversal.user.clone(), -reversal.amount.signed(), "reversal"))
            || !data.reversed.insert(reversal.deposit.clone())
        {
            return Err(refuse(format!("the reversal of {} refused", reversal.deposit)));
        }
    }
    for (user, frozen, _) in &effects.frozen {
        let changed = if *frozen { data.frozen.insert(user.clone()) } else { data.frozen.remove(user) };
        if !changed {
            return Err(refuse(format!("{user}'s account frozen or unfrozen twice")));
        }
    }
    for withdrawal in &effects.withdrawals {
        let debit = data.ledger.get(&withdrawal_ref(withdrawal.id));
        if withdrawal.status != WithdrawalStatus::Pending
            || debit != Some(&(withdrawal.user.clone(), -withdrawal.amount.signed(), EntryKind::Withdrawal.as_str()))
            || data.withdrawals.insert(withdrawal.id, withdrawal.clone()).is_some()
        {
            return Err(refuse(format!("withdrawal {} refused", withdrawal.id)));
        }
    }
    for (id, status, at) in &effects.withdrawals_settled {
        let withdrawal = data.withdrawals.get_mut(id).ok_or_else(|| refuse(format!("settling unknown {id}")))?;
        let back = data.ledger.get(&withdrawal_return_ref(id));
        let returned = back == Some(&(withdrawal.user.clone(), withdrawal.amount.signed(), "withdrawal_return"));
        if withdrawal.status != WithdrawalStatus::Pending
            || *status == WithdrawalStatus::Pending
            || returned != (*status == WithdrawalStatus::Failed)
        {
            return Err(refuse(format!("settling {id} refused")));
        }
        withdrawal.status = *status;
        withdrawal.settled_at = Some(*at);
    }
    Ok(())
}

/// What the SQL stores' claim triggers check.
fn claim_allowed(packet: &Packet, claim: &Claim) -> bool {
    packet.claim_of(&claim.user).is_none()
        && claim.index == packet.info.count - packet.remaining_count
        && claim.at < packet.info.expires_at
        && claim.amount <= packet.remaining_amount
        && packet.info.recipient.as_ref().is_none_or(|recipient| *recipient == claim.user)
        && packet.info.in_audience(&claim.user)
}

fn apply(data: &mut MemData, effects: &Effects) -> Result<(), StoreError> {
    for entry in &effects.ledger {
        if data.ledger.contains_key(&entry.reference) {
            return Err(refuse(format!("duplicate reference {}", entry.reference)));
        }
        let balance = data.accounts.entry(entry.user.clone()).or_insert(0);
        *balance = balance.checked_add(entry.amount).ok_or_else(|| refuse("balance overflow"))?;
        if *balance < 0 {
            return Err(refuse(format!("balance of {} below zero", entry.user)));
        }
        data.ledger.insert(entry.reference.clone(), (entry.user.clone(), entry.amount, entry.kind.as_str()));
    }
    for packet in &effects.packets {
        let debit = data.ledger.get(&hongbao_domain::ledger::send_ref(packet.info.id));
        if debit.map(|(_, amount, _)| *amount) != Some(-packet.info.total_amount.signed())
            || !packet.claims().is_empty()
        {
            return Err(refuse("a packet needs its debit and starts whole"));
        }
        data.packets.insert(packet.info.id, packet.clone());
    }
    for (id, claim) in &effects.claims {
        let packet = data.packets.get(id).ok_or_else(|| refuse("claim on an unknown packet"))?;
        if !claim_allowed(packet, claim) {
            return Err(refuse(format!("claim refused on {id}")));
        }
        let mut claims: Vec<Claim> = packet.claims().to_vec();
        claims.push(claim.clone());
        let restored =
            Packet::restore(packet.info.clone(), packet.seed, packet.password, packet.refunded_amount, claims);
        if restored.remaining_count == 0 && !restored.remaining_amount.is_zero() {
            return Err(refuse("the last share must take all"));
        }
        data.packets.insert(*id, restored);
    }
    for (id, amount) in &effects.refunds {
        let packet = data.packets.get(id).ok_or_else(|| refuse("refund of an unknown packet"))?;
        let entry = data.ledger.get(&hongbao_domain::ledger::refund_ref(id));
        if !packet.refunded_amount.is_zero()
            || packet.remaining_amount != *amount
            || entry.map(|e| e.1) != Some(amount.signed())
        {
            return Err(refuse(format!("refund refused on {id}")));
        }
        let restored =
            Packet::restore(packet.info.clone(), packet.seed, packet.password, *amount, packet.claims().to_vec());
        data.packets.insert(*id, restored);
    }
    for credit in &effects.outbox_added {
        let claimed = data.packets.get(&credit.packet_id).and_then(|p| p.claim_of(&credit.user)).map(|c| c.amount);
        if claimed != Some(credit.amount) {
            return Err(refuse("an outbox credit must match its claim"));
        }
        data.outbox.insert(credit.reference.clone(), credit.clone());
    }
    for reference in &effects.outbox_removed {
        data.outbox.remove(reference);
    }
    apply_wallet(data, effects)?;
    for record in &effects.idempotency {
        let key = (record.user.clone(), record.op(), record.key.clone());
        if data.idempotency.insert(key, record.clone()).is_some() {
            return Err(refuse("duplicate idempotency key"));
        }
    }
    data.next_seq = data.next_seq.max(effects.next_seq);
    Ok(())
}

impl Store for MemStore {
    fn recover(&mut self, now: Millis) -> Result<Recovered, StoreError> {
        let data = self.data.lock().expect("store lock");
        let packets = data
            .packets
            .values()
            .filter(|p| p.info.expires_at > now || (!p.remaining_amount.is_zero() && p.refunded_amount.is_zero()))
            .cloned()
            .collect();
        Ok(Recovered {
            position: data.position,
            next_seq: data.next_seq.max(1),
            packets,
            outbox: data.outbox.values().cloned().collect(),
            withdrawals: data
                .withdrawals
                .values()
                .filter(|withdrawal| withdrawal.status == WithdrawalStatus::Pending)
                .cloned()
                .collect(),
            frozen: data.frozen.iter().cloned().collect(),
        })
    }

    fn prefetch(&mut self, wants: &Wants) -> Result<Fetched, StoreError> {
        let data = self.data.lock().expect("store lock");
        let mut fetched = Fetched::default();
        for user in &wants.accounts {
            let balance = data.accounts.get(user).copied().unwrap_or(0);
            fetched.accounts.push((user.clone(), Amount::from_signed(balance).expect("balances are not negative")));
        }
        for (user, op, key) in &wants.idempotency {
            if let Some(record) = data.idempotency.get(&(user.clone(), *op, key.clone())) {
                match record.result {
                    IdempotencyResult::Sent(id) => fetched.packets.extend(data.packets.get(&id).cloned()),
                    IdempotencyResult::Withdrew(id) => fetched.withdrawals.extend(data.withdrawals.get(&id).cloned()),
                    IdempotencyResult::Deposited(_) => {}
                }
                fetched.idempotency.push(record.clone());
            }
        }
        for id in &wants.packets {
            fetched.packets.extend(data.packets.get(id).cloned());
        }
        for id in &wants.withdrawals {
            fetched.withdrawals.extend(data.withdrawals.get(id).cloned());
        }
        for (_, reference) in &wants.deposits {
            if let Some((_, amount, "deposit")) = data.ledger.get(reference) {
                let amount = Amount::from_signed(*amount).expect("a deposit is positive");
                fetched.deposits.push((reference.clone(), amount, data.reversed.contains(reference)));
            }
        }
        for (user, day) in &wants.sent_today {
            let sent = data.packets.values().filter(|p| p.info.sender == *user && p.info.id.day == *day);
            let (count, fen) = sent.fold((0u32, 0u64), |(n, fen), p| (n + 1, fen + p.info.total_amount.fen()));
            let amount = Amount::from_fen(fen).expect("a day's sends fit");
            fetched.sent_today.push((user.clone(), *day, count, amount));
        }
        fetched.references_present = wants
            .credits
            .iter()
            .filter(|credit| data.ledger.contains_key(&credit.reference))
            .map(|credit| credit.reference.clone())
            .collect();
        Ok(fetched)
    }

    fn materialized(&mut self) -> Result<Position, StoreError> {
        Ok(self.data.lock().expect("store lock").position)
    }

    /// What is materialized here survives every crash the simulation makes.
    fn durable(&mut self) -> Position {
        self.data.lock().expect("store lock").position
    }

    fn materialize(&mut self, batches: &[Journaled]) -> Result<(), StoreError> {
        let mut data = self.data.lock().expect("store lock");
        let mut next = data.clone();
        for batch in batches {
            if batch.position != next.position + 1 {
                return Err(refuse(format!("batch {} after position {}", batch.position, next.position)));
            }
            apply(&mut next, &batch.effects)?;
            next.position = batch.position;
        }
        *data = next;
        Ok(())
    }
}
