//! The single writer of one set. Its loop reads as drain → prefetch → apply
//! → commit → reply: commands are taken from the FIFO queue in order, applied
//! to memory, written in one transaction, and answered only once durable.
//! After a failed commit the set refuses writes until its memory has been
//! rebuilt from the store.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use hongbao_domain::ledger::{DepositKey, EntryKind, claim_ref, deposit_ref, refund_ref, send_ref};
use hongbao_domain::{
    Amount, Claim, DepositOutcome, GrabOutcome, Millis, OpenOutcome, Packet, PacketId, PacketSpec, SendOutcome, SetId,
    UserId,
};
use tracing::{error, info, warn};

use crate::clock::{Clock, Entropy};
use crate::command::{Command, Mail, Pending, Queued, Reply};
use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::store::{Credit, Effects, Fetched, IdempotencyOp, IdempotencyRecord, LedgerEntry, Recovered, Store, Wants};

/// What a set keeps in memory between batches.
struct State {
    next_seq: u64,
    /// Balances of this set's users, loaded on demand; authoritative once
    /// loaded, since this writer is the only one that changes them.
    accounts: HashMap<UserId, Amount>,
    /// Packets not yet settled (unexpired, or waiting for their refund).
    packets: HashMap<PacketId, Packet>,
    expiries: BTreeSet<(Millis, PacketId)>,
    /// Credits durable in the outbox, not yet acknowledged by their set.
    outbox: HashMap<String, Outgoing>,
}

struct Outgoing {
    credit: Credit,
    sent_at: Option<Instant>,
}

impl State {
    fn recovered(recovered: Recovered) -> State {
        let expiries = recovered.packets.iter().map(|p| (p.info.expires_at, p.info.id)).collect();
        let packets = recovered.packets.into_iter().map(|p| (p.info.id, p)).collect();
        let outbox = recovered
            .outbox
            .into_iter()
            .map(|credit| (credit.reference.clone(), Outgoing { credit, sent_at: None }))
            .collect();
        State { next_seq: recovered.next_seq, accounts: HashMap::new(), packets, expiries, outbox }
    }
}

/// What one batch works with beyond `State`: loaded for it, dropped after.
struct Batch {
    now: Millis,
    idempotency: HashMap<(UserId, IdempotencyOp, String), IdempotencyRecord>,
    /// Settled packets this batch reads (from the store, or settled now).
    settled: HashMap<PacketId, Packet>,
    references_present: HashSet<String>,
    effects: Effects,
    pending: Vec<Pending>,
    /// Mail to other sets, sent once the batch is durable.
    mail: Vec<(SetId, Mail)>,
}

pub(crate) struct Writer<S: Store> {
    pub(crate) set: SetId,
    pub(crate) sets: u16,
    pub(crate) config: EngineConfig,
    pub(crate) store: S,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) entropy: Box<dyn Entropy>,
    pub(crate) commands: Receiver<Queued>,
    pub(crate) mail: Receiver<Mail>,
    pub(crate) peers: Arc<Vec<Sender<Mail>>>,
    /// How long the oldest command of the last batch waited (microseconds),
    /// for the engine to refuse at the door while the queue is that slow.
    pub(crate) queue_delay_us: Arc<AtomicU64>,
    state: State,
    /// Whether the set serves writes; false after a failed commit until it
    /// has recovered. Shared with the engine, which reports readiness.
    healthy: Arc<AtomicBool>,
    last_resend_scan: Instant,
    /// Commands shed since the last warning (at most one a second).
    shed_unlogged: usize,
    shed_logged_at: Duration,
}

impl<S: Store> Writer<S> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        set: SetId,
        sets: u16,
        config: EngineConfig,
        store: S,
        recovered: Recovered,
        clock: Arc<dyn Clock>,
        entropy: Box<dyn Entropy>,
        commands: Receiver<Queued>,
        mail: Receiver<Mail>,
        peers: Arc<Vec<Sender<Mail>>>,
        queue_delay_us: Arc<AtomicU64>,
    ) -> Writer<S> {
        let state = State::recovered(recovered);
        let last_resend_scan = Instant::now();
        Writer {
            set,
            sets,
            config,
            store,
            clock,
            entropy,
            commands,
            mail,
            peers,
            queue_delay_us,
            state,
            healthy: Arc::new(AtomicBool::new(true)),
            last_resend_scan,
            shed_unlogged: 0,
            shed_logged_at: Duration::ZERO,
        }
    }

    /// The flag that says whether this set serves writes.
    pub(crate) fn health(&self) -> Arc<AtomicBool> {
        self.healthy.clone()
    }

    /// One turn of the loop without waiting, for the simulation, which drives
    /// every set from one thread with its own clock.
    /// `backlog`: whether commands are still queued behind these.
    pub(crate) fn step(&mut self, commands: Vec<Queued>, mail: Vec<Mail>, backlog: bool) {
        self.process(commands, mail, backlog);
    }

    /// Forgets memory and rebuilds it from the store, as after a crash.
    pub(crate) fn restart(&mut self) -> bool {
        self.healthy.store(false, Ordering::Relaxed);
        self.recover()
    }

    /// The loop: wait for work (or a tick), drain a batch, process it.
    pub(crate) fn run(mut self) {
        info!(set = %self.set, packets = self.state.packets.len(), outbox = self.state.outbox.len(), "set serving");
        self.resend_credits(true);
        loop {
            let (commands, mail, stop) = self.drain();
            let backlog = !self.commands.is_empty();
            self.process(commands, mail, backlog);
            self.resend_credits(false);
            if stop {
                info!(set = %self.set, "set stopped");
                return;
            }
        }
    }

    fn drain(&self) -> (Vec<Queued>, Vec<Mail>, bool) {
        let mut commands = Vec::new();
        let mut mail = Vec::new();
        let mut stop = false;
        select! {
            recv(self.commands) -> message => match message {
                Ok(Queued { command: Command::Shutdown, .. }) | Err(_) => stop = true,
                Ok(queued) => commands.push(queued),
            },
            recv(self.mail) -> message => mail.extend(message.ok()),
            default(self.config.tick) => {}
        }
        while mail.len() < self.config.batch_max {
            match self.mail.try_recv() {
                Ok(message) => mail.push(message),
                Err(_) => break,
            }
        }
        while !stop && commands.len() < self.config.batch_max {
            match self.commands.try_recv() {
                Ok(Queued { command: Command::Shutdown, .. }) => stop = true,
                Ok(queued) => commands.push(queued),
                Err(_) => break,
            }
        }
        (commands, mail, stop)
    }

    fn process(&mut self, queued: Vec<Queued>, mail: Vec<Mail>, backlog: bool) {
        let commands = self.admit(queued, backlog);
        if !self.healthy.load(Ordering::Relaxed) && !self.recover() {
            // Dropped mail is safe: credits stay in durable outboxes and are resent.
            commands.into_iter().for_each(|command| command.refuse(EngineError::Unavailable));
            return;
        }
        let now = self.clock.now();
        let due = self.due_packets(now);
        let wants = self.wants(&commands, &mail);
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
        if self.state.accounts.len() > self.config.accounts_cached_max {
            self.state.accounts.clear();
        }
    }

    fn commit(&mut self, batch: Batch) {
        let result = match batch.effects.is_empty() {
            true => Ok(()),
            false => self.store.commit(&batch.effects),
        };
        match result {
            Ok(()) => {
                batch.pending.into_iter().for_each(|pending| pending.deliver(None));
                let sent_at = Instant::now();
                for (target, message) in batch.mail {
                    if let Mail::Credit { credit, .. } = &message
                        && let Some(outgoing) = self.state.outbox.get_mut(&credit.reference)
                    {
                        outgoing.sent_at = Some(sent_at);
                    }
                    // A full or closed mailbox drops the message; the outbox resends it.
                    let _ = self.peers[target.index()].try_send(message);
                }
                self.store.maintain();
            }
            Err(failure) => {
                error!(set = %self.set, %failure, "commit failed; set refuses writes until recovered");
                batch.pending.into_iter().for_each(|pending| pending.deliver(Some(EngineError::Unavailable)));
                self.healthy.store(false, Ordering::Relaxed);
                self.recover();
            }
        }
    }

    /// While a queue stands (commands are still queued behind this batch),
    /// refuses, unapplied, the commands that waited longer than
    /// `queue_wait_max`: their clients are answered 503 at once instead of
    /// after a wait that grows with the queue. A batch that empties the queue
    /// is served whole however long it waited: a short stall (a slow fsync)
    /// with a few commands behind it is not overload, and refusing them would
    /// help no one (the first hostile-input run at a million requests per
    /// target caught grabs refused so, with four clients).
    fn admit(&mut self, queued: Vec<Queued>, backlog: bool) -> Vec<Command> {
        let now = self.clock.monotonic();
        // The first command of a batch is its oldest: its wait is the
        // queue's delay, for the door (`Engine::call`). Without a backlog,
        // newcomers wait for nothing but this batch.
        let delay = match (queued.first(), backlog) {
            (Some(first), true) => now.saturating_sub(first.at),
            _ => Duration::ZERO,
        };
        self.queue_delay_us.store(u64::try_from(delay.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        let mut commands = Vec::with_capacity(queued.len());
        let mut shed = 0usize;
        for Queued { at, command } in queued {
            if backlog && now.saturating_sub(at) > self.config.queue_wait_max {
                command.refuse(EngineError::Overloaded);
                shed += 1;
            } else {
                commands.push(command);
            }
        }
        self.shed_unlogged += shed;
        if self.shed_unlogged > 0 && now.saturating_sub(self.shed_logged_at) >= Duration::from_secs(1) {
            warn!(set = %self.set, shed = self.shed_unlogged, "overloaded: commands that waited too long were refused");
            (self.shed_unlogged, self.shed_logged_at) = (0, now);
        }
        commands
    }

    /// Rebuilds memory from the store: after a failed commit, memory may hold
    /// effects that never became durable.
    fn recover(&mut self) -> bool {
        match self.store.recover(self.clock.now()) {
            Ok(recovered) => {
                self.state = State::recovered(recovered);
                self.healthy.store(true, Ordering::Relaxed);
                warn!(set = %self.set, "set recovered from its store");
                self.resend_credits(true);
                true
            }
            Err(failure) => {
                error!(set = %self.set, %failure, "recovery failed; set stays unavailable");
                false
            }
        }
    }

    fn due_packets(&self, now: Millis) -> Vec<PacketId> {
        self.state
            .expiries
            .iter()
            .take_while(|(expires_at, _)| *expires_at <= now)
            .take(self.config.refunds_per_batch_max)
            .map(|(_, id)| *id)
            .collect()
    }

    /// Balances are loaded only for the commands that decide on them
    /// (deposits, sends); credits and refunds never fail, so they are applied
    /// blind (see `credit_balance`) and cost no read.
    fn wants(&self, commands: &[Command], mail: &[Mail]) -> Wants {
        let mut accounts = HashSet::new();
        let mut packets = HashSet::new();
        let mut wants = Wants::default();
        for command in commands {
            match command {
                Command::Deposit { user, key, .. } => {
                    accounts.insert(user);
                    wants.idempotency.extend(key.clone().map(|key| (user.clone(), IdempotencyOp::Deposit, key)));
                }
                Command::Send { sender, key, .. } => {
                    accounts.insert(sender);
                    wants.idempotency.extend(key.clone().map(|key| (sender.clone(), IdempotencyOp::Send, key)));
                }
                Command::Open { id, .. } => {
                    packets.insert(*id);
                }
                Command::Grab { id, .. } => {
                    packets.insert(*id);
                }
                Command::Shutdown => {}
            }
        }
        for message in mail {
            if let Mail::Credit { credit, first: false, .. } = message {
                wants.references.push(credit.reference.clone());
            }
        }
        let cached = |user: &&UserId| !self.state.accounts.contains_key(*user);
        wants.accounts = accounts.into_iter().filter(cached).cloned().collect();
        wants.packets = packets.into_iter().filter(|id| !self.state.packets.contains_key(id)).collect();
        wants
    }

    fn batch(&mut self, now: Millis, fetched: Fetched) -> Batch {
        self.state.accounts.extend(fetched.accounts);
        let idempotency = fetched
            .idempotency
            .into_iter()
            .map(|record| ((record.user.clone(), record.op, record.key.clone()), record))
            .collect();
        Batch {
            now,
            idempotency,
            settled: fetched.packets.into_iter().map(|packet| (packet.info.id, packet)).collect(),
            references_present: fetched.references_present.into_iter().collect(),
            effects: Effects::default(),
            pending: Vec::new(),
            mail: Vec::new(),
        }
    }

    fn balance(&self, user: &UserId) -> Amount {
        *self.state.accounts.get(user).expect("account prefetched for the batch")
    }

    fn set_balance(&mut self, batch: &mut Batch, entry: LedgerEntry) {
        let before = self.balance(&entry.user);
        let after = match Amount::from_signed(entry.amount) {
            Some(credit) => before.checked_add(credit),
            None => before.checked_sub(Amount::from_fen(entry.amount.unsigned_abs()).expect("debit fits")),
        };
        let after = after.expect("a ledger entry took a balance out of range");
        self.state.accounts.insert(entry.user.clone(), after);
        batch.effects.ledger.push(entry);
    }

    /// Adds money that is never refused (a credit, a refund): the store adds
    /// it to the balance; memory follows only if it holds that balance, and
    /// otherwise reads the sum from the store when it next needs it.
    fn credit_balance(&mut self, batch: &mut Batch, entry: LedgerEntry) {
        let amount = Amount::from_signed(entry.amount).expect("a credit is positive");
        if let Some(balance) = self.state.accounts.get_mut(&entry.user) {
            *balance = balance.checked_add(amount).expect("a credit took a balance out of range");
        }
        batch.effects.ledger.push(entry);
    }

    fn apply(&mut self, command: Command, batch: &mut Batch) {
        match command {
            Command::Deposit { user, amount, key, reply } => self.deposit(user, amount, key, reply, batch),
            Command::Send { sender, spec, key, reply } => self.send(sender, *spec, key, reply, batch),
            Command::Open { id, user, password, reply } => self.open(id, user, password, reply, batch),
            Command::Grab { id, user, reply } => {
                // Grabs are non-binding and write nothing: answered at once.
                let _ = reply.send(Ok(self.grab(id, &user, batch)));
            }
            Command::Shutdown => {}
        }
    }

    /// An earlier request under the same key: `Ok(record)` if it asked for
    /// the same thing, `Err(())` if the key is reused for something else.
    fn remembered(
        batch: &Batch,
        user: &UserId,
        key: &Option<String>,
        op: IdempotencyOp,
        fingerprint: &str,
    ) -> Option<Result<IdempotencyRecord, ()>> {
        let record = batch.idempotency.get(&(user.clone(), op, key.clone()?))?;
        Some(match record.fingerprint == fingerprint {
            true => Ok(record.clone()),
            false => Err(()),
        })
    }

    fn remember(
        batch: &mut Batch,
        user: &UserId,
        key: Option<String>,
        op: IdempotencyOp,
        fingerprint: String,
        result: String,
    ) {
        if let Some(key) = key {
            let record = IdempotencyRecord { user: user.clone(), key: key.clone(), op, fingerprint, result };
            batch.idempotency.insert((user.clone(), op, key), record.clone());
            batch.effects.idempotency.push(record);
        }
    }

    fn deposit(
        &mut self,
        user: UserId,
        amount: Amount,
        key: Option<String>,
        reply: Reply<DepositOutcome>,
        batch: &mut Batch,
    ) {
        let fingerprint = amount.fen().to_string();
        let outcome = match Self::remembered(batch, &user, &key, IdempotencyOp::Deposit, &fingerprint) {
            Some(Ok(record)) => {
                let balance = record.result.parse().ok().and_then(Amount::from_fen).expect("stored deposit result");
                DepositOutcome::Deposited { balance, replayed: true }
            }
            Some(Err(())) => DepositOutcome::KeyReused,
            None => match self.balance(&user).checked_add(amount).filter(|b| *b <= self.config.limits.balance_max) {
                None => DepositOutcome::BalanceLimit,
                Some(balance) => {
                    let reference = match &key {
                        Some(key) => deposit_ref(&user, DepositKey::Keyed(key)),
                        None => deposit_ref(&user, DepositKey::Auto(self.entropy.next_u64())),
                    };
                    let entry = LedgerEntry {
                        reference,
                        user: user.clone(),
                        amount: amount.signed(),
                        kind: EntryKind::Deposit,
                        packet_id: None,
                        at: batch.now,
                    };
                    self.set_balance(batch, entry);
                    Self::remember(batch, &user, key, IdempotencyOp::Deposit, fingerprint, balance.fen().to_string());
                    DepositOutcome::Deposited { balance, replayed: false }
                }
            },
        };
        batch.pending.push(Pending::Deposit(reply, outcome));
    }

    fn send(
        &mut self,
        sender: UserId,
        spec: PacketSpec,
        key: Option<String>,
        reply: Reply<SendOutcome>,
        batch: &mut Batch,
    ) {
        let fingerprint = spec.fingerprint();
        let outcome = match Self::remembered(batch, &sender, &key, IdempotencyOp::Send, &fingerprint) {
            Some(Ok(record)) => {
                let id: PacketId = record.result.parse().expect("stored send result is a packet id");
                let packet = self.state.packets.get(&id).or_else(|| batch.settled.get(&id));
                let info = packet.expect("the packet of a remembered send exists").info.clone();
                SendOutcome::Sent { packet: Box::new(info), replayed: true }
            }
            Some(Err(())) => SendOutcome::KeyReused,
            None if self.balance(&sender) < spec.total_amount => SendOutcome::InsufficientBalance,
            None => {
                let packet = self.make_packet(&sender, &spec, batch);
                let info = packet.info.clone();
                let result = info.id.to_string();
                Self::remember(batch, &sender, key, IdempotencyOp::Send, fingerprint, result);
                SendOutcome::Sent { packet: Box::new(info), replayed: false }
            }
        };
        batch.pending.push(Pending::Send(reply, outcome));
    }

    /// Debits the sender and creates the packet: one local transaction,
    /// since a packet lives in its sender's set.
    fn make_packet(&mut self, sender: &UserId, spec: &PacketSpec, batch: &mut Batch) -> &Packet {
        let seq = self.state.next_seq;
        self.state.next_seq += 1;
        let id = PacketId::new(batch.now.civil_day(), self.set, seq, self.entropy.next_u64());
        let packet = Packet::new(id, sender.clone(), spec, self.entropy.next_u64(), batch.now);
        let debit = LedgerEntry {
            reference: send_ref(id),
            user: sender.clone(),
            amount: -spec.total_amount.signed(),
            kind: EntryKind::Send,
            packet_id: Some(id),
            at: batch.now,
        };
        self.set_balance(batch, debit);
        batch.effects.packets.push(packet.clone());
        self.state.expiries.insert((packet.info.expires_at, id));
        self.state.packets.entry(id).or_insert(packet)
    }

    fn open(
        &mut self,
        id: PacketId,
        user: UserId,
        password: Option<String>,
        reply: Reply<OpenOutcome>,
        batch: &mut Batch,
    ) {
        let limits = &self.config.limits;
        let outcome = if let Some(packet) = self.state.packets.get_mut(&id) {
            let outcome = packet.open(&user, password.as_deref(), batch.now, limits);
            if let OpenOutcome::Opened { .. } = outcome {
                let claim = packet.claims().last().expect("an open records its claim").clone();
                batch.effects.claims.push((id, claim.clone()));
                self.credit_opener(id, claim, batch);
            }
            outcome
        } else if let Some(packet) = batch.settled.get_mut(&id) {
            let outcome = packet.open(&user, password.as_deref(), batch.now, limits);
            assert!(!matches!(outcome, OpenOutcome::Opened { .. }), "a settled packet {id} was opened");
            outcome
        } else {
            OpenOutcome::NotFound
        };
        batch.pending.push(Pending::Open(reply, outcome));
    }

    fn grab(&self, id: PacketId, user: &UserId, batch: &Batch) -> GrabOutcome {
        match self.state.packets.get(&id).or_else(|| batch.settled.get(&id)) {
            Some(packet) => packet.grab(user, batch.now),
            None => GrabOutcome::NotFound,
        }
    }

    /// Sends an opened share to the opener's wallet: directly when the
    /// wallet is in this set, else through the durable outbox.
    fn credit_opener(&mut self, id: PacketId, claim: Claim, batch: &mut Batch) {
        let credit = Credit {
            reference: claim_ref(id, &claim.user),
            user: claim.user,
            amount: claim.amount,
            packet_id: id,
            at: claim.at,
        };
        let target = SetId::of_user(&credit.user, self.sets);
        if target == self.set {
            self.apply_credit(credit, batch);
            return;
        }
        batch.effects.outbox_added.push(credit.clone());
        let outgoing = Outgoing { credit: credit.clone(), sent_at: None };
        self.state.outbox.insert(credit.reference.clone(), outgoing);
        batch.mail.push((target, Mail::Credit { credit, from: self.set, first: true }));
    }

    fn apply_credit(&mut self, credit: Credit, batch: &mut Batch) {
        let entry = LedgerEntry {
            reference: credit.reference,
            user: credit.user,
            amount: credit.amount.signed(),
            kind: EntryKind::Credit,
            packet_id: Some(credit.packet_id),
            at: credit.at,
        };
        self.credit_balance(batch, entry);
    }

    fn apply_mail(&mut self, message: Mail, batch: &mut Batch) {
        match message {
            Mail::Credit { credit, from, .. } => {
                let reference = credit.reference.clone();
                // The reference is the claim: a credit that already landed is only acknowledged.
                if batch.references_present.insert(reference.clone()) {
                    self.apply_credit(credit, batch);
                }
                batch.mail.push((from, Mail::CreditAck { reference }));
            }
            Mail::CreditAck { reference } => {
                if self.state.outbox.remove(&reference).is_some() {
                    batch.effects.outbox_removed.push(reference);
                }
            }
        }
    }

    /// At expiry a packet leaves memory; what is left goes back to the
    /// sender exactly once. Opens in this batch see it as settled.
    fn settle(&mut self, id: PacketId, batch: &mut Batch) {
        let mut packet = self.state.packets.remove(&id).expect("a due packet is in memory");
        self.state.expiries.remove(&(packet.info.expires_at, id));
        if let Some(amount) = packet.refund(batch.now) {
            batch.effects.refunds.push((id, amount));
            let entry = LedgerEntry {
                reference: refund_ref(id),
                user: packet.info.sender.clone(),
                amount: amount.signed(),
                kind: EntryKind::Refund,
                packet_id: Some(id),
                at: batch.now,
            };
            self.credit_balance(batch, entry);
        }
        batch.settled.insert(id, packet);
    }

    /// Sends outbox credits that were never sent or wait too long for their
    /// acknowledgement. Scans at most twice per resend interval.
    fn resend_credits(&mut self, all: bool) {
        let now = Instant::now();
        let interval = self.config.credit_resend_after;
        if !all && now.duration_since(self.last_resend_scan) < interval / 2 {
            return;
        }
        self.last_resend_scan = now;
        for outgoing in self.state.outbox.values_mut() {
            let stale = outgoing.sent_at.is_none_or(|sent_at| now.duration_since(sent_at) >= interval);
            if all || stale {
                let credit = outgoing.credit.clone();
                let target = SetId::of_user(&credit.user, self.sets);
                outgoing.sent_at = Some(now);
                let _ = self.peers[target.index()].try_send(Mail::Credit { credit, from: self.set, first: false });
            }
        }
    }
}
