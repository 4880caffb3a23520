//! Cash-out (`hongbao_domain::withdrawal`): a user's withdrawal takes its
//! money from the balance at once, as a `withdrawal:<id>` entry, and waits,
//! pending, in memory; an admin settles it once: completed (the money is
//! gone), or failed (a `withdrawal_return:<id>` entry brings it back).
//! Settling again the same way answers the same; the other way is refused,
//! changing nothing. A withdrawal lives in its user's set, so both steps are
//! local to one writer.

use hongbao_domain::ledger::{EntryKind, reversal_ref, withdrawal_ref, withdrawal_return_ref};
use hongbao_domain::outcome::{ReverseOutcome, SettleOutcome, WithdrawOutcome};
use hongbao_domain::withdrawal::{Settlement, Withdrawal, WithdrawalId, WithdrawalStatus};
use hongbao_domain::{Amount, UserId};

use crate::command::{Pending, Reply};
use crate::store::{IdempotencyOp, IdempotencyResult, LedgerEntry, Reversal, Store};

use super::rules::Remembered;
use super::{Batch, Writer};

impl<S: Store> Writer<S> {
    pub(super) fn withdraw(
        &mut self,
        user: UserId,
        amount: Amount,
        key: Option<String>,
        reply: Reply<WithdrawOutcome>,
        batch: &mut Batch,
    ) {
        let fingerprint = amount.fen().to_string();
        let outcome = match self.remembered(batch, &user, &key, IdempotencyOp::Withdraw, &fingerprint) {
            Some(Remembered::Same(IdempotencyResult::Withdrew(id))) => {
                let withdrawal = self.find_withdrawal(&id, batch).expect("the withdrawal of a remembered key exists");
                WithdrawOutcome::Requested { withdrawal, replayed: true }
            }
            Some(Remembered::Same(other)) => unreachable!("a withdrawal key remembered {other:?}"),
            Some(Remembered::Reused) => WithdrawOutcome::KeyReused,
            None if self.state.frozen.contains(&user) => WithdrawOutcome::AccountFrozen,
            None if self.balance(&user) < amount => WithdrawOutcome::InsufficientBalance,
            None => {
                let seq = self.state.next_seq;
                self.state.next_seq += 1;
                let id = WithdrawalId::new(batch.now.civil_day(), self.set, seq, self.entropy.next_u64());
                let withdrawal = Withdrawal {
                    id,
                    user: user.clone(),
                    amount,
                    status: WithdrawalStatus::Pending,
                    created_at: batch.now,
                    settled_at: None,
                };
                let debit = LedgerEntry {
                    reference: withdrawal_ref(id),
                    user: user.clone(),
                    amount: -amount.signed(),
                    kind: EntryKind::Withdrawal,
                    packet_id: None,
                    at: batch.now,
                    balance_after: None,
                };
                self.change_balance(batch, debit);
                batch.effects.withdrawals.push(withdrawal.clone());
                self.state.withdrawals.insert(id, withdrawal.clone());
                self.remember(batch, &user, key, fingerprint, IdempotencyResult::Withdrew(id));
                WithdrawOutcome::Requested { withdrawal, replayed: false }
            }
        };
        batch.pending.push(Pending::Withdraw(reply, outcome));
    }

    /// Freezes or unfreezes `user`'s account (in this, the user's set):
    /// answers whether that changed it.
    pub(super) fn freeze(&mut self, user: UserId, frozen: bool, reply: Reply<bool>, batch: &mut Batch) {
        let changed = match frozen {
            true => self.state.frozen.insert(user.clone()),
            false => self.state.frozen.remove(&user),
        };
        if changed {
            batch.effects.frozen.push((user, frozen, batch.now));
        }
        batch.pending.push(Pending::Freeze(reply, changed));
    }

    /// Takes back `user`'s deposit `reference` (an admin's reversal): a
    /// debit of its amount, `reversal:<reference>`, at most once, and only
    /// while the balance holds it. A repeat answers as the first did.
    pub(super) fn reverse(&mut self, user: UserId, reference: String, reply: Reply<ReverseOutcome>, batch: &mut Batch) {
        let known =
            self.state.unmaterialized.deposits.get(&reference).or_else(|| batch.deposits.get(&reference)).copied();
        let outcome = match known {
            None => ReverseOutcome::NotFound,
            Some((amount, true)) => ReverseOutcome::Reversed { amount, balance: self.balance(&user), replayed: true },
            Some((amount, false)) if self.balance(&user) < amount => ReverseOutcome::InsufficientBalance,
            Some((amount, false)) => {
                let debit = LedgerEntry {
                    reference: reversal_ref(&reference),
                    user: user.clone(),
                    amount: -amount.signed(),
                    kind: EntryKind::Reversal,
                    packet_id: None,
                    at: batch.now,
                    balance_after: None,
                };
                self.change_balance(batch, debit);
                let reversal = Reversal { deposit: reference.clone(), user: user.clone(), amount, at: batch.now };
                batch.effects.reversals.push(reversal);
                self.state.unmaterialized.deposits.insert(reference, (amount, true), batch.position);
                ReverseOutcome::Reversed { amount, balance: self.balance(&user), replayed: false }
            }
        };
        batch.pending.push(Pending::Reverse(reply, outcome));
    }

    /// A withdrawal wherever memory or this batch holds it.
    fn find_withdrawal(&self, id: &WithdrawalId, batch: &Batch) -> Option<Withdrawal> {
        let state = &self.state;
        state
            .withdrawals
            .get(id)
            .or_else(|| state.unmaterialized.withdrawals.get(id))
            .or_else(|| batch.withdrawals.get(id))
            .cloned()
    }

    pub(super) fn settle_withdrawal(
        &mut self,
        id: WithdrawalId,
        how: Settlement,
        reply: Reply<SettleOutcome>,
        batch: &mut Batch,
    ) {
        let outcome = match self.state.withdrawals.remove(&id) {
            Some(mut withdrawal) => {
                withdrawal.status = how.status();
                withdrawal.settled_at = Some(batch.now);
                if how == Settlement::Fail {
                    let back = LedgerEntry {
                        reference: withdrawal_return_ref(id),
                        user: withdrawal.user.clone(),
                        amount: withdrawal.amount.signed(),
                        kind: EntryKind::WithdrawalReturn,
                        packet_id: None,
                        at: batch.now,
                        balance_after: None,
                    };
                    self.change_balance(batch, back);
                }
                batch.effects.withdrawals_settled.push((id, withdrawal.status, batch.now));
                self.state.unmaterialized.withdrawals.insert(id, withdrawal.clone(), batch.position);
                SettleOutcome::Settled(withdrawal)
            }
            None => match self.find_withdrawal(&id, batch) {
                Some(settled) if settled.status == how.status() => SettleOutcome::Settled(settled),
                Some(settled) => SettleOutcome::SettledOtherwise(settled),
                None => SettleOutcome::NotFound,
            },
        };
        batch.pending.push(Pending::Settle(reply, outcome));
    }
}
