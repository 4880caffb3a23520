//! Ledger references: the unique name of every balance change. A reference
//! is the claim on an effect, so applying the same change twice is refused by
//! the store's unique key instead of moving money twice.

use std::fmt::Display;

use crate::user::UserId;

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
    /// Money out to the user's bank: from the balance into a pending
    /// withdrawal (negative).
    Withdrawal,
    /// A failed withdrawal's money, back to the balance.
    WithdrawalReturn,
    /// A deposit taken back (negative), by an admin.
    Reversal,
}

impl EntryKind {
    /// Every kind, in the order of their journal tags.
    pub const ALL: [EntryKind; 7] = [
        EntryKind::Deposit,
        EntryKind::Send,
        EntryKind::Credit,
        EntryKind::Refund,
        EntryKind::Withdrawal,
        EntryKind::WithdrawalReturn,
        EntryKind::Reversal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Deposit => "deposit",
            EntryKind::Send => "send",
            EntryKind::Credit => "credit",
            EntryKind::Refund => "refund",
            EntryKind::Withdrawal => "withdrawal",
            EntryKind::WithdrawalReturn => "withdrawal_return",
            EntryKind::Reversal => "reversal",
        }
    }

    pub fn parse(text: &str) -> Option<EntryKind> {
        EntryKind::ALL.into_iter().find(|kind| kind.as_str() == text)
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

/// The prefix of a deposit's reference.
pub const DEPOSIT_REF_PREFIX: &str = "deposit:";
pub const WITHDRAWAL_REF_PREFIX: &str = "withdrawal:";
pub const WITHDRAWAL_RETURN_REF_PREFIX: &str = "withdrawal_return:";
pub const REVERSAL_REF_PREFIX: &str = "reversal:";

/// The user a deposit's reference names (`deposit:<user>:key:…` or
/// `deposit:<user>:auto:…`), if it is one.
pub fn deposit_user(reference: &str) -> Option<UserId> {
    let rest = reference.strip_prefix(DEPOSIT_REF_PREFIX)?;
    let (user, how) = rest.split_once(':')?;
    let (kind, tail) = how.split_once(':')?;
    let valid = match kind {
        "key" => !tail.is_empty(),
        "auto" => tail.len() == 16 && tail.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        _ => false,
    };
    valid.then(|| UserId::parse(user).ok()).flatten()
}

/// Money leaving for a withdrawal: `withdrawal:<id>`.
pub fn withdrawal_ref(id: impl Display) -> String {
    format!("{WITHDRAWAL_REF_PREFIX}{id}")
}

/// A failed withdrawal's money coming back: `withdrawal_return:<id>`.
pub fn withdrawal_return_ref(id: impl Display) -> String {
    format!("{WITHDRAWAL_RETURN_REF_PREFIX}{id}")
}

/// A deposit taken back: `reversal:<the deposit's reference>`, so a
/// deposit is reversed at most once.
pub fn reversal_ref(deposit: &str) -> String {
    format!("{REVERSAL_REF_PREFIX}{deposit}")
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
        assert_eq!(withdrawal_ref("wd-20270128-1-2-ab"), "withdrawal:wd-20270128-1-2-ab");
        assert_eq!(withdrawal_return_ref("wd-20270128-1-2-ab"), "withdrawal_return:wd-20270128-1-2-ab");
        assert_eq!(reversal_ref("deposit:alice:key:k1"), "reversal:deposit:alice:key:k1");
    }

    #[test]
    fn a_deposits_reference_names_its_user_and_nothing_else_does() {
        let alice = UserId::parse("alice").unwrap();
        assert_eq!(deposit_user(&deposit_ref(&alice, DepositKey::Keyed("k:1"))), Some(alice.clone()));
        assert_eq!(deposit_user(&deposit_ref(&alice, DepositKey::Auto(7))), Some(alice));
        for other in [
            "send:x",
            "deposit:alice",
            "deposit:alice:key:",
            "deposit:al ice:key:1",
            "deposit:alice:auto:7",
            "deposit:alice:other:1",
            "reversal:deposit:alice:key:1",
        ] {
            assert_eq!(deposit_user(other), None, "{other}");
        }
    }
}
