//! `cluster-pg` (run only when named): what several nodes cost and give,
//! on PostgreSQL. Three runs of `open-http`'s workload:
//! - `open-http-cluster-1`: one node in cluster mode (leases, fencing, no
//!   forwarding: it holds every set);
//! - `open-http-cluster-3`: three nodes in this process, each client's
//!   connection on one of them, so two opens in three are forwarded to the
//!   set's holder (what a load balancer that ignores the packet id does);
//! - `open-http-cluster-3-direct`: the same three nodes, each open sent to
//!   its set's holder (what the documented hash routing does).
//!
//! On two cores shared by the nodes, PostgreSQL and the load, more nodes
//! cannot add capacity: the runs measure the overhead of the cluster and of
//! forwarding, not scale. The cost of one forward is
//! `(1/forwarded − 1/direct) / (2/3)` seconds of the machine per forwarded
//! request, from the two three-node runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hongbao_domain::{SetId, UserId};
use hongbao_node::cluster::ClusterOptions;
use hongbao_node::{Running, ServeOptions, StoreChoice};
use hongbao_server::Auth;
use hongbao_server::rate_limit::{Rate, Route};
use hongbao_store_pg::SetMap;
use hongbao_store_pg::testing::ScratchDatabase;

use crate::client::Connection;
use crate::hongbao::{Ack, AuditResult, Plan, audit_stopped, bench_config, send_one};

/// How long the nodes are given to share the sets out.
const SETTLE_BOUND: Duration = Duration::from_secs(30);

/// Nodes of one cluster in this process, on a fresh database.
pub struct Nodes {
    pub nodes: Vec<Running>,
    pub auth: Arc<Auth>,
    map: SetMap,
    _dirs: tempfile::TempDir,
    _database: ScratchDatabase,
}

impl Nodes {
    pub async fn start(count: usize, sets: Option<u16>, pg: &str) -> Result<Nodes> {
        let dirs = tempfile::tempdir().context("making the nodes' directories")?;
        let server = pg.to_owned();
        let database = tokio::task::spawn_blocking(move || ScratchDatabase::create(&server, "hongbao_cluster"))
            .await?
            .context("making the run's PostgreSQL database")?;
        let map = SetMap::single(database.url());
        let mut nodes = Vec::with_capacity(count);
        for index in 0..count {
            let data = dirs.path().join(format!("node-{index}"));
            if index > 0 {
                // The nodes of a cluster share their keys.
                std::fs::create_dir_all(&data)?;
                let first = dirs.path().join("node-0").join(hongbao_node::data_dir::KEYS_FILE);
                std::fs::copy(first, data.join(hongbao_node::data_dir::KEYS_FILE))?;
            }
            let addr = free_port()?;
            let mut options = ServeOptions::new(data, addr);
            options.store = StoreChoice::Postgres(map.clone());
            options.engine = bench_config();
            let bench_rate = Rate { per_s: 1_000_000.0, burst: 1_000_000.0 };
            for route in Route::ALL {
                options.server.rates.set(route, bench_rate);
            }
            options.server.user_writes_in_flight_max = options.server.writes_in_flight_max;
            options.sets = sets;
            options.cluster = Some(ClusterOptions {
                node_id: format!("bench-{index}"),
                advertise: addr.to_string(),
                lease: hongbao_node::cluster::LEASE_DEFAULT,
            });
            nodes.push(hongbao_node::start(options).await?);
        }
        let auth = Arc::new(hongbao_node::auth(&nodes[0].data.path)?);
        let nodes = Nodes { nodes, auth, map, _dirs: dirs, _database: database };
        nodes.settle().await?;
        Ok(nodes)
    }

    /// Waits until every set is held, by the node it belongs to (every
    /// node holds some), and the holdings stay put for two leases.
    async fn settle(&self) -> Result<()> {
        let sets = self.nodes[0].engine.sets();
        let began = Instant::now();
        let mut last = Vec::new();
        let mut stable_since = Instant::now();
        loop {
            let held: Vec<Vec<SetId>> = self.nodes.iter().map(|node| node.engine.held_sets()).collect();
            let complete = held.iter().map(Vec::len).sum::<usize>() == usize::from(sets)
                && held.iter().all(|sets| !sets.is_empty() || usize::from(self.sets()) < self.nodes.len());
            if held != last {
                last = held;
                stable_since = Instant::now();
            } else if complete && stable_since.elapsed() >= 2 * hongbao_node::cluster::LEASE_DEFAULT {
                return Ok(());
            }
            if began.elapsed() > SETTLE_BOUND {
                bail!("the nodes did not share the sets out in {SETTLE_BOUND:?}: {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn sets(&self) -> u16 {
        self.nodes[0].engine.sets()
    }

    /// The index of the node holding `set`.
    pub fn holder(&self, set: SetId) -> Option<usize> {
        self.nodes.iter().position(|node| node.engine.held_sets().contains(&set))
    }

    /// `open-http`'s packets, each sent on its sender's holder.
    pub async fn prepare(&self, packets: usize, count: u32) -> Result<Plan> {
        let total = u64::from(count) * 2;
        let mut ids = Vec::with_capacity(packets);
        for packet in 0..packets {
            let sender = UserId::parse(&format!("sender{packet}")).expect("valid user");
            let holder = self.holder(SetId::of_user(&sender, self.sets())).context("a set without a holder")?;
            ids.push(send_one(&self.nodes[holder].engine, packet, count, total).await?);
        }
        Ok(Plan::new(ids))
    }

    /// Stops every node (each hands its sets over as it leaves, the last
    /// one keeps them), then checks the invariants and every acknowledged
    /// open against the store.
    pub async fn stop_and_audit(self, acked: &[Ack]) -> Result<AuditResult> {
        let path = self.nodes[0].data.path.clone();
        for node in self.nodes {
            node.stop().await?;
        }
        audit_stopped(path, StoreChoice::Postgres(self.map.clone()), acked).await
    }
}

/// A loopback address no one listens on now (the node binds it next: the
/// others must know it up front).
fn free_port() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

impl Nodes {
    /// A connection to every node, in order (for `OpenHttp::direct`).
    pub async fn connections(&self) -> Result<Vec<Connection>> {
        let mut connections = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            connections.push(Connection::open(node.addr).await?);
        }
        Ok(connections)
    }
}
