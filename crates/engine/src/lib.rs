//! The engine of hongbao: SETs, each a single writer that owns its state and
//! takes commands from one bounded FIFO queue, applies a batch in memory,
//! appends it as one record to the set's journal and only then answers
//! (DESIGN.md §2). The tables follow behind, many batches per transaction.
//!
//! The engine is generic over its `Store` (the tables: recover, prefetch,
//! materialize) and takes any `Journal`, so the same engine runs on SQLite
//! with segment files, on PostgreSQL, or in memory for the simulation.

pub mod clock;
mod command;
pub mod config;
mod engine;
pub mod error;
pub mod events;
pub mod frozen;
pub mod journal;
mod materializer;
pub mod memory;
pub mod pause;
mod postman;
mod progress;
pub mod sim;
pub mod store;
pub mod stored;
pub mod telemetry;
mod writer;

pub use clock::{Clock, Entropy, ManualClock, OsEntropy, SeededEntropy, SystemClock};
pub use command::Mail;
pub use config::EngineConfig;
pub use engine::{
    Engine, ReceivedBound, SetStores, Summary, ledger_cursor, parse_ledger_cursor, parse_received_cursor,
    received_order,
};
pub use error::EngineError;
pub use journal::{BATCHES_PER_TRANSACTION_MAX, Journal, JournalError, Position};
pub use postman::RemotePost;
pub use store::{
    COLD_MARGIN_MS, ColdDays, Credit, Effects, Fetched, IdempotencyOp, IdempotencyRecord, IdempotencyResult, Journaled,
    LedgerEntry, LedgerQuery, Page, ReceivedItem, Recovered, SentItem, SharedPositions, Store, StoreError, StoreReader,
    StoredEntry, Totals, Wants,
};
