//! What a set tells its operators, through the `metrics` facade (the node
//! installs the Prometheus recorder; without one, as in the simulation and
//! most tests, every call here is a no-op). The names are the contract with
//! dashboards (the console reads them too) and are spelled only here and in
//! `hongbao_server::metrics`.
//!
//! A set's handles are registered once, when its writer starts, so a batch
//! records into them without a registry lookup. Per batch: its size, its
//! commands' wait in the queue, its append's time, and the money it moved.
//! The gauges that need a walk (credits in flight) are refreshed at most
//! every `GAUGES_EVERY`, so a long outbox costs nothing per batch.
//!
//! Money is counted in fen, as integers; the exporter holds counters as
//! `u64` and gauges as `f64`, exact for any amount below 2^53 fen.

use std::time::Duration;

use hongbao_domain::SetId;
use hongbao_domain::ledger::EntryKind;
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use crate::store::Effects;

pub const QUEUE_DEPTH: &str = "hongbao_set_queue_depth";
pub const QUEUE_DELAY: &str = "hongbao_set_queue_delay_seconds";
pub const BATCH_COMMANDS: &str = "hongbao_set_batch_commands";
pub const COMMIT_SECONDS: &str = "hongbao_set_commit_seconds";
pub const MATERIALIZATION_LAG: &str = "hongbao_set_materialization_lag";
pub const CREDITS_IN_FLIGHT: &str = "hongbao_credits_in_flight";
pub const CREDITS_IN_FLIGHT_FEN: &str = "hongbao_credits_in_flight_fen";
pub const LOCKED_FEN: &str = "hongbao_locked_fen";
pub const PACKETS_SENT: &str = "hongbao_packets_sent_total";
pub const OPENS: &str = "hongbao_opens_total";
pub const DEPOSITED_FEN: &str = "hongbao_deposited_fen_total";
pub const SENT_FEN: &str = "hongbao_sent_fen_total";
pub const OPENED_FEN: &str = "hongbao_opened_fen_total";
pub const REFUNDED_FEN: &str = "hongbao_refunded_fen_total";

/// Every metric the engine records, with its help text (the recorder's
/// `describe_*`, done once by whoever installs it).
pub const DESCRIPTIONS: &[(&str, &str)] = &[
    (QUEUE_DEPTH, "Commands waiting in the set's queue."),
    (QUEUE_DELAY, "How long a batch's oldest command waited in the queue."),
    (BATCH_COMMANDS, "Commands applied per batch (one journal append each)."),
    (COMMIT_SECONDS, "Time of one journal append, the commit point (durable before answered)."),
    (MATERIALIZATION_LAG, "Journal positions acknowledged and not yet in the set's tables."),
    (CREDITS_IN_FLIGHT, "Credits journaled by the set and not yet acknowledged by the payee's set."),
    (CREDITS_IN_FLIGHT_FEN, "Money in credits in flight, in fen."),
    (LOCKED_FEN, "Money in the set's live packets (sent, not yet opened or refunded), in fen."),
    (PACKETS_SENT, "Packets sent."),
    (OPENS, "Shares opened (each with money)."),
    (DEPOSITED_FEN, "Money deposited, in fen."),
    (SENT_FEN, "Money put into packets, in fen."),
    (OPENED_FEN, "Money opened out of packets, in fen."),
    (REFUNDED_FEN, "Money refunded from expired packets, in fen."),
];

/// The walked gauges are refreshed at most this often.
pub(crate) const GAUGES_EVERY: Duration = Duration::from_millis(250);

/// One set's handles.
pub(crate) struct SetMetrics {
    queue_depth: Gauge,
    queue_delay: Histogram,
    batch_commands: Histogram,
    commit_seconds: Histogram,
    materialization_lag: Gauge,
    credits_in_flight: Gauge,
    credits_in_flight_fen: Gauge,
    locked_fen: Gauge,
    packets_sent: Counter,
    opens: Counter,
    deposited_fen: Counter,
    sent_fen: Counter,
    opened_fen: Counter,
    refunded_fen: Counter,
    /// Money in live packets, kept by each batch's effects.
    locked: u64,
    /// When the walked gauges were last refreshed (`Clock::monotonic`).
    pub(crate) refreshed_at: Option<Duration>,
}

impl SetMetrics {
    /// `locked`: the money in the set's live packets as recovered.
    pub(crate) fn new(set: SetId, locked: u64) -> SetMetrics {
        let label = [("set", set.0.to_string())];
        let metrics = SetMetrics {
            queue_depth: gauge!(QUEUE_DEPTH, &label),
            queue_delay: histogram!(QUEUE_DELAY, &label),
            batch_commands: histogram!(BATCH_COMMANDS, &label),
            commit_seconds: histogram!(COMMIT_SECONDS, &label),
            materialization_lag: gauge!(MATERIALIZATION_LAG, &label),
            credits_in_flight: gauge!(CREDITS_IN_FLIGHT, &label),
            credits_in_flight_fen: gauge!(CREDITS_IN_FLIGHT_FEN, &label),
            locked_fen: gauge!(LOCKED_FEN, &label),
            packets_sent: counter!(PACKETS_SENT),
            opens: counter!(OPENS),
            deposited_fen: counter!(DEPOSITED_FEN),
            sent_fen: counter!(SENT_FEN),
            opened_fen: counter!(OPENED_FEN),
            refunded_fen: counter!(REFUNDED_FEN),
            locked,
            refreshed_at: None,
        };
        metrics.locked_fen.set(locked as f64);
        metrics
    }

    /// A batch's wait and size, as it is admitted.
    pub(crate) fn admitted(&self, delay: Duration, commands: usize, queued: usize) {
        self.queue_depth.set(queued as f64);
        if commands > 0 {
            self.queue_delay.record(delay.as_secs_f64());
            self.batch_commands.record(commands as f64);
        }
    }

    /// A batch made durable in `took`, with its effects.
    pub(crate) fn committed(&mut self, took: Duration, effects: &Effects) {
        self.commit_seconds.record(took.as_secs_f64());
        let deposited: u64 = effects
            .ledger
            .iter()
            .filter(|entry| entry.kind == EntryKind::Deposit)
            .map(|entry| entry.amount.unsigned_abs())
            .sum();
        let sent: u64 = effects.packets.iter().map(|packet| packet.info.total_amount.fen()).sum();
        let opened: u64 = effects.claims.iter().map(|(_, claim)| claim.amount.fen()).sum();
        let refunded: u64 = effects.refunds.iter().map(|(_, amount)| amount.fen()).sum();
        self.packets_sent.increment(effects.packets.len() as u64);
        self.opens.increment(effects.claims.len() as u64);
        self.deposited_fen.increment(deposited);
        self.sent_fen.increment(sent);
        self.opened_fen.increment(opened);
        self.refunded_fen.increment(refunded);
        // Every fen leaving a live packet was put in by a send: a batch can
        // only take out what the set's packets hold.
        self.locked = (self.locked + sent)
            .checked_sub(opened + refunded)
            .expect("a set's packets give out no more than was sent into them");
        self.locked_fen.set(self.locked as f64);
    }

    /// The gauges that need a walk or a look across threads.
    pub(crate) fn refresh(&mut self, now: Duration, lag: u64, credits: usize, credits_fen: u64) {
        self.refreshed_at = Some(now);
        self.materialization_lag.set(lag as f64);
        self.credits_in_flight.set(credits as f64);
        self.credits_in_flight_fen.set(credits_fen as f64);
    }

    /// Whether the walked gauges are due for a refresh at `now`.
    pub(crate) fn due(&self, now: Duration) -> bool {
        self.refreshed_at.is_none_or(|at| now.saturating_sub(at) >= GAUGES_EVERY)
    }

    /// The set stopped here (shut down, or moved to another node): its
    /// gauges say nothing is waiting or held on this node.
    pub(crate) fn stopped(&mut self) {
        self.queue_depth.set(0.0);
        self.materialization_lag.set(0.0);
        self.credits_in_flight.set(0.0);
        self.credits_in_flight_fen.set(0.0);
        self.locked_fen.set(0.0);
    }

    /// After a recovery: memory was rebuilt, so is what it holds.
    pub(crate) fn recovered(&mut self, locked: u64) {
        self.locked = locked;
        self.locked_fen.set(locked as f64);
    }
}
