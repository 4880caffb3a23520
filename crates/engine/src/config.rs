//! How the engine is sized. Every bound is named here with the reason for it.

use std::time::Duration;

use hongbao_domain::Limits;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The business limits (WeChat's by default).
    pub limits: Limits,
    /// Commands waiting per set. A full queue sheds load with 503 instead of
    /// letting memory and latency grow without bound; 4096 is a few batches.
    pub queue_capacity: usize,
    /// The longest a command may wait in its set's queue. One that waited
    /// longer is refused unapplied (503 `overloaded`, with Retry-After):
    /// under overload the queue stays full, and without this bound every
    /// admitted command would wait for the whole queue, seconds at a full
    /// 4096. Admitted commands answer within about this plus one batch.
    pub queue_wait_max: Duration,
    /// Commands per batch: one fsync pays for this many. Larger batches add
    /// latency to the first command of the batch for little more throughput.
    pub batch_max: usize,
    /// How often an idle set wakes to refund expired packets and resend
    /// unacknowledged credits.
    pub tick: Duration,
    /// How long a credit may wait for its acknowledgement before it is sent
    /// again. Resending is safe: the ledger reference makes it idempotent.
    pub credit_resend_after: Duration,
    /// Expired packets refunded per batch, so a backlog of expiries cannot
    /// make one batch (and the commands waiting behind it) arbitrarily slow.
    pub refunds_per_batch_max: usize,
    /// Cached balances per set before the cache is dropped and refilled from
    /// the store on demand. Bounds memory with many idle users.
    pub accounts_cached_max: usize,
    /// The recent events each set keeps for streams (`events.rs`).
    pub events: crate::events::EventsConfig,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            limits: Limits::default(),
            queue_capacity: 4096,
            queue_wait_max: Duration::from_millis(100),
            batch_max: 1024,
            tick: Duration::from_millis(50),
            credit_resend_after: Duration::from_secs(1),
            refunds_per_batch_max: 1024,
            accounts_cached_max: 1_000_000,
            events: crate::events::EventsConfig::default(),
        }
    }
}

/// Credits and acknowledgements waiting between sets. A full mailbox drops
/// the message; the credit stays in the durable outbox and is resent.
pub(crate) const MAILBOX_CAPACITY: usize = 65_536;
