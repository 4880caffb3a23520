//! The runs against hongbao itself: `floor-http` (the cheapest route, the
//! HTTP layer's ceiling), `open-http` (opens spread over many packets),
//! `open-http-hot` (one packet, every client opening it), and `open-engine`
//! (the same opens without HTTP). Every open the client saw acknowledged is
//! recorded and checked against the store afterwards.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use hongbao_domain::audit::StoredClaims;
use hongbao_domain::packet::SpecInput;
use hongbao_domain::{Amount, Limits, OpenOutcome, PacketId, PacketSpec, SendOutcome, UserId};
use hongbao_engine::{Engine, EngineConfig};
use hongbao_node::{Running, ServeOptions, StoreChoice};
use hongbao_server::Auth;
use hongbao_server::rate_limit::{Rate, Route};
use hongbao_store_pg::SetMap;
use hongbao_store_pg::testing::ScratchDatabase;
use hyper::Method;
use serde_json::Value;

use crate::client::Connection;
use crate::load::Client;
use crate::target::Tokens;

/// The bench server's own limits: a packet as large as a run needs. The
/// service's defaults are WeChat's and stay untouched.
pub fn bench_config() -> EngineConfig {
    let huge = Amount::from_fen(1_000_000_000_000).expect("fits");
    EngineConfig {
        limits: Limits {
            total_amount_max: huge,
            count_max: 50_000_000,
            deposit_max: huge,
            balance_max: huge,
            daily_send_count_max: u32::MAX,
            daily_send_amount_max: huge,
            ..Limits::default()
        },
        ..EngineConfig::default()
    }
}

/// A server for one run: in-process on a fresh temporary data directory,
/// its sets there (SQLite) or on a fresh PostgreSQL database.
pub struct BenchServer {
    pub running: Running,
    pub auth: Arc<Auth>,
    store: StoreChoice,
    _dir: tempfile::TempDir,
    /// Dropped (the database with it) after the audit.
    _database: Option<ScratchDatabase>,
}

impl BenchServer {
    /// `pg`: the PostgreSQL server to make the run's database on, or `None`
    /// for SQLite.
    pub async fn start(sets: Option<u16>, pg: Option<&str>) -> Result<BenchServer> {
        BenchServer::start_on(sets, pg, Arc::new(hongbao_engine::SystemClock), None).await
    }

    /// `start` on `clock`, with days going cold after `retention_days`
    /// (the service's default when `None`).
    pub async fn start_on(
        sets: Option<u16>,
        pg: Option<&str>,
        clock: Arc<dyn hongbao_engine::Clock>,
        retention_days: Option<u32>,
    ) -> Result<BenchServer> {
        let dir = tempfile::tempdir().context("making a temporary data directory")?;
        let database = match pg {
            None => None,
            Some(server) => {
                let server = server.to_owned();
                let made = tokio::task::spawn_blocking(move || ScratchDatabase::create(&server, "hongbao_bench"));
                Some(made.await?.context("making the run's PostgreSQL database")?)
            }
        };
        let store = match &database {
            None => StoreChoice::Sqlite,
            Some(database) => StoreChoice::Postgres(SetMap::single(database.url())),
        };
        let mut options = ServeOptions::new(dir.path().join("data"), "127.0.0.1:0".parse().expect("address"));
        options.store = store.clone();
        options.clock = clock;
        options.retention_days = retention_days.unwrap_or(options.retention_days);
        options.engine = bench_config();
        // The busiest Zipf group's synthetic members open more packets a
        // second (and more at once) than people do; the per-user limits
        // still run on every request, but with the bench's own bounds
        // instead of the service's.
        let bench_rate = Rate { per_s: 1_000_000.0, burst: 1_000_000.0 };
        for route in Route::ALL {
            options.server.rates.set(route, bench_rate);
        }
        options.server.user_writes_in_flight_max = options.server.writes_in_flight_max;
        options.sets = sets;
        let running = hongbao_node::start(options).await?;
        let auth = Arc::new(hongbao_node::auth(&running.data.path)?);
        Ok(BenchServer { running, auth, store, _dir: dir, _database: database })
    }

    /// Where the server's sets live.
    pub fn store(&self) -> &StoreChoice {
        &self.store
    }

    /// Stops the server and checks the invariants and every acknowledged
    /// open against the store.
    pub async fn stop_and_audit(self, acked: &[Ack]) -> Result<AuditResult> {
        let path = self.running.data.path.clone();
        // The run's figure counts what was journaled; say how far the
        // tables were behind when it ended (stopping waits for them).
        let lag = self.running.engine.tables_lag();
        let began = std::time::Instant::now();
        self.running.stop().await?;
        eprintln!(
            "  tables lag at the end of the run: {lag} batches, materialized while stopping in {:.2?}",
            began.elapsed()
        );
        audit_stopped(path, self.store.clone(), acked).await
    }
}

/// Audits a stopped data set and checks every acknowledged open against
/// its store.
pub async fn audit_stopped(path: std::path::PathBuf, store: StoreChoice, acked: &[Ack]) -> Result<AuditResult> {
    let snapshots = tokio::task::spawn_blocking(move || hongbao_node::read_data(&path, &store)).await??;
    let report = hongbao_node::audit_snapshots(&snapshots);
    let mut violations = report.violations.clone();
    let stored = StoredClaims::of(&snapshots);
    for ack in acked {
        if !stored.holds(&ack.packet.to_string(), ack.user.as_str(), ack.amount as i64) {
            violations.push(format!(
                "acknowledged open of {} by {} for {} is not in the store",
                ack.packet, ack.user, ack.amount
            ));
        }
    }
    Ok(AuditResult { ok: violations.is_empty(), summary: report.to_string(), acked: acked.len(), violations })
}

#[derive(Debug, Clone)]
pub struct AuditResult {
    pub ok: bool,
    pub summary: String,
    pub acked: usize,
    pub violations: Vec<String>,
}

/// An open the client saw acknowledged.
#[derive(Debug, Clone)]
pub struct Ack {
    pub packet: PacketId,
    pub user: UserId,
    pub amount: u64,
}

/// The packets a run opens, and who opens which: request `n` goes to packet
/// `n % packets` as user `u<n / packets>`, so no user opens a packet twice.
pub struct Plan {
    pub packets: Vec<PacketId>,
    pub paths: Vec<String>,
    /// `None`: every request is a fresh user. `Some(u)`: users `u0..u<u>`
    /// in turn (a target server, whose tokens are issued before the run).
    users: Option<u64>,
}

impl Plan {
    /// Every request opens as a fresh user, as the peak's many people do.
    pub fn new(packets: Vec<PacketId>) -> Plan {
        Plan::with_users(packets, None)
    }

    /// Users `u0..u<packets + 1>` in turn: request `n` is packet `n mod P` by
    /// user `n mod (P + 1)`; P and P + 1 share no factor, so no pair repeats
    /// before P·(P + 1) requests, and each user opens once every P + 1
    /// requests (well inside a server's per-user open limit).
    pub fn cycling(packets: Vec<PacketId>) -> Plan {
        let users = packets.len() as u64 + 1;
        Plan::with_users(packets, Some(users))
    }

    fn with_users(packets: Vec<PacketId>, users: Option<u64>) -> Plan {
        let paths = packets.iter().map(|id| format!("/v1/packets/{id}/open")).collect();
        Plan { packets, paths, users }
    }

    pub fn target(&self, n: u64) -> (usize, String) {
        let packet = (n % self.packets.len() as u64) as usize;
        (packet, format!("u{}", self.users.map_or(n, |users| n % users)))
    }
}

/// Sends `packets` lucky packets of `count` shares, each from its own
/// sender (so the packets spread over the sets as real senders do), over the
/// engine: setup is not measured.
pub async fn prepare(engine: &Engine, packets: usize, count: u32) -> Result<Plan> {
    let total = u64::from(count) * 2;
    let sends: Vec<_> = (0..packets)
        .map(|packet| {
            let engine = engine.clone();
            tokio::spawn(async move { send_one(&engine, packet, count, total).await })
        })
        .collect();
    let mut ids = Vec::with_capacity(packets);
    for send in sends {
        ids.push(send.await.context("a setup task failed")??);
    }
    Ok(Plan::new(ids))
}

pub async fn send_one(engine: &Engine, packet: usize, count: u32, total: u64) -> Result<PacketId> {
    let sender = UserId::parse(&format!("sender{packet}")).expect("valid user");
    engine.deposit(sender.clone(), Amount::from_fen(total).context("funds fit")?, None).await?;
    let input =
        SpecInput { kind: "lucky".into(), total_amount: total as i64, count: i64::from(count), ..Default::default() };
    let spec = PacketSpec::parse(&input, &sender, engine.limits())
        .map_err(|e| anyhow::anyhow!("bench packet refused: {}", e.code()))?;
    match engine.send(sender, spec, None).await? {
        SendOutcome::Sent { packet, .. } => Ok(packet.id),
        other => bail!("bench packet not sent: {other:?}"),
    }
}

/// `GET /healthz`.
pub struct Floor {
    pub connection: Connection,
}

impl Client for Floor {
    async fn call(&mut self, _n: u64) -> bool {
        matches!(self.connection.request(Method::GET, "/healthz", None, None).await, Ok((status, _)) if status == 200)
    }
}

/// `POST /v1/packets/{id}/open` as a fresh user each time.
pub struct OpenHttp {
    /// One connection, or one to each node of a cluster.
    pub connections: Vec<Connection>,
    /// With a connection to each node: the node holding each packet of the
    /// plan, where its open is sent.
    pub holders: Option<Arc<Vec<usize>>>,
    pub plan: Arc<Plan>,
    pub tokens: Arc<Tokens>,
    pub acked: Vec<Ack>,
    /// Opens refused with 503 (shed under overload).
    pub shed: u64,
}

impl OpenHttp {
    pub fn new(connection: Connection, plan: Arc<Plan>, tokens: Arc<Tokens>) -> OpenHttp {
        OpenHttp { connections: vec![connection], holders: None, plan, tokens, acked: Vec::new(), shed: 0 }
    }

    /// Each open sent straight to its packet's holder: `connections[i]` is
    /// to node `i`, `holders` names each packet's node.
    pub fn direct(
        connections: Vec<Connection>,
        holders: Arc<Vec<usize>>,
        plan: Arc<Plan>,
        tokens: Arc<Tokens>,
    ) -> OpenHttp {
        OpenHttp { connections, holders: Some(holders), plan, tokens, acked: Vec::new(), shed: 0 }
    }
}

impl Client for OpenHttp {
    fn refused(&self) -> u64 {
        self.shed
    }

    async fn call(&mut self, n: u64) -> bool {
        let (packet, name) = self.plan.target(n);
        let user = UserId::parse(&name).expect("valid user");
        let token = self.tokens.of(&user);
        let node = self.holders.as_ref().map_or(0, |holders| holders[packet]);
        let answer = self.connections[node].request(Method::POST, &self.plan.paths[packet], Some(&token), None).await;
        let packet = self.plan.packets[packet];
        opened(answer, packet, user, &mut self.acked, &mut self.shed)
    }
}

/// An open's answer: an acknowledged share is recorded in `acked`, a 503
/// (shed under overload) counted in `shed`. Answers whether it succeeded.
fn opened<E>(
    answer: Result<(hyper::StatusCode, hyper::body::Bytes), E>,
    packet: PacketId,
    user: UserId,
    acked: &mut Vec<Ack>,
    shed: &mut u64,
) -> bool {
    let Ok((status, body)) = answer else {
        return false;
    };
    let amount = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["amount"].as_u64());
    match (status.as_u16(), amount) {
        (200, Some(amount)) => {
            acked.push(Ack { packet, user, amount });
            true
        }
        (503, _) => {
            *shed += 1;
            false
        }
        _ => false,
    }
}

/// The same opens on the engine directly: what HTTP costs is the difference.
pub struct OpenEngine {
    pub engine: Engine,
    pub plan: Arc<Plan>,
    pub acked: Vec<Ack>,
}

impl Client for OpenEngine {
    async fn call(&mut self, n: u64) -> bool {
        let (packet, name) = self.plan.target(n);
        let user = UserId::parse(&name).expect("valid user");
        let id = self.plan.packets[packet];
        match self.engine.open(id, user.clone(), None).await {
            Ok(OpenOutcome::Opened(hongbao_domain::Claim { amount, .. })) => {
                self.acked.push(Ack { packet: id, user, amount: amount.fen() });
                true
            }
            _ => false,
        }
    }
}

/// Opens `clients` keep-alive connections to `addr`.
pub async fn connections(addr: SocketAddr, clients: usize) -> Result<Vec<Connection>> {
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(Connection::open(addr).await?);
    }
    Ok(connections)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn a_plan_never_sends_one_user_to_one_packet_twice() {
        let ids: Vec<_> = (0..7).map(|seq| PacketId::new(20_270_128, hongbao_domain::SetId(0), seq, 1)).collect();
        for plan in [Plan::new(ids.clone()), Plan::cycling(ids.clone())] {
            let mut seen = HashSet::new();
            for n in 0..7 * 8 {
                assert!(seen.insert(plan.target(n)), "request {n} repeats a (packet, user) pair");
            }
            assert_eq!(plan.paths[3], format!("/v1/packets/{}/open", plan.packets[3]));
        }
        // A cycling user comes back only after every other user had a turn.
        let plan = Plan::cycling(ids);
        assert_eq!(plan.target(0).1, plan.target(8).1);
        assert!((1..8).all(|n| plan.target(n).1 != plan.target(0).1));
        // A fresh plan never repeats a user (a cycling one does, at 8).
        let plan = Plan::new((0..7).map(|seq| PacketId::new(20_270_128, hongbao_domain::SetId(0), seq, 1)).collect());
        let users: HashSet<_> = (0..7 * 8).map(|n| plan.target(n).1).collect();
        assert_eq!(users.len(), 7 * 8, "every request of a fresh plan is a new user");
    }
}
