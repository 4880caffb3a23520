//! The events of a durable batch (`events.rs`), derived from its effects
//! and from memory as the batch left it: a claim names its packet, which is
//! live (a claim is never made on a settled packet), so its sender and, for
//! the last share, its best luck are at hand; refunds and credits are the
//! batch's ledger entries of those kinds.

use hongbao_domain::ledger::EntryKind;
use hongbao_domain::{Amount, Millis, UserId};

use crate::events::{Cursor, Event, What};
use crate::journal::Position;
use crate::store::{Effects, Store};

use super::Writer;

impl<S: Store> Writer<S> {
    /// Publishes the events of the batch at `position`, once it is durable.
    pub(super) fn publish_events(&self, position: Position, effects: &Effects, now: Millis) {
        let mut events = Vec::new();
        let mut push = |user: &UserId, at: Millis, what: What| {
            let index = u32::try_from(events.len()).expect("a batch's events fit u32");
            events.push(Event { cursor: Cursor { position, index }, set: self.set, user: user.clone(), at, what });
        };
        for (id, claim) in &effects.claims {
            let packet = self.state.packets.get(id);
            debug_assert!(packet.is_some(), "set {}: a claim on {id}, which is not live", self.set);
            let Some(packet) = packet else { continue };
            let sender = &packet.info.sender;
            let remaining_count = packet.info.count - claim.index - 1;
            let opened =
                What::Opened { packet: *id, opener: claim.user.clone(), amount: claim.amount, remaining_count };
            push(sender, claim.at, opened);
            if remaining_count == 0
                && let Some(best) = packet.best_luck()
            {
                let finished = What::Finished { packet: *id, best_luck: best.user.clone(), best_amount: best.amount };
                push(sender, claim.at, finished);
            }
        }
        for entry in &effects.ledger {
            let amount = u64::try_from(entry.amount).ok().and_then(Amount::from_fen);
            let (Some(packet), Some(amount)) = (entry.packet_id, amount) else { continue };
            match entry.kind {
                EntryKind::Refund => push(&entry.user, entry.at, What::Refunded { packet, amount }),
                EntryKind::Credit => push(&entry.user, entry.at, What::Credited { packet, amount }),
                EntryKind::Deposit
                | EntryKind::Send
                | EntryKind::Withdrawal
                | EntryKind::WithdrawalReturn
                | EntryKind::Reversal => {}
            }
        }
        self.links.events.publish(events, now);
    }
}
