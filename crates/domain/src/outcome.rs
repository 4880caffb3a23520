//! What an operation answers. Business outcomes are data, each with a stable
//! code, not errors: the engine returns them and the API maps them to HTTP.

use crate::money::Amount;
use crate::packet::{Claim, PacketInfo};
use crate::withdrawal::Withdrawal;

/// The code of every refusal of a frozen account's send, open or withdrawal.
pub const ACCOUNT_FROZEN: &str = "account_frozen";

/// The code of every refusal of a group packet to someone outside it.
pub const NOT_IN_GROUP: &str = "not_in_group";

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
    /// The packet was sent to a group this user is not in.
    NotInGroup,
    WrongPassword,
    NotFound,
    /// The opener's account is frozen (a share opened before is still
    /// answered).
    AccountFrozen,
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
            OpenOutcome::NotInGroup => NOT_IN_GROUP,
            OpenOutcome::WrongPassword => "wrong_password",
            OpenOutcome::NotFound => "packet_not_found",
            OpenOutcome::AccountFrozen => ACCOUNT_FROZEN,
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
    NotInGroup,
    NotFound,
    AccountFrozen,
}

impl GrabOutcome {
    pub fn code(self) -> &'static str {
        match self {
            GrabOutcome::Available => "available",
            GrabOutcome::Opened => "opened",
            GrabOutcome::Empty => "empty",
            GrabOutcome::Expired => "expired",
            GrabOutcome::NotRecipient => "not_recipient",
            GrabOutcome::NotInGroup => NOT_IN_GROUP,
            GrabOutcome::NotFound => "packet_not_found",
            GrabOutcome::AccountFrozen => ACCOUNT_FROZEN,
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
    Sent {
        packet: Box<PacketInfo>,
        replayed: bool,
    },
    InsufficientBalance,
    KeyReused,
    AccountFrozen,
    /// The sender's packets of the day would pass the daily count or
    /// amount (`Limits::daily_send_*`).
    DailyLimit,
}

/// The answer to a withdrawal's request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WithdrawOutcome {
    /// Pending, its money out of the balance (or, with `replayed`, asked
    /// for before under the same key).
    Requested {
        withdrawal: Withdrawal,
        replayed: bool,
    },
    InsufficientBalance,
    KeyReused,
    AccountFrozen,
}

/// The answer to an admin's settling of a withdrawal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettleOutcome {
    /// Settled as asked, now or before (settling twice the same way
    /// answers the same).
    Settled(Withdrawal),
    /// Settled the other way before: nothing changed.
    SettledOtherwise(Withdrawal),
    NotFound,
}

/// The answer to an admin's reversal of a deposit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReverseOutcome {
    /// Reversed, now or before: the deposit's amount, and the balance
    /// right after the reversal.
    Reversed { amount: Amount, balance: Amount, replayed: bool },
    /// No deposit has this reference.
    NotFound,
    /// The balance no longer holds the deposit's amount: nothing changed.
    InsufficientBalance,
}
