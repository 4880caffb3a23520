//! `days-week-pg` (run only when named): a simulated week of New Year's
//! Eves on PostgreSQL, to show that the hot tables stay flat while the cold
//! days grow. Each simulated day sends a fresh set of packets and opens
//! every share of them (on the engine, as `open-engine` does, so each day
//! carries the same work); then
//! the server's clock moves a day and two hours on, so the day's packets
//! expire, refund and settle, and the day keeper moves the day before cold.
//! The retention is one day here (the service's default is seven), so a
//! week shows the steady state: the hot tables hold about two days, and
//! each day adds one to the archive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use hongbao_engine::{Clock, ManualClock, SystemClock};
use hongbao_node::StoreChoice;
use indicatif::ProgressBar;
use serde::Serialize;

use std::sync::atomic::{AtomicU64, Ordering};

use hongbao_engine::Engine;

use crate::hongbao::{Ack, AuditResult, BenchServer, OpenEngine, Plan, prepare};
use crate::load::Client;
use crate::report::RunResult;

const DAY_MS: i64 = 86_400_000;
/// Past a day's expiry (a day) and the keeper's margin for late credits
/// (an hour).
const STEP_MS: i64 = DAY_MS + 2 * 3_600_000;
/// How long the keeper is given to find the refunds done and move a day.
const COOL_BOUND: Duration = Duration::from_secs(60);
/// Simulated days.
pub const DAYS: u32 = 7;
const RETENTION_DAYS: u32 = 1;

/// The tables after one simulated day.
#[derive(Debug, Clone, Serialize)]
pub struct DaySize {
    pub day: u32,
    pub opens: u64,
    pub hot_mib: f64,
    pub cold_mib: f64,
    pub hot_days: u64,
    pub cold_days: u64,
}

pub struct Week {
    pub sets: Option<u16>,
    pub pg: String,
    /// Packets sent each day, and shares in each: every share is opened.
    pub packets: usize,
    pub count: u32,
    pub clients: usize,
}

/// One day's opens: every share of the day's packets.
struct Opened {
    acked: Vec<Ack>,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

/// Opens all `shares` of `plan`'s packets from `clients` tasks at once.
async fn open_all(engine: &Engine, plan: &Arc<Plan>, shares: u64, clients: usize) -> Result<Opened> {
    let next = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (engine, plan, next) = (engine.clone(), plan.clone(), next.clone());
            tokio::spawn(async move {
                let mut client = OpenEngine { engine, plan, acked: Vec::new() };
                let mut latency_us = Histogram::<u64>::new(3).expect("a histogram");
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= shares {
                        return (client.acked, latency_us);
                    }
                    let asked = Instant::now();
                    // Overload refuses an open unapplied: asked again.
                    while !client.call(n).await {}
                    let _ = latency_us.record(asked.elapsed().as_micros() as u64);
                }
            })
        })
        .collect();
    let mut opened = Opened { acked: Vec::new(), elapsed: Duration::ZERO, latency_us: Histogram::new(3)? };
    for task in tasks {
        let (acked, latency_us) = task.await?;
        opened.acked.extend(acked);
        opened.latency_us.add(&latency_us)?;
    }
    opened.elapsed = began.elapsed();
    Ok(opened)
}

impl Week {
    pub async fn run(&self, bar: &ProgressBar) -> Result<(RunResult, AuditResult, Vec<DaySize>)> {
        // A clock that starts just after a midnight, so each step lands on
        // the next calendar day for the whole week.
        let start = SystemClock.now().0.div_euclid(DAY_MS) * DAY_MS + 1_800_000;
        let clock = ManualClock::new(hongbao_domain::Millis(start));
        let node =
            BenchServer::start_on(self.sets, Some(&self.pg), Arc::new(clock.clone()), Some(RETENTION_DAYS)).await?;
        let StoreChoice::Postgres(map) = node.store().clone() else { bail!("the week runs on PostgreSQL") };
        let sets = node.running.data.sets;
        let engine = node.running.engine.clone();
        let (mut acked, mut days, mut ops, mut measured_s) = (Vec::<Ack>::new(), Vec::new(), 0u64, 0.0);
        let mut latency = Histogram::<u64>::new(3).context("a histogram")?;
        let began = Instant::now();
        let mut previous_day = None;
        for day in 0..DAYS {
            let plan = Arc::new(prepare(&engine, self.packets, self.count).await?);
            let packet_day = plan.packets[0].day;
            let shares = self.packets as u64 * u64::from(self.count);
            let opened = open_all(&engine, &plan, shares, self.clients).await?;
            bar.set_message(format!("day {day}"));
            ops += opened.acked.len() as u64;
            measured_s += opened.elapsed.as_secs_f64();
            latency.add(&opened.latency_us).context("merging latencies")?;
            let day_opens = opened.acked.len() as u64;
            acked.extend(opened.acked);
            clock.advance_ms(STEP_MS);
            if let Some(expected) = previous_day {
                let deadline = Instant::now() + COOL_BOUND;
                loop {
                    // A pass may fail (a lock not had in time): the keeper
                    // tries again at its next pass, and so does this.
                    match node.running.keep_days_now().await {
                        Ok(kept) if kept.cooled.contains(&expected) => break,
                        Ok(_) => {}
                        Err(error) => eprintln!("  a keeper pass failed, tried again: {error:#}"),
                    }
                    if Instant::now() > deadline {
                        bail!("day {expected} did not go cold within {COOL_BOUND:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            previous_day = Some(packet_day);
            let (map, mib) = (map.clone(), |bytes: u64| bytes as f64 / 1_048_576.0);
            let sizes = tokio::task::spawn_blocking(move || hongbao_store_pg::table_sizes(&map, sets)).await??;
            let size = DaySize {
                day,
                opens: day_opens,
                hot_mib: mib(sizes.hot_bytes),
                cold_mib: mib(sizes.cold_bytes),
                hot_days: sizes.hot_days,
                cold_days: sizes.cold_days,
            };
            eprintln!(
                "  day {day}: {} opens; hot {:.1} MiB in {} days, cold {:.1} MiB in {} days",
                size.opens, size.hot_mib, size.hot_days, size.cold_mib, size.cold_days
            );
            days.push(size);
        }
        // Opens per second while opening (the days' set-up and the keeper's
        // passes between them are not counted).
        let opening = Duration::from_secs_f64(measured_s.max(f64::MIN_POSITIVE));
        let mut run = RunResult::timed("days-week-pg", self.clients, ops, opening, &latency);
        run.days = Some(days.clone());
        eprintln!("  the week took {:.1?}", began.elapsed());
        let audit = node.stop_and_audit(&acked).await?;
        Ok((run, audit, days))
    }
}
