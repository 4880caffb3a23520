//! The engine handle: routes each command to the set that owns its data,
//! refuses at once when that set's queue is full, and serves reads from the
//! sets' committed state.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError, bounded};
use hongbao_domain::id::SETS_MAX;
use hongbao_domain::{
    Amount, DepositOutcome, GrabOutcome, Limits, Millis, OpenOutcome, Packet, PacketId, PacketSpec, SendOutcome, SetId,
    UserId,
};
use tokio::sync::oneshot;

use crate::clock::{Clock, Entropy};
use crate::command::{Command, Queued, Reply};
use crate::config::{EngineConfig, MAILBOX_CAPACITY};
use crate::error::EngineError;
use crate::journal::Journal;
use crate::materializer::{Materializer, catch_up};
use crate::progress::Progress;
use crate::store::{Page, ReceivedItem, SentItem, Store, StoreError, StoreReader};
use crate::writer::{Links, Writer};

/// One set's storage: its journal, two handles on its tables (the writer's,
/// to recover and prefetch; the materializer's, to write), and the readers.
pub struct SetStores<S: Store> {
    pub journal: Box<dyn Journal>,
    pub writer: S,
    pub materializer: S,
    pub reader: Arc<dyn StoreReader>,
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
    queues: Vec<Sender<Queued>>,
    /// Each set's last queue delay (see `Writer::queue_delay_us`).
    queue_delays_us: Vec<Arc<AtomicU64>>,
    /// Half of `queue_wait_max`: past this delay a set refuses at the door.
    door_closes_at_us: u64,
    readers: Vec<Arc<dyn StoreReader>>,
    /// Each set's journal and table positions, and its health.
    progress: Vec<Arc<Progress>>,
    /// Set once `shutdown` begins: no set takes writes after it.
    stopped: AtomicBool,
    /// Writers first, then materializers: joined in that order.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("sets", &self.inner.queues.len()).finish()
    }
}

impl Engine {
    /// Recovers every set (its tables brought up to its journal's end,
    /// then memory loaded from them) and starts its writer and materializer
    /// threads. Fails if any set cannot recover.
    pub fn start<S: Store>(
        config: EngineConfig,
        stores: Vec<SetStores<S>>,
        clock: Arc<dyn Clock>,
        mut entropy: impl FnMut(SetId) -> Box<dyn Entropy>,
    ) -> Result<Engine, StoreError> {
        let sets = u16::try_from(stores.len()).ok().filter(|n| (1..=SETS_MAX).contains(n));
        let sets = sets.ok_or_else(|| StoreError::new(format!("set count must be 1 to {SETS_MAX}")))?;
        let (mail_senders, mail_receivers): (Vec<_>, Vec<_>) = (0..sets).map(|_| bounded(MAILBOX_CAPACITY)).unzip();
        let peers = Arc::new(mail_senders);
        let (mut queues, mut queue_delays_us, mut readers, mut progress, mut threads) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut materializers = Vec::new();
        for ((index, stores), mail) in stores.into_iter().enumerate().zip(mail_receivers) {
            let set = SetId(index as u16);
            let started = Instant::now();
            let fail = |what: &str, e: &dyn std::fmt::Display| StoreError::new(format!("set {set}: {what}: {e}"));
            let set_progress = Arc::new(Progress::new());
            let mut materializer = Materializer::new(set, stores.materializer, set_progress.clone())
                .map_err(|e| fail("reading the tables' position", &e))?;
            let mut journal = stores.journal;
            let last = catch_up(&mut materializer, &mut *journal).map_err(|e| fail("replaying the journal", &e))?;
            set_progress.ack(last);
            let replayed = last - materializer.position().min(last);
            tracing::info!(%set, position = last, ms = started.elapsed().as_millis() as u64, replayed, "journal replayed");
            let (queue, commands) = bounded(config.queue_capacity);
            let (to_tables, from_writer) = bounded(MATERIALIZER_QUEUE);
            let queue_delay_us = Arc::new(AtomicU64::new(0));
            let links = Links {
                commands,
                mail,
                peers: peers.clone(),
                materializer: to_tables,
                progress: set_progress.clone(),
                queue_delay_us: queue_delay_us.clone(),
            };
            let writer =
                Writer::new(set, sets, config.clone(), stores.writer, journal, clock.clone(), entropy(set), links)
                    .map_err(|e| fail("loading memory", &e))?;
            threads.push(spawn(format!("hongbao-set-{index}"), move || writer.run())?);
            materializers.push(spawn(format!("hongbao-tables-{index}"), move || materializer.run(from_writer))?);
            queues.push(queue);
            queue_delays_us.push(queue_delay_us);
            readers.push(stores.reader);
            progress.push(set_progress);
        }
        threads.extend(materializers);
        let door_closes_at_us = u64::try_from(config.queue_wait_max.as_micros() / 2).unwrap_or(u64::MAX);
        let inner = Inner {
            limits: config.limits,
            clock,
            queues,
            queue_delays_us,
            door_closes_at_us,
            readers,
            progress,
            stopped: AtomicBool::new(false),
            threads: Mutex::new(threads),
        };
        Ok(Engine { inner: Arc::new(inner) })
    }

    pub fn sets(&self) -> u16 {
        self.inner.queues.len() as u16
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

    /// The sets that do not serve writes now (a failed append they have not
    /// yet recovered from, or tables that refused a record).
    pub fn unavailable_sets(&self) -> Vec<SetId> {
        let healthy = self.inner.progress.iter().map(|progress| progress.is_healthy());
        healthy.enumerate().filter(|&(_, ok)| !ok).map(|(set, _)| SetId(set as u16)).collect()
    }

    /// Batches acknowledged but not yet in the tables, over every set: the
    /// tables' lag (what a read may wait for, and what a restart replays).
    pub fn tables_lag(&self) -> u64 {
        self.inner.progress.iter().map(|progress| progress.acked().saturating_sub(progress.materialized())).sum()
    }

    /// Why a set stopped taking writes for good, if one did.
    pub fn halted(&self) -> Vec<String> {
        self.inner.progress.iter().filter_map(|progress| progress.halted()).collect()
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
    async fn call<T>(&self, set: SetId, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, EngineError> {
        if self.inner.queue_delays_us[set.index()].load(Ordering::Relaxed) > self.inner.door_closes_at_us {
            return Err(EngineError::Overloaded);
        }
        let (reply, answer) = oneshot::channel();
        let queued = Queued { at: self.inner.clock.monotonic(), command: command(reply) };
        match self.inner.queues[set.index()].try_send(queued) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(EngineError::Overloaded),
            Err(TrySendError::Disconnected(_)) => return Err(EngineError::ShuttingDown),
        }
        // A writer that stopped (shutdown, or a crash on a broken invariant)
        // drops the reply: the outcome is unknown to the client, never applied twice.
        answer.await.unwrap_or(Err(EngineError::ShuttingDown))
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

    /// Runs a blocking read on the runtime's blocking pool, once the tables
    /// of `sets` hold every batch acknowledged before the read began: a
    /// client that was answered reads what it was answered.
    async fn read<T: Send + 'static>(
        &self,
        sets: impl IntoIterator<Item = usize>,
        read: impl FnOnce(&[Arc<dyn StoreReader>]) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, EngineError> {
        let targets: Vec<(usize, u64)> = sets.into_iter().map(|set| (set, self.inner.progress[set].acked())).collect();
        for (set, acked) in targets {
            let progress = &self.inner.progress[set];
            // A halted set's tables stop short of what it acknowledged.
            if progress.halted().is_some() && progress.materialized() < acked {
                return Err(EngineError::Unavailable);
            }
            if !progress.materialized_past(acked, READ_WAIT_MAX).await {
                return Err(EngineError::Unavailable);
            }
        }
        let readers = self.inner.readers.clone();
        match tokio::task::spawn_blocking(move || read(&readers)).await {
            Ok(result) => result.map_err(|e| EngineError::Storage(e.message)),
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
            .read(0..self.inner.readers.len(), move |readers| {
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
        self.inner.progress.iter().for_each(|progress| progress.stop());
        for queue in &self.inner.queues {
            // Waits for room: the commands ahead of it are still answered.
            let _ = queue.send(Queued { at: self.inner.clock.monotonic(), command: Command::Shutdown });
        }
        let threads = std::mem::take(&mut *self.inner.threads.lock().expect("threads lock"));
        for thread in threads {
            let _ = thread.join();
        }
    }
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
