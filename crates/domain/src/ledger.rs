//! Ledger references: the unique name of every balance change. A reference
//! is the claim on an effect, so applying the same change twice is refused by
//! the store's unique key instead of moving money twice.

use std::fmt::Display;

/// What a ledger entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Money in from outside (the admin's stand-in for a bank top-up).
    Deposit,
    /// The sender's wallet paying for a packet (negative).
    Send,
    /// An opened share reaching the opener's wallet.
    Credit,
    /// What was left of an expired packet, back to its sender.
    Refund,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Deposit => "deposit",
            EntryKind::Send => "send",
            EntryKind::Credit => "credit",
            EntryKind::Refund => "refund",
        }
    }

    pub fn parse(text: &str) -> Option<EntryKind> {
        [EntryKind::Deposit, EntryKind::Send, EntryKind::Credit, EntryKind::Refund]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// What makes a deposit's reference unique.
#[derive(Clone, Copy, Debug)]
pub enum DepositKey<'a> {
    /// The caller's `Idempotency-Key`: a retry names the same deposit.
    Keyed(&'a str),
    /// No key: a random draw, so two deposits are two entries.
    Auto(u64),
}

/// Prefixes the store's triggers spell in SQL too (`store-sqlite/src/schema.rs`
/// has a test that pins its SQL to these).
pub const SEND_REF_PREFIX: &str = "send:";
pub const REFUND_REF_PREFIX: &str = "refund:";
/// The prefix of a credit's reference (`claim_ref`): a store finds a day's
/// credits by it.
pub const CLAIM_REF_PREFIX: &str = "claim:";

/// `deposit:<user>:key:<key>`, or `deposit:<user>:auto:<16 hex digits>`.
pub fn deposit_ref(user: impl Display, key: DepositKey<'_>) -> String {
    match key {
        DepositKey::Keyed(key) => format!("deposit:{user}:key:{key}"),
        DepositKey::Auto(draw) => format!("deposit:{user}:auto:{draw:016x}"),
    }
}

pub fn send_ref(packet: impl Display) -> String {
    format!("{SEND_REF_PREFIX}{packet}")
}

/// The credit of a share: the reference *is* the claim.
pub fn claim_ref(packet: impl Display, user: impl Display) -> String {
    format!("{CLAIM_REF_PREFIX}{packet}:{user}")
}

pub fn refund_ref(packet: impl Display) -> String {
    format!("{REFUND_REF_PREFIX}{packet}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_spelled_as_the_stores_and_tools_read_them() {
        assert_eq!(deposit_ref("alice", DepositKey::Keyed("k1")), "deposit:alice:key:k1");
        assert_eq!(deposit_ref("alice", DepositKey::Auto(255)), "deposit:alice:auto:00000000000000ff");
        assert_eq!(send_ref("20270128-1-2-ab"), "send:20270128-1-2-ab");
        assert_eq!(claim_ref("20270128-1-2-ab", "bob"), "claim:20270128-1-2-ab:bob");
        assert_eq!(refund_ref("20270128-1-2-ab"), "refund:20270128-1-2-ab");
    }
}
