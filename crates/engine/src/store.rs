//! The tables' contract. Batch-shaped, not row-by-row: a set recovers its
//! hot state once, prefetches what a batch needs that memory does not hold,
//! and the materializer writes many journaled batches in one transaction
//! behind the commit point (the journal, `journal/mod.rs`). Reads for the API
//! go through `StoreReader`, which sees materialized data; the engine makes a
//! read wait until what was acknowledged before it is materialized.

use std::sync::Arc;

use hongbao_domain::ledger::EntryKind;
use hongbao_domain::packet::PacketInfo;
use hongbao_domain::withdrawal::{Withdrawal, WithdrawalId, WithdrawalStatus};
use hongbao_domain::{Amount, Claim, Millis, Packet, PacketId, UserId};
use thiserror::Error;

use crate::journal::Position;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{message}")]
pub struct StoreError {
    pub message: String,
    /// The store refused what it was asked to write: a constraint caught a
    /// broken invariant (an engine bug), so retrying cannot help.
    pub refused: bool,
}

impl StoreError {
    /// A failure that may pass (i/o, a busy database).
    pub fn new(message: impl Into<String>) -> StoreError {
        StoreError { message: message.into(), refused: false }
    }

    /// A write the store's constraints refused.
    pub fn refused(message: impl Into<String>) -> StoreError {
        StoreError { message: message.into(), refused: true }
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
    /// The balance right after this entry: set by the writer that applied
    /// it (`None` only in records written before it was kept).
    pub balance_after: Option<Amount>,
}

/// A ledger entry's columns as a store reads them back (`LedgerEntry::from_stored`).
#[derive(Clone, Debug)]
pub struct StoredEntry<'a> {
    pub reference: String,
    pub user: &'a str,
    pub amount: i64,
    pub kind: &'a str,
    pub packet_id: Option<&'a str>,
    pub at: i64,
    pub balance_after: Option<i64>,
}

impl LedgerEntry {
    /// An entry from a store's columns, each checked as the domain reads
    /// it; a corrupt row is an error naming it, never an entry.
    pub fn from_stored(row: StoredEntry<'_>) -> Result<LedgerEntry, StoreError> {
        let reference = row.reference;
        let corrupt = |what: &str| StoreError::new(format!("corrupt ledger entry {reference}: {what}"));
        let user = UserId::parse(row.user).map_err(|_| corrupt("user"))?;
        let kind = EntryKind::parse(row.kind).ok_or_else(|| corrupt("kind"))?;
        let packet_id = row.packet_id.map(|id| id.parse().map_err(|_| corrupt("packet id"))).transpose()?;
        let balance_after =
            row.balance_after.map(|fen| Amount::from_signed(fen).ok_or_else(|| corrupt("balance"))).transpose()?;
        Ok(LedgerEntry { reference, user, amount: row.amount, kind, packet_id, at: Millis(row.at), balance_after })
    }

    /// The day the entry is filed under (`yyyymmdd`): its packet's day, or
    /// for a deposit the UTC day it was made. A packet's entries thus belong
    /// to its day, wherever they land, and a day goes cold with all of them.
    /// Both stores file entries by it (SQLite spells it in SQL too, pinned
    /// to this by a test in `store-sqlite/src/schema.rs`).
    pub fn business_day(&self) -> u32 {
        self.packet_id.map_or_else(|| self.at.civil_day(), |id| id.day)
    }
}

/// How long after a day's last packet expired its credits are given to land
/// before the day may go cold: a credit crosses between sets in
/// milliseconds, so an hour is a wide margin, and a set that lags more
/// than that halts loudly (its write into a cold day is refused) rather
/// than lose anything. Both stores' day keepers wait it out.
pub const COLD_MARGIN_MS: i64 = 3_600_000;

/// How the audit reads the cold days (both stores).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColdDays {
    /// By their ledger totals.
    Totals,
    /// Row by row, as the hot ones (and the totals checked against them).
    Rows,
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
    Withdraw,
}

impl IdempotencyOp {
    pub fn as_str(self) -> &'static str {
        match self {
            IdempotencyOp::Deposit => "deposit",
            IdempotencyOp::Send => "send",
            IdempotencyOp::Withdraw => "withdraw",
        }
    }

    pub fn parse(text: &str) -> Option<IdempotencyOp> {
        [IdempotencyOp::Deposit, IdempotencyOp::Send, IdempotencyOp::Withdraw]
            .into_iter()
            .find(|op| op.as_str() == text)
    }
}

/// What a remembered request did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdempotencyResult {
    /// A deposit, and the balance it left.
    Deposited(Amount),
    /// A send, and the packet it made.
    Sent(PacketId),
    /// A withdrawal asked for, and its id.
    Withdrew(WithdrawalId),
}

impl IdempotencyResult {
    /// How a store spells the result in a text column: a deposit's balance
    /// in fen, a send's packet id. `parse` is its inverse, the one place
    /// that reads it back.
    pub fn text(&self) -> String {
        match self {
            IdempotencyResult::Deposited(balance) => balance.fen().to_string(),
            IdempotencyResult::Sent(id) => id.to_string(),
            IdempotencyResult::Withdrew(id) => id.to_string(),
        }
    }

    pub fn parse(op: IdempotencyOp, text: &str) -> Result<IdempotencyResult, StoreError> {
        let result = match op {
            IdempotencyOp::Deposit => text.parse().ok().and_then(Amount::from_fen).map(IdempotencyResult::Deposited),
            IdempotencyOp::Send => text.parse::<PacketId>().ok().map(IdempotencyResult::Sent),
            IdempotencyOp::Withdraw => text.parse::<WithdrawalId>().ok().map(IdempotencyResult::Withdrew),
        };
        result.ok_or_else(|| StoreError::new(format!("a stored {} result {text:?} is unreadable", op.as_str())))
    }

    pub fn op(self) -> IdempotencyOp {
        match self {
            IdempotencyResult::Deposited(_) => IdempotencyOp::Deposit,
            IdempotencyResult::Sent(_) => IdempotencyOp::Send,
            IdempotencyResult::Withdrew(_) => IdempotencyOp::Withdraw,
        }
    }
}

/// An `Idempotency-Key` remembered with what it did: the request's
/// fingerprint and its result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub user: UserId,
    pub key: String,
    pub fingerprint: String,
    pub result: IdempotencyResult,
}

impl IdempotencyRecord {
    pub fn op(&self) -> IdempotencyOp {
        self.result.op()
    }
}

/// What a set holds in memory when it starts serving.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    /// The journal position the tables have materialized, read in the same
    /// snapshot as the rest.
    pub position: Position,
    pub next_seq: u64,
    /// Packets not yet settled: unexpired, or expired with money to refund.
    pub packets: Vec<Packet>,
    /// Credits written to the outbox and not yet acknowledged.
    pub outbox: Vec<Credit>,
    /// Withdrawals not yet settled.
    pub withdrawals: Vec<Withdrawal>,
    /// The set's users whose accounts are frozen.
    pub frozen: Vec<UserId>,
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
    /// Incoming credits (resent ones), to learn which already landed in the
    /// ledger. The whole credit, not its reference alone: a store that keys
    /// the ledger by day and user finds it by its packet's day and its user.
    pub credits: Vec<Credit>,
    /// Settled withdrawals (no longer in memory) that a batch settles again.
    pub withdrawals: Vec<WithdrawalId>,
    /// Senders whose packets of the day (`yyyymmdd`, UTC) memory does not
    /// count yet: the tables hold them all (see `writer/limits.rs`).
    pub sent_today: Vec<(UserId, u32)>,
    /// Deposits (by reference, with their user) a batch reverses.
    pub deposits: Vec<(UserId, String)>,
}

impl Wants {
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
            && self.idempotency.is_empty()
            && self.packets.is_empty()
            && self.credits.is_empty()
            && self.withdrawals.is_empty()
            && self.sent_today.is_empty()
            && self.deposits.is_empty()
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
    /// The references of the wanted credits that are already in the ledger.
    pub references_present: Vec<String>,
    /// The wanted withdrawals that exist, plus the withdrawals named by
    /// fetched idempotency records of withdrawals.
    pub withdrawals: Vec<Withdrawal>,
    /// Per wanted sender and day: the packets sent and their money.
    pub sent_today: Vec<(UserId, u32, u32, Amount)>,
    /// The wanted deposits that exist in the hot tables, with their
    /// amounts, and whether each was reversed.
    pub deposits: Vec<(String, Amount, bool)>,
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
    /// Withdrawals asked for in this batch (pending; their debits are in
    /// `ledger`).
    pub withdrawals: Vec<Withdrawal>,
    /// Withdrawals settled in this batch: completed, or failed (their
    /// returns are in `ledger`).
    pub withdrawals_settled: Vec<(WithdrawalId, WithdrawalStatus, Millis)>,
    /// Accounts frozen (`true`) or unfrozen by an admin, and when.
    pub frozen: Vec<(UserId, bool, Millis)>,
    /// Deposits reversed (their references; the reversals' entries are in
    /// `ledger`).
    pub reversals: Vec<Reversal>,
}

/// A deposit taken back by an admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reversal {
    /// The deposit's reference.
    pub deposit: String,
    pub user: UserId,
    pub amount: Amount,
    pub at: Millis,
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
            && self.withdrawals.is_empty()
            && self.withdrawals_settled.is_empty()
            && self.frozen.is_empty()
            && self.reversals.is_empty()
    }
}

/// A batch as the journal holds it: its position and what it did.
#[derive(Clone, Debug)]
pub struct Journaled {
    pub position: Position,
    pub effects: Arc<Effects>,
}

/// One set's tables. A set opens two handles: the writer's (recover,
/// prefetch) and the materializer's (materialize).
pub trait Store: Send + 'static {
    /// Loads what the set keeps in memory, once the tables hold the whole
    /// journal: at start and after a failure.
    fn recover(&mut self, now: Millis) -> Result<Recovered, StoreError>;
    /// Loads what a batch needs that memory does not hold. Memory holds
    /// everything not yet materialized, so the tables' answer is complete.
    fn prefetch(&mut self, wants: &Wants) -> Result<Fetched, StoreError>;
    /// The journal position the tables have reached.
    fn materialized(&mut self) -> Result<Position, StoreError>;
    /// Writes these journaled batches (consecutive, after `materialized`) in
    /// one transaction that also records the last one's position; durable
    /// on return. On error nothing of them is applied; a constraint's
    /// refusal is `StoreError::refused`.
    fn materialize(&mut self, batches: &[Journaled]) -> Result<(), StoreError>;
    /// Housekeeping between transactions (a database copying its log back,
    /// say). It never changes what is stored.
    fn maintain(&mut self) {}
    /// The position the tables hold even across a power failure: the
    /// journal may be trimmed up to it, never past (tables may commit
    /// without a sync, since the journal holds what they hold).
    fn durable(&mut self) -> Position;
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

/// Which of a user's ledger entries a bill page reads (`StoreReader::ledger`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerQuery {
    /// Strictly before this `(at, reference)`, in the order of the bill
    /// (newest first: by time, then reference).
    pub before: Option<(Millis, String)>,
    pub kind: Option<EntryKind>,
    /// At or after this instant.
    pub from: Option<Millis>,
    /// Before this instant.
    pub to: Option<Millis>,
    pub limit: usize,
}

impl LedgerQuery {
    /// The query's bounds in SQL's terms: `(before_at, before_reference)`
    /// (open-ended when there is no cursor), `from`, `to`.
    pub fn bounds(&self) -> (i64, &str, i64, i64) {
        let (at, reference) = self.before.as_ref().map_or((i64::MAX, ""), |(at, reference)| (at.0, reference));
        // Without a cursor every entry is before (i64::MAX, ""): none is at i64::MAX.
        (at, reference, self.from.map_or(i64::MIN, |from| from.0), self.to.map_or(i64::MAX, |to| to.0))
    }
}

/// What a user sent and received in a span (`StoreReader::totals`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub sent_count: u64,
    /// Fen, as a positive amount.
    pub sent_fen: u64,
    pub received_count: u64,
    pub received_fen: u64,
}

/// The read side of one set's storage: it sees the materialized tables, and
/// the engine waits for them to hold every acknowledged batch before it
/// reads.
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

    /// A withdrawal of this set's users.
    fn withdrawal(&self, id: &WithdrawalId) -> Result<Option<Withdrawal>, StoreError>;

    /// `user`'s ledger entries (all in this set, the user's), newest first.
    fn ledger(&self, user: &UserId, query: &LedgerQuery) -> Result<Vec<LedgerEntry>, StoreError>;

    /// `user`'s packets sent and shares credited in `[from, to)` (their
    /// `send` and `credit` entries).
    fn totals(&self, user: &UserId, from: Millis, to: Millis) -> Result<Totals, StoreError>;

    /// How many of the packets in this set `user` opened in `[from, to)`
    /// gave them the best luck (fully opened, the largest share, the
    /// earliest among equals).
    fn best_lucks(&self, user: &UserId, from: Millis, to: Millis) -> Result<u64, StoreError>;

    /// For a set this node does not write (another node holds it): the
    /// journal's last position (what its writer has acknowledged) and the
    /// tables' position, read from the shared store, so a read can wait for
    /// the tables to hold what was acknowledged elsewhere. A store whose
    /// journal only its own node sees cannot tell.
    fn shared_positions(&self) -> Result<SharedPositions, StoreError> {
        Err(StoreError::new("this store's journal is not shared between nodes"))
    }
}

/// A set's positions as the shared store holds them (see
/// `StoreReader::shared_positions`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedPositions {
    /// The last position appended to the journal: acknowledged, or about
    /// to be.
    pub journal: Position,
    /// The last position the tables hold.
    pub tables: Position,
}
