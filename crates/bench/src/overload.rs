//! The overload profile (`--only overload-http`): the real `hongbao serve`
//! in its own process, so its memory is its own, pinned to one core with the
//! bench on the others, so the load generator can offer more than the
//! server can take. Three phases on one server:
//!
//! 1. `overload-http-capacity`: opens closed-loop, to measure capacity C;
//! 2. `overload-http`: opens offered open-loop at 3 C from many connections;
//! 3. `overload-http-after`: at once, 0.5 C.
//!
//! The server must shed the excess with 503 + Retry-After (nothing else may
//! fail), keep the admitted opens' p99 bounded, its memory flat, and serve
//! everything again as soon as the load drops. Every acknowledged open is
//! checked through the API, and the stopped data directory is audited.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::child::Server;
use crate::hongbao::{Ack, AuditResult, OpenHttp, connections};
use crate::load::{Mode, drive};
use crate::report::RunResult;
use crate::target::Target;
use crate::{Suite, TARGET_COUNT_MAX};

/// What an overload run adds to a run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Overload {
    /// Opens offered per second (open loop), 0 for the closed-loop phase.
    pub offered_per_s: u64,
    /// Opens refused with 503 and Retry-After.
    pub shed: u64,
    /// Failures that were not a 503: there must be none.
    pub other_errors: u64,
    /// p99 of the admitted opens from when each was sent (the run's p99 is
    /// from when each was due, which adds any wait for a free connection).
    pub service_p99_us: u64,
    /// Resident memory of the server's process before the run, and the
    /// most sampled (every 50 ms) during it.
    pub rss_before_mib: f64,
    pub rss_max_mib: f64,
    /// Whether the server ran on a core of its own.
    pub pinned: bool,
}

/// Sets the CPUs of every thread of `pid` (util-linux `taskset`).
fn pin(pid: u32, cpus: &str) -> bool {
    let status = Command::new("taskset").args(["-a", "-p", "-c", cpus, &pid.to_string()]).output();
    status.is_ok_and(|output| output.status.success())
}

/// Connections the open-loop phases offer from: enough that the server,
/// not the client, decides what is admitted.
const OPEN_CONNECTIONS: usize = 4096;

/// Opens a second the closed-loop phase's packets are sized for.
const CAPACITY_GUESS: f64 = 30_000.0;

impl Suite {
    pub(crate) async fn overload(&mut self) -> Result<()> {
        let dir = tempfile::tempdir().context("making a temporary data directory")?;
        let data = dir.path().join("data");
        let binary = std::env::current_exe().context("finding the hongbao binary")?;
        // Opens per user are the bench's, as in-process (see BenchServer::start).
        let options = ["--open-rate-per-s", "1000000", "--open-burst", "1000000"];
        let server = Server::start(&binary, &data, &options).await?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pinned = cores >= 2
            && server.pid().is_some_and(|pid| pin(pid, "0"))
            && pin(std::process::id(), &format!("1-{}", cores - 1));
        if !pinned {
            eprintln!("overload-http: the server is not on a core of its own; the client competes with it");
        }
        let result = self.overload_phases(&server, &data, pinned).await;
        if pinned {
            pin(std::process::id(), &format!("0-{}", cores - 1));
        }
        server.stop().await?;
        result?;
        let report = hongbao_node::audit_dir(&data)?;
        let violations = report.violations.clone();
        let audit = AuditResult { ok: report.ok(), summary: report.to_string(), acked: 0, violations };
        self.audits.push(("overload-http-data".into(), audit));
        Ok(())
    }

    async fn overload_phases(&mut self, server: &Server, data: &std::path::Path, pinned: bool) -> Result<()> {
        let admin = std::fs::read_to_string(data.join("admin.token")).context("reading the admin token")?;
        let target = Target::connect(&format!("http://{}", server.addr().0), admin.trim().to_owned()).await?;
        let seconds = self.sizes.duration.as_secs_f64() + 1.0;
        let mut capacity = CAPACITY_GUESS;
        let phases =
            [("overload-http-capacity", None), ("overload-http", Some(3.0)), ("overload-http-after", Some(0.5))];
        for (name, factor) in phases {
            let (mode, offered) = match factor {
                None => (Mode::Closed { clients: self.sizes.clients }, 0),
                Some(factor) => {
                    let rate = (capacity * factor).max(1.0) as u64;
                    (Mode::Open { rate, clients: OPEN_CONNECTIONS }, rate)
                }
            };
            // Shares for every open offered (fresh packets per phase, so no
            // user opens one twice).
            let opens = if offered > 0 { offered as f64 } else { capacity } * seconds * 1.2;
            let packets = (opens / f64::from(TARGET_COUNT_MAX)).ceil() as usize;
            let (plan, tokens) = target.prepare(packets, TARGET_COUNT_MAX).await?;
            let (plan, tokens) = (Arc::new(plan), Arc::new(tokens));
            match factor {
                None => eprintln!("{name}: closed loop, {} connections", mode.clients()),
                Some(factor) => eprintln!("{name} offers {offered} opens/s ({factor}x the measured {capacity:.0})"),
            }
            let clients = connections(target.addr, mode.clients()).await?;
            let clients = clients.into_iter().map(|c| OpenHttp::new(c, plan.clone(), tokens.clone())).collect();
            let rss_before_mib = server.rss_kib() as f64 / 1024.0;
            let rss_max_kib = AtomicU64::new(server.rss_kib());
            let bar = self.bar(name);
            let sample = async {
                loop {
                    rss_max_kib.fetch_max(server.rss_kib(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            let (measured, clients) = tokio::select! {
                measured = drive(mode, self.sizes.duration, clients, &bar) => measured,
                never = sample => never,
            };
            if factor.is_none() {
                capacity = measured.ops_per_s().max(1.0);
            }
            let mut run = RunResult::new(name, mode.clients(), &measured);
            run.overload = Some(Overload {
                offered_per_s: offered,
                shed: measured.refused,
                other_errors: measured.errors - measured.refused,
                service_p99_us: measured.service_us.value_at_quantile(0.99),
                rss_before_mib,
                rss_max_mib: rss_max_kib.load(Ordering::Relaxed) as f64 / 1024.0,
                pinned,
            });
            self.runs.push(run);
            let acked: Vec<Ack> = clients.into_iter().flat_map(|client| client.acked).collect();
            let audit = target.verify(&acked, &tokens).await?;
            self.audits.push((name.into(), audit));
        }
        Ok(())
    }
}
