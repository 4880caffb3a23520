//! The engine handle: routes each command to the set that owns its data,
//! refuses at once when that set's queue is full, and serves reads from the
//! sets' committed state.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use hongbao_domain::id::SETS_MAX;
use hongbao_domain::outcome::{ReverseOutcome, SettleOutcome, WithdrawOutcome};
use hongbao_domain::time::civil_day_start;
use hongbao_domain::withdrawal::{Settlement, Withdrawal, WithdrawalId};
use hongbao_domain::{
    Amount, DepositOutcome, GrabOutcome, Limits, Millis, OpenOutcome, Packet, PacketId, PacketSpec, SendOutcome, SetId,
    UserId,
};
use tokio::sync::oneshot;

use crate::clock::{Clock, Entropy};
use crate::command::{Command, Mail, Queued, Reply};
use crate::config::{EngineConfig, MAILBOX_CAPACITY};
use crate::error::EngineError;
use crate::events::SetEvents;
use crate::frozen::FrozenUsers;
use crate::journal::Journal;
use crate::materializer::{Materializer, catch_up};
use crate::pause::{PauseFailed, Paused, TrimHold};
use crate::postman::{Postman, RemotePost};
use crate::progress::Progress;
use crate::store::{LedgerEntry, LedgerQuery, Page, ReceivedItem, SentItem, Store, StoreError, StoreReader, Totals};
use crate::writer::{Links, Writer};

/// One set's storage: its journal, two handles on its tables (the writer's,
/// to recover and prefetch; the materializer's, to write), and the readers.
pub struct SetStores<S: Store> {
    pub journal: Box<dyn Journal>,
    pub writer: S,
    pub materializer: S,
    pub reader: Arc<dyn StoreReader>,
}

/// What `Engine::summary` answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub totals: Totals,
    pub best_luck_count: u64,
}

/// A bill page's cursor: `<at>:<reference>` (a reference may hold any of
/// `:` `.` `-`, an instant's digits never).
pub fn ledger_cursor(at: Millis, reference: &str) -> String {
    format!("{}:{reference}", at.0)
}

/// The `(at, reference)` a cursor made by `ledger_cursor` names.
pub fn parse_ledger_cursor(text: &str) -> Option<(Millis, String)> {
    let (at, reference) = text.split_once(':')?;
    let plain = !at.is_empty() && at.bytes().all(|b| b.is_ascii_digit()) && (at == "0" || !at.starts_with('0'));
    if !plain || reference.is_empty() {
        return None;
    }
    Some((Millis(at.parse().ok()?), reference.to_owned()))
}

/// Batches handed to a set's materializer and not yet taken: past this the
/// writer waits, its queue fills and sheds load (the tables are too slow).
/// It bounds the memory the lag holds: at most this many batches of up to
/// `batch_max` commands (about 1,024 × 1,024 opens × ~300 B, 300 MiB, per
/// set at the very worst; a few MiB in the runs measured).
const MATERIALIZER_QUEUE: usize = 1024;

/// The longest a read waits for the tables to hold what was acknowledged
/// before it; past it the read is refused (503), never answered stale.
const READ_WAIT_MAX: Duration = Duration::from_secs(5);

/// A cheap, cloneable handle to the running sets.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    limits: Limits,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    /// One per set of the data set, whether this node holds it or not.
    slots: Vec<Slot>,
    /// Every set's reader, held here or not (one reference count per read).
    readers: Arc<[Arc<dyn StoreReader>]>,
    postman: Arc<Postman>,
    /// Half of `queue_wait_max`: past this delay a set refuses at the door.
    door_closes_at_us: u64,
    /// Set once `shutdown` begins: no set takes writes after it.
    stopped: AtomicBool,
    /// Writes answered `Fenced` since start: refused by the journal because
    /// their set had moved to another node.
    fenced_writes: AtomicU64,
    /// Trim holds in force (`pause.rs`), shared with every writer.
    trim_holds: Arc<AtomicUsize>,
    /// Every set's recent events, held here or not (`events.rs`).
    events: Arc<[Arc<SetEvents>]>,
    /// The frozen accounts of the sets held here (`frozen.rs`).
    frozen: Arc<FrozenUsers>,
}

/// One set: its mailbox, and while this node holds it, its running
/// writer.
struct Slot {
    /// Mail for the set; its writer reads it while the set is held here.
    mail: Receiver<Mail>,
    held: RwLock<Option<Arc<Held>>>,
}

/// A set this node holds: its queue, its progress, and its two threads.
struct Held {
    queue: Sender<Queued>,
    /// The set's last queue delay (see `Writer::queue_delay_us`).
    queue_delay_us: Arc<AtomicU64>,
    /// The set's journal and table positions, and its health.
    progress: Arc<Progress>,
    /// The writer, then the materializer: joined in that order.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("sets", &self.inner.slots.len()).finish()
    }
}

fn set_count(sets: usize) -> Result<u16, StoreError> {
    let sets = u16::try_from(sets).ok().filter(|n| (1..=SETS_MAX).contains(n));
    sets.ok_or_else(|| StoreError::new(format!("set count must be 1 to {SETS_MAX}")))
}

impl Engine {
    /// Recovers every set (its tables brought up to its journal's end,
    /// then memory loaded from them) and starts its writer and materializer
    /// threads: a node that holds every set. Fails if any set cannot
    /// recover.
    pub fn start<S: Store>(
        config: EngineConfig,
        stores: Vec<SetStores<S>>,
        clock: Arc<dyn Clock>,
        mut entropy: impl FnMut(SetId) -> Box<dyn Entropy>,
    ) -> Result<Engine, StoreError> {
        set_count(stores.len())?;
        let readers = stores.iter().map(|stores| stores.reader.clone()).collect();
        let engine = Engine::new(config, readers, clock, None)?;
        for (index, stores) in stores.into_iter().enumerate() {
            let set = SetId(index as u16);
            engine.take(set, stores, entropy(set))?;
        }
        Ok(engine)
    }

    /// An engine that holds no set yet, for one node of several: sets are
    /// taken (`take`) and given up (`give_up`) as the node's leases come and
    /// go; mail for sets held elsewhere goes through `remote`, and reads of
    /// them through `readers` and the shared store's positions.
    pub fn shared(
        config: EngineConfig,
        readers: Vec<Arc<dyn StoreReader>>,
        clock: Arc<dyn Clock>,
        remote: Arc<dyn RemotePost>,
    ) -> Result<Engine, StoreError> {
        Engine::new(config, readers, clock, Some(remote))
    }

    fn new(
        config: EngineConfig,
        readers: Vec<Arc<dyn StoreReader>>,
        clock: Arc<dyn Clock>,
        remote: Option<Arc<dyn RemotePost>>,
    ) -> Result<Engine, StoreError> {
        set_count(readers.len())?;
        let (senders, receivers): (Vec<_>, Vec<_>) = readers.iter().map(|_| bounded(MAILBOX_CAPACITY)).unzip();
        let postman = match remote {
            Some(remote) => Postman::shared(senders, remote),
            None => Postman::local(senders),
        };
        let slots = receivers.into_iter().map(|mail| Slot { mail, held: RwLock::new(None) }).collect();
        let door_closes_at_us = u64::try_from(config.queue_wait_max.as_micros() / 2).unwrap_or(u64::MAX);
        let events = (0..readers.len()).map(|set| Arc::new(SetEvents::new(SetId(set as u16), config.events))).collect();
        let inner = Inner {
            limits: config.limits.clone(),
            clock,
            config,
            slots,
            readers: readers.into(),
            postman: Arc::new(postman),
            door_closes_at_us,
            stopped: AtomicBool::new(false),
            fenced_writes: AtomicU64::new(0),
            trim_holds: Arc::new(AtomicUsize::new(0)),
            events,
            frozen: Arc::default(),
        };
        Ok(Engine { inner: Arc::new(inner) })
    }

    /// Recovers `set` from `stores` (its tables brought up to its journal's
    /// end, then memory loaded from them) and starts serving it here. The
    /// caller holds the set (its lease, or its lock).
    pub fn take<S: Store>(
        &self,
        set: SetId,
        stores: SetStores<S>,
        entropy: Box<dyn Entropy>,
    ) -> Result<(), StoreError> {
        let sets = self.sets();
        let slot = self.slot(set).ok_or_else(|| StoreError::new(format!("no set {set} among {sets}")))?;
        if slot.held.read().expect("slot lock").is_some() {
            return Err(StoreError::new(format!("set {set} is already held here")));
        }
        let started = Instant::now();
        // On a node of several, mail left from an earlier time the set was
        // held here is dropped (its senders resend it): a first delivery
        // found there could come after a resend applied the credit on
        // another node, and a first delivery skips the ledger check
        // (`Mail::Credit`). A node that holds every set keeps its mail: the
        // sets started before this one may have mailed it already.
        if self.inner.postman.is_shared() {
            while slot.mail.try_recv().is_ok() {}
        }
        let fail = |what: &str, e: &dyn std::fmt::Display| StoreError::new(format!("set {set}: {what}: {e}"));
        let progress = Arc::new(Progress::new());
        let mut materializer = Materializer::new(set, stores.materializer, progress.clone())
            .map_err(|e| fail("reading the tables' position", &e))?;
        let mut journal = stores.journal;
        let last = catch_up(&mut materializer, &mut *journal).map_err(|e| fail("replaying the journal", &e))?;
        progress.ack(last);
        let events = self.inner.events[set.index()].clone();
        events.restart(last);
        let replayed = last - materializer.position().min(last);
        let (queue, commands) = bounded(self.inner.config.queue_capacity);
        let (to_tables, from_writer) = bounded(MATERIALIZER_QUEUE);
        let queue_delay_us = Arc::new(AtomicU64::new(0));
        let links = Links {
            commands,
            mail: slot.mail.clone(),
            peers: self.inner.postman.clone(),
            materializer: to_tables,
            progress: progress.clone(),
            queue_delay_us: queue_delay_us.clone(),
            trim_holds: self.inner.trim_holds.clone(),
            events,
            frozen: self.inner.frozen.clone(),
        };
        let config = self.inner.config.clone();
        let writer = Writer::new(set, sets, config, stores.writer, journal, self.inner.clock.clone(), entropy, links)
            .map_err(|e| fail("loading memory", &e))?;
        tracing::info!(%set, position = last, ms = started.elapsed().as_millis() as u64, replayed, "journal replayed");
        let writer = spawn(format!("hongbao-set-{set}"), move || writer.run())?;
        let materializer = spawn(format!("hongbao-tables-{set}"), move || materializer.run(from_writer))?;
        let held = Held { queue, queue_delay_us, progress, threads: Mutex::new(vec![writer, materializer]) };
        *slot.held.write().expect("slot lock") = Some(Arc::new(held));
        self.inner.postman.hold(set, true);
        Ok(())
    }

    /// Stops serving `set` here: new commands for it are refused as held
    /// elsewhere (`NotHere`) at once, the commands already queued are
    /// answered, their batch committed, and the tables brought up to the
    /// journal's end (or as far as they can be written; the journal holds
    /// the rest). Blocks until the set's threads are done: call it off the
    /// async runtime, then let the set's lease go. A set whose writer was
    /// fenced is given up the same way (its writer has stopped already).
    pub fn give_up(&self, set: SetId) {
        let Some(slot) = self.slot(set) else { return };
        let Some(held) = slot.held.write().expect("slot lock").take() else { return };
        self.inner.postman.hold(set, false);
        held.tell_to_stop(self.inner.clock.monotonic());
        held.join();
    }

    fn slot(&self, set: SetId) -> Option<&Slot> {
        self.inner.slots.get(set.index())
    }

    fn held(&self, set: SetId) -> Option<Arc<Held>> {
        self.slot(set)?.held.read().expect("slot lock").clone()
    }

    fn every_held(&self) -> impl Iterator<Item = (SetId, Arc<Held>)> + '_ {
        (0..self.sets()).filter_map(|set| self.held(SetId(set)).map(|held| (SetId(set), held)))
    }

    /// Whether this node serves `set` now.
    pub fn holds(&self, set: SetId) -> bool {
        self.held(set).is_some()
    }

    /// `set`'s recent events (`events.rs`): growing while this node holds
    /// the set.
    pub fn events(&self, set: SetId) -> Option<Arc<SetEvents>> {
        self.inner.events.get(set.index()).cloned()
    }

    /// The sets this node serves now.
    pub fn held_sets(&self) -> Vec<SetId> {
        self.every_held().map(|(set, _)| set).collect()
    }

    /// Sets held here whose writer was fenced (another node took them
    /// over): to be given up.
    pub fn fenced_sets(&self) -> Vec<SetId> {
        self.every_held().filter(|(_, held)| held.progress.fenced()).map(|(set, _)| set).collect()
    }

    /// Batches refused by fencing since start: writes a node made after it
    /// had lost its set, refused by the journal and answered as errors.
    pub fn fenced_writes(&self) -> u64 {
        self.inner.fenced_writes.load(Ordering::Relaxed)
    }

    /// Mail from another node for `set`; false if the set is not held here
    /// (or its mailbox is full): the sending set resends it.
    pub fn deliver(&self, set: SetId, mail: Mail) -> bool {
        self.slot(set).is_some() && self.inner.postman.deliver(set, mail)
    }

    pub fn sets(&self) -> u16 {
        self.inner.slots.len() as u16
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn now(&self) -> Millis {
        self.inner.clock.now()
    }

    /// Whether `shutdown` has begun.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::Relaxed)
    }

    /// The sets held here that do not serve writes now (a failed append
    /// they have not yet recovered from, or tables that refused a record).
    pub fn unavailable_sets(&self) -> Vec<SetId> {
        self.every_held().filter(|(_, held)| !held.progress.is_healthy()).map(|(set, _)| set).collect()
    }

    /// Batches acknowledged but not yet in the tables, over every set held
    /// here: the tables' lag (what a read may wait for, and what a restart
    /// replays).
    pub fn tables_lag(&self) -> u64 {
        self.every_held().map(|(_, held)| held.progress.acked().saturating_sub(held.progress.materialized())).sum()
    }

    /// Why a set stopped taking writes for good, if one did.
    pub fn halted(&self) -> Vec<String> {
        self.every_held().filter_map(|(_, held)| held.progress.halted()).collect()
    }

    fn set_of(&self, user: &UserId) -> SetId {
        SetId::of_user(user, self.sets())
    }

    /// Queues a command and waits for its answer (after its batch is durable).
    ///
    /// Overload is refused in two places. At the door: while the set's last
    /// batch began with a command that had waited over half of
    /// `queue_wait_max` and left a queue behind it, new commands are refused
    /// at once, so a client is told in microseconds and its connection is
    /// free for the next request. At the writer (`Writer::admit`): while a
    /// queue stands, a command that waited longer than `queue_wait_max` is
    /// refused unapplied.
    ///
    /// A set held by another node is refused with `NotHere` before anything
    /// is queued, so the node can forward the request.
    async fn call<T>(&self, set: SetId, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, EngineError> {
        let held = match self.held(set) {
            Some(held) if !held.progress.fenced() => held,
            _ if self.is_stopped() => return Err(EngineError::ShuttingDown),
            _ => return Err(EngineError::NotHere(set)),
        };
        if held.queue_delay_us.load(Ordering::Relaxed) > self.inner.door_closes_at_us {
            return Err(EngineError::Overloaded);
        }
        let (reply, answer) = oneshot::channel();
        let queued = Queued { at: self.inner.clock.monotonic(), command: command(reply) };
        match held.queue.try_send(queued) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(EngineError::Overloaded),
            // Never queued: a fenced writer has stopped, the set moves.
            Err(TrySendError::Disconnected(_)) if held.progress.fenced() => return Err(EngineError::NotHere(set)),
            Err(TrySendError::Disconnected(_)) => return Err(EngineError::ShuttingDown),
        }
        drop(held);
        // A writer that stopped (shutdown, or a crash on a broken invariant)
        // drops the reply: the outcome is unknown to the client, never applied twice.
        let answer = answer.await.unwrap_or(Err(EngineError::ShuttingDown));
        if matches!(answer, Err(EngineError::Fenced)) {
            self.inner.fenced_writes.fetch_add(1, Ordering::Relaxed);
        }
        answer
    }

    pub async fn deposit(
        &self,
        user: UserId,
        amount: Amount,
        key: Option<String>,
    ) -> Result<DepositOutcome, EngineError> {
        let set = self.set_of(&user);
        self.call(set, |reply| Command::Deposit { user, amount, key, reply }).await
    }

    pub async fn send(
        &self,
        sender: UserId,
        spec: PacketSpec,
        key: Option<String>,
    ) -> Result<SendOutcome, EngineError> {
        let set = self.set_of(&sender);
        self.call(set, |reply| Command::Send { sender, spec: Box::new(spec), key, reply }).await
    }

    pub async fn open(&self, id: PacketId, user: UserId, password: Option<String>) -> Result<OpenOutcome, EngineError> {
        if id.set.0 >= self.sets() {
            return Ok(OpenOutcome::NotFound);
        }
        self.call(id.set, |reply| Command::Open { id, user, password, reply }).await
    }

    pub async fn grab(&self, id: PacketId, user: UserId) -> Result<GrabOutcome, EngineError> {
        if id.set.0 >= self.sets() {
            return Ok(GrabOutcome::NotFound);
        }
        self.call(id.set, |reply| Command::Grab { id, user, reply }).await
    }

    /// The frozen accounts of `set`, a set another node holds, as the shared
    /// store keeps them (a node of several's keeper refreshes them): opens
    /// here by those users are refused as well. Ignored for a set held
    /// here, whose writer keeps its own.
    pub fn frozen_elsewhere(&self, set: SetId, users: &std::collections::HashSet<UserId>) {
        if !self.holds(set) {
            self.inner.frozen.load(set, self.sets(), users);
        }
    }

    /// Takes back a deposit by its reference (`deposit:<user>:…`), while
    /// its day is hot and the balance holds it.
    pub async fn reverse_deposit(&self, reference: String) -> Result<ReverseOutcome, EngineError> {
        let Some(user) = hongbao_domain::ledger::deposit_user(&reference) else {
            return Ok(ReverseOutcome::NotFound);
        };
        let set = self.set_of(&user);
        self.call(set, |reply| Command::Reverse { user, reference, reply }).await
    }

    /// Freezes (`true`) or unfreezes `user`'s account; answers whether that
    /// changed it.
    pub async fn set_frozen(&self, user: UserId, frozen: bool) -> Result<bool, EngineError> {
        let set = self.set_of(&user);
        self.call(set, |reply| Command::Freeze { user, frozen, reply }).await
    }

    /// Asks for a withdrawal of `amount` from `user`'s balance.
    pub async fn withdraw(
        &self,
        user: UserId,
        amount: Amount,
        key: Option<String>,
    ) -> Result<WithdrawOutcome, EngineError> {
        let set = self.set_of(&user);
        self.call(set, |reply| Command::Withdraw { user, amount, key, reply }).await
    }

    /// Settles a withdrawal (an admin's answer from the bank).
    pub async fn settle_withdrawal(&self, id: WithdrawalId, how: Settlement) -> Result<SettleOutcome, EngineError> {
        if id.set().0 >= self.sets() {
            return Ok(SettleOutcome::NotFound);
        }
        self.call(id.set(), |reply| Command::Settle { id, how, reply }).await
    }

    /// A withdrawal, after every acknowledged write.
    pub async fn withdrawal(&self, id: WithdrawalId) -> Result<Option<Withdrawal>, EngineError> {
        let set = id.set().index();
        if set >= usize::from(self.sets()) {
            return Ok(None);
        }
        self.read([set], move |readers| readers[set].withdrawal(&id)).await
    }

    /// Runs a blocking read on the runtime's blocking pool, once the tables
    /// of `sets` hold every batch acknowledged before the read began: a
    /// client that was answered reads what it was answered. For a set held
    /// here that is its writer's last acknowledged position; for a set held
    /// by another node, the journal's end in the shared store.
    async fn read<T: Send + 'static>(
        &self,
        sets: impl IntoIterator<Item = usize>,
        read: impl FnOnce(&[Arc<dyn StoreReader>]) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, EngineError> {
        let mut elsewhere = Vec::new();
        let mut here = Vec::new();
        for set in sets {
            match self.held(SetId(set as u16)) {
                Some(held) => here.push((held.progress.acked(), held)),
                None => elsewhere.push(self.inner.readers[set].clone()),
            }
        }
        for (acked, held) in here {
            let progress = &held.progress;
            // A halted set's tables stop short of what it acknowledged.
            if progress.halted().is_some() && progress.materialized() < acked {
                return Err(EngineError::Unavailable);
            }
            if !progress.materialized_past(acked, READ_WAIT_MAX).await {
                return Err(EngineError::Unavailable);
            }
        }
        let readers = self.inner.readers.clone();
        let read = move || {
            wait_for_shared_tables(&elsewhere)?;
            read(&readers).map_err(|e| EngineError::Storage(e.message))
        };
        match tokio::task::spawn_blocking(read).await {
            Ok(result) => result,
            Err(join) => Err(EngineError::Storage(format!("read task failed: {join}"))),
        }
    }

    /// The balance of `user` after every acknowledged write (zero for a
    /// user never seen).
    pub async fn balance(&self, user: UserId) -> Result<Amount, EngineError> {
        let set = self.set_of(&user).index();
        self.read([set], move |readers| readers[set].balance(&user)).await
    }

    pub async fn packet(&self, id: PacketId) -> Result<Option<Packet>, EngineError> {
        if id.set.0 >= self.sets() {
            return Ok(None);
        }
        self.read([id.set.index()], move |readers| readers[id.set.index()].packet(&id)).await
    }

    /// `user`'s bill: their ledger entries, newest first (by time, then
    /// reference). The cursor is `<at>:<reference>` of the last item.
    pub async fn ledger(&self, user: UserId, query: LedgerQuery) -> Result<Page<LedgerEntry>, EngineError> {
        let set = self.set_of(&user).index();
        let limit = query.limit;
        let items = self.read([set], move |readers| readers[set].ledger(&user, &query)).await?;
        let next_cursor = (items.len() == limit)
            .then(|| items.last().map(|entry| ledger_cursor(entry.at, &entry.reference)))
            .flatten();
        Ok(Page { items, next_cursor })
    }

    /// `user`'s year (UTC) in red packets: sent and received (their ledger,
    /// in their set) and how often they had the best luck (their claims, in
    /// every set).
    pub async fn summary(&self, user: UserId, year: u32) -> Result<Summary, EngineError> {
        let from = civil_day_start(year * 10_000 + 101);
        let to = civil_day_start((year + 1) * 10_000 + 101);
        let set = self.set_of(&user).index();
        self.read(0..self.inner.slots.len(), move |readers| {
            let totals = readers[set].totals(&user, from, to)?;
            let mut best_luck_count = 0;
            for reader in readers.iter() {
                best_luck_count += reader.best_lucks(&user, from, to)?;
            }
            Ok(Summary { totals, best_luck_count })
        })
        .await
    }

    /// Packets sent by `user`, newest first. The cursor is the `seq` of the
    /// last packet of the previous page (packets live in the sender's set).
    pub async fn sent(&self, user: UserId, cursor: Option<u64>, limit: usize) -> Result<Page<SentItem>, EngineError> {
        let set = self.set_of(&user).index();
        let items = self.read([set], move |readers| readers[set].sent(&user, cursor, limit)).await?;
        let next_cursor =
            (items.len() == limit).then(|| items.last().map(|item| item.info.id.seq.to_string())).flatten();
        Ok(Page { items, next_cursor })
    }

    /// Shares opened by `user`, newest first, from every set (a user opens
    /// packets of any set). The cursor is `<at>.<packet id>` of the last item.
    pub async fn received(
        &self,
        user: UserId,
        cursor: Option<(Millis, PacketId)>,
        limit: usize,
    ) -> Result<Page<ReceivedItem>, EngineError> {
        let mut items = self
            .read(0..self.inner.slots.len(), move |readers| {
                let mut items = Vec::new();
                for reader in readers {
                    items.extend(reader.received(&user, cursor, limit)?);
                }
                Ok(items)
            })
            .await?;
        items.sort_by_key(|item| std::cmp::Reverse(received_order(item.at, &item.packet_id)));
        items.truncate(limit);
        let next_cursor = (items.len() == limit)
            .then(|| items.last().map(|item| format!("{}.{}", item.at.0, item.packet_id)))
            .flatten();
        Ok(Page { items, next_cursor })
    }

    /// Stops taking commands, lets every set finish what is queued and commit
    /// it, and waits for the writers, then for the tables to hold it all.
    /// Blocks: call it off the async runtime.
    pub fn shutdown(&self) {
        self.inner.stopped.store(true, Ordering::Relaxed);
        let held: Vec<(SetId, Arc<Held>)> = self.every_held().collect();
        let now = self.inner.clock.monotonic();
        // Every set is told first, so they drain and commit together.
        held.iter().for_each(|(_, held)| held.tell_to_stop(now));
        held.iter().for_each(|(_, held)| held.join());
    }
}

impl Engine {
    /// Pauses every set held here at a batch boundary (what each drained
    /// before the pause is committed and answered), for a copy of their
    /// data at one instant (`pause.rs`). Blocks until every set waits, and
    /// fails (resuming those that paused) if one does not by `deadline`; a
    /// writer goes on by itself at `deadline`. Call it off the async runtime.
    pub fn pause(&self, deadline: Instant) -> Result<Paused, PauseFailed> {
        if self.is_stopped() {
            return Err(PauseFailed("the engine is stopping".into()));
        }
        let (paused, gate) = Paused::new(deadline);
        let mut waiting = Vec::new();
        for (set, held) in self.every_held() {
            let (told, heard) = bounded(1);
            let command = Command::Pause { gate: gate.clone(), paused: told };
            let queued = Queued { at: self.inner.clock.monotonic(), command };
            if held.queue.send_deadline(queued, deadline).is_err() {
                return Err(PauseFailed(format!("set {set} took no pause (its queue stayed full, or it stopped)")));
            }
            waiting.push((set, heard));
        }
        for (set, heard) in waiting {
            if heard.recv_deadline(deadline).is_err() {
                return Err(PauseFailed(format!("set {set} did not pause in time (or stopped)")));
            }
        }
        Ok(paused)
    }

    /// Holds every writer's journal trims until the hold is dropped.
    pub fn hold_trims(&self) -> TrimHold {
        TrimHold::new(self.inner.trim_holds.clone())
    }
}

impl Held {
    /// Tells the set's writer to finish what is queued, commit and stop.
    fn tell_to_stop(&self, now: Duration) {
        self.progress.stop();
        // Waits for room: the commands ahead of it are still answered. A
        // writer that stopped (fenced) has dropped its queue: nothing waits.
        let _ = self.queue.send(Queued { at: now, command: Command::Shutdown });
    }

    /// Waits for the writer, then the materializer.
    fn join(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().expect("threads lock"));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// How often a read polls the shared store for a set held elsewhere.
const SHARED_POLL: Duration = Duration::from_millis(5);

/// Waits until the tables of each set held by another node hold its
/// journal's end as it was when the read began (at most `READ_WAIT_MAX`
/// over all of them); blocks. A read that cannot tell is refused. The
/// first reading of each set gives both its target and, most often, tables
/// already past it.
fn wait_for_shared_tables(readers: &[Arc<dyn StoreReader>]) -> Result<(), EngineError> {
    let deadline = Instant::now() + READ_WAIT_MAX;
    let positions = |reader: &Arc<dyn StoreReader>| {
        reader.shared_positions().map_err(|e| {
            tracing::warn!(failure = %e.message, "reading a set's shared positions failed");
            EngineError::Unavailable
        })
    };
    let first = readers.iter().map(positions).collect::<Result<Vec<_>, _>>()?;
    for (reader, first) in readers.iter().zip(first) {
        let mut tables = first.tables;
        while tables < first.journal {
            if Instant::now() >= deadline {
                return Err(EngineError::Unavailable);
            }
            std::thread::sleep(SHARED_POLL);
            tables = positions(reader)?.tables;
        }
    }
    Ok(())
}

/// Starts a set's thread. A panic in it is a broken invariant, and the
/// process aborts rather than serve on with a set that no longer answers:
/// the journal holds only durable batches, so a restart recovers.
fn spawn(name: String, run: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StoreError> {
    let thread = name.clone();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).is_err() {
                tracing::error!(thread, "a set's thread panicked on a broken invariant; aborting");
                std::process::abort();
            }
        })
        .map_err(|e| StoreError::new(format!("cannot start a set's thread: {e}")))
}

/// The order of the `received` list, newest first: by time, then by set and
/// sequence, which every set's reader applies the same way.
pub fn received_order(at: Millis, id: &PacketId) -> (Millis, u16, u64) {
    (at, id.set.0, id.seq)
}

/// Where a page of the `received` list ends, as one set's reader applies
/// the cursor: claims strictly before `(at, seq)` in the order of
/// `received_order`, or every claim when `open_ended`. The order is
/// `(at, set, seq)` descending across all sets, so within `set` a cursor
/// from a lower set admits claims of equal time, and one from a higher set
/// does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceivedBound {
    pub at: i64,
    pub seq: i64,
    pub open_ended: bool,
}

impl ReceivedBound {
    pub fn of(set: SetId, before: Option<(Millis, PacketId)>) -> ReceivedBound {
        let (at, seq) = match before {
            None => return ReceivedBound { at: i64::MAX, seq: i64::MAX, open_ended: true },
            Some((at, id)) if set < id.set => (at.0, i64::MAX),
            Some((at, id)) if set > id.set => (at.0, i64::MIN),
            Some((at, id)) => (at.0, id.seq.min(i64::MAX as u64) as i64),
        };
        ReceivedBound { at, seq, open_ended: false }
    }
}

/// Parses a `received` cursor: `<at>.<packet id>`.
pub fn parse_received_cursor(text: &str) -> Option<(Millis, PacketId)> {
    let (at, id) = text.split_once('.')?;
    Some((Millis(at.parse().ok()?), id.parse().ok()?))
}
