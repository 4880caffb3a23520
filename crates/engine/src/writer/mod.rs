//! The single writer of one set. Its loop reads as drain → prefetch → apply
//! → append → reply: commands are taken from the FIFO queue in order,
//! applied to memory, their batch's record appended to the journal, and
//! answered only once that record is durable. The tables follow behind
//! (`materializer.rs`).
//!
//! The writer's jobs, one file each: the loop (here), the business rules
//! (`rules.rs`), the credit protocol between sets (`credits.rs`), the
//! overload policy (`overload.rs`), the commit point and recovery
//! (`commit.rs`), and what memory holds (`state.rs`).

mod commit;
mod credits;
mod limits;
mod live;
mod notify;
mod overload;
mod rules;
mod state;
mod wallet;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, select};
use hongbao_domain::withdrawal::{Withdrawal, WithdrawalId};
use hongbao_domain::{Millis, Packet, PacketId, SetId, UserId};
use tracing::{error, info};

use crate::clock::{Clock, Entropy};
use crate::command::{Command, Mail, Pending, Queued};
use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::journal::{Journal, Position};
use crate::materializer::ToMaterializer;
use crate::pause::{Gate, trims_held};
use crate::postman::Postman;
use crate::progress::Progress;
use crate::store::{Effects, Fetched, IdempotencyOp, IdempotencyRecord, Journaled, Store, Wants};
use crate::telemetry::SetMetrics;
use state::{KeyOf, State};

/// What one batch works with beyond `State`: loaded for it, dropped after.
struct Batch {
    /// The position its record will have.
    position: Position,
    now: Millis,
    /// Idempotency records loaded from the tables for this batch.
    idempotency: HashMap<KeyOf, IdempotencyRecord>,
    /// Settled packets loaded from the tables for this batch.
    settled: HashMap<PacketId, Packet>,
    /// Settled withdrawals loaded from the tables for this batch.
    withdrawals: HashMap<WithdrawalId, Withdrawal>,
    /// Deposits to reverse loaded from the tables: amount, and whether
    /// reversed already.
    deposits: HashMap<String, (hongbao_domain::Amount, bool)>,
    references_present: HashSet<String>,
    effects: Effects,
    pending: Vec<Pending>,
    /// Mail to other sets, sent once the batch is durable.
    mail: Vec<(SetId, Mail)>,
}

/// What ends a drain early: the commands before it are processed first.
enum Control {
    Stop,
    Pause { gate: Arc<Gate>, paused: crossbeam_channel::Sender<()> },
}

impl Control {
    /// A command taken from the queue: a control, or one more of `commands`.
    fn of(queued: Queued, commands: &mut Vec<Queued>) -> Option<Control> {
        match queued.command {
            Command::Shutdown => Some(Control::Stop),
            Command::Pause { gate, paused } => Some(Control::Pause { gate, paused }),
            _ => {
                commands.push(queued);
                None
            }
        }
    }
}

/// Where a writer's work comes from and goes to.
pub(crate) struct Links {
    pub(crate) commands: Receiver<Queued>,
    pub(crate) mail: Receiver<Mail>,
    pub(crate) peers: Arc<Postman>,
    pub(crate) materializer: Sender<ToMaterializer>,
    pub(crate) progress: Arc<Progress>,
    /// How long the oldest command of the last batch waited (microseconds),
    /// for the engine to refuse at the door while the queue is that slow.
    pub(crate) queue_delay_us: Arc<AtomicU64>,
    /// Trim holds in force (`pause.rs`): while any, the journal is not trimmed.
    pub(crate) trim_holds: Arc<AtomicUsize>,
    /// Where the set's durable batches' events go (`events.rs`).
    pub(crate) events: Arc<crate::events::SetEvents>,
    /// The node's frozen accounts (`frozen.rs`).
    pub(crate) frozen: Arc<crate::frozen::FrozenUsers>,
}

pub(crate) struct Writer<S: Store> {
    pub(crate) set: SetId,
    sets: u16,
    config: EngineConfig,
    /// The writer's own handle on the tables: recover and prefetch only.
    store: S,
    journal: Box<dyn Journal>,
    clock: Arc<dyn Clock>,
    entropy: Box<dyn Entropy>,
    pub(crate) links: Links,
    state: State,
    /// The last position handed to the materializer.
    sent: Position,
    /// Journaled batches the materializer had no room for yet.
    to_tables: VecDeque<Journaled>,
    /// Set by a failed append: the journal must be read back before the
    /// next one (the record may be there whole, torn, or not at all).
    journal_unsure: bool,
    /// The position the journal was last trimmed to.
    trimmed: Position,
    /// Reused for every record's encoding.
    buffer: Vec<u8>,
    last_resend_scan: Duration,
    /// Commands shed since the last warning (at most one a second).
    shed_unlogged: usize,
    shed_logged_at: Duration,
    metrics: SetMetrics,
}

impl<S: Store> Writer<S> {
    /// A writer over tables that hold the whole journal (`catch_up` ran).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        set: SetId,
        sets: u16,
        config: EngineConfig,
        mut store: S,
        journal: Box<dyn Journal>,
        clock: Arc<dyn Clock>,
        entropy: Box<dyn Entropy>,
        links: Links,
    ) -> Result<Writer<S>, crate::store::StoreError> {
        let recovered = store.recover(clock.now())?;
        let position = recovered.position;
        let state = State::recovered(recovered);
        links.frozen.load(set, sets, &state.frozen);
        let metrics = SetMetrics::new(set, state.packets.locked_fen());
        Ok(Writer {
            set,
            sets,
            config,
            store,
            journal,
            clock,
            entropy,
            links,
            state,
            sent: position,
            to_tables: VecDeque::new(),
            journal_unsure: false,
            trimmed: 0,
            buffer: Vec::new(),
            last_resend_scan: Duration::ZERO,
            shed_unlogged: 0,
            shed_logged_at: Duration::ZERO,
            metrics,
        })
    }

    /// One turn of the loop without waiting, for the simulation, which drives
    /// every set from one thread with its own clock.
    /// `backlog`: whether commands are still queued behind these.
    pub(crate) fn step(&mut self, commands: Vec<Queued>, mail: Vec<Mail>, backlog: bool) {
        self.process(commands, mail, backlog);
        self.resend_credits(false);
    }

    /// The loop: wait for work (or a tick), drain a batch, process it.
    pub(crate) fn run(mut self) {
        info!(set = %self.set, packets = self.state.packets.len(), outbox = self.state.outbox.len(), "set serving");
        self.resend_credits(true);
        loop {
            let (commands, mail, control) = self.drain();
            let backlog = !self.links.commands.is_empty();
            self.process(commands, mail, backlog);
            self.refresh_gauges();
            // Fenced: memory holds the refused batch's effects (its credits
            // among them), which must never leave this writer.
            if !self.links.progress.fenced() {
                self.resend_credits(false);
            }
            if self.links.progress.fenced() {
                self.refuse_queued(EngineError::Fenced);
                self.metrics.stopped();
                self.stop_tables();
                info!(set = %self.set, position = self.state.position, "set fenced; its writer stopped");
                return;
            }
            match control {
                Some(Control::Stop) => {
                    self.metrics.stopped();
                    self.stop_tables();
                    info!(set = %self.set, position = self.state.position, "set stopped");
                    return;
                }
                // What came before the pause is committed and answered.
                Some(Control::Pause { gate, paused }) if paused.send(()).is_ok() => gate.wait(),
                Some(Control::Pause { .. }) | None => {}
            }
        }
    }

    /// The gauges that need a walk, at most every `telemetry::GAUGES_EVERY`.
    fn refresh_gauges(&mut self) {
        let now = self.clock.monotonic();
        if !self.metrics.due(now) {
            return;
        }
        let lag = self.links.progress.acked().saturating_sub(self.links.progress.materialized());
        let credits_fen = self.state.outbox.values().map(|outgoing| outgoing.credit.amount.fen()).sum();
        self.metrics.refresh(now, lag, self.state.outbox.len(), credits_fen);
    }

    /// Refuses, unapplied, every command still queued (a fenced set's).
    fn refuse_queued(&self, error: EngineError) {
        while let Ok(queued) = self.links.commands.try_recv() {
            queued.command.refuse(error.clone());
        }
    }

    fn drain(&self) -> (Vec<Queued>, Vec<Mail>, Option<Control>) {
        let mut commands = Vec::new();
        let mut mail = Vec::new();
        let mut control = None;
        select! {
            recv(self.links.commands) -> message => match message {
                Ok(queued) => control = Control::of(queued, &mut commands),
                Err(_) => control = Some(Control::Stop),
            },
            recv(self.links.mail) -> message => mail.extend(message.ok()),
            default(self.config.tick) => {}
        }
        while mail.len() < self.config.batch_max {
            match self.links.mail.try_recv() {
                Ok(message) => mail.push(message),
                Err(_) => break,
            }
        }
        while control.is_none() && commands.len() < self.config.batch_max {
            match self.links.commands.try_recv() {
                Ok(queued) => control = Control::of(queued, &mut commands),
                Err(_) => break,
            }
        }
        (commands, mail, control)
    }

    fn process(&mut self, queued: Vec<Queued>, mail: Vec<Mail>, backlog: bool) {
        let commands = self.admit(queued, backlog);
        if !self.flush_to_tables() {
            // The tables are a full queue behind: refused, not hung (mail
            // is dropped: unacknowledged credits are resent).
            self.tables_behind(commands);
            return;
        }
        if !self.links.progress.is_healthy() && !self.recover() {
            // Dropped mail is safe: unacknowledged credits are resent.
            commands.into_iter().for_each(|command| command.refuse(EngineError::Unavailable));
            return;
        }
        self.follow_the_tables();
        let now = self.clock.now();
        self.state.sent_today.on(now.civil_day());
        let due = self.due_packets(now);
        let wants = self.wants(&commands, &mail, &due);
        let fetched = match wants.is_empty() {
            true => Fetched::default(),
            false => match self.store.prefetch(&wants) {
                Ok(fetched) => fetched,
                Err(failure) => {
                    error!(set = %self.set, %failure, "prefetch failed; batch refused");
                    commands.into_iter().for_each(|command| command.refuse(EngineError::Unavailable));
                    return;
                }
            },
        };
        let mut batch = self.batch(now, fetched);
        for id in due {
            self.settle(id, &mut batch);
        }
        for message in mail {
            self.apply_mail(message, &mut batch);
        }
        for command in commands {
            self.apply(command, &mut batch);
        }
        batch.effects.next_seq = self.state.next_seq;
        self.commit(batch);
    }

    /// Forgets what the tables now hold, and trims the journal below what
    /// they hold durably.
    fn follow_the_tables(&mut self) {
        let materialized = self.links.progress.materialized();
        self.state.forget_materialized(materialized, self.config.accounts_cached_max);
        let durable = self.links.progress.durable();
        if durable > self.trimmed && !trims_held(&self.links.trim_holds) {
            match self.journal.trim(durable) {
                Ok(()) => self.trimmed = durable,
                Err(failure) => error!(set = %self.set, %failure, "trimming the journal failed; retrying later"),
            }
        }
    }

    fn due_packets(&self, now: Millis) -> Vec<PacketId> {
        self.state.packets.due(now, self.config.refunds_per_batch_max)
    }

    /// What the batch needs that memory does not hold: the balances it
    /// changes, the idempotency keys it checks, the settled packets it
    /// opens, and whether resent credits already landed.
    fn wants(&self, commands: &[Command], mail: &[Mail], due: &[PacketId]) -> Wants {
        let mut accounts = HashSet::new();
        let mut packets = HashSet::new();
        let mut senders = HashSet::new();
        let mut wants = Wants::default();
        let mut keys = Vec::new();
        let mut key = |user: &UserId, op, key: &Option<String>| {
            if let Some(key) = key {
                let wanted = (user.clone(), op, key.clone());
                if !self.state.unmaterialized.keys.contains(&wanted) {
                    keys.push(wanted);
                }
            }
        };
        for command in commands {
            match command {
                Command::Deposit { user, key: k, .. } => {
                    accounts.insert(user);
                    key(user, IdempotencyOp::Deposit, k);
                }
                Command::Send { sender, key: k, .. } => {
                    accounts.insert(sender);
                    key(sender, IdempotencyOp::Send, k);
                    senders.insert(sender);
                }
                Command::Open { id, user, .. } => {
                    packets.insert(*id);
                    if SetId::of_user(user, self.sets) == self.set {
                        accounts.insert(user);
                    }
                }
                Command::Grab { id, .. } => drop(packets.insert(*id)),
                Command::Withdraw { user, key: k, .. } => {
                    accounts.insert(user);
                    key(user, IdempotencyOp::Withdraw, k);
                }
                Command::Reverse { .. } | Command::Settle { .. } => {
                    self.wallet_wants(command, &mut accounts, &mut wants);
                }
                Command::Freeze { .. } | Command::Shutdown | Command::Pause { .. } => {}
            }
        }
        wants.idempotency = keys;
        for id in due {
            accounts.insert(&self.state.packets.get(id).expect("a due packet is live").info.sender);
        }
        for message in mail {
            if let Mail::Credit { credit, first, .. } = message {
                accounts.insert(&credit.user);
                if !first && !self.state.unmaterialized.credited.contains(&credit.reference) {
                    wants.credits.push(credit.clone());
                }
            }
        }
        wants.accounts =
            accounts.into_iter().filter(|user| !self.state.accounts.contains_key(*user)).cloned().collect();
        let today = self.state.sent_today.day();
        wants.sent_today = senders
            .into_iter()
            .filter(|sender| !self.state.sent_today.knows(sender))
            .map(|sender| (sender.clone(), today))
            .collect();
        let unknown =
            |id: &PacketId| !self.state.packets.contains(id) && !self.state.unmaterialized.settled.contains(id);
        wants.packets = packets.into_iter().filter(unknown).collect();
        wants
    }

    /// What an admin's reversal or settling needs: the account it changes,
    /// and the deposit or settled withdrawal memory does not hold.
    fn wallet_wants<'a>(&'a self, command: &'a Command, accounts: &mut HashSet<&'a UserId>, wants: &mut Wants) {
        match command {
            Command::Reverse { user, reference, .. } => {
                accounts.insert(user);
                if !self.state.unmaterialized.deposits.contains(reference) {
                    wants.deposits.push((user.clone(), reference.clone()));
                }
            }
            Command::Settle { id, .. } => match self.state.withdrawals.get(id) {
                // A pending one is in memory; failing it credits its user.
                Some(pending) => drop(accounts.insert(&pending.user)),
                None if !self.state.unmaterialized.withdrawals.contains(id) => wants.withdrawals.push(*id),
                None => {}
            },
            _ => {}
        }
    }

    fn batch(&mut self, now: Millis, fetched: Fetched) -> Batch {
        let position = self.state.position + 1;
        for (user, balance) in fetched.accounts {
            self.state.accounts.insert(user, state::Account { balance, changed_at: 0 });
        }
        for (user, _, count, amount) in fetched.sent_today {
            self.state.sent_today.load(user, count, amount);
        }
        let idempotency = fetched
            .idempotency
            .into_iter()
            .map(|record| ((record.user.clone(), record.op(), record.key.clone()), record))
            .collect();
        Batch {
            position,
            now,
            idempotency,
            settled: fetched.packets.into_iter().map(|packet| (packet.info.id, packet)).collect(),
            withdrawals: fetched.withdrawals.into_iter().map(|withdrawal| (withdrawal.id, withdrawal)).collect(),
            deposits: fetched
                .deposits
                .into_iter()
                .map(|(reference, amount, reversed)| (reference, (amount, reversed)))
                .collect(),
            references_present: fetched.references_present.into_iter().collect(),
            effects: Effects::default(),
            pending: Vec::new(),
            mail: Vec::new(),
        }
    }
}
