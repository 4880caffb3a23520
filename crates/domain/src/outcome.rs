//! What an operation answers. Business outcomes are data, each with a stable
//! code, not errors: the engine returns them and the API maps them to HTTP.

use crate::money::Amount;
use crate::packet::{Claim, PacketInfo};

/// The answer to an open (拆), after the checks of `Packet::open`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenOutcome {
    /// A new share, durable when this is answered: the claim as recorded.
    Opened(Claim),
    /// This user opened the packet before; the same share again.
    AlreadyOpened {
        amount: Amount,
    },
    Empty,
    Expired,
    NotRecipient,
    WrongPassword,
    NotFound,
}

impl OpenOutcome {
    /// The share the opener got, now or before; `None` for a refusal.
    pub fn amount(&self) -> Option<Amount> {
        match self {
            OpenOutcome::Opened(claim) => Some(claim.amount),
            OpenOutcome::AlreadyOpened { amount } => Some(*amount),
            _ => None,
        }
    }

    pub const fn code(&self) -> &'static str {
        match self {
            OpenOutcome::Opened(_) | OpenOutcome::AlreadyOpened { .. } => "opened",
            OpenOutcome::Empty => "packet_empty",
            OpenOutcome::Expired => "packet_expired",
            OpenOutcome::NotRecipient => "not_recipient",
            OpenOutcome::WrongPassword => "wrong_password",
            OpenOutcome::NotFound => "packet_not_found",
        }
    }
}

/// The answer to a grab (抢): a non-binding look at whether the user may open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrabOutcome {
    Available,
    /// This user already opened it.
    Opened,
    Empty,
    Expired,
    NotRecipient,
    NotFound,
}

impl GrabOutcome {
    pub fn code(self) -> &'static str {
        match self {
            GrabOutcome::Available => "available",
            GrabOutcome::Opened => "opened",
            GrabOutcome::Empty => "empty",
            GrabOutcome::Expired => "expired",
            GrabOutcome::NotRecipient => "not_recipient",
            GrabOutcome::NotFound => "packet_not_found",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DepositOutcome {
    /// Deposited (or, with `replayed`, deposited before under the same key);
    /// `balance` is the balance right after that deposit.
    Deposited { balance: Amount, replayed: bool },
    /// The idempotency key was used before for a different request.
    KeyReused,
    /// The deposit would take the balance over the configured maximum.
    BalanceLimit,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    Sent { packet: Box<PacketInfo>, replayed: bool },
    InsufficientBalance,
    KeyReused,
}
