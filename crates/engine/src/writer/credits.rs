//! The credit protocol between sets. An opened share whose opener's wallet
//! is in another set travels in journal records: the claim's record carries
//! the credit (`outbox_added`), the target set's record carries its
//! application (a ledger entry whose reference is the claim), and the
//! acknowledgement's record retires it (`outbox_removed`). Until then the
//! credit is resent every `credit_resend_after` (on `Clock::monotonic`, so
//! the simulation exercises resends); the reference makes a resend
//! harmless. Exactly once: applied at most once by the unique reference,
//! at least once by the resends.

use std::time::Duration;

use hongbao_domain::ledger::{EntryKind, claim_ref};
use hongbao_domain::{Claim, PacketId, SetId};

use crate::command::Mail;
use crate::store::{Credit, LedgerEntry, Store};

use super::state::Outgoing;
use super::{Batch, Writer};

impl<S: Store> Writer<S> {
    /// Sends an opened share to the opener's wallet: directly when the
    /// wallet is in this set, else through the journaled outbox.
    pub(super) fn credit_opener(&mut self, id: PacketId, claim: Claim, batch: &mut Batch) {
        let credit = Credit {
            reference: claim_ref(id, &claim.user),
            user: claim.user,
            amount: claim.amount,
            packet_id: id,
            at: claim.at,
        };
        let target = SetId::of_user(&credit.user, self.sets);
        if target == self.set {
            self.apply_credit(credit, batch);
            return;
        }
        batch.effects.outbox_added.push(credit.clone());
        let outgoing = Outgoing { credit: credit.clone(), sent_at: None };
        self.state.outbox.insert(credit.reference.clone(), outgoing);
        batch.mail.push((target, Mail::Credit { credit, from: self.set, first: true }));
    }

    fn apply_credit(&mut self, credit: Credit, batch: &mut Batch) {
        let entry = LedgerEntry {
            reference: credit.reference,
            user: credit.user,
            amount: credit.amount.signed(),
            kind: EntryKind::Credit,
            packet_id: Some(credit.packet_id),
            at: credit.at,
            balance_after: None,
        };
        self.change_balance(batch, entry);
    }

    pub(super) fn apply_mail(&mut self, message: Mail, batch: &mut Batch) {
        match message {
            Mail::Credit { credit, from, .. } => {
                let reference = credit.reference.clone();
                // The reference is the claim: a credit that already landed
                // (in the tables, or in the journal past them) is only
                // acknowledged.
                let credited = &mut self.state.unmaterialized.credited;
                if !credited.contains(&reference) && batch.references_present.insert(reference.clone()) {
                    credited.insert(reference.clone(), (), batch.position);
                    self.apply_credit(credit, batch);
                }
                batch.mail.push((from, Mail::CreditAck { reference }));
            }
            Mail::CreditAck { reference } => {
                if self.state.outbox.remove(&reference).is_some() {
                    batch.effects.outbox_removed.push(reference);
                }
            }
        }
    }

    /// Sends a durable batch's mail; a credit's send time starts its resend
    /// clock.
    pub(super) fn post(&mut self, mail: Vec<(SetId, Mail)>) {
        let now = self.clock.monotonic();
        for (target, message) in mail {
            if let Mail::Credit { credit, .. } = &message
                && let Some(outgoing) = self.state.outbox.get_mut(&credit.reference)
            {
                outgoing.sent_at = Some(now);
            }
            self.links.peers.post(target, message);
        }
    }

    /// Sends outbox credits that were never sent or wait too long for their
    /// acknowledgement. Scans at most twice per resend interval. Not while
    /// the set recovers, nor once it is fenced: memory may then hold credits
    /// of claims that never became durable (the simulation's torn appends
    /// found the first; the paused-node test, `cluster_binary.rs`, the
    /// second: a fenced batch's credits were mailed and made money).
    pub(super) fn resend_credits(&mut self, all: bool) {
        // Not while recovering, nor once fenced: memory may hold credits of
        // claims that never became durable (a fenced batch's are never
        // applied: sending them would make money).
        if !self.links.progress.is_healthy() || self.links.progress.fenced() {
            return;
        }
        let now = self.clock.monotonic();
        let interval = self.config.credit_resend_after;
        if !all && now.saturating_sub(self.last_resend_scan) < interval / 2 {
            return;
        }
        self.last_resend_scan = now;
        let stale = |sent_at: Option<Duration>| sent_at.is_none_or(|at| now.saturating_sub(at) >= interval);
        for outgoing in self.state.outbox.values_mut() {
            if all || stale(outgoing.sent_at) {
                let credit = outgoing.credit.clone();
                let target = SetId::of_user(&credit.user, self.sets);
                outgoing.sent_at = Some(now);
                let mail = Mail::Credit { credit, from: self.set, first: false };
                self.links.peers.post(target, mail);
            }
        }
    }
}
