//! The memory profile (`--only live-packets`): what a live packet costs a
//! node. Every packet that is neither expired nor emptied stays in its set's
//! memory until it settles (`engine/src/writer/state.rs`), so on a busy
//! evening the packets sent in the last day bound how much a node can hold.
//!
//! The run starts the real `hongbao serve` as a child process on a fresh
//! data directory (so its memory is its own), funds `SENDERS` senders
//! through the admin deposit route, reads the child's resident memory once
//! it has settled, then sends N lucky packets of `SHARES` shares, each
//! expiring a day later and none opened, over `POST /v1/packets` from many
//! connections (a refused send, 503 or 429, is sent again until it is
//! acknowledged), lets the server settle again (its tables follow the
//! journal) and reads its memory a second time.
//!
//! How to read it: bytes per live packet are the growth of the child's
//! `VmRSS` over the acknowledged packets. `VmRSS` counts everything the
//! process holds: the live packets' maps, but also SQLite's page caches and
//! the database pages it maps for reads (`RssFile`, which the kernel can
//! reclaim), and memory the allocator keeps after the sends' requests are
//! gone. The heap share (`RssAnon`) is given beside it. The table's ops/s
//! is the sends a second the setup achieved; the stopped data directory is
//! audited, and must hold at least every acknowledged packet.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use hongbao_domain::UserId;
use hyper::Method;
use hyper::body::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::json;

use crate::Suite;
use crate::child::{Server, status_kib};
use crate::client::Connection;
use crate::hongbao::{AuditResult, connections};
use crate::load::{Measured, histogram};
use crate::report::{RunResult, thousands};
use crate::target::{Target, Tokens};

/// Senders of the packets: enough that the packets spread over every set
/// as real senders' do, few enough that their accounts weigh nothing.
const SENDERS: usize = 1024;
/// Shares per packet, and fen per share (the packet holds 1.00).
const SHARES: u32 = 10;
const SHARE_FEN: u64 = 10;
/// A day: no packet expires (and settles) while the run measures.
const EXPIRES_IN_S: u32 = 86_400;
/// How long a refused send waits before it is sent again.
const RETRY_PAUSE: Duration = Duration::from_millis(5);
/// The server has settled once `SETTLE_READINGS` readings, `SETTLE_EVERY`
/// apart, are within `SETTLE_SPREAD_KIB`; it is read at most until
/// `SETTLE_MAX` has passed.
const SETTLE_EVERY: Duration = Duration::from_millis(250);
const SETTLE_READINGS: usize = 8;
const SETTLE_SPREAD_KIB: u64 = 1024;
const SETTLE_MAX: Duration = Duration::from_secs(30);

/// What the memory profile adds to its run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Live packets: the sends acknowledged.
    pub packets: u64,
    /// The server's `VmRSS`, settled, before the sends and after them.
    pub rss_before_mib: f64,
    pub rss_after_mib: f64,
    /// (after − before) / packets.
    pub bytes_per_packet: f64,
    /// The same over `RssAnon` alone: the heap, without mapped files.
    pub anon_bytes_per_packet: f64,
}

impl Memory {
    /// One line: `1,000,000 live 10-share packets: RSS 67.1 → 488.0 MiB,
    /// 441 B per packet (…)`.
    pub fn summary(&self) -> String {
        format!(
            "{} live {SHARES}-share packets: RSS {:.1} → {:.1} MiB, {:.0} B per packet ({:.0} B of it heap: RssAnon)",
            thousands(self.packets),
            self.rss_before_mib,
            self.rss_after_mib,
            self.bytes_per_packet,
            self.anon_bytes_per_packet,
        )
    }
}

/// One reading of the child's memory, in KiB.
#[derive(Debug, Clone, Copy)]
struct Rss {
    total_kib: u64,
    anon_kib: u64,
}

fn read_rss(server: &Server) -> Result<Rss> {
    let pid = server.pid().context("the server is not running")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading the memory of the server (pid {pid})"))?;
    let rss = Rss { total_kib: status_kib(&status, "VmRSS"), anon_kib: status_kib(&status, "RssAnon") };
    if rss.total_kib == 0 {
        bail!("the server (pid {pid}) shows no resident memory: it has exited");
    }
    Ok(rss)
}

/// Reads the child's memory until it holds still (or `SETTLE_MAX` passed),
/// and answers the last reading.
async fn settled(server: &Server) -> Result<Rss> {
    let bound = Instant::now() + SETTLE_MAX;
    let mut readings: VecDeque<Rss> = VecDeque::with_capacity(SETTLE_READINGS);
    loop {
        let rss = read_rss(server)?;
        if readings.len() == SETTLE_READINGS {
            readings.pop_front();
        }
        readings.push_back(rss);
        let totals = readings.iter().map(|rss| rss.total_kib);
        let spread = totals.clone().max().unwrap_or(0) - totals.min().unwrap_or(0);
        if (readings.len() == SETTLE_READINGS && spread <= SETTLE_SPREAD_KIB) || Instant::now() >= bound {
            return Ok(rss);
        }
        tokio::time::sleep(SETTLE_EVERY).await;
    }
}

/// What every sending connection shares: the request, the senders' tokens,
/// and the next packet to send.
struct Plan {
    body: Bytes,
    tokens: Vec<String>,
    packets: u64,
    next: AtomicU64,
    start: Instant,
}

/// One connection's record of its sends, merged at the end.
struct Tally {
    ops: u64,
    errors: u64,
    refused: u64,
    latency_us: Histogram<u64>,
    per_second: Vec<Histogram<u64>>,
}

impl Tally {
    fn new() -> Tally {
        Tally { ops: 0, errors: 0, refused: 0, latency_us: histogram(), per_second: Vec::new() }
    }

    fn acknowledged(&mut self, sent: Instant, start: Instant) {
        let us = (sent.elapsed().as_micros() as u64).clamp(1, 60_000_000);
        self.ops += 1;
        self.latency_us.saturating_record(us);
        let second = sent.duration_since(start).as_secs() as usize;
        while self.per_second.len() <= second {
            self.per_second.push(histogram());
        }
        self.per_second[second].saturating_record(us);
    }

    fn merge(&mut self, other: Tally) {
        self.ops += other.ops;
        self.errors += other.errors;
        self.refused += other.refused;
        self.latency_us.add(&other.latency_us).expect("same bounds");
        for (second, histogram) in other.per_second.into_iter().enumerate() {
            match self.per_second.get_mut(second) {
                Some(total) => total.add(&histogram).expect("same bounds"),
                None => self.per_second.push(histogram),
            }
        }
    }
}

/// Sends packets until the plan's are all taken. A refusal (503 overloaded,
/// 429 limited) is sent again: it was not applied. Any other failure is
/// counted and not sent again, as it may have been applied.
async fn send_loop(mut connection: Connection, plan: Arc<Plan>) -> Tally {
    let mut tally = Tally::new();
    loop {
        let n = plan.next.fetch_add(1, Ordering::Relaxed);
        if n >= plan.packets {
            return tally;
        }
        let token = &plan.tokens[(n % plan.tokens.len() as u64) as usize];
        let sent = Instant::now();
        loop {
            let answer = connection.request(Method::POST, "/v1/packets", Some(token), Some(plan.body.clone())).await;
            match answer.map(|(status, _)| status.as_u16()) {
                Ok(201) => tally.acknowledged(sent, plan.start),
                Ok(503 | 429) => {
                    tally.refused += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                _ => tally.errors += 1,
            }
            break;
        }
    }
}

/// Sends `packets` packets over `connections`, showing progress on `bar`.
async fn send_all(connections: Vec<Connection>, tokens: Vec<String>, packets: u64, bar: &ProgressBar) -> Measured {
    let body = json!({"kind": "lucky", "total_amount": u64::from(SHARES) * SHARE_FEN, "count": SHARES,
        "expires_in_s": EXPIRES_IN_S});
    let start = Instant::now();
    let plan = Arc::new(Plan { body: Bytes::from(body.to_string()), tokens, packets, next: AtomicU64::new(0), start });
    bar.set_length(packets);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>18} [{bar:30}] {pos}/{len} packets {per_sec}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let ticker = {
        let (plan, bar) = (plan.clone(), bar.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                bar.set_position(plan.next.load(Ordering::Relaxed).min(plan.packets));
            }
        })
    };
    let tasks: Vec<_> = connections.into_iter().map(|c| tokio::spawn(send_loop(c, plan.clone()))).collect();
    let mut total = Tally::new();
    for task in tasks {
        total.merge(task.await.expect("a sending connection panicked"));
    }
    ticker.abort();
    bar.finish_with_message(format!("{} packets", total.ops));
    let timeline = total.per_second.iter().map(|h| (h.len(), h.value_at_quantile(0.99))).collect();
    Measured {
        ops: total.ops,
        errors: total.errors + total.refused,
        refused: total.refused,
        elapsed: start.elapsed(),
        service_us: total.latency_us.clone(),
        latency_us: total.latency_us,
        timeline,
    }
}

/// The senders, funded through the admin route, and their tokens (signed
/// with the data directory's keys).
async fn senders(server: &Server, data: &Path, packets: u64) -> Result<Vec<String>> {
    let admin = std::fs::read_to_string(data.join("admin.token")).context("reading the admin token")?;
    let target = Target::connect(&format!("http://{}", server.addr().0), admin.trim().to_owned()).await?;
    let senders: Vec<UserId> =
        (0..SENDERS).map(|s| UserId::parse(&format!("lp{s}")).expect("a valid user name")).collect();
    let per_sender = packets.div_ceil(SENDERS as u64);
    target.fund(&senders, per_sender * u64::from(SHARES) * SHARE_FEN).await?;
    let tokens = Tokens::Signed(Arc::new(hongbao_node::auth(data)?));
    Ok(senders.iter().map(|sender| tokens.of(sender)).collect())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Bytes per packet of the growth from `before` to `after` (in KiB).
fn per_packet(before: u64, after: u64, packets: u64) -> f64 {
    (after as f64 - before as f64) * 1024.0 / packets.max(1) as f64
}

impl Suite {
    pub(crate) async fn live_packets(&mut self) -> Result<()> {
        let dir = tempfile::tempdir().context("making a temporary data directory")?;
        let data = dir.path().join("data");
        let binary = std::env::current_exe().context("finding the hongbao binary")?;
        // The setup sends far faster per sender than people do: the
        // per-user limits are lifted, the node's own bounds stay.
        let sets = self.sets.map(|sets| sets.to_string());
        let mut options = vec!["--rate-limit", "send=1000000/1000000", "--user-writes-in-flight-max", "1024"];
        if let Some(sets) = &sets {
            options.extend(["--sets", sets]);
        }
        let server = Server::start(&binary, &data, &options).await?;
        let result = self.live_packets_on(&server, &data).await;
        server.stop().await?;
        let acked = result?;
        let report = hongbao_node::audit_dir(&data)?;
        let mut violations = report.violations.clone();
        if (report.packets as u64) < acked {
            violations.push(format!("{acked} packets acknowledged, {} in the store", report.packets));
        }
        let audit = AuditResult { ok: violations.is_empty(), summary: report.to_string(), acked: 0, violations };
        self.audits.push(("live-packets-data".into(), audit));
        Ok(())
    }

    /// Funds, reads the settled memory, sends, reads it again; records the
    /// run and answers how many packets were acknowledged.
    async fn live_packets_on(&mut self, server: &Server, data: &Path) -> Result<u64> {
        let name = "live-packets";
        let packets = self.sizes.live_packets as u64;
        let tokens = senders(server, data, packets).await?;
        let connections = connections(server.addr().0, self.sizes.clients).await?;
        let before = settled(server).await?;
        let measured = send_all(connections, tokens, packets, &self.bar(name)).await;
        let after = settled(server).await?;
        if measured.ops == 0 {
            bail!("{name}: no send was acknowledged ({} errors)", measured.errors);
        }
        let memory = Memory {
            packets: measured.ops,
            rss_before_mib: mib(before.total_kib),
            rss_after_mib: mib(after.total_kib),
            bytes_per_packet: per_packet(before.total_kib, after.total_kib, measured.ops),
            anon_bytes_per_packet: per_packet(before.anon_kib, after.anon_kib, measured.ops),
        };
        eprintln!("{name}: {}; RssAnon {:.1} → {:.1} MiB", memory.summary(), mib(before.anon_kib), mib(after.anon_kib));
        let mut run = RunResult::new(name, self.sizes.clients, &measured);
        run.memory = Some(memory);
        self.runs.push(run);
        Ok(measured.ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_and_counts_read_as_written() {
        let status = "Name:\thongbao\nVmRSS:\t  68712 kB\nRssAnon:\t   40960 kB\nRssFile:\t 27752 kB\n";
        assert_eq!(status_kib(status, "VmRSS"), 68_712);
        assert_eq!(status_kib(status, "RssAnon"), 40_960);
        assert_eq!(status_kib(status, "RssShmem"), 0);
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(482), "482");
        assert_eq!(thousands(200_000), "200,000");
        assert_eq!(per_packet(1024, 2048, 1024), 1024.0);
    }
}
