//! `hongbao chaos --nodes N`: the same workload and checks against N nodes
//! of one cluster sharing the run's PostgreSQL database. The clients spread
//! their requests over the live nodes; the run SIGKILLs a random node that
//! holds sets (never the last one alive), times the takeover of its sets by
//! the others, starts it again, and at the end stops every node gracefully, checks the
//! acknowledged operations and the audit from the first node's data
//! directory, and checks from `journal_epochs` that no set was written by
//! two nodes in one epoch.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hongbao_bench::client::Connection;
use hongbao_domain::hash::mix64;
use hyper::Method;
use serde_json::Value;

use crate::journal::Journal;
use crate::node::{NodeSpec, Nodes, free_port, share_keys};
use crate::{ChaosOptions, ChaosReport, ClusterFigures, RunStore, TakeoverMs, epochs};

/// The sets of a cluster (every node's data directory is made with them):
/// `serve`'s default, which rendezvous hashing spreads over three nodes as
/// four, two and two, where four sets would leave one node none to lose.
const SETS: u16 = 8;
/// The least time between a killed node's restart and the next kill: the
/// restarted node joins, counts as settled after a lease and takes its
/// share back, and a kill should not always land in the middle of that.
const KILL_GAP_MIN: Duration = Duration::from_secs(2);
/// How often a survivor is asked whether the killed node's sets have moved.
const TAKEOVER_POLL: Duration = Duration::from_millis(20);
/// Past this without a takeover the run fails: the lease (2 s by default)
/// plus a tick and a recovery should take a few seconds, not thirty.
const TAKEOVER_WAIT_MAX: Duration = Duration::from_secs(30);
/// How long a node's status may take to answer before it counts as not
/// answering (it reads the database).
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a live node may keep failing to report its fenced writes (a
/// node just started answers 503 until its keeper has read the cluster).
const STATUS_WAIT_MAX: Duration = Duration::from_secs(5);

/// Runs the experiment on `options.nodes` nodes, their data directories and
/// logs under `dir`.
pub async fn run(options: &ChaosOptions, store: &RunStore, dir: &Path) -> Result<ChaosReport> {
    let url = store.url().context("a cluster needs its sets on PostgreSQL")?;
    let specs: Vec<NodeSpec> = (1..=options.nodes)
        .map(|number| {
            let id = format!("n{number}");
            let (data, log) = (dir.join(&id), dir.join(format!("{id}.log")));
            Ok(NodeSpec { id, addr: free_port()?, data, log })
        })
        .collect::<Result<_>>()?;
    let ids: Vec<String> = specs.iter().map(|spec| spec.id.clone()).collect();
    let nodes = Arc::new(Nodes::new(&options.binary, store.serve_args(SETS), specs));
    // The first node makes the keys and the admin token; the others share them.
    nodes.start(0).await?;
    for index in 1..nodes.len() {
        share_keys(nodes.spec(0), nodes.spec(index))?;
        nodes.start(index).await?;
    }
    let data = nodes.spec(0).data.clone();
    let admin = crate::admin_token(&data)?;
    let journal = Arc::new(Journal::default());
    let deadline = Instant::now() + options.duration;
    let clients = crate::spawn_clients(nodes.clone(), &journal, &data, &admin, options, deadline)?;
    let mut kills = kill_at_random(&nodes, &admin, options, deadline).await?;
    for client in clients {
        client.await.context("a chaos client panicked")??;
    }
    for index in nodes.live() {
        kills.fenced_writes += fenced_writes(&nodes, index, &admin, &mut kills.problems).await;
    }
    // One at a time: each hands its sets to the nodes still running, the
    // last one stops holding them all.
    for index in 0..nodes.len() {
        nodes.stop(index).await?;
    }
    let mut report = crate::check(journal, &data, store).await?;
    let rows = epochs::read(&url).await?;
    report.problems.extend(kills.problems);
    report.problems.extend(epochs::violations(&rows, &ids));
    report.kills = kills.count;
    report.seed = options.seed;
    report.cluster = Some(ClusterFigures {
        nodes: options.nodes,
        takeover_ms: TakeoverMs::of(&mut kills.takeovers_ms),
        fenced_writes: kills.fenced_writes,
    });
    Ok(report)
}

/// What the kills did.
#[derive(Debug, Default)]
struct Kills {
    count: u32,
    /// From each kill until a survivor saw every set held by a live node.
    takeovers_ms: Vec<u64>,
    /// Summed over the nodes' lives: each node's count is read just before
    /// it is killed, and at the end.
    fenced_writes: u64,
    problems: Vec<String>,
}

/// Kills a random node holding sets `options.kills` times, one kill per slot of the
/// run at a random point of it (but `KILL_GAP_MIN` after the last restart),
/// and starts it again once its sets have moved.
async fn kill_at_random(nodes: &Nodes, admin: &str, options: &ChaosOptions, deadline: Instant) -> Result<Kills> {
    let started = Instant::now();
    let slot = options.duration / (options.kills + 1);
    let mut ready_at = started;
    let mut kills = Kills::default();
    for kill in 0..options.kills {
        let draw = mix64(options.seed ^ 0x6b69_6c6c ^ u64::from(kill));
        // The slot's end, moved by up to a quarter slot either way.
        let jitter = slot.mul_f64((draw % 1000) as f64 / 2000.0);
        let at = (started + slot * (kill + 1) + jitter).checked_sub(slot / 4).unwrap_or(started);
        let at = at.max(ready_at + KILL_GAP_MIN);
        if at >= deadline {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let live = nodes.live();
        if live.len() < 2 {
            // Never the last node alive: nothing would take its sets.
            continue;
        }
        let victim = victim(nodes, &live, admin, draw).await;
        let survivor = *live.iter().find(|index| **index != victim).expect("two nodes live");
        kills.fenced_writes += fenced_writes(nodes, victim, admin, &mut kills.problems).await;
        let killed = nodes.spec(victim).id.clone();
        let killed_at = Instant::now();
        nodes.kill(victim).await?;
        match takeover(nodes.spec(survivor).addr, admin, &killed, killed_at).await {
            Some(ms) => kills.takeovers_ms.push(ms),
            None => kills.problems.push(format!(
                "takeover: {}'s sets were not all held by live nodes {} s after it was killed (as {} saw them)",
                killed,
                TAKEOVER_WAIT_MAX.as_secs(),
                nodes.spec(survivor).id
            )),
        }
        nodes.start(victim).await.with_context(|| format!("starting {killed} again"))?;
        ready_at = Instant::now();
        kills.count += 1;
    }
    Ok(kills)
}

/// A random node among those running that hold a set now: a node that
/// holds none has nothing to take over (a node just started again may not
/// have its share back yet). Any running node if the holders are unknown.
async fn victim(nodes: &Nodes, live: &[usize], admin: &str, draw: u64) -> usize {
    let status = cluster_status(&mut None, nodes.spec(live[0]).addr, admin).await.unwrap_or_default();
    let sets = status["sets"].as_array().map(Vec::as_slice).unwrap_or_default();
    let holds = |index: &usize| sets.iter().any(|set| set["owner"].as_str() == Some(nodes.spec(*index).id.as_str()));
    let holders: Vec<usize> = live.iter().copied().filter(holds).collect();
    let candidates = if holders.is_empty() { live } else { &holders };
    candidates[((draw >> 16) % candidates.len() as u64) as usize]
}

/// Milliseconds from `killed_at` until `addr`'s view of the cluster has
/// every set held by a live node other than `killed`; `None` if that does
/// not happen within `TAKEOVER_WAIT_MAX`.
async fn takeover(addr: SocketAddr, admin: &str, killed: &str, killed_at: Instant) -> Option<u64> {
    let mut connection = None;
    while killed_at.elapsed() < TAKEOVER_WAIT_MAX {
        if cluster_status(&mut connection, addr, admin).await.is_some_and(|status| taken_over(&status, killed)) {
            return Some(killed_at.elapsed().as_millis() as u64);
        }
        tokio::time::sleep(TAKEOVER_POLL).await;
    }
    None
}

/// Whether every set of a `/v1/admin/cluster` answer has an owner that is
/// a live node and not `killed`.
fn taken_over(status: &Value, killed: &str) -> bool {
    let nodes = status["nodes"].as_array().map(Vec::as_slice).unwrap_or_default();
    let live: HashSet<&str> = nodes
        .iter()
        .filter(|node| node["live"] == Value::Bool(true))
        .filter_map(|node| node["node_id"].as_str())
        .collect();
    let sets = status["sets"].as_array().map(Vec::as_slice).unwrap_or_default();
    !sets.is_empty()
        && sets.iter().all(|set| set["owner"].as_str().is_some_and(|owner| owner != killed && live.contains(owner)))
}

/// Node `index`'s count of writes refused by the fence, read while it runs;
/// a node that does not answer for `STATUS_WAIT_MAX` is a problem.
async fn fenced_writes(nodes: &Nodes, index: usize, admin: &str, problems: &mut Vec<String>) -> u64 {
    let spec = nodes.spec(index);
    let asked_at = Instant::now();
    let mut connection = None;
    while asked_at.elapsed() < STATUS_WAIT_MAX {
        if let Some(fenced) =
            cluster_status(&mut connection, spec.addr, admin).await.and_then(|status| status["fenced_writes"].as_u64())
        {
            return fenced;
        }
        tokio::time::sleep(TAKEOVER_POLL).await;
    }
    problems.push(format!("status: {} did not report its fenced writes in {} s", spec.id, STATUS_WAIT_MAX.as_secs()));
    0
}

/// `GET /v1/admin/cluster` on `addr`, over `connection` (opened when
/// needed, dropped when it fails); `None` unless it answered 200.
async fn cluster_status(connection: &mut Option<Connection>, addr: SocketAddr, admin: &str) -> Option<Value> {
    if connection.is_none() {
        *connection = Connection::open(addr).await.ok();
    }
    let open = connection.as_mut()?;
    let asked = open.request_with(Method::GET, "/v1/admin/cluster", Some(admin), &[], None);
    match tokio::time::timeout(STATUS_TIMEOUT, asked).await {
        Ok(Ok((status, body))) if status == 200 => serde_json::from_slice(&body).ok(),
        Ok(Ok(_)) => None,
        _ => {
            *connection = None;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_takeover_is_done_once_every_set_is_held_by_a_live_node_other_than_the_killed_one() {
        let nodes = json!([
            { "node_id": "n1", "live": true }, { "node_id": "n2", "live": true }, { "node_id": "n3", "live": false },
        ]);
        let status = |owners: [Value; 3]| {
            let sets: Vec<Value> =
                owners.into_iter().enumerate().map(|(set, owner)| json!({ "set": set, "owner": owner })).collect();
            json!({ "nodes": nodes, "sets": sets })
        };
        assert!(taken_over(&status([json!("n1"), json!("n1"), json!("n2")]), "n3"));
        assert!(!taken_over(&status([json!("n1"), json!("n2"), json!("n2")]), "n2"), "the killed node still holds one");
        assert!(!taken_over(&status([json!("n1"), Value::Null, json!("n1")]), "n3"), "a set is free");
        assert!(!taken_over(&status([json!("n1"), json!("n3"), json!("n1")]), "n2"), "held by a node not live");
        assert!(!taken_over(&json!({ "nodes": nodes, "sets": [] }), "n3"), "no sets read");
    }
}
