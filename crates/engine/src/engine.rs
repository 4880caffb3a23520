//! The engine handle: routes each command to the set that owns its data,
//! refuses at once when that set's queue is full, and serves reads from the
//! sets' committed state.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

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
use crate::store::{Page, ReceivedItem, SentItem, Store, StoreError, StoreReader};
use crate::writer::Writer;

/// One set's storage: the writer's side and the read side.
pub struct SetStores<S: Store> {
    pub store: S,
    pub reader: Arc<dyn StoreReader>,
}

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
    /// Each set's health (see `Writer::health`).
    healthy: Vec<Arc<AtomicBool>>,
    /// Set once `shutdown` begins: no set takes writes after it.
    stopped: AtomicBool,
    writers: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("sets", &self.inner.queues.len()).finish()
    }
}

impl Engine {
    /// Recovers every set from its store (memory, then the outbox), and
    /// starts one writer thread per set. Fails if any set cannot recover.
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
        let mut queues = Vec::new();
        let mut queue_delays_us = Vec::new();
        let mut readers = Vec::new();
        let mut healthy = Vec::new();
        let mut writers = Vec::new();
        for ((index, stores), mail) in stores.into_iter().enumerate().zip(mail_receivers) {
            let set = SetId(index as u16);
            let mut store = stores.store;
            let recovered = store.recover(clock.now()).map_err(|e| StoreError::new(format!("set {set}: {e}")))?;
            let (queue, commands) = bounded(config.queue_capacity);
            let queue_delay_us = Arc::new(AtomicU64::new(0));
            queue_delays_us.push(queue_delay_us.clone());
            let writer = Writer::new(
                set,
                sets,
                config.clone(),
                store,
                recovered,
                clock.clone(),
                entropy(set),
                commands,
                mail,
                peers.clone(),
                queue_delay_us,
            );
            healthy.push(writer.health());
            let thread = std::thread::Builder::new()
                .name(format!("hongbao-set-{index}"))
                .spawn(move || run_or_abort(writer))
                .map_err(|e| StoreError::new(format!("cannot start the writer of set {set}: {e}")))?;
            queues.push(queue);
            readers.push(stores.reader);
            writers.push(thread);
        }
        let door_closes_at_us = u64::try_from(config.queue_wait_max.as_micros() / 2).unwrap_or(u64::MAX);
        let inner = Inner {
            limits: config.limits,
            clock,
            queues,
            queue_delays_us,
            door_closes_at_us,
            readers,
            healthy,
            stopped: AtomicBool::new(false),
            writers: Mutex::new(writers),
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

    /// The sets that do not serve writes now (a failed commit they have not
    /// yet recovered from).
    pub fn unavailable_sets(&self) -> Vec<SetId> {
        let healthy = self.inner.healthy.iter().map(|flag| flag.load(Ordering::Relaxed));
        healthy.enumerate().filter(|&(_, ok)| !ok).map(|(set, _)| SetId(set as u16)).collect()
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

    /// Runs a blocking read on the runtime's blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&[Arc<dyn StoreReader>]) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, EngineError> {
        let readers = self.inner.readers.clone();
        match tokio::task::spawn_blocking(move || read(&readers)).await {
            Ok(result) => result.map_err(|e| EngineError::Storage(e.0)),
            Err(join) => Err(EngineError::Storage(format!("read task failed: {join}"))),
        }
    }

    /// The committed balance of `user` (zero for a user never seen).
    pub async fn balance(&self, user: UserId) -> Result<Amount, EngineError> {
        let set = self.set_of(&user).index();
        self.read(move |readers| readers[set].balance(&user)).await
    }

    pub async fn packet(&self, id: PacketId) -> Result<Option<Packet>, EngineError> {
        if id.set.0 >= self.sets() {
            return Ok(None);
        }
        self.read(move |readers| readers[id.set.index()].packet(&id)).await
    }

    /// Packets sent by `user`, newest first. The cursor is the `seq` of the
    /// last packet of the previous page (packets live in the sender's set).
    pub async fn sent(&self, user: UserId, cursor: Option<u64>, limit: usize) -> Result<Page<SentItem>, EngineError> {
        let set = self.set_of(&user).index();
        let items = self.read(move |readers| readers[set].sent(&user, cursor, limit)).await?;
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
            .read(move |readers| {
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
    /// it, and waits for the writers. Blocks: call it off the async runtime.
    pub fn shutdown(&self) {
        self.inner.stopped.store(true, Ordering::Relaxed);
        for queue in &self.inner.queues {
            // Waits for room: the commands ahead of it are still answered.
            let _ = queue.send(Queued { at: self.inner.clock.monotonic(), command: Command::Shutdown });
        }
        let writers = std::mem::take(&mut *self.inner.writers.lock().expect("writers lock"));
        for writer in writers {
            let _ = writer.join();
        }
    }
}

/// Runs a writer; a panic in it is a broken invariant, and the process
/// aborts rather than serve on with a set that no longer answers. Its store
/// holds only committed batches, so a restart recovers a consistent state.
fn run_or_abort<S: Store>(writer: Writer<S>) {
    let set = writer.set;
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| writer.run())).is_err() {
        tracing::error!(%set, "the writer of a set panicked on a broken invariant; aborting");
        std::process::abort();
    }
}

/// The order of the `received` list, newest first: by time, then by set and
/// sequence, which every set's reader applies the same way.
pub fn received_order(at: Millis, id: &PacketId) -> (Millis, u16, u64) {
    (at, id.set.0, id.seq)
}

/// Parses a `received` cursor: `<at>.<packet id>`.
pub fn parse_received_cursor(text: &str) -> Option<(Millis, PacketId)> {
    let (at, id) = text.split_once('.')?;
    Some((Millis(at.parse().ok()?), id.parse().ok()?))
}
