//! `hongbao bench`: reproduces the New Year's Eve peak on one machine and
//! measures hongbao and what teams build instead, in the same run, on the
//! same workload sizes, then audits every hongbao run.
//!
//! Runs: `floor-http` (the HTTP layer's ceiling: `/healthz`), `open-http`
//! (opens spread over many packets), `open-http-hot` (one packet, every
//! client opening it), `open-engine` (the same opens without HTTP),
//! `open-http-open-loop` (open-http offered at half its measured maximum,
//! for latency), `redis-lua` and `redis-lua-durable` (the Redis script,
//! without and with `appendfsync always`), `pg-row-lock` and
//! `pg-row-lock-hot` (a PostgreSQL transaction per open, row-locked).

mod client;
mod hongbao;
mod load;
mod pg_row_lock;
mod redis_lua;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use indicatif::{MultiProgress, ProgressBar};

use crate::hongbao::{Ack, AuditResult, Floor, Node, OpenEngine, OpenHttp, connections, prepare};
use crate::load::{Mode, drive};
pub use crate::report::{Machine, RunResult};

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The short suite: under 90 s on a 2-core machine.
    pub quick: bool,
    pub json: Option<PathBuf>,
    pub chart: Option<PathBuf>,
    /// A Redis server to use instead of starting one (it is flushed!).
    pub redis: Option<String>,
    /// PostgreSQL connection settings, without `dbname`.
    pub pg: String,
    /// Seconds per run (default 4 with `--quick`, else 15).
    pub duration_s: Option<u64>,
    /// HTTP connections (default 256: enough in flight for group commit to
    /// batch, as a peak minute has).
    pub clients: Option<usize>,
    /// Only these runs (all when empty), e.g. to profile one of them.
    pub only: Vec<String>,
    /// Sets of the bench server's data directory (default: the service's).
    pub sets: Option<u16>,
}

/// How big each run is. Packets hold more shares than a run can open, so a
/// run measures opens, never "packet empty".
struct Sizes {
    duration: Duration,
    clients: usize,
    engine_clients: usize,
    pg_clients: usize,
    spread_packets: usize,
    spread_count: u32,
    hot_count: u32,
}

impl Sizes {
    fn of(options: &BenchOptions) -> Sizes {
        let quick = options.quick;
        Sizes {
            duration: Duration::from_secs(options.duration_s.unwrap_or(if quick { 4 } else { 15 })),
            clients: options.clients.unwrap_or(256),
            engine_clients: 1024,
            pg_clients: 16,
            spread_packets: 1000,
            spread_count: if quick { 1_000 } else { 4_000 },
            hot_count: if quick { 1_000_000 } else { 4_000_000 },
        }
    }
}

struct Suite {
    sizes: Sizes,
    only: Vec<String>,
    sets: Option<u16>,
    bars: MultiProgress,
    runs: Vec<RunResult>,
    audits: Vec<(String, AuditResult)>,
}

impl Suite {
    fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|only| only == name)
    }

    fn bar(&self, name: &str) -> ProgressBar {
        let bar = self.bars.add(ProgressBar::new(1));
        bar.set_prefix(name.to_owned());
        bar
    }

    fn record(&mut self, name: &str, clients: usize, measured: &load::Measured) {
        self.runs.push(RunResult::new(name, clients, measured));
    }

    fn skip(&self, name: &str, why: &anyhow::Error) {
        // Printed directly: progress bars hide their own output when not on a terminal.
        eprintln!("{name:>18} skipped: {why:#}");
    }

    async fn floor_http(&mut self) -> Result<()> {
        let node = Node::start(self.sets).await?;
        let clients = connections(node.running.addr, self.sizes.clients).await?;
        let clients = clients.into_iter().map(|connection| Floor { connection }).collect();
        let (measured, _) =
            drive(Mode::Closed { clients: self.sizes.clients }, self.sizes.duration, clients, &self.bar("floor-http"))
                .await;
        self.record("floor-http", self.sizes.clients, &measured);
        let audit = node.stop_and_audit(&[]).await?;
        self.audits.push(("floor-http".into(), audit));
        Ok(())
    }

    async fn open_http(&mut self, name: &str, packets: usize, count: u32, mode: Mode) -> Result<f64> {
        let node = Node::start(self.sets).await?;
        let plan = Arc::new(prepare(&node.running.engine, packets, count).await?);
        let clients = connections(node.running.addr, mode.clients()).await?;
        let clients = clients
            .into_iter()
            .map(|connection| OpenHttp { connection, plan: plan.clone(), auth: node.auth.clone(), acked: Vec::new() })
            .collect();
        let (measured, clients) = drive(mode, self.sizes.duration, clients, &self.bar(name)).await;
        self.record(name, mode.clients(), &measured);
        let acked: Vec<Ack> = clients.into_iter().flat_map(|client| client.acked).collect();
        let audit = node.stop_and_audit(&acked).await?;
        self.audits.push((name.into(), audit));
        Ok(measured.ops_per_s())
    }

    async fn open_engine(&mut self) -> Result<()> {
        let node = Node::start(self.sets).await?;
        let sizes = &self.sizes;
        let plan = Arc::new(prepare(&node.running.engine, sizes.spread_packets, sizes.spread_count).await?);
        let clients = (0..sizes.engine_clients)
            .map(|_| OpenEngine { engine: node.running.engine.clone(), plan: plan.clone(), acked: Vec::new() })
            .collect();
        let mode = Mode::Closed { clients: sizes.engine_clients };
        let (measured, clients) = drive(mode, sizes.duration, clients, &self.bar("open-engine")).await;
        self.record("open-engine", sizes.engine_clients, &measured);
        let acked: Vec<Ack> = clients.into_iter().flat_map(|client| client.acked).collect();
        let audit = node.stop_and_audit(&acked).await?;
        self.audits.push(("open-engine".into(), audit));
        Ok(())
    }

    async fn redis_lua(&mut self, name: &str, durable: bool, url: Option<&str>) -> Result<()> {
        let server = match url {
            Some(_) => None,
            None => Some(redis_lua::RedisServer::start(durable).await?),
        };
        let url = url.map_or_else(|| server.as_ref().expect("started").url.clone(), str::to_owned);
        let mut connection = redis_lua::connect(&url).await?;
        if url.contains("127.0.0.1") || url.contains("localhost") {
            let (appendonly, fsync) = if durable { ("yes", "always") } else { ("no", "no") };
            let _: () =
                redis::cmd("CONFIG").arg("SET").arg("appendonly").arg(appendonly).query_async(&mut connection).await?;
            let _: () =
                redis::cmd("CONFIG").arg("SET").arg("appendfsync").arg(fsync).query_async(&mut connection).await?;
        }
        let (packets, count) = (self.sizes.spread_packets, self.sizes.spread_count);
        redis_lua::prepare(&mut connection, packets, count).await?;
        // A few multiplexed connections, each pipelining many clients' scripts.
        let pipes: Vec<_> = {
            let mut pipes = Vec::new();
            for _ in 0..4 {
                pipes.push(redis_lua::connect(&url).await?);
            }
            pipes
        };
        let script = redis_lua::script();
        let clients = (0..self.sizes.clients)
            .map(|n| redis_lua::OpenRedis {
                connection: pipes[n % pipes.len()].clone(),
                script: script.clone(),
                packets: packets as u64,
            })
            .collect();
        let mode = Mode::Closed { clients: self.sizes.clients };
        let (measured, _) = drive(mode, self.sizes.duration, clients, &self.bar(name)).await;
        self.record(name, self.sizes.clients, &measured);
        Ok(())
    }

    async fn pg_row_lock(&mut self, name: &str, config: &str, packets: usize, count: u32) -> Result<()> {
        let database = pg_row_lock::Database::create(config, name).await?;
        let result = async {
            let setup = pg_row_lock::connect(&database.config).await?;
            pg_row_lock::prepare(&setup, packets, count).await?;
            let mut clients = Vec::new();
            for _ in 0..self.sizes.pg_clients {
                let client = pg_row_lock::connect(&database.config).await?;
                clients.push(pg_row_lock::OpenPg { client, packets: packets as u64 });
            }
            let mode = Mode::Closed { clients: self.sizes.pg_clients };
            let (measured, _) = drive(mode, self.sizes.duration, clients, &self.bar(name)).await;
            self.record(name, self.sizes.pg_clients, &measured);
            anyhow::Ok(())
        }
        .await;
        database.drop_now().await?;
        result
    }
}

/// Runs the whole suite, prints the table, writes the JSON and the chart.
/// Returns whether every audit passed.
pub async fn run(options: BenchOptions) -> Result<bool> {
    let sizes = Sizes::of(&options);
    let only = options.only.clone();
    let mut suite =
        Suite { sizes, only, sets: options.sets, bars: MultiProgress::new(), runs: Vec::new(), audits: Vec::new() };
    if suite.wants("floor-http") {
        suite.floor_http().await?;
    }
    let (packets, count, clients) = (suite.sizes.spread_packets, suite.sizes.spread_count, suite.sizes.clients);
    let mut spread = None;
    if suite.wants("open-http") || suite.wants("open-http-open-loop") {
        spread = Some(suite.open_http("open-http", packets, count, Mode::Closed { clients }).await?);
    }
    if suite.wants("open-http-hot") {
        suite.open_http("open-http-hot", 1, suite.sizes.hot_count, Mode::Closed { clients }).await?;
    }
    if suite.wants("open-engine") {
        suite.open_engine().await?;
    }
    if let Some(spread) = spread.filter(|_| suite.wants("open-http-open-loop")) {
        let rate = (spread / 2.0).max(1.0) as u64;
        eprintln!("open-http-open-loop offers {rate} opens/s (half of open-http's maximum)");
        suite.open_http("open-http-open-loop", packets, count, Mode::Open { rate, clients: clients * 4 }).await?;
    }
    for (name, durable) in [("redis-lua", false), ("redis-lua-durable", true)] {
        if suite.wants(name)
            && let Err(error) = suite.redis_lua(name, durable, options.redis.as_deref()).await
        {
            suite.skip(name, &error);
        }
    }
    let pg_hot = suite.sizes.hot_count / 4;
    for (name, packets, count) in [("pg-row-lock", packets, count), ("pg-row-lock-hot", 1, pg_hot)] {
        if suite.wants(name)
            && let Err(error) = suite.pg_row_lock(name, &options.pg, packets, count).await
        {
            suite.skip(name, &error);
        }
    }
    println!("\n{}", report::table(&suite.runs));
    let ok = suite.audits.iter().all(|(_, audit)| audit.ok);
    for (name, audit) in &suite.audits {
        println!(
            "audit {name}: {} ({} acknowledged opens checked)",
            if audit.ok { "ok" } else { "FAILED" },
            audit.acked
        );
        for violation in &audit.violations {
            println!("  violation: {violation}");
        }
    }
    if let Some(path) = &options.json {
        report::write_json(path, &suite.runs, &suite.audits)?;
    }
    if let Some(path) = &options.chart {
        report::write_chart(path, &suite.runs)?;
    }
    Ok(ok)
}
