//! `hongbao chaos`: runs the real `hongbao serve` process on a temporary data
//! directory, drives a mixed workload (deposits, sends with short expiries,
//! grabs, opens) from many connections, kills the server with SIGKILL at
//! random moments and restarts it, and keeps a journal of every operation
//! the clients saw acknowledged. At the end it stops the server and checks:
//! every acknowledged deposit, send and open is in the store with its amount
//! (nothing lost); no key or claim was applied twice on retry (nothing
//! duplicated); and `hongbao audit` passes.

mod journal;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hongbao_domain::hash::mix64;
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
}

#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    pub kills: u32,
    pub acked: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub audit_ok: bool,
    pub seed: u64,
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
    let server = Arc::new(Server::start(&options.binary, &data, SERVER_ARGS).await?);
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
    let mut kills = 0;
    for kill in 0..options.kills {
        // Kills spread over the run, each at a random point of its slot.
        let slot = options.duration / (options.kills + 1);
        let jitter = slot.mul_f64((mix64(options.seed ^ u64::from(kill)) % 1000) as f64 / 1000.0);
        tokio::time::sleep(slot.mul_f64(0.5) + jitter.mul_f64(0.5)).await;
        if Instant::now() >= deadline {
            break;
        }
        server.kill_and_restart().await?;
        kills += 1;
    }
    for client in clients {
        client.await.context("a chaos client panicked")??;
    }
    server.stop().await?;
    let mut report = journal::check(&journal, &data)?;
    report.kills = kills;
    report.seed = options.seed;
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}
