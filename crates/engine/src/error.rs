//! Why the engine could not answer a command. Business outcomes are not
//! errors (see `hongbao_domain::outcome`); these are about capacity and health.

use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum EngineError {
    /// The set is at capacity (its queue is full, or the command waited in
    /// it too long): shed unapplied, the client retries later.
    #[error("the set is at capacity")]
    Overloaded,
    /// The set failed to append a batch to its journal (or its tables
    /// refused one and it halted), and refuses writes until it has recovered
    /// from its store.
    #[error("the set is recovering from a storage failure")]
    Unavailable,
    /// The engine is stopping and takes no new commands.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// Another node holds the set now (or no node does, while it moves):
    /// the command was not queued here. The node forwards it to the holder.
    #[error("set {0} is held by another node")]
    NotHere(hongbao_domain::SetId),
    /// The set's journal refused the batch because another node took the
    /// set over (its lease moved to a newer epoch): nothing of it was
    /// applied, and this node no longer writes the set.
    #[error("the set moved to another node before this write was durable")]
    Fenced,
    /// A read from the store failed.
    #[error("storage read failed: {0}")]
    Storage(String),
}
