//! One node of several serving one PostgreSQL data set: the lease keeper.
//! PostgreSQL is the coordinator (`hongbao_store_pg::Leases`); there is no
//! consensus of our own.
//!
//! Every tick (an eighth of the lease), on a thread of its own that
//! nothing else waits on (a set's recovery can take longer than a lease),
//! the renewer renews the node's heartbeat and leases; a set it held and
//! did not renew (expired while the node was paused or cut off, or taken),
//! and a set whose writer was fenced, is given up at once. Every tick too,
//! the keeper, on its own thread:
//! 1. (the renewer's work, above);
//! 2. reads the cluster and decides which sets belong where: each set goes
//!    to the live node (heartbeat younger than a lease) that ranks first for
//!    it by rendezvous hashing, so a node that joins or leaves moves only
//!    its share of the sets;
//! 3. hands over one set that belongs to another node, gracefully: drained
//!    (its queue answered and committed, its tables written), then its
//!    lease released, so the other node takes it at its next tick;
//! 4. takes the free or expired sets that belong to it: the lease first (a
//!    new epoch), then the set's recovery (`Engine::take`), renewing the
//!    leases between takes so a long recovery does not let the others lapse;
//! 5. publishes who holds what (`Directory`) for forwarding and mail.
//!
//! A dead node's sets are taken once their leases run out: the lease length
//! bounds the takeover (plus a tick, plus the recovery). A shorter lease
//! takes over sooner but needs a renewal every tick to reach the database
//! in time: a database stall longer than the lease costs every set of the
//! node (and a node whose renewals fail for a lease gives its sets up
//! before anyone can take them). Two seconds, renewed every 250 ms, keeps
//! takeovers under 3 s and survives a database hiccup of a second or so.
//!
//! Safety does not depend on any of this timing: a node that lost a set
//! and does not know it yet is refused by the journal's fence (the epoch).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hongbao_domain::{SetId, UserId};
use hongbao_engine::{Engine, Entropy, OsEntropy};
use hongbao_server::cluster::{Directory, Holder};
use hongbao_store_pg::{ClusterStatus, Epoch, Leases, SetMap};
use serde_json::{Value, json};

/// How long a lease runs unrenewed by default (`--lease-ms`).
pub const LEASE_DEFAULT: Duration = Duration::from_secs(2);

/// Ticks per lease: a dead node's sets are seen free at most a lease and a
/// tick after its last renewal.
const TICKS_PER_LEASE: u32 = 8;

/// The shortest time between two ticks, however often forwards ask.
const REFRESH_MIN: Duration = Duration::from_millis(100);

/// How a node takes part in a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterOptions {
    /// Names the node in the database and to its peers (`--node-id`).
    pub node_id: String,
    /// `host:port` where the other nodes reach this one (`--advertise`).
    pub advertise: String,
    pub lease: Duration,
}

/// A node id: 1 to 64 characters from A-Z a-z 0-9 _ . - (it goes into
/// headers, tokens and logs).
pub fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Who holds what, as the keeper last read it; what forwarding asks.
#[derive(Debug)]
pub struct Published {
    node_id: String,
    lease: Duration,
    holders: RwLock<Vec<Holder>>,
    /// The cluster as last read, and when.
    status: RwLock<Option<(ClusterStatus, Instant)>>,
    /// Wakes the keeper for a tick now (a forward found a set moved).
    wake: Mutex<Sender<()>>,
}

impl Directory for Published {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn holder(&self, set: SetId) -> Holder {
        self.holders.read().expect("holders lock").get(set.index()).cloned().unwrap_or(Holder::Unknown)
    }

    fn refresh(&self) {
        let _ = self.wake.lock().expect("wake lock").send(());
    }

    fn status(&self) -> Result<Value, String> {
        let status = self.status.read().expect("status lock");
        let Some((status, read_at)) = status.as_ref() else {
            return Err("the cluster has not been read yet".into());
        };
        let since = read_at.elapsed().as_millis() as i64;
        let lease_ms = self.lease.as_millis() as i64;
        let live: HashSet<&str> = status.live_nodes(self.lease).iter().map(|node| node.node.as_str()).collect();
        let mut held: HashMap<&str, Vec<u16>> = HashMap::new();
        for lease in &status.leases {
            if let Some(owner) = lease.owner_after(since) {
                held.entry(owner).or_default().push(lease.set.0);
            }
        }
        let nodes: Vec<Value> = status
            .nodes
            .iter()
            .map(|node| {
                json!({
                    "node_id": node.node,
                    "advertise": node.advertise,
                    "live": live.contains(node.node.as_str()),
                    "heartbeat_age_ms": node.heartbeat_age_ms.saturating_add(since),
                    "started_at": node.started_at_ms,
                    "sets": held.get(node.node.as_str()).cloned().unwrap_or_default(),
                })
            })
            .collect();
        let sets: Vec<Value> = status
            .leases
            .iter()
            .map(|lease| {
                let expires_in_ms = lease.expires_in_ms.saturating_sub(since);
                let owner = lease.owner_after(since);
                let current = owner.is_some();
                json!({
                    "set": lease.set.0,
                    "owner": owner,
                    "epoch": lease.epoch,
                    // Since the lease was last renewed (or taken).
                    "lease_age_ms": current.then(|| lease_ms.saturating_sub(expires_in_ms).max(0)),
                    "expires_in_ms": current.then_some(expires_in_ms),
                    "held_for_ms": lease.held_for_ms.filter(|_| current).map(|held| held.saturating_add(since)),
                })
            })
            .collect();
        Ok(json!({ "node_id": self.node_id, "lease_ms": lease_ms, "nodes": nodes, "sets": sets }))
    }
}

/// The keeper's and the renewer's threads, and how to stop them.
pub struct Keeper {
    stop: Sender<()>,
    /// Answers the keeper's state: the sets still held, to be handed over.
    thread: Option<JoinHandle<KeeperState>>,
    renewer: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    pub published: Arc<Published>,
}

/// What the keeper and the renewer share.
struct Shared {
    leases: Leases,
    engine: Engine,
    options: ClusterOptions,
    /// Sets held here and their epochs.
    held: Mutex<HashMap<SetId, Epoch>>,
    published: Arc<Published>,
    sets: u16,
}

/// What the keeper works with; returned to `leave` at stop.
struct KeeperState {
    shared: Arc<Shared>,
    map: SetMap,
}
impl Keeper {
    /// Joins the cluster (registers the node) without taking any set yet.
    pub fn join(map: &SetMap, sets: u16, options: &ClusterOptions) -> Result<(Leases, Arc<Published>, Receiver<()>)> {
        let leases = Leases::join(map, sets, &options.node_id, &options.advertise, options.lease)
            .with_context(|| format!("joining the cluster as {}", options.node_id))?;
        let (wake, woken) = channel();
        let published = Arc::new(Published {
            node_id: options.node_id.clone(),
            lease: options.lease,
            holders: RwLock::new(vec![Holder::Unknown; usize::from(sets)]),
            status: RwLock::new(None),
            wake: Mutex::new(wake),
        });
        Ok((leases, published, woken))
    }

    /// Starts the keeper's and the renewer's threads: the keeper's first
    /// tick takes this node's share.
    pub fn start(
        leases: Leases,
        published: Arc<Published>,
        woken: Receiver<()>,
        engine: Engine,
        map: SetMap,
        sets: u16,
        options: ClusterOptions,
    ) -> Result<Keeper> {
        let (stop, stopped) = channel();
        let tick = options.lease / TICKS_PER_LEASE;
        let shared = Arc::new(Shared {
            leases,
            engine,
            options,
            held: Mutex::new(HashMap::new()),
            published: published.clone(),
            sets,
        });
        let renewing = Arc::new(AtomicBool::new(true));
        let renewer = std::thread::Builder::new()
            .name("hongbao-renewer".into())
            .spawn({
                let (shared, renewing) = (shared.clone(), renewing.clone());
                move || {
                    let mut renewed_at = Instant::now();
                    while renewing.load(Ordering::Relaxed) {
                        let began = Instant::now();
                        shared.renew(&mut renewed_at);
                        std::thread::sleep(tick.saturating_sub(began.elapsed()));
                    }
                }
            })
            .context("starting the lease renewer")?;
        let mut state = KeeperState { shared, map };
        let thread = std::thread::Builder::new()
            .name("hongbao-leases".into())
            .spawn(move || {
                loop {
                    if stopped.try_recv().is_ok() {
                        return state;
                    }
                    let began = Instant::now();
                    state.tick();
                    // The next tick, or sooner when a forward asks (but
                    // at most every `REFRESH_MIN`), or a stop.
                    if woken.recv_timeout(tick.saturating_sub(began.elapsed())).is_ok() {
                        while woken.try_recv().is_ok() {}
                        std::thread::sleep(REFRESH_MIN.saturating_sub(began.elapsed()));
                    }
                }
            })
            .context("starting the lease keeper")?;
        Ok(Keeper { stop, thread: Some(thread), renewer: Some((renewing, renewer)), published })
    }

    /// Leaves the cluster gracefully: every set held here is drained and
    /// its lease released (another node takes it at its next tick), then
    /// the node's row is removed. Blocks: call it off the async runtime.
    pub fn leave(mut self) -> Result<()> {
        let _ = self.stop.send(());
        self.published.refresh();
        let Some(thread) = self.thread.take() else { return Ok(()) };
        let state = thread.join().map_err(|_| anyhow::anyhow!("the lease keeper panicked"))?;
        // Renewals go on while the sets drain, so none lapses meanwhile.
        let shared = &state.shared;
        let held: Vec<(SetId, Epoch)> = shared.held.lock().expect("held lock").drain().collect();
        for (set, epoch) in held {
            shared.engine.give_up(set);
            if let Err(failure) = shared.leases.release(set, epoch) {
                tracing::warn!(%set, %failure, "releasing a lease at stop failed; it runs out by itself");
            }
        }
        if let Some((renewing, renewer)) = self.renewer.take() {
            renewing.store(false, Ordering::Relaxed);
            let _ = renewer.join();
        }
        shared.publish();
        shared.leases.leave().context("leaving the cluster")?;
        Ok(())
    }
}

/// The node that ranks first for `set` among `nodes` (rendezvous hashing).
fn rank_first<'a>(set: SetId, nodes: &[&'a str]) -> Option<&'a str> {
    nodes.iter().copied().max_by_key(|node| (rendezvous(node, set), *node))
}

/// FNV-1a over the node id and the set, then a 64-bit finalizer (so
/// neighbouring sets spread): fixed forever, since every node must compute
/// the same answer.
fn rendezvous(node: &str, set: SetId) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.bytes().chain(set.0.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

impl Shared {
    /// Learns the freezes kept by the sets other nodes hold, so that an
    /// open here by a frozen user is refused whichever node holds the
    /// user's set (within a tick of the freeze's answer).
    fn refresh_frozen(&self) {
        let frozen = match self.leases.frozen_accounts() {
            Ok(frozen) => frozen,
            Err(failure) => {
                return tracing::warn!(%failure, "reading the frozen accounts failed; trying again next tick");
            }
        };
        let mut by_set: Vec<HashSet<UserId>> = vec![HashSet::new(); usize::from(self.sets)];
        for (name, set) in frozen {
            if let (Ok(user), Some(users)) = (UserId::parse(&name), by_set.get_mut(set.index())) {
                users.insert(user);
            }
        }
        for (set, users) in by_set.iter().enumerate() {
            self.engine.frozen_elsewhere(SetId(set as u16), users);
        }
    }

    fn me(&self) -> &str {
        &self.options.node_id
    }

    fn held(&self) -> HashMap<SetId, Epoch> {
        self.held.lock().expect("held lock").clone()
    }

    /// Renews the heartbeat and the leases; gives up the sets held when
    /// renewal began that it did not renew at their epoch (a set taken
    /// meanwhile is not judged by a renewal that began before it).
    fn renew(&self, renewed_at: &mut Instant) {
        let before = self.held();
        let lost: Vec<SetId> = match self.leases.renew() {
            Ok(renewed) => {
                *renewed_at = Instant::now();
                let renewed: HashMap<SetId, Epoch> = renewed.into_iter().collect();
                let fenced = self.engine.fenced_sets();
                let stale = |(set, epoch): (&SetId, &Epoch)| renewed.get(set) != Some(epoch) || fenced.contains(set);
                before.iter().filter(|held| stale(*held)).map(|(set, _)| *set).collect()
            }
            Err(failure) => {
                tracing::warn!(%failure, "renewing the leases failed");
                // Past a lease without a renewal, the leases may be taken:
                // stop writing (the fence would refuse it anyway).
                match renewed_at.elapsed() >= self.options.lease && !before.is_empty() {
                    true => {
                        tracing::warn!("no renewal for a whole lease; giving every set up");
                        before.keys().copied().collect()
                    }
                    false => Vec::new(),
                }
            }
        };
        for set in lost {
            let removed = {
                let mut held = self.held.lock().expect("held lock");
                let same = held.get(&set) == before.get(&set);
                same.then(|| held.remove(&set)).flatten()
            };
            if removed.is_some() {
                tracing::warn!(%set, "the set's lease was lost; giving it up");
                self.engine.give_up(set);
                self.publish();
            }
        }
    }

    /// Who holds what: this node's sets, and the others' unexpired leases
    /// of live nodes, as last read.
    fn publish(&self) {
        let status = self.published.status.read().expect("status lock");
        let mut holders = vec![Holder::Unknown; usize::from(self.sets)];
        if let Some((status, read_at)) = status.as_ref() {
            let since = read_at.elapsed().as_millis() as i64;
            let live = status.live_nodes(self.options.lease);
            for lease in &status.leases {
                let Some(owner) = lease.owner_after(since) else { continue };
                let Some(node) = live.iter().find(|node| node.node == owner) else { continue };
                if owner != self.options.node_id
                    && let Some(holder) = holders.get_mut(lease.set.index())
                {
                    *holder = Holder::Node(node.advertise.clone());
                }
            }
        }
        for set in self.held.lock().expect("held lock").keys() {
            holders[set.index()] = Holder::Here;
        }
        *self.published.holders.write().expect("holders lock") = holders;
    }
}

impl KeeperState {
    fn tick(&mut self) {
        let shared = self.shared.clone();
        let status = match shared.leases.status() {
            Ok(status) => status,
            Err(failure) => {
                tracing::warn!(%failure, "reading the cluster failed; trying again next tick");
                return;
            }
        };
        let read_at = Instant::now();
        *shared.published.status.write().expect("status lock") = Some((status.clone(), read_at));
        shared.publish();
        shared.refresh_frozen();
        let lease_ms = shared.options.lease.as_millis() as i64;
        let me = shared.me().to_owned();
        let mut live: Vec<&str> =
            status.live_nodes(shared.options.lease).iter().map(|node| node.node.as_str()).collect();
        if !live.contains(&me.as_str()) {
            live.push(&me);
        }
        // A node counts for handing sets over once it has been live for a
        // lease: a node that flaps does not pull sets back and forth.
        let settled: Vec<&str> = status
            .nodes
            .iter()
            .filter(|node| live.contains(&node.node.as_str()))
            .filter(|node| node.node == me || node_age_ms(node.started_at_ms) >= lease_ms)
            .map(|node| node.node.as_str())
            .collect();
        let held = shared.held();
        // Hand over one set that belongs to a settled node.
        let leaving = held
            .keys()
            .copied()
            .find(|set| rank_first(*set, &live).is_some_and(|owner| owner != me && settled.contains(&owner)));
        let free: Vec<SetId> = status
            .leases
            .iter()
            // Its own unexpired leases too: left by this node's previous
            // life (a crash, a restart), taken back at once at a new epoch.
            .filter(|lease| lease.owner_after(0).is_none_or(|owner| owner == me))
            .map(|lease| lease.set)
            .filter(|set| rank_first(*set, &live) == Some(me.as_str()) && !held.contains_key(set))
            .collect();
        if let Some(set) = leaving {
            self.hand_over(set);
        }
        for set in free {
            self.take(set);
        }
        shared.publish();
    }

    fn take(&mut self, set: SetId) {
        let shared = &self.shared;
        let epoch = match shared.leases.acquire(set) {
            Ok(Some(epoch)) => epoch,
            Ok(None) => return,
            Err(failure) => {
                tracing::warn!(%set, %failure, "taking the set's lease failed");
                return;
            }
        };
        let started = Instant::now();
        let entropy: Box<dyn Entropy> = Box::new(OsEntropy);
        let opened = hongbao_store_pg::open_leased_set(&self.map, shared.sets, set, epoch)
            .and_then(|stores| shared.engine.take(set, stores, entropy));
        match opened {
            Ok(()) => {
                shared.held.lock().expect("held lock").insert(set, epoch);
                shared.publish();
                tracing::info!(%set, epoch, ms = started.elapsed().as_millis() as u64, "set taken");
            }
            Err(failure) => {
                tracing::error!(%set, epoch, %failure, "taking the set failed; releasing its lease");
                let _ = shared.leases.release(set, epoch);
            }
        }
    }

    fn hand_over(&mut self, set: SetId) {
        let shared = &self.shared;
        let Some(epoch) = shared.held.lock().expect("held lock").remove(&set) else { return };
        let started = Instant::now();
        shared.engine.give_up(set);
        shared.publish();
        match shared.leases.release(set, epoch) {
            Ok(_) => tracing::info!(%set, epoch, ms = started.elapsed().as_millis() as u64, "set handed over"),
            Err(failure) => tracing::warn!(%set, %failure, "releasing the set's lease failed; it runs out by itself"),
        }
    }
}

/// How long ago a node started, by its database timestamp against this
/// node's clock (only compared with a lease: skew of a second is harmless).
fn node_age_ms(started_at_ms: i64) -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    now - started_at_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_moves_only_the_sets_of_the_node_that_left() {
        let three = ["a", "b", "c"];
        let two = ["a", "b"];
        for set in (0..64).map(SetId) {
            let before = rank_first(set, &three).unwrap();
            let after = rank_first(set, &two).unwrap();
            if before != "c" {
                assert_eq!(before, after, "set {set} moved though its node stayed");
            }
        }
        let shares: Vec<usize> = three
            .iter()
            .map(|node| (0..64).filter(|set| rank_first(SetId(*set), &three) == Some(node)).count())
            .collect();
        assert!(shares.iter().all(|share| *share >= 10), "64 sets spread over three nodes: {shares:?}");
    }

    #[test]
    fn node_ids_are_short_and_plain() {
        assert!(valid_node_id("node-1.eu_west"));
        assert!(!valid_node_id(""));
        assert!(!valid_node_id("a b"));
        assert!(!valid_node_id(&"n".repeat(65)));
    }
}
