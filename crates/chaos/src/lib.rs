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

mod journal;
mod workload;

use std::path::PathBuf;
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
use hongbao_bench::child::Server;

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
    #[serde(skip)]
    pub problems: Vec<String>,
    #[serde(skip)]
    pub audit: String,
}

impl ChaosReport {
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.audit_ok
    }
}

/// The server's flags. Twenty synthetic senders send and a thousand open
/// far faster than people do, so the per-user limits are lifted (they still
/// run on every request): the run is about what survives a SIGKILL, and a
/// request refused 429 is one fewer to check.
const SERVER_ARGS: &[&str] = &[
    "--sets",
    "4",
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
    let dir = tempfile::tempdir().context("making a temporary data directory")?;
    let data = dir.path().join("data");
    let store = RunStore::make(options.store.as_deref()).await?;
    let args = store.serve_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Arc::new(Server::start(&options.binary, &data, &args).await?);
    let journal = Arc::new(Journal::default());
    // The keys are read once; every client signs with them.
    let auth = Arc::new(hongbao_node::auth(&data)?);
    let admin_token = data.join(hongbao_node::data_dir::ADMIN_TOKEN_FILE);
    let admin = std::fs::read_to_string(&admin_token)
        .with_context(|| format!("reading {}", admin_token.display()))?
        .trim()
        .to_owned();
    let deadline = Instant::now() + options.duration;
    let clients: Vec<_> = (0..options.clients)
        .map(|client| {
            let (server, journal, auth, admin) = (server.clone(), journal.clone(), auth.clone(), admin.clone());
            let context = workload::Context::new(server, journal, auth, admin, options.seed, client as u64);
            tokio::spawn(async move { workload::run(context, deadline).await })
        })
        .collect();
    let kills = kill_at_random(&server, &options, deadline).await?;
    for client in clients {
        client.await.context("a chaos client panicked")??;
    }
    server.stop().await?;
    // Reading a PostgreSQL data set waits on the store's own runtime, which
    // may not be entered from this one.
    let choice = store.choice.clone();
    let checked = tokio::task::spawn_blocking(move || journal::check(&journal, &data, &choice));
    let mut report = checked.await.context("the check's task")??;
    report.kills = kills;
    report.seed = options.seed;
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
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

    /// `serve`'s flags: the run's, and the run's database if it has one.
    fn serve_args(&self) -> Vec<String> {
        let mut args: Vec<String> = SERVER_ARGS.iter().map(|arg| (*arg).to_owned()).collect();
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
}
