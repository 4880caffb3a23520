//! The messages a set takes: commands from clients (each with a oneshot
//! reply) and mail from other sets (credits and their acknowledgements).

use std::time::Duration;

use hongbao_domain::outcome::{ReverseOutcome, SettleOutcome, WithdrawOutcome};
use hongbao_domain::withdrawal::{Settlement, WithdrawalId};
use hongbao_domain::{
    Amount, DepositOutcome, GrabOutcome, OpenOutcome, PacketId, PacketSpec, SendOutcome, SetId, UserId,
};
use tokio::sync::oneshot;

use crate::error::EngineError;
use crate::store::Credit;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// A command in a set's queue, with when it was queued (`Clock::monotonic`):
/// a command that waited too long is refused unapplied (see
/// `EngineConfig::queue_wait_max`).
pub(crate) struct Queued {
    pub(crate) at: Duration,
    pub(crate) command: Command,
}

pub(crate) enum Command {
    Deposit {
        user: UserId,
        amount: Amount,
        key: Option<String>,
        reply: Reply<DepositOutcome>,
    },
    Send {
        sender: UserId,
        spec: Box<PacketSpec>,
        key: Option<String>,
        reply: Reply<SendOutcome>,
    },
    Open {
        id: PacketId,
        user: UserId,
        password: Option<String>,
        reply: Reply<OpenOutcome>,
    },
    Grab {
        id: PacketId,
        user: UserId,
        reply: Reply<GrabOutcome>,
    },
    Withdraw {
        user: UserId,
        amount: Amount,
        key: Option<String>,
        reply: Reply<WithdrawOutcome>,
    },
    Settle {
        id: WithdrawalId,
        how: Settlement,
        reply: Reply<SettleOutcome>,
    },
    /// Takes back the deposit with this reference (of `user`'s).
    Reverse {
        user: UserId,
        reference: String,
        reply: Reply<ReverseOutcome>,
    },
    /// Freezes (or unfreezes) an account; answers whether that changed it.
    Freeze {
        user: UserId,
        frozen: bool,
        reply: Reply<bool>,
    },
    /// Finish what is queued before this, commit, and stop.
    Shutdown,
    /// Finish what is queued before this, commit, say so on `paused`, and
    /// wait at the gate (`pause.rs`).
    Pause {
        gate: std::sync::Arc<crate::pause::Gate>,
        paused: crossbeam_channel::Sender<()>,
    },
}

pub enum Mail {
    /// Apply this credit (idempotently) and acknowledge it to `from`.
    /// `first` marks the delivery sent right after the claim's commit: the
    /// mailbox from one set is FIFO and every resend comes later, so a first
    /// delivery cannot find its credit applied already, and the target skips
    /// the ledger lookup. Resends are always checked (and the ledger's unique
    /// reference refuses a duplicate whatever the engine believed). Mail
    /// that crossed nodes is never `first`: another node's order is not this
    /// mailbox's.
    Credit { credit: Credit, from: SetId, first: bool },
    /// The credit with this reference is durable in its target set.
    CreditAck { reference: String },
}

/// An answer held back until the batch is durable.
pub(crate) enum Pending {
    Deposit(Reply<DepositOutcome>, DepositOutcome),
    Send(Reply<SendOutcome>, SendOutcome),
    Open(Reply<OpenOutcome>, OpenOutcome),
    Withdraw(Reply<WithdrawOutcome>, WithdrawOutcome),
    Settle(Reply<SettleOutcome>, SettleOutcome),
    Freeze(Reply<bool>, bool),
    Reverse(Reply<ReverseOutcome>, ReverseOutcome),
}

impl Pending {
    /// Answers with the outcome once the batch committed, or with `error`.
    pub(crate) fn deliver(self, error: Option<EngineError>) {
        // A client that gave up waiting dropped its receiver; nothing to do.
        fn answer<T>(reply: Reply<T>, outcome: T, error: Option<EngineError>) {
            drop(reply.send(error.map_or(Ok(outcome), Err)));
        }
        match self {
            Pending::Deposit(reply, outcome) => answer(reply, outcome, error),
            Pending::Send(reply, outcome) => answer(reply, outcome, error),
            Pending::Open(reply, outcome) => answer(reply, outcome, error),
            Pending::Withdraw(reply, outcome) => answer(reply, outcome, error),
            Pending::Settle(reply, outcome) => answer(reply, outcome, error),
            Pending::Freeze(reply, outcome) => answer(reply, outcome, error),
            Pending::Reverse(reply, outcome) => answer(reply, outcome, error),
        }
    }
}

impl Command {
    /// Refuses the command without applying it.
    pub(crate) fn refuse(self, error: EngineError) {
        match self {
            Command::Deposit { reply, .. } => drop(reply.send(Err(error))),
            Command::Send { reply, .. } => drop(reply.send(Err(error))),
            Command::Open { reply, .. } => drop(reply.send(Err(error))),
            Command::Grab { reply, .. } => drop(reply.send(Err(error))),
            Command::Withdraw { reply, .. } => drop(reply.send(Err(error))),
            Command::Settle { reply, .. } => drop(reply.send(Err(error))),
            Command::Freeze { reply, .. } => drop(reply.send(Err(error))),
            Command::Reverse { reply, .. } => drop(reply.send(Err(error))),
            // Its `paused` dropped unanswered: the pause fails.
            Command::Shutdown | Command::Pause { .. } => {}
        }
    }
}
