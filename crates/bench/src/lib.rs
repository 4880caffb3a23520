//! `hongbao bench`: reproduces the New Year's Eve peak on one machine and
//! measures hongbao and what teams build instead, in the same run, on the
//! same workload sizes, then audits every hongbao run.
//!
//! Runs: `floor-http` (the HTTP layer's ceiling: `/healthz`), `open-http`
//! (opens spread over many packets), `open-http-hot` (one packet, every
//! client opening it), `open-engine` (the same opens without HTTP),
//! `open-http-open-loop` (open-http offered at half its measured maximum,
//! for latency), `nye-http` (the new-year-eve profile: Zipf-busy groups,
//! each burst a send then every member grabbing and opening), `redis-lua` and `redis-lua-durable` (the Redis script,
//! without and with `appendfsync always`), `redis-lua-http` and
//! `redis-lua-http-durable` (the same script behind an HTTP service on
//! hongbao's HTTP stack and tokens, driven by `open-http`'s client),
//! `open-http-pg` and `open-http-hot-pg` (open-http and open-http-hot with
//! the sets on PostgreSQL: the journal a table, the tables partitioned),
//! `pg-row-lock` and `pg-row-lock-hot` (a PostgreSQL transaction per open,
//! row-locked), `pg-optimistic` and `pg-optimistic-hot` (the same with
//! optimistic locking: compare-and-swap on a version, retried on conflict).
//! Only when `--only` names it: `overload-http` (a child `hongbao serve`
//! offered 3× its capacity, then half of it: see `overload.rs`) and
//! `live-packets` (a child `hongbao serve`'s memory per live, unopened
//! packet: see `live_packets.rs`).

#[cfg(feature = "baselines")]
mod baselines;
pub mod child;
pub mod client;
mod cluster;
mod days_week;
mod hongbao;
mod live_packets;
mod load;
mod new_year_eve;
mod overload;
#[cfg(feature = "baselines")]
mod pg_optimistic;
#[cfg(feature = "baselines")]
mod pg_row_lock;
#[cfg(feature = "baselines")]
mod redis_lua;
#[cfg(feature = "baselines")]
mod redis_lua_http;
mod report;
mod store_floor;
mod target;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar};

use crate::hongbao::{Ack, AuditResult, BenchServer, Floor, OpenEngine, OpenHttp, connections, prepare};
use crate::load::{Mode, drive};
pub use crate::report::{Machine, RunResult};
use crate::target::{Target, Tokens};

/// The options of `hongbao bench` (parsed by the binary's command line).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// The short suite (under 90 s on 2 cores), for CI and quick checks.
    #[arg(long)]
    pub quick: bool,
    /// Write the figures as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw throughput and latency over time as SVG.
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// Use this Redis server instead of starting one (it is flushed).
    #[arg(long)]
    pub redis: Option<String>,
    /// PostgreSQL connection settings, without dbname (a fresh database is made and dropped).
    #[arg(long, default_value = "host=127.0.0.1 port=5432 user=postgres")]
    pub pg: String,
    /// Seconds per run, after a 1 s warm-up (default 4 with --quick, else 15).
    #[arg(long)]
    pub duration_s: Option<u64>,
    /// HTTP connections (default 256: enough in flight for group commit to
    /// batch, as a peak minute has).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Only these runs (comma-separated), e.g. `--only open-engine`.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Sets of the bench server's data directory (default: the service's).
    #[arg(long)]
    pub sets: Option<u16>,
    /// Drive this running server (http://host:port) instead of starting one.
    #[arg(long)]
    pub target: Option<String>,
    /// The target's admin token (its <data>/admin.token).
    #[arg(long)]
    pub admin_token: Option<String>,
    /// Opens/s offered by open-http-open-loop (default: half of open-http's maximum).
    #[arg(long)]
    pub rate: Option<u64>,
}

/// How big each run is. Packets hold more shares than a run can open, so a
/// run measures opens, never "packet empty".
struct Sizes {
    duration: Duration,
    clients: usize,
    engine_clients: usize,
    /// Connections of the PostgreSQL baselines.
    #[cfg_attr(not(feature = "baselines"), allow(dead_code))]
    pg_clients: usize,
    spread_packets: usize,
    spread_count: u32,
    hot_count: u32,
    groups: usize,
    /// Live packets the memory profile sends.
    live_packets: usize,
    /// Shares of each of `spread_packets` packets a simulated day of
    /// `days-week-pg` opens, all of them.
    week_count: u32,
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
            groups: if quick { 1_000 } else { 5_000 },
            live_packets: if quick { 200_000 } else { 1_000_000 },
            week_count: if quick { 20 } else { 100 },
        }
    }
}

/// Shares per packet on a target server: its limits are its own (WeChat's
/// 100 by default), not the bench's.
const TARGET_COUNT_MAX: u32 = 100;

struct Suite {
    sizes: Sizes,
    /// The PostgreSQL server of the `-pg` runs and the baselines.
    pg: String,
    target: Option<Target>,
    only: Vec<String>,
    sets: Option<u16>,
    bars: MultiProgress,
    runs: Vec<RunResult>,
    audits: Vec<(String, AuditResult)>,
}

impl Suite {
    fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.named(name)
    }

    /// Runs outside the default suite run only when `--only` names them.
    fn named(&self, name: &str) -> bool {
        self.only.iter().any(|only| only == name)
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

    /// The server a run drives: a fresh in-process one (its sets on
    /// PostgreSQL for the `-pg` runs), or the target.
    async fn server(&self, name: &str) -> Result<(SocketAddr, Option<BenchServer>)> {
        match &self.target {
            Some(target) => Ok((target.addr, None)),
            None => {
                let pg = name.ends_with("-pg").then_some(self.pg.as_str());
                let node = BenchServer::start(self.sets, pg).await?;
                Ok((node.running.addr, Some(node)))
            }
        }
    }

    /// Audits after a run: the whole data directory of an in-process server,
    /// or the acknowledged opens through the target's API.
    async fn audit(&mut self, name: &str, node: Option<BenchServer>, acked: &[Ack], tokens: &Tokens) -> Result<()> {
        let audit = match (node, &self.target) {
            (Some(node), _) => node.stop_and_audit(acked).await?,
            (None, Some(target)) => target.verify(acked, tokens).await?,
            (None, None) => unreachable!("a run has a server"),
        };
        self.audits.push((name.into(), audit));
        Ok(())
    }

    async fn floor_http(&mut self) -> Result<()> {
        let (addr, node) = self.server("floor-http").await?;
        let clients = connections(addr, self.sizes.clients).await?;
        let clients = clients.into_iter().map(|connection| Floor { connection }).collect();
        let mode = Mode::Closed { clients: self.sizes.clients };
        let (measured, _) = drive(mode, self.sizes.duration, clients, &self.bar("floor-http")).await;
        self.record("floor-http", self.sizes.clients, &measured);
        self.audit("floor-http", node, &[], &Tokens::Issued(Default::default())).await
    }

    async fn open_http(&mut self, name: &str, packets: usize, count: u32, mode: Mode) -> Result<f64> {
        let (addr, node) = self.server(name).await?;
        let (plan, tokens) = match (&node, &self.target) {
            (Some(node), _) => {
                (prepare(&node.running.engine, packets, count).await?, Tokens::Signed(node.auth.clone()))
            }
            (None, Some(target)) => {
                // A target keeps its own limits: packets of at most 100 shares,
                // enough of them for the run.
                let count = count.min(TARGET_COUNT_MAX);
                let packets = (packets * self.sizes.spread_count as usize).div_ceil(count as usize);
                target.prepare(packets, count).await?
            }
            (None, None) => unreachable!("a run has a server"),
        };
        let (plan, tokens) = (Arc::new(plan), Arc::new(tokens));
        let clients = connections(addr, mode.clients()).await?;
        let clients =
            clients.into_iter().map(|connection| OpenHttp::new(connection, plan.clone(), tokens.clone())).collect();
        let (measured, clients) = drive(mode, self.sizes.duration, clients, &self.bar(name)).await;
        self.record(name, mode.clients(), &measured);
        let acked: Vec<Ack> = clients.into_iter().flat_map(|client| client.acked).collect();
        self.audit(name, node, &acked, &tokens).await?;
        Ok(measured.ops_per_s())
    }

    /// The `new-year-eve` profile over HTTP: sends, grabs and opens, all counted.
    async fn new_year_eve(&mut self) -> Result<()> {
        let name = "nye-http";
        let (addr, node) = self.server(name).await?;
        let groups = Arc::new(new_year_eve::Groups::new(self.sizes.groups));
        let senders: Vec<_> = (0..groups.count()).map(new_year_eve::Groups::sender).collect();
        let funds = 1_000_000_000;
        let tokens = match (&node, &self.target) {
            (Some(node), _) => {
                for sender in &senders {
                    let amount = hongbao_domain::Amount::from_fen(funds).expect("fits");
                    node.running.engine.deposit(sender.clone(), amount, None).await?;
                }
                Tokens::Signed(node.auth.clone())
            }
            (None, Some(target)) => {
                target.fund(&senders, funds).await?;
                target.tokens(groups.users()).await?
            }
            (None, None) => unreachable!("a run has a server"),
        };
        let tokens = Arc::new(tokens);
        let clients = connections(addr, self.sizes.clients).await?;
        let clients = clients
            .into_iter()
            .enumerate()
            .map(|(n, connection)| new_year_eve::Burst::new(connection, tokens.clone(), groups.clone(), n as u64))
            .collect();
        let mode = Mode::Closed { clients: self.sizes.clients };
        let (measured, clients) = drive(mode, self.sizes.duration, clients, &self.bar(name)).await;
        self.record(name, self.sizes.clients, &measured);
        let acked: Vec<Ack> = clients.into_iter().flat_map(|client| client.acked).collect();
        self.audit(name, node, &acked, &tokens).await
    }

    /// `cluster-pg`: one node against three, forwarded and direct (see
    /// `cluster.rs`).
    async fn cluster(&mut self) -> Result<()> {
        let (packets, count, clients) = (self.sizes.spread_packets, self.sizes.spread_count, self.sizes.clients);
        let runs = [
            ("open-http-cluster-1", 1, false),
            ("open-http-cluster-3", 3, false),
            ("open-http-cluster-3-direct", 3, true),
        ];
        for (name, count_nodes, direct) in runs {
            let nodes = cluster::Nodes::start(count_nodes, self.sets, &self.pg).await?;
            let plan = Arc::new(nodes.prepare(packets, count).await?);
            let tokens = Arc::new(Tokens::Signed(nodes.auth.clone()));
            let mode = Mode::Closed { clients };
            let bar = self.bar(name);
            let holders: Vec<usize> = plan.packets.iter().map(|id| nodes.holder(id.set).unwrap_or(0)).collect();
            let holders = Arc::new(holders);
            let mut list = Vec::with_capacity(clients);
            for index in 0..clients {
                list.push(match direct {
                    true => OpenHttp::direct(nodes.connections().await?, holders.clone(), plan.clone(), tokens.clone()),
                    false => {
                        let connection = client::Connection::open(nodes.nodes[index % count_nodes].addr).await?;
                        OpenHttp::new(connection, plan.clone(), tokens.clone())
                    }
                });
            }
            let (measured, list) = drive(mode, self.sizes.duration, list, &bar).await;
            let acked: Vec<Ack> = list.into_iter().flat_map(|client| client.acked).collect();
            self.record(name, clients, &measured);
            let audit = nodes.stop_and_audit(&acked).await?;
            self.audits.push((name.into(), audit));
        }
        Ok(())
    }

    async fn open_engine(&mut self) -> Result<()> {
        let node = BenchServer::start(self.sets, None).await?;
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
}

/// Runs the whole suite, prints the table, writes the JSON and the chart.
/// Returns whether every audit passed.
pub async fn run(options: BenchOptions) -> Result<bool> {
    let sizes = Sizes::of(&options);
    let only = options.only.clone();
    let target = match &options.target {
        None => None,
        Some(url) => {
            let admin = options.admin_token.clone().context("--target needs --admin-token")?;
            Some(Target::connect(url, admin).await?)
        }
    };
    let bars = MultiProgress::new();
    let mut suite = Suite {
        sizes,
        pg: options.pg.clone(),
        target,
        only,
        sets: options.sets,
        bars,
        runs: Vec::new(),
        audits: Vec::new(),
    };
    suite.hongbao_runs(options.rate).await?;
    suite.named_runs().await?;
    if suite.wants("nye-http") {
        suite.new_year_eve().await?;
    }
    #[cfg(feature = "baselines")]
    suite.baselines(&options).await;
    #[cfg(not(feature = "baselines"))]
    for name in [
        "redis-lua",
        "redis-lua-durable",
        "redis-lua-http",
        "redis-lua-http-durable",
        "pg-row-lock",
        "pg-row-lock-hot",
        "pg-optimistic",
        "pg-optimistic-hot",
    ] {
        if suite.wants(name) {
            suite.skip(name, &anyhow::anyhow!("this build has no baselines (cargo feature `baselines`)"));
        }
    }
    suite.report(&options)
}

impl Suite {
    /// hongbao's own runs: the HTTP floor, opens spread and hot, the engine
    /// alone, and the open loop at half of what the spread run reached.
    async fn hongbao_runs(&mut self, rate: Option<u64>) -> Result<()> {
        if self.wants("floor-http") {
            self.floor_http().await?;
        }
        let (packets, count, clients) = (self.sizes.spread_packets, self.sizes.spread_count, self.sizes.clients);
        let mut spread = None;
        if self.wants("open-http") || (self.wants("open-http-open-loop") && rate.is_none()) {
            spread = Some(self.open_http("open-http", packets, count, Mode::Closed { clients }).await?);
        }
        let local = self.target.is_none();
        if !local {
            let why = [
                ("open-http-hot", "needs an in-process server: a hot packet is past a target's share limit"),
                ("open-engine", "needs the engine in-process"),
                ("open-http-pg", "starts its own server on PostgreSQL"),
                ("open-http-hot-pg", "starts its own server on PostgreSQL"),
            ];
            for (name, why) in why.into_iter().filter(|(name, _)| self.wants(name)) {
                self.skip(name, &anyhow::anyhow!(why));
            }
        }
        if local && self.wants("open-http-hot") {
            self.open_http("open-http-hot", 1, self.sizes.hot_count, Mode::Closed { clients }).await?;
        }
        if local && self.wants("open-engine") {
            self.open_engine().await?;
        }
        // The same runs with the sets on PostgreSQL (a fresh database on --pg).
        if local && self.wants("open-http-pg") {
            let run = self.open_http("open-http-pg", packets, count, Mode::Closed { clients }).await;
            run.map(drop).unwrap_or_else(|why| self.skip("open-http-pg", &why));
        }
        if local && self.wants("open-http-hot-pg") {
            let hot = self.sizes.hot_count;
            let run = self.open_http("open-http-hot-pg", 1, hot, Mode::Closed { clients }).await;
            run.map(drop).unwrap_or_else(|why| self.skip("open-http-hot-pg", &why));
        }
        let rate = rate.or(spread.map(|spread| (spread / 2.0).max(1.0) as u64));
        if let Some(rate) = rate.filter(|_| self.wants("open-http-open-loop")) {
            eprintln!("open-http-open-loop offers {rate} opens/s");
            self.open_http("open-http-open-loop", packets, count, Mode::Open { rate, clients: clients * 4 }).await?;
        }
        Ok(())
    }

    /// The runs left out of the suite unless named: the store's ceiling,
    /// overload, and memory per live packet.
    async fn named_runs(&mut self) -> Result<()> {
        if self.named("open-store") {
            let sizes = &self.sizes;
            let sets = self.sets.unwrap_or(hongbao_node::SETS_DEFAULT);
            let bar = self.bar("open-store");
            let floor = store_floor::measure(
                sets,
                sizes.spread_packets,
                sizes.spread_count,
                sizes.engine_clients,
                sizes.duration,
                &bar,
            )
            .await?;
            eprintln!(
                "open-store: the engine made {:.0} opens/s in {} batches; the journal alone appends them at {:.0} \
                 opens/s, the tables alone materialize them at {:.0} opens/s",
                floor.engine.ops_per_s, floor.batches, floor.journal.ops_per_s, floor.tables.ops_per_s
            );
            self.runs.push(floor.engine);
            self.runs.push(floor.journal);
            self.runs.push(floor.tables);
            self.runs.push(floor.recovery);
        }
        if self.named("overload-http") {
            match &self.target {
                None => self.overload().await?,
                Some(_) => self.skip("overload-http", &anyhow::anyhow!("starts its own server, not a target")),
            }
        }
        if self.named("days-week-pg") {
            match &self.target {
                None => {
                    let week = days_week::Week {
                        sets: self.sets,
                        pg: self.pg.clone(),
                        packets: self.sizes.spread_packets,
                        count: self.sizes.week_count,
                        clients: self.sizes.engine_clients,
                    };
                    let (run, audit, _) = week.run(&self.bar("days-week-pg")).await?;
                    self.runs.push(run);
                    self.audits.push(("days-week-pg".into(), audit));
                }
                Some(_) => self.skip("days-week-pg", &anyhow::anyhow!("starts its own server, not a target")),
            }
        }
        if self.named("cluster-pg") {
            match &self.target {
                None => self.cluster().await?,
                Some(_) => self.skip("cluster-pg", &anyhow::anyhow!("starts its own nodes, not a target")),
            }
        }
        if self.named("live-packets") {
            match &self.target {
                None => self.live_packets().await?,
                Some(_) => self.skip("live-packets", &anyhow::anyhow!("starts its own server, not a target")),
            }
        }
        Ok(())
    }

    /// Prints the table and the audits, writes the JSON and the chart;
    /// answers whether every audit passed.
    fn report(&self, options: &BenchOptions) -> Result<bool> {
        println!("\n{}", report::table(&self.runs));
        for run in &self.runs {
            if let Some(memory) = &run.memory {
                println!("{}: {}", run.name, memory.summary());
            }
        }
        let ok = self.audits.iter().all(|(_, audit)| audit.ok);
        for (name, audit) in &self.audits {
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
            report::write_json(path, &self.runs, &self.audits)?;
        }
        if let Some(path) = &options.chart {
            report::write_chart(path, &self.runs)?;
        }
        Ok(ok)
    }
}
