//! Cash-out: money leaves a balance for the user's bank account. A
//! withdrawal is asked for by the user (its money moves at once from the
//! balance into the withdrawal, `pending`), then settled once by an admin
//! (the bank's answer): `completed` (the money is gone) or `failed` (it
//! comes back to the balance, exactly once). Each move of money is a ledger
//! entry (`withdrawal:<id>`, `withdrawal_return:<id>`).
//!
//! A withdrawal lives in its user's set, and its id says which, as a
//! packet's does: `wd-` and then a packet id's form (day, set, the set's
//! sequence, which packets and withdrawals share, and a 64-bit nonce).

use std::fmt;
use std::str::FromStr;

use crate::id::{PacketId, SetId};
use crate::money::Amount;
use crate::time::Millis;
use crate::user::UserId;

/// `wd-yyyymmdd-set-seq-nonce`; only the canonical spelling parses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WithdrawalId(PacketId);

const PREFIX: &str = "wd-";

impl WithdrawalId {
    pub fn new(day: u32, set: SetId, seq: u64, nonce: u64) -> WithdrawalId {
        WithdrawalId(PacketId::new(day, set, seq, nonce))
    }

    pub fn set(&self) -> SetId {
        self.0.set
    }

    /// Its parts in a packet id's form (for the journal's encoding).
    pub fn packet_form(&self) -> PacketId {
        self.0
    }

    /// A withdrawal id from its parts, if they are ones it can have.
    pub fn from_packet_form(id: PacketId) -> Option<WithdrawalId> {
        (id.nonce_width == crate::id::NonceWidth::Secret64).then_some(WithdrawalId(id))
    }

    pub fn seq(&self) -> u64 {
        self.0.seq
    }
}

impl fmt::Display for WithdrawalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.0)
    }
}

impl FromStr for WithdrawalId {
    type Err = ();

    fn from_str(text: &str) -> Result<WithdrawalId, ()> {
        let id: PacketId = text.strip_prefix(PREFIX).ok_or(())?.parse().map_err(|_| ())?;
        // Withdrawals were never made with the old 32-bit nonces.
        WithdrawalId::from_packet_form(id).ok_or(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WithdrawalStatus {
    Pending,
    Completed,
    Failed,
}

impl WithdrawalStatus {
    pub const ALL: [WithdrawalStatus; 3] =
        [WithdrawalStatus::Pending, WithdrawalStatus::Completed, WithdrawalStatus::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            WithdrawalStatus::Pending => "pending",
            WithdrawalStatus::Completed => "completed",
            WithdrawalStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<WithdrawalStatus> {
        WithdrawalStatus::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Withdrawal {
    pub id: WithdrawalId,
    pub user: UserId,
    pub amount: Amount,
    pub status: WithdrawalStatus,
    pub created_at: Millis,
    /// When an admin settled it.
    pub settled_at: Option<Millis>,
}

/// How an admin settles a pending withdrawal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// The bank paid it out.
    Complete,
    /// The bank refused it: the money goes back to the balance.
    Fail,
}

impl Settlement {
    pub fn status(self) -> WithdrawalStatus {
        match self {
            Settlement::Complete => WithdrawalStatus::Completed,
            Settlement::Fail => WithdrawalStatus::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_only_their_canonical_spelling_and_name_their_set() {
        let id = WithdrawalId::new(20_271_128, SetId(3), 17, 0x9f3a_1c2e_77b0_4d15);
        assert_eq!(id.to_string(), "wd-20271128-3-17-9f3a1c2e77b04d15");
        assert_eq!(id.to_string().parse(), Ok(id));
        assert_eq!(id.set(), SetId(3));
        for bad in [
            "20271128-3-17-9f3a1c2e77b04d15",
            "wd-20271128-3-17-9f3a1c2e",
            "WD-20271128-3-17-9f3a1c2e77b04d15",
            "wd-",
            "",
        ] {
            assert!(bad.parse::<WithdrawalId>().is_err(), "{bad:?}");
        }
    }
}
