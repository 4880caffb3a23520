//! What a set keeps in memory between batches. Memory decides: everything a
//! command decides on and that the tables may not hold yet (it is only in
//! the journal) is here. What is not here, the tables hold whole, so a
//! prefetch may load it:
//!
//! - a balance is cached once loaded and is authoritative (this writer is
//!   its only writer); it may be dropped only once its last change is
//!   materialized;
//! - idempotency keys, settled packets and applied credits written since the
//!   tables' position stay in `Unmaterialized` until the tables pass them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use hongbao_domain::withdrawal::{Withdrawal, WithdrawalId};
use hongbao_domain::{Amount, Packet, PacketId, UserId};

use crate::journal::Position;
use crate::store::{Credit, IdempotencyOp, IdempotencyRecord, Recovered};

use super::live::LivePackets;

pub(crate) type KeyOf = (UserId, IdempotencyOp, String);

pub(crate) struct Account {
    pub(crate) balance: Amount,
    /// The position of the batch that last changed it (0: none since loaded).
    pub(crate) changed_at: Position,
}

pub(crate) struct Outgoing {
    pub(crate) credit: Credit,
    /// When it was last sent (`Clock::monotonic`); never, after a recovery.
    pub(crate) sent_at: Option<Duration>,
}

pub(crate) struct State {
    /// The position of the last batch in the journal.
    pub(crate) position: Position,
    pub(crate) next_seq: u64,
    pub(crate) accounts: HashMap<UserId, Account>,
    /// Packets not yet settled, and when each expires.
    pub(crate) packets: LivePackets,
    /// Credits journaled and not yet acknowledged by their set.
    pub(crate) outbox: HashMap<String, Outgoing>,
    /// Withdrawals asked for and not yet settled (`wallet.rs`).
    pub(crate) withdrawals: HashMap<WithdrawalId, Withdrawal>,
    /// This set's users whose accounts are frozen (`frozen.rs`).
    pub(crate) frozen: HashSet<UserId>,
    /// Senders' packets of the day (`limits.rs`).
    pub(crate) sent_today: super::limits::SentTodays,
    pub(crate) unmaterialized: Unmaterialized,
}

impl State {
    pub(crate) fn recovered(recovered: Recovered) -> State {
        let packets = LivePackets::new(recovered.packets);
        let outbox = recovered
            .outbox
            .into_iter()
            .map(|credit| (credit.reference.clone(), Outgoing { credit, sent_at: None }))
            .collect();
        State {
            position: recovered.position,
            next_seq: recovered.next_seq,
            accounts: HashMap::new(),
            packets,
            outbox,
            withdrawals: recovered.withdrawals.into_iter().map(|withdrawal| (withdrawal.id, withdrawal)).collect(),
            frozen: recovered.frozen.into_iter().collect(),
            sent_today: super::limits::SentTodays::default(),
            unmaterialized: Unmaterialized::default(),
        }
    }

    /// Forgets what the tables now hold, and drops cached balances past
    /// `accounts_max` if their last change is materialized.
    pub(crate) fn forget_materialized(&mut self, materialized: Position, accounts_max: usize) {
        self.unmaterialized.forget(materialized);
        if self.accounts.len() > accounts_max {
            self.accounts.retain(|_, account| account.changed_at > materialized);
        }
    }
}

/// What the journal holds past the tables' position, beyond live packets
/// and balances.
#[derive(Default)]
pub(crate) struct Unmaterialized {
    pub(crate) keys: Overlay<KeyOf, IdempotencyRecord>,
    /// Packets settled (refunded, or expired whole) since the tables'
    /// position: the tables may still show them open.
    pub(crate) settled: Overlay<PacketId, Packet>,
    /// References of credits applied here from other sets.
    pub(crate) credited: Overlay<String, ()>,
    /// Withdrawals settled since the tables' position: the tables may still
    /// show them pending.
    pub(crate) withdrawals: Overlay<WithdrawalId, Withdrawal>,
    /// Deposits made since the tables' position, by reference: their
    /// amounts, and whether reversed since.
    pub(crate) deposits: Overlay<String, (Amount, bool)>,
}

impl Unmaterialized {
    fn forget(&mut self, materialized: Position) {
        self.keys.forget(materialized);
        self.settled.forget(materialized);
        self.credited.forget(materialized);
        self.withdrawals.forget(materialized);
        self.deposits.forget(materialized);
    }
}

/// A map whose entries are dropped once the tables reach the position they
/// were written at (in position order, so forgetting costs what it drops).
pub(crate) struct Overlay<K, V> {
    map: HashMap<K, (V, Position)>,
    order: VecDeque<(Position, K)>,
}

impl<K, V> Default for Overlay<K, V> {
    fn default() -> Self {
        Overlay { map: HashMap::new(), order: VecDeque::new() }
    }
}

impl<K: Eq + Hash + Clone, V> Overlay<K, V> {
    pub(crate) fn insert(&mut self, key: K, value: V, position: Position) {
        if let Some((last, _)) = self.order.back() {
            assert!(*last <= position, "overlay positions go forward");
        }
        self.order.push_back((position, key.clone()));
        self.map.insert(key, (value, position));
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|(value, _)| value)
    }

    pub(crate) fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    fn forget(&mut self, materialized: Position) {
        while let Some((position, _)) = self.order.front() {
            if *position > materialized {
                break;
            }
            let (position, key) = self.order.pop_front().expect("front exists");
            // A later write of the same key keeps it.
            if self.map.get(&key).is_some_and(|(_, at)| *at == position) {
                self.map.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Overlay;

    #[test]
    fn an_overlay_forgets_in_position_order_and_keeps_rewritten_keys() {
        let mut overlay = Overlay::default();
        overlay.insert("a", 1, 1);
        overlay.insert("b", 2, 2);
        overlay.insert("a", 3, 3);
        overlay.forget(2);
        assert_eq!(overlay.get(&"a"), Some(&3), "rewritten at 3, kept");
        assert!(!overlay.contains(&"b"));
        overlay.forget(3);
        assert_eq!(overlay.len(), 0);
    }
}
