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
    /// A read from the store failed.
    #[error("storage read failed: {0}")]
    Storage(String),
}
