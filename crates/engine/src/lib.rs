//! The engine of hongbao: SETs, each a single writer that owns its state and
//! takes commands from one bounded FIFO queue, applies a batch in memory,
//! writes it in one durable transaction and only then answers (DESIGN.md §2).
//!
//! The engine is generic over its `Store`; the store is batch-shaped (recover,
//! prefetch what a batch needs, commit a batch), so the same engine runs on
//! SQLite, PostgreSQL or an in-memory store for simulation.

pub mod clock;
mod command;
pub mod config;
mod engine;
pub mod error;
pub mod memory;
pub mod sim;
pub mod store;
mod writer;

pub use clock::{Clock, Entropy, ManualClock, OsEntropy, SeededEntropy, SystemClock};
pub use config::EngineConfig;
pub use engine::{Engine, SetStores, parse_received_cursor, received_order};
pub use error::EngineError;
pub use store::{
    Credit, Effects, Fetched, IdempotencyOp, IdempotencyRecord, LedgerEntry, Page, ReceivedItem, Recovered, SentItem,
    Store, StoreError, StoreReader, Wants,
};
