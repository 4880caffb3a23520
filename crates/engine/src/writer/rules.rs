//! The business rules a batch applies, in queue order: deposits, sends
//! (the debit and the packet in one local change, since a packet lives in
//! its sender's set), opens, grabs, and settling expired packets. Each rule
//! changes memory and adds to the batch's effects; nothing is answered
//! before the batch's record is durable.

use hongbao_domain::ledger::{DepositKey, EntryKind, deposit_ref, refund_ref, send_ref};
use hongbao_domain::{
    Amount, DepositOutcome, GrabOutcome, OpenOutcome, Packet, PacketId, PacketSpec, SendOutcome, UserId,
};

use crate::command::{Command, Pending, Reply};
use crate::store::{IdempotencyOp, IdempotencyRecord, IdempotencyResult, LedgerEntry, Store};

use super::state::Account;
use super::{Batch, Writer};

/// An earlier request under the same key.
pub(super) enum Remembered {
    /// It asked for the same thing: answer what it did.
    Same(IdempotencyResult),
    /// The key is reused for something else.
    Reused,
}

impl<S: Store> Writer<S> {
    pub(super) fn apply(&mut self, command: Command, batch: &mut Batch) {
        match command {
            Command::Deposit { user, amount, key, reply } => self.deposit(user, amount, key, reply, batch),
            Command::Send { sender, spec, key, reply } => self.send(sender, *spec, key, reply, batch),
            Command::Open { id, user, password, reply } => self.open(id, user, password, reply, batch),
            Command::Grab { id, user, reply } => {
                // Grabs are non-binding and write nothing: answered at once.
                let _ = reply.send(Ok(self.grab(id, &user, batch)));
            }
            Command::Withdraw { user, amount, key, reply } => self.withdraw(user, amount, key, reply, batch),
            Command::Settle { id, how, reply } => self.settle_withdrawal(id, how, reply, batch),
            Command::Freeze { user, frozen, reply } => self.freeze(user, frozen, reply, batch),
            Command::Reverse { user, reference, reply } => self.reverse(user, reference, reply, batch),
            Command::Shutdown | Command::Pause { .. } => {}
        }
    }

    pub(super) fn balance(&self, user: &UserId) -> Amount {
        self.state.accounts.get(user).expect("account prefetched for the batch").balance
    }

    /// Applies a ledger entry to its (loaded) balance. Memory refuses what
    /// the tables would: a balance out of range is a broken invariant.
    /// The entry records the balance it leaves (`balance_after`).
    pub(super) fn change_balance(&mut self, batch: &mut Batch, mut entry: LedgerEntry) {
        let account = self.state.accounts.get_mut(&entry.user).expect("account prefetched for the batch");
        let after = match Amount::from_signed(entry.amount) {
            Some(credit) => account.balance.checked_add(credit),
            None => account.balance.checked_sub(Amount::from_fen(entry.amount.unsigned_abs()).expect("debit fits")),
        };
        let after = after.expect("a ledger entry took a balance out of range");
        *account = Account { balance: after, changed_at: batch.position };
        entry.balance_after = Some(after);
        batch.effects.ledger.push(entry);
    }

    pub(super) fn remembered(
        &self,
        batch: &Batch,
        user: &UserId,
        key: &Option<String>,
        op: IdempotencyOp,
        fingerprint: &str,
    ) -> Option<Remembered> {
        let wanted = (user.clone(), op, key.clone()?);
        let record = self.state.unmaterialized.keys.get(&wanted).or_else(|| batch.idempotency.get(&wanted))?;
        Some(match record.fingerprint == fingerprint {
            true => Remembered::Same(record.result),
            false => Remembered::Reused,
        })
    }

    pub(super) fn remember(
        &mut self,
        batch: &mut Batch,
        user: &UserId,
        key: Option<String>,
        fingerprint: String,
        result: IdempotencyResult,
    ) {
        if let Some(key) = key {
            let record = IdempotencyRecord { user: user.clone(), key: key.clone(), fingerprint, result };
            self.state.unmaterialized.keys.insert((user.clone(), result.op(), key), record.clone(), batch.position);
            batch.effects.idempotency.push(record);
        }
    }

    fn deposit(
        &mut self,
        user: UserId,
        amount: Amount,
        key: Option<String>,
        reply: Reply<DepositOutcome>,
        batch: &mut Batch,
    ) {
        let fingerprint = amount.fen().to_string();
        let outcome = match self.remembered(batch, &user, &key, IdempotencyOp::Deposit, &fingerprint) {
            Some(Remembered::Same(IdempotencyResult::Deposited(balance))) => {
                DepositOutcome::Deposited { balance, replayed: true }
            }
            Some(Remembered::Same(other)) => unreachable!("a deposit key remembered {other:?}"),
            Some(Remembered::Reused) => DepositOutcome::KeyReused,
            None => match self.balance(&user).checked_add(amount).filter(|b| *b <= self.config.limits.balance_max) {
                None => DepositOutcome::BalanceLimit,
                Some(balance) => {
                    let reference = match &key {
                        Some(key) => deposit_ref(&user, DepositKey::Keyed(key)),
                        None => deposit_ref(&user, DepositKey::Auto(self.entropy.next_u64())),
                    };
                    let entry = LedgerEntry {
                        reference: reference.clone(),
                        user: user.clone(),
                        amount: amount.signed(),
                        kind: EntryKind::Deposit,
                        packet_id: None,
                        at: batch.now,
                        balance_after: None,
                    };
                    self.change_balance(batch, entry);
                    // Reversible before the tables hold it (`wallet.rs`).
                    self.state.unmaterialized.deposits.insert(reference, (amount, false), batch.position);
                    self.remember(batch, &user, key, fingerprint, IdempotencyResult::Deposited(balance));
                    DepositOutcome::Deposited { balance, replayed: false }
                }
            },
        };
        batch.pending.push(Pending::Deposit(reply, outcome));
    }

    fn send(
        &mut self,
        sender: UserId,
        spec: PacketSpec,
        key: Option<String>,
        reply: Reply<SendOutcome>,
        batch: &mut Batch,
    ) {
        let fingerprint = spec.fingerprint();
        let outcome = match self.remembered(batch, &sender, &key, IdempotencyOp::Send, &fingerprint) {
            Some(Remembered::Same(IdempotencyResult::Sent(id))) => {
                let packet = self.find(&id, batch).expect("the packet of a remembered send exists");
                SendOutcome::Sent { packet: Box::new(packet.info.clone()), replayed: true }
            }
            Some(Remembered::Same(other)) => unreachable!("a send key remembered {other:?}"),
            Some(Remembered::Reused) => SendOutcome::KeyReused,
            None if self.state.frozen.contains(&sender) => SendOutcome::AccountFrozen,
            None if self.past_daily_limit(&sender, spec.total_amount) => SendOutcome::DailyLimit,
            None if self.balance(&sender) < spec.total_amount => SendOutcome::InsufficientBalance,
            None => {
                self.count_sent(&sender, spec.total_amount);
                let id = self.make_packet(&sender, &spec, batch);
                let info = self.state.packets.get(&id).expect("just made").info.clone();
                self.remember(batch, &sender, key, fingerprint, IdempotencyResult::Sent(id));
                SendOutcome::Sent { packet: Box::new(info), replayed: false }
            }
        };
        batch.pending.push(Pending::Send(reply, outcome));
    }

    /// A packet wherever memory or this batch holds it.
    fn find<'a>(&'a self, id: &PacketId, batch: &'a Batch) -> Option<&'a Packet> {
        let state = &self.state;
        state.packets.get(id).or_else(|| state.unmaterialized.settled.get(id)).or_else(|| batch.settled.get(id))
    }

    /// Debits the sender and creates the packet.
    fn make_packet(&mut self, sender: &UserId, spec: &PacketSpec, batch: &mut Batch) -> PacketId {
        let seq = self.state.next_seq;
        self.state.next_seq += 1;
        let id = PacketId::new(batch.now.civil_day(), self.set, seq, self.entropy.next_u64());
        let packet = Packet::new(id, sender.clone(), spec, self.entropy.next_u64(), batch.now);
        let debit = LedgerEntry {
            reference: send_ref(id),
            user: sender.clone(),
            amount: -spec.total_amount.signed(),
            kind: EntryKind::Send,
            packet_id: Some(id),
            at: batch.now,
            balance_after: None,
        };
        self.change_balance(batch, debit);
        batch.effects.packets.push(packet.clone());
        self.state.packets.insert(packet);
        id
    }

    fn open(
        &mut self,
        id: PacketId,
        user: UserId,
        password: Option<String>,
        reply: Reply<OpenOutcome>,
        batch: &mut Batch,
    ) {
        let limits = &self.config.limits;
        // A frozen opener is refused a new share (one opened before is
        // still answered).
        let frozen = self.links.frozen.contains(&user);
        let outcome = if let Some(packet) = self.state.packets.get_mut(&id) {
            let outcome = match frozen && packet.claim_of(&user).is_none() {
                true => OpenOutcome::AccountFrozen,
                false => packet.open(&user, password.as_deref(), batch.now, limits),
            };
            if let OpenOutcome::Opened(claim) = &outcome {
                batch.effects.claims.push((id, claim.clone()));
                self.credit_opener(id, claim.clone(), batch);
            }
            outcome
        } else if let Some(mut packet) = self.find(&id, batch).cloned() {
            if frozen && packet.claim_of(&user).is_none() {
                OpenOutcome::AccountFrozen
            } else {
                let outcome = packet.open(&user, password.as_deref(), batch.now, limits);
                assert!(!matches!(outcome, OpenOutcome::Opened(_)), "a settled packet {id} was opened");
                outcome
            }
        } else {
            OpenOutcome::NotFound
        };
        batch.pending.push(Pending::Open(reply, outcome));
    }

    fn grab(&self, id: PacketId, user: &UserId, batch: &Batch) -> GrabOutcome {
        match self.find(&id, batch) {
            Some(packet) if self.links.frozen.contains(user) && packet.claim_of(user).is_none() => {
                GrabOutcome::AccountFrozen
            }
            Some(packet) => packet.grab(user, batch.now),
            None => GrabOutcome::NotFound,
        }
    }

    /// At expiry a packet leaves the live set; what is left goes back to the
    /// sender exactly once. It stays in memory, settled, until the tables
    /// hold its settling: a later open is answered from there.
    pub(super) fn settle(&mut self, id: PacketId, batch: &mut Batch) {
        let mut packet = self.state.packets.remove(&id).expect("a due packet is in memory");
        if let Some(amount) = packet.refund(batch.now) {
            batch.effects.refunds.push((id, amount));
            let entry = LedgerEntry {
                reference: refund_ref(id),
                user: packet.info.sender.clone(),
                amount: amount.signed(),
                kind: EntryKind::Refund,
                packet_id: Some(id),
                at: batch.now,
                balance_after: None,
            };
            self.change_balance(batch, entry);
        }
        self.state.unmaterialized.settled.insert(id, packet, batch.position);
    }
}
