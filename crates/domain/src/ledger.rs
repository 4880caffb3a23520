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

pub fn deposit_ref(user: impl Display, key: impl Display) -> String {
    format!("deposit:{user}:{key}")
}

pub fn send_ref(packet: impl Display) -> String {
    format!("send:{packet}")
}

pub fn claim_ref(packet: impl Display, user: impl Display) -> String {
    format!("claim:{packet}:{user}")
}

pub fn refund_ref(packet: impl Display) -> String {
    format!("refund:{packet}")
}
