//! A cluster of real `hongbao serve` nodes sharing one PostgreSQL data set,
//! for the tests that kill, stop and pause nodes: each node has its own
//! data directory (the first node's keys copied to the others) and a port
//! chosen up front (its `--advertise` must be known before it starts). The
//! nodes' logs go to files that are printed when a test fails. On drop every
//! node still running is killed, a paused one resumed first, so a failed
//! test leaves no process behind.
//!
//! The HTTP client here has deadlines on every step: a paused node accepts
//! connections (the kernel completes them) but answers nothing.
#![allow(dead_code)] // each test file uses some of these
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

// The test file that loads this one loads `common` beside it.
use crate::common::http;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The longest one request may take before its outcome counts as unknown:
/// past any pause a test makes, and past the server's forwarding wait.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to start and print its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to exit after SIGTERM (its drain, its sets
/// handed over) or SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the tests look at the cluster's status.
pub const POLL_EVERY: Duration = Duration::from_millis(20);
/// Log lines printed per node when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// One HTTP/1.1 request over a fresh connection, with a deadline on the
/// connect and on every read and write; extra `headers` as (name, value).
pub fn call(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let target: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut headers = headers.to_vec();
    headers.push(("content-type", "application/json"));
    let (status, _, body) = http::exchange(stream, method, path, token, &headers, body)?;
    Ok((status, body))
}

/// The error code of an error answer's body, or "" if it has none.
pub fn error_code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A port free now on 127.0.0.1 (another process may take it before the
/// node binds it: `Cluster` then tries another).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Node {
    pub id: String,
    pub data: PathBuf,
    pub addr: String,
    log: PathBuf,
    child: Option<Child>,
    /// Stopped with SIGSTOP and not yet continued.
    paused: AtomicBool,
    /// When it was (last) started.
    pub started: Instant,
}

impl Node {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn signal(&self, name: &str) {
        let child = self.child.as_ref().unwrap_or_else(|| panic!("{} is not running", self.id));
        let status = Command::new("kill").args(["-s", name, &child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -s {name} {}", self.id);
        match name {
            "STOP" => self.paused.store(true, Ordering::SeqCst),
            "CONT" => self.paused.store(false, Ordering::SeqCst),
            _ => {}
        }
    }

    /// Waits for the node to exit (after a signal), at most `STOP_TIMEOUT`.
    fn reap(&mut self) -> ExitStatus {
        let child = self.child.as_mut().unwrap_or_else(|| panic!("{} is not running", self.id));
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit within {STOP_TIMEOUT:?}", self.id);
            std::thread::sleep(POLL_EVERY);
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

/// Nodes serving one PostgreSQL data set.
pub struct Cluster {
    pub url: String,
    pub lease: Duration,
    pub sets: u16,
    pub nodes: Vec<Node>,
    /// The first node's admin token, good on every node (they share keys).
    pub admin: String,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `count` nodes `n1`, `n2`, … on the database at `url`; the
    /// first creates the keys, the others start with a copy of them.
    pub fn start(url: &str, count: usize, lease: Duration, sets: u16) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Cluster { url: url.to_owned(), lease, sets, nodes: Vec::new(), admin: String::new(), dir };
        for n in 0..count {
            let id = format!("n{}", n + 1);
            let data = cluster.dir.path().join(&id);
            if n > 0 {
                std::fs::create_dir_all(&data).unwrap();
                std::fs::copy(cluster.nodes[0].data.join("keys.json"), data.join("keys.json")).unwrap();
            }
            let log = cluster.dir.path().join(format!("{id}.log"));
            cluster.nodes.push(Node {
                id,
                data,
                addr: String::new(),
                log,
                child: None,
                paused: AtomicBool::new(false),
                started: Instant::now(),
            });
            cluster.spawn(n);
            if n == 0 {
                cluster.admin = crate::common::admin_token(&cluster.nodes[0].data);
            }
        }
        cluster
    }

    /// Starts node `n` on a fresh port; a port taken meanwhile is tried again.
    fn spawn(&mut self, n: usize) {
        for _ in 0..3 {
            let addr = format!("127.0.0.1:{}", free_port());
            if self.try_spawn(n, &addr) {
                return;
            }
        }
        panic!("{} did not start:\n{}", self.nodes[n].id, self.nodes[n].log_tail());
    }

    fn try_spawn(&mut self, n: usize, addr: &str) -> bool {
        let lease_ms = self.lease.as_millis().to_string();
        let sets = self.sets.to_string();
        let node = &mut self.nodes[n];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log).unwrap();
        #[rustfmt::skip]
        let args = [
            "serve", "--data", node.data.to_str().unwrap(), "--store", &self.url,
            "--node-id", &node.id, "--advertise", addr, "--listen", addr,
            "--lease-ms", &lease_ms, "--sets", &sets,
            // Many openers and senders go faster than people do: the
            // per-user limits are lifted, as chaos lifts them.
            "--rate-limit", "open=1e6/1e6", "--rate-limit", "send=1e6/1e6", "--rate-limit", "read=1e6/1e6",
        ];
        let mut child = crate::common::hongbao(&args).stdout(Stdio::piped()).stderr(log).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (told, heard) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = told.send(line);
        });
        let line = heard.recv_timeout(START_TIMEOUT).unwrap_or_default();
        match line.trim().strip_prefix("hongbao listening on http://") {
            Some(listening) => {
                assert_eq!(listening, addr, "{} listens where it advertises", node.id);
                node.addr = addr.to_owned();
                node.child = Some(child);
                node.started = Instant::now();
                true
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                false
            }
        }
    }

    pub fn node_index(&self, id: &str) -> usize {
        self.nodes.iter().position(|node| node.id == id).unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn addr(&self, n: usize) -> &str {
        &self.nodes[n].addr
    }

    /// A user's token, signed with the cluster's keys.
    pub fn token(&self, user: &str) -> String {
        ::hongbao::user_token(&self.nodes[0].data, user, Duration::from_secs(3600)).unwrap()
    }

    /// `GET /v1/admin/cluster` on node `n`, or `None` if it did not answer 200.
    pub fn status(&self, n: usize) -> Option<Value> {
        match call(self.addr(n), "GET", "/v1/admin/cluster", &self.admin, &[], "") {
            Ok((200, body)) => Some(serde_json::from_str(&body).unwrap()),
            _ => None,
        }
    }

    /// Sends node `n` a signal by name (`KILL`, `TERM`, `STOP`, `CONT`)
    /// without waiting: the clients of a test keep running meanwhile.
    pub fn signal(&self, n: usize, name: &str) {
        self.nodes[n].signal(name);
    }

    /// Wakes node `n` if it is paused; quietly (for clean-ups).
    pub fn wake_if_paused(&self, n: usize) {
        let node = &self.nodes[n];
        if let Some(child) = node.child.as_ref().filter(|_| node.paused.swap(false, Ordering::SeqCst)) {
            let _ = Command::new("kill").args(["-s", "CONT", &child.id().to_string()]).status();
        }
    }

    /// Waits for node `n`, signalled to stop, to exit; answers its status.
    pub fn reap(&mut self, n: usize) -> ExitStatus {
        self.nodes[n].reap()
    }

    /// Stops every running node with SIGTERM, each asserted to exit cleanly,
    /// then runs `hongbao audit` over the data set; answers whether it
    /// passed, and its report.
    pub fn stop_and_audit(&mut self) -> (bool, String) {
        let running: Vec<usize> = (0..self.nodes.len()).filter(|n| self.nodes[*n].is_running()).collect();
        running.iter().for_each(|n| self.nodes[*n].signal("TERM"));
        for n in running {
            let exit = self.nodes[n].reap();
            assert!(exit.success(), "{} stopped with {exit:?}:\n{}", self.nodes[n].id, self.nodes[n].log_tail());
        }
        let data = self.nodes[0].data.to_str().unwrap();
        let output = crate::common::hongbao(&["audit", "--data", data, "--store", &self.url]).output().unwrap();
        let report = String::from_utf8_lossy(&output.stdout).into_owned();
        let passed = output.status.success() && report.starts_with("audit ok");
        (passed, report + &String::from_utf8_lossy(&output.stderr))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if std::thread::panicking() {
                eprintln!("--- {} ({}) log tail ---\n{}", node.id, node.addr, node.log_tail());
            }
            let Some(mut child) = node.child.take() else { continue };
            if node.paused.load(Ordering::SeqCst) {
                let _ = Command::new("kill").args(["-s", "CONT", &child.id().to_string()]).status();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Each set's owner in a cluster status (`None`: free or expired).
pub fn owners(status: &Value) -> Vec<Option<String>> {
    status["sets"].as_array().unwrap().iter().map(|set| set["owner"].as_str().map(str::to_owned)).collect()
}

/// A set's epoch in a cluster status.
pub fn epoch(status: &Value, set: u16) -> i64 {
    status["sets"][usize::from(set)]["epoch"].as_i64().unwrap()
}

/// The set of a packet id (`20261129-7-1-<hex>`: the second field).
pub fn set_of_packet(id: &str) -> u16 {
    id.split('-').nth(1).and_then(|set| set.parse().ok()).unwrap_or_else(|| panic!("a packet id: {id:?}"))
}

/// The set a user's account lives in.
pub fn set_of_user(user: &str, sets: u16) -> u16 {
    hongbao_domain::SetId::of_user(&hongbao_domain::UserId::parse(user).unwrap(), sets).0
}

/// The first user named `<prefix><n>` whose account lives in `set`.
pub fn user_in_set(prefix: &str, set: u16, sets: u16) -> String {
    (0..).map(|n| format!("{prefix}{n}")).find(|user| set_of_user(user, sets) == set).unwrap()
}

impl Cluster {
    /// Waits until node `observer` sees every set owned by one of `among`
    /// and no owner changed for a lease since `since` (or since the last
    /// change after it): the hand-overs to nodes that (re)joined are done.
    /// A node takes part in hand-overs once it has been live for a lease,
    /// so the wait starts no sooner. Answers the owners.
    pub fn wait_settled(&self, observer: usize, among: &[usize], since: Instant) -> Vec<Option<String>> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let joined = among.iter().map(|n| self.nodes[*n].started + self.lease).max();
        let since = joined.map_or(since, |joined| joined.max(since));
        let ids: Vec<&str> = among.iter().map(|n| self.nodes[*n].id.as_str()).collect();
        let (mut last, mut changed_at) = (Vec::new(), since);
        loop {
            if let Some(status) = self.status(observer) {
                let now = owners(&status);
                if now != last {
                    (last, changed_at) = (now, Instant::now().max(since));
                }
                let owned = last.iter().all(|owner| owner.as_deref().is_some_and(|owner| ids.contains(&owner)));
                if owned && changed_at.elapsed() >= self.lease {
                    return last;
                }
            }
            assert!(Instant::now() < deadline, "the cluster did not settle within 60 s: {last:?}");
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// The data directory of node `n` (for `hongbao audit` and tokens).
    pub fn data(&self, n: usize) -> &Path {
        &self.nodes[n].data
    }
}

/// Polls `done` every `POLL_EVERY` until it holds, for at most `bound`
/// (then fails, saying `what`); answers how long it took.
pub fn wait_for(what: &str, bound: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < bound, "{what}: not within {bound:?}");
        std::thread::sleep(POLL_EVERY);
    }
    started.elapsed()
}
