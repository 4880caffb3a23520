//! `hongbao chaos`: runs the real `hongbao serve` process on a temporary data
//! directory, drives a mixed workload (deposits, sends with short expiries,
//! grabs, opens) from many connections, kills the server with SIGKILL at
//! random moments and restarts it, and keeps a journal of every operation
//! the clients saw acknowledged. At the end it stops the server and checks:
//! every acknowledged deposit, send and open is in the store with its amount
//! (nothing lost); no key or claim was applied twice on retry (nothing
//! duplicated); and `hongbao audit` passes. With `--store` the sets live
//! on PostgreSQL, in a database the run makes on the server given and drops
//! after, so the kills land on that store's journal and tables instead.
//! With `--nodes N` (and `--store`) the server is a cluster of N nodes
//! sharing that database (`cluster.rs`): the kills land on one node at a
//! time, and the run also times the takeovers and checks that no set was
//! written by two nodes in one epoch.

mod cluster;
mod epochs;
mod journal;
mod node;
mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hongbao_domain::hash::mix64;
use hongbao_node::StoreChoice;
use hongbao_store_pg::SetMap;
use hongbao_store_pg::set_map::is_postgres_url;
use hongbao_store_pg::testing::ScratchDatabase;
use serde::Serialize;

use crate::journal::Journal;
use crate::workload::Targets;
use hongbao_bench::child::Server;

/// The most nodes a run starts: each is a whole server process on the
/// same machine, and a handful is enough for takeovers between survivors.
pub const NODES_MAX: usize = 16;

#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// The `hongbao` binary to run as the server.
    pub binary: PathBuf,
    pub kills: u32,
    pub duration: Duration,
    pub clients: usize,
    pub seed: u64,
    pub json: Option<PathBuf>,
    /// A PostgreSQL server (`postgres://user@host:port`, a database named
    /// there is ignored) to keep the sets on, in a database of the run's
    /// own; `None` keeps them in the data directory (SQLite).
    pub store: Option<String>,
    /// Nodes of one cluster (each its own process and data directory); more
    /// than one needs `store`. One runs a lone server, as before clusters.
    pub nodes: usize,
}

impl ChaosOptions {
    /// Refuses what cannot run: a cluster without PostgreSQL to share.
    pub fn check(&self) -> Result<()> {
        if !(1..=NODES_MAX).contains(&self.nodes) {
            bail!("--nodes must be from 1 to {NODES_MAX}");
        }
        if self.nodes > 1 && self.store.is_none() {
            bail!(
                "--nodes {} needs --store postgres://user@host:port: the nodes of a cluster share their sets on PostgreSQL",
                self.nodes
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    pub kills: u32,
    pub acked: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub audit_ok: bool,
    pub seed: u64,
    /// Where the sets lived: "sqlite" or "postgres".
    pub store: &'static str,
    /// With several nodes: their number, the takeovers and the fence.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterFigures>,
    /// Every problem found (lost, duplicated, epochs, takeovers): any fails
    /// the run.
    #[serde(skip)]
    pub problems: Vec<String>,
    #[serde(skip)]
    pub audit: String,
    /// The run's directory (the nodes' data directories and logs), kept
    /// because the run failed; the run's database is dropped all the same.
    #[serde(skip)]
    pub kept: Option<PathBuf>,
}

impl ChaosReport {
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.audit_ok && self.problems.is_empty()
    }
}

/// What a run of several nodes adds to the report.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterFigures {
    pub nodes: usize,
    pub takeover_ms: TakeoverMs,
    /// Writes the nodes' fences refused, summed over every node's lives.
    pub fenced_writes: u64,
}

/// From a kill until every set was held by a live node again; zeros
/// without kills.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TakeoverMs {
    pub max: u64,
    pub p50: u64,
}

impl TakeoverMs {
    fn of(takeovers_ms: &mut [u64]) -> TakeoverMs {
        takeovers_ms.sort_unstable();
        let Some(&max) = takeovers_ms.last() else { return TakeoverMs::default() };
        // The nearest rank: the lower middle of an even count.
        TakeoverMs { max, p50: takeovers_ms[(takeovers_ms.len() - 1) / 2] }
    }
}

/// The sets of a lone server: a few, so each sees many writes between kills.
const SETS: u16 = 4;

/// The server's flags besides `--sets`. Twenty synthetic senders send and a thousand open
/// far faster than people do, so the per-user limits are lifted (they still
/// run on every request): the run is about what survives a SIGKILL, and a
/// request refused 429 is one fewer to check. The access log is off: the
/// run's own journal records every operation, and a line per request in
/// each node's log file only slows the run.
const SERVER_ARGS: &[&str] = &[
    "--log-filter",
    "info,hongbao::access=off",
    "--rate-limit",
    "send=1e6/1e6",
    "--rate-limit",
    "open=1e6/1e6",
    "--rate-limit",
    "grab=1e6/1e6",
    "--user-writes-in-flight-max",
    "1024",
];

/// Runs the whole experiment and checks it.
pub async fn run(options: ChaosOptions) -> Result<ChaosReport> {
    options.check()?;
    let dir = tempfile::tempdir().context("making a temporary data directory")?;
    let store = RunStore::make(options.store.as_deref()).await?;
    let report = if options.nodes == 1 {
        run_one(&options, &store, &dir.path().join("data")).await?
    } else {
        // A failed run keeps its directory: the nodes' logs are there.
        match cluster::run(&options, &store, dir.path()).await {
            Ok(report) if report.ok() => report,
            Ok(report) => ChaosReport { kept: Some(dir.keep()), ..report },
            Err(error) => {
                let kept = dir.keep();
                return Err(error.context(format!("the nodes' logs are kept in {}", kept.display())));
            }
        }
    };
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

/// The experiment on one server.
async fn run_one(options: &ChaosOptions, store: &RunStore, data: &Path) -> Result<ChaosReport> {
    let args = store.serve_args(SETS);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Arc::new(Server::start(&options.binary, data, &args).await?);
    let journal = Arc::new(Journal::default());
    let admin = admin_token(data)?;
    let deadline = Instant::now() + options.duration;
    let clients = spawn_clients(server.clone(), &journal, data, &admin, options, deadline)?;
    let kills = kill_at_random(&server, options, deadline).await?;
    for client in clients {
        client.await.context("a chaos client panicked")??;
    }
    server.stop().await?;
    let mut report = check(journal, data, store).await?;
    report.kills = kills;
    report.seed = options.seed;
    Ok(report)
}

/// The first admin's token, as the data directory's first start wrote it.
fn admin_token(data: &Path) -> Result<String> {
    let path = data.join(hongbao_node::data_dir::ADMIN_TOKEN_FILE);
    let token = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(token.trim().to_owned())
}

/// Starts `options.clients` clients against `targets`, signing with the
/// keys of `data` (read once), each running until `deadline`.
fn spawn_clients(
    targets: Arc<dyn Targets>,
    journal: &Arc<Journal>,
    data: &Path,
    admin: &str,
    options: &ChaosOptions,
    deadline: Instant,
) -> Result<Vec<tokio::task::JoinHandle<Result<()>>>> {
    let auth = Arc::new(hongbao_node::auth(data)?);
    Ok((0..options.clients)
        .map(|client| {
            let (targets, journal, auth, admin) = (targets.clone(), journal.clone(), auth.clone(), admin.to_owned());
            let context = workload::Context::new(targets, journal, auth, admin, options.seed, client as u64);
            tokio::spawn(async move { workload::run(context, deadline).await })
        })
        .collect())
}

/// Checks the stopped data set of `data` against the journal.
async fn check(journal: Arc<Journal>, data: &Path, store: &RunStore) -> Result<ChaosReport> {
    // Reading a PostgreSQL data set waits on the store's own runtime, which
    // may not be entered from this one.
    let (choice, data) = (store.choice.clone(), data.to_owned());
    let checked = tokio::task::spawn_blocking(move || journal::check(&journal, &data, &choice));
    checked.await.context("the check's task")?
}

/// Kills the server and restarts it `options.kills` times, spread over the
/// run, each at a random point of its slot; answers how many kills landed
/// before the deadline.
async fn kill_at_random(server: &Server, options: &ChaosOptions, deadline: Instant) -> Result<u32> {
    let mut kills = 0;
    for kill in 0..options.kills {
        let slot = options.duration / (options.kills + 1);
        let jitter = slot.mul_f64((mix64(options.seed ^ u64::from(kill)) % 1000) as f64 / 1000.0);
        tokio::time::sleep(slot.mul_f64(0.5) + jitter.mul_f64(0.5)).await;
        if Instant::now() >= deadline {
            break;
        }
        server.kill_and_restart().await?;
        kills += 1;
    }
    Ok(kills)
}

/// Where the run keeps its sets: in the data directory, or in a fresh
/// database on a PostgreSQL server, dropped with this once the check has
/// read it.
struct RunStore {
    choice: StoreChoice,
    database: Option<ScratchDatabase>,
}

impl RunStore {
    async fn make(server: Option<&str>) -> Result<RunStore> {
        let Some(server) = server else { return Ok(RunStore { choice: StoreChoice::Sqlite, database: None }) };
        let server = pg_server(server)?;
        let made = tokio::task::spawn_blocking(move || ScratchDatabase::create(&server, "hongbao_chaos"));
        let database = made
            .await
            .context("the task making the run's database")?
            .context("making the run's PostgreSQL database")?;
        Ok(RunStore { choice: StoreChoice::Postgres(SetMap::single(database.url())), database: Some(database) })
    }

    /// The run's database, if it has one.
    fn url(&self) -> Option<String> {
        self.database.as_ref().map(ScratchDatabase::url)
    }

    /// `serve`'s flags: the run's, and the run's database if it has one.
    fn serve_args(&self, sets: u16) -> Vec<String> {
        let mut args = vec!["--sets".to_owned(), sets.to_string()];
        args.extend(SERVER_ARGS.iter().map(|arg| (*arg).to_owned()));
        if let Some(database) = &self.database {
            args.extend(["--store".to_owned(), database.url()]);
        }
        args
    }
}

/// The server of a `postgres://` URL (`postgres://user@host:port`): a
/// database it names is dropped, since the run makes its own.
fn pg_server(url: &str) -> Result<String> {
    let Some((scheme, rest)) = url.split_once("://").filter(|_| is_postgres_url(url)) else {
        bail!("--store takes a PostgreSQL server as postgres://user@host:port");
    };
    if rest.contains('?') {
        bail!("--store takes a PostgreSQL server as postgres://user@host:port, without parameters");
    }
    let authority = rest.split('/').next().unwrap_or(rest);
    Ok(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_flag_names_a_server_and_a_database_in_it_is_dropped() {
        let server = "postgres://postgres@127.0.0.1:5432";
        assert_eq!(pg_server(server).unwrap(), server);
        assert_eq!(pg_server("postgres://postgres@127.0.0.1:5432/").unwrap(), server);
        assert_eq!(pg_server("postgres://postgres@127.0.0.1:5432/hongbao").unwrap(), server);
        assert_eq!(pg_server("postgresql://u:p@db").unwrap(), "postgresql://u:p@db");
        assert!(pg_server("host=127.0.0.1 user=postgres").is_err());
        assert!(pg_server("postgres://u@h/db?sslmode=disable").is_err());
    }

    #[test]
    fn several_nodes_need_postgres_to_share() {
        let options = ChaosOptions {
            binary: PathBuf::from("hongbao"),
            kills: 1,
            duration: Duration::from_secs(1),
            clients: 1,
            seed: 1,
            json: None,
            store: None,
            nodes: 1,
        };
        assert!(options.check().is_ok());
        assert!(ChaosOptions { nodes: 3, ..options.clone() }.check().is_err());
        assert!(ChaosOptions { nodes: 0, ..options.clone() }.check().is_err());
        let store = Some("postgres://postgres@127.0.0.1:5432".to_owned());
        assert!(ChaosOptions { nodes: 3, store, ..options }.check().is_ok());
    }

    #[test]
    fn takeovers_report_their_maximum_and_median() {
        assert_eq!(TakeoverMs::of(&mut []), TakeoverMs { max: 0, p50: 0 });
        assert_eq!(TakeoverMs::of(&mut [2400, 1900, 2100]), TakeoverMs { max: 2400, p50: 2100 });
        assert_eq!(TakeoverMs::of(&mut [2400, 1900]), TakeoverMs { max: 2400, p50: 1900 });
    }
}
