//! One node of a chaos cluster as a child process: the real `hongbao serve`
//! with its own data directory, a fixed loopback port (a restarted node
//! comes back where the others and the clients expect it) and its stderr
//! appended to a log file beside the data, kept when a run fails.
//! `hongbao_bench::child::Server` listens on port 0 and drops the logs,
//! which suits a lone server but not a node its peers must find again.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

use crate::workload::Targets;

/// What makes a node: who it is, where it listens, where it keeps things.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub id: String,
    pub addr: SocketAddr,
    pub data: PathBuf,
    pub log: PathBuf,
}

struct Node {
    spec: NodeSpec,
    state: Mutex<NodeState>,
}

struct NodeState {
    /// The running process; `None` while the node is dead.
    child: Option<Child>,
    /// How many times the node was killed: a connection made before a kill
    /// is never reused after it.
    restarts: u64,
}

/// The nodes of one cluster, started and killed by index.
pub struct Nodes {
    binary: PathBuf,
    /// `serve` flags every node gets (the store, the sets, the limits).
    options: Vec<String>,
    nodes: Vec<Node>,
}

impl Nodes {
    /// The nodes, none started yet.
    pub fn new(binary: &Path, options: Vec<String>, specs: Vec<NodeSpec>) -> Nodes {
        let nodes = specs
            .into_iter()
            .map(|spec| Node { spec, state: Mutex::new(NodeState { child: None, restarts: 0 }) })
            .collect();
        Nodes { binary: binary.to_owned(), options, nodes }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn spec(&self, index: usize) -> &NodeSpec {
        &self.nodes[index].spec
    }

    /// The indexes of the nodes running now.
    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|index| self.is_live(*index)).collect()
    }

    fn is_live(&self, index: usize) -> bool {
        self.nodes[index].state.lock().expect("node lock").child.is_some()
    }

    /// Starts node `index` (again, if it ran before) and returns once it
    /// answers at its address.
    pub async fn start(&self, index: usize) -> Result<()> {
        let node = &self.nodes[index];
        if node.state.lock().expect("node lock").child.is_some() {
            bail!("node {} is already running", node.spec.id);
        }
        let (binary, options, spec) = (self.binary.clone(), self.options.clone(), node.spec.clone());
        let child = tokio::task::spawn_blocking(move || spawn(&binary, &options, &spec)).await??;
        node.state.lock().expect("node lock").child = Some(child);
        Ok(())
    }

    /// SIGKILL: no shutdown handler runs, the node's leases run out by
    /// themselves. Returns once the process is gone.
    pub async fn kill(&self, index: usize) -> Result<()> {
        let child = {
            let mut state = self.nodes[index].state.lock().expect("node lock");
            state.restarts += 1;
            state.child.take()
        };
        let Some(mut child) = child else { bail!("node {} is not running", self.nodes[index].spec.id) };
        tokio::task::spawn_blocking(move || {
            child.kill().context("SIGKILL")?;
            child.wait().context("waiting for the killed node")?;
            anyhow::Ok(())
        })
        .await?
    }

    /// SIGTERM, the graceful stop: the node drains, hands its sets over
    /// and leaves the cluster. Returns once it has exited.
    pub async fn stop(&self, index: usize) -> Result<()> {
        let node = &self.nodes[index];
        let Some(mut child) = node.state.lock().expect("node lock").child.take() else { return Ok(()) };
        let id = node.spec.id.clone();
        tokio::task::spawn_blocking(move || {
            let status = Command::new("kill").args(["-s", "TERM", &child.id().to_string()]).status()?;
            if !status.success() {
                bail!("could not signal node {id}");
            }
            let exit = child.wait()?;
            if !exit.success() {
                bail!("node {id} exited with {exit} on SIGTERM");
            }
            Ok(())
        })
        .await?
    }
}

impl Targets for Nodes {
    fn count(&self) -> usize {
        self.nodes.len()
    }

    fn target(&self, index: usize) -> Option<(SocketAddr, u64)> {
        let node = &self.nodes[index];
        let state = node.state.lock().expect("node lock");
        state.child.as_ref().map(|_| (node.spec.addr, state.restarts))
    }
}

/// A run that ends early (an error) leaves no node behind.
impl Drop for Nodes {
    fn drop(&mut self) {
        for node in &self.nodes {
            if let Some(mut child) = node.state.lock().map(|mut state| state.child.take()).ok().flatten() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Starts the process and waits for the line that says it listens.
fn spawn(binary: &Path, options: &[String], spec: &NodeSpec) -> Result<Child> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("opening {}", spec.log.display()))?;
    let addr = spec.addr.to_string();
    let mut child = Command::new(binary)
        .args(["serve", "--listen", &addr, "--advertise", &addr, "--node-id", &spec.id, "--data"])
        .arg(&spec.data)
        .args(options)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("the node's stdout")?).read_line(&mut line)?;
    if line.trim().strip_prefix("hongbao listening on http://").is_none() {
        let _ = child.kill();
        let _ = child.wait();
        bail!("node {} did not start ({line:?}); its log: {}", spec.id, spec.log.display());
    }
    Ok(child)
}

/// A free loopback port now, for a node to keep across its restarts.
pub fn free_port() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    listener.local_addr().context("reading a free port")
}

/// Gives node `to` the keys of node `from` (made at its first start): every
/// node of a cluster signs and verifies with the same keys, so a token any
/// node issued, and the first node's admin token, work on all of them.
pub fn share_keys(from: &NodeSpec, to: &NodeSpec) -> Result<()> {
    std::fs::create_dir_all(&to.data).with_context(|| format!("making {}", to.data.display()))?;
    let (source, target) =
        (from.data.join(hongbao_node::data_dir::KEYS_FILE), to.data.join(hongbao_node::data_dir::KEYS_FILE));
    std::fs::copy(&source, &target).with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
    Ok(())
}
