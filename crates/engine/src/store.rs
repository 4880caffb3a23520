//! The store contract. Batch-shaped, not row-by-row: a set recovers its hot
//! state once, prefetches what a batch needs, and commits a batch's effects
//! in one durable transaction. Reads for the API go through `StoreReader`,
//! which sees only committed (and so acknowledged) data.

use hongbao_domain::ledger::EntryKind;
use hongbao_domain::packet::PacketInfo;
use hongbao_domain::{Amount, Claim, Millis, Packet, PacketId, UserId};
use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct StoreError(pub String);

impl StoreError {
    pub fn new(message: impl Into<String>) -> StoreError {
        StoreError(message.into())
    }
}

/// One balance change. `amount` is signed: a send is negative.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub reference: String,
    pub user: UserId,
    pub amount: i64,
    pub kind: EntryKind,
    pub packet_id: Option<PacketId>,
    pub at: Millis,
}

/// An opened share on its way to the opener's wallet in another set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credit {
    /// The ledger reference of the credit: `claim:<packet>:<user>`.
    pub reference: String,
    pub user: UserId,
    pub amount: Amount,
    pub packet_id: PacketId,
    pub at: Millis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdempotencyOp {
    Deposit,
    Send,
}

impl IdempotencyOp {
    pub fn as_str(self) -> &'static str {
        match self {
            IdempotencyOp::Deposit => "deposit",
            IdempotencyOp::Send => "send",
        }
    }
}

/// An `Idempotency-Key` remembered with what it did: the request's
/// fingerprint and its result (the balance after a deposit, or the id of
/// the packet sent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub user: UserId,
    pub key: String,
    pub op: IdempotencyOp,
    pub fingerprint: String,
    pub result: String,
}

/// What a set holds in memory when it starts serving.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    pub next_seq: u64,
    /// Packets not yet settled: unexpired, or expired with money to refund.
    pub packets: Vec<Packet>,
    /// Credits written to the outbox and not yet acknowledged.
    pub outbox: Vec<Credit>,
}

/// What a batch needs that memory may not hold.
#[derive(Clone, Debug, Default)]
pub struct Wants {
    pub accounts: Vec<UserId>,
    /// Keys are scoped by user and by operation: an admin's deposit key
    /// never collides with the user's own send key.
    pub idempotency: Vec<(UserId, IdempotencyOp, String)>,
    /// Settled packets (no longer in memory) that a batch opens or grabs.
    pub packets: Vec<PacketId>,
    /// Ledger references of incoming credits, to learn which already landed.
    pub references: Vec<String>,
}

impl Wants {
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.idempotency.is_empty() && self.packets.is_empty() && self.references.is_empty()
    }
}

#[derive(Clone, Debug, Default)]
pub struct Fetched {
    /// Every wanted account; a user without one has balance zero.
    pub accounts: Vec<(UserId, Amount)>,
    pub idempotency: Vec<IdempotencyRecord>,
    /// The wanted packets that exist, plus the packets named by fetched
    /// idempotency records of sends.
    pub packets: Vec<Packet>,
    /// The wanted references that are already in the ledger.
    pub references_present: Vec<String>,
}

/// Everything one batch changes, written in one transaction.
#[derive(Clone, Debug, Default)]
pub struct Effects {
    pub next_seq: u64,
    /// Balance changes, applied to the accounts by the store.
    pub ledger: Vec<LedgerEntry>,
    /// Packets made in this batch (their debits are in `ledger`).
    pub packets: Vec<Packet>,
    pub claims: Vec<(PacketId, Claim)>,
    /// Expired packets and what went back to the sender.
    pub refunds: Vec<(PacketId, Amount)>,
    pub outbox_added: Vec<Credit>,
    /// References of credits the target set acknowledged.
    pub outbox_removed: Vec<String>,
    pub idempotency: Vec<IdempotencyRecord>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.ledger.is_empty()
            && self.packets.is_empty()
            && self.claims.is_empty()
            && self.refunds.is_empty()
            && self.outbox_added.is_empty()
            && self.outbox_removed.is_empty()
            && self.idempotency.is_empty()
    }
}

/// The writer's side of one set's storage.
pub trait Store: Send + 'static {
    /// Loads what the set keeps in memory: called at start and after a
    /// failed commit.
    fn recover(&mut self, now: Millis) -> Result<Recovered, StoreError>;
    /// Loads what a batch needs that memory does not hold.
    fn prefetch(&mut self, wants: &Wants) -> Result<Fetched, StoreError>;
    /// Writes a batch in one transaction; returns only once it is durable.
    /// On error nothing of the batch is applied.
    fn commit(&mut self, effects: &Effects) -> Result<(), StoreError>;
    /// Housekeeping between batches, after the last batch was answered (a
    /// database copying its log back, say). It never changes what is stored.
    fn maintain(&mut self) {}
}

/// A page of a list, newest first, with the cursor for the next page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A packet in its sender's list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentItem {
    pub info: PacketInfo,
    pub remaining_amount: Amount,
    pub remaining_count: u32,
    pub refunded_amount: Amount,
}

/// A share in its opener's list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedItem {
    pub packet_id: PacketId,
    pub sender: UserId,
    pub greeting: Option<String>,
    pub amount: Amount,
    pub at: Millis,
}

/// The read side of one set's storage; sees committed data only.
pub trait StoreReader: Send + Sync + 'static {
    fn balance(&self, user: &UserId) -> Result<Amount, StoreError>;
    fn packet(&self, id: &PacketId) -> Result<Option<Packet>, StoreError>;
    /// Packets sent by `user`, newest first, older than `before_seq`.
    fn sent(&self, user: &UserId, before_seq: Option<u64>, limit: usize) -> Result<Vec<SentItem>, StoreError>;
    /// Shares opened by `user` in this set's packets, newest first, strictly
    /// before the cursor in the order of `engine::received_order`.
    fn received(
        &self,
        user: &UserId,
        before: Option<(Millis, PacketId)>,
        limit: usize,
    ) -> Result<Vec<ReceivedItem>, StoreError>;
}
