//! A server under test as its own process: the real `hongbao serve` binary
//! as a child, on a loopback port 0 it reports on stdout. Chaos kills it
//! (SIGKILL: no shutdown handler runs, only what was durable survives); the
//! overload and live-packets profiles read its memory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

pub struct Server {
    binary: PathBuf,
    data: PathBuf,
    /// `serve` options beyond the listen address and the data directory.
    options: Vec<String>,
    state: Mutex<State>,
}

struct State {
    child: Option<Child>,
    addr: SocketAddr,
    restarts: u64,
}

fn spawn(binary: &Path, data: &Path, options: &[String]) -> Result<(Child, SocketAddr)> {
    // Without an access line per request, unless the caller chose its own
    // filter (chaos does: a flag given twice is refused).
    let quiet: &[&str] = match options.iter().any(|option| option == "--log-filter") {
        true => &[],
        false => &["--log-filter", "info,hongbao::access=off"],
    };
    let mut child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(quiet)
        .args(options)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("the server's stdout")?).read_line(&mut line)?;
    let Some(addr) = line.trim().strip_prefix("hongbao listening on http://") else {
        let _ = child.kill();
        bail!("the server did not start: {line:?}");
    };
    Ok((child, addr.parse().context("the server's address")?))
}

impl Server {
    pub async fn start(binary: &Path, data: &Path, options: &[&str]) -> Result<Server> {
        let (binary, data) = (binary.to_owned(), data.to_owned());
        let options: Vec<String> = options.iter().map(|option| (*option).to_owned()).collect();
        let (child, addr) = {
            let (binary, data, options) = (binary.clone(), data.clone(), options.clone());
            tokio::task::spawn_blocking(move || spawn(&binary, &data, &options)).await??
        };
        let state = Mutex::new(State { child: Some(child), addr, restarts: 0 });
        Ok(Server { binary, data, options, state })
    }

    /// The child's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.state.lock().expect("server lock").child.as_ref().map(Child::id)
    }

    /// The child's resident set size in KiB (`VmRSS`), 0 once it is gone.
    pub fn rss_kib(&self) -> u64 {
        let status = self.pid().and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok());
        status.as_deref().map_or(0, |status| status_kib(status, "VmRSS"))
    }

    /// The current address, and how many restarts it has seen.
    pub fn addr(&self) -> (SocketAddr, u64) {
        let state = self.state.lock().expect("server lock");
        (state.addr, state.restarts)
    }

    /// SIGKILL, wait for the process to be gone, start it again.
    pub async fn kill_and_restart(&self) -> Result<()> {
        let child = self.state.lock().expect("server lock").child.take();
        let (binary, data, options) = (self.binary.clone(), self.data.clone(), self.options.clone());
        let (child, addr) = tokio::task::spawn_blocking(move || {
            if let Some(mut child) = child {
                child.kill().context("SIGKILL")?;
                child.wait().context("waiting for the killed server")?;
            }
            spawn(&binary, &data, &options)
        })
        .await??;
        let mut state = self.state.lock().expect("server lock");
        state.child = Some(child);
        state.addr = addr;
        state.restarts += 1;
        Ok(())
    }

    /// SIGTERM: the graceful stop (drain, commit, exit).
    pub async fn stop(&self) -> Result<()> {
        let child = self.state.lock().expect("server lock").child.take();
        let Some(mut child) = child else { return Ok(()) };
        tokio::task::spawn_blocking(move || {
            let status = Command::new("kill").args(["-s", "TERM", &child.id().to_string()]).status()?;
            if !status.success() {
                bail!("could not signal the server");
            }
            let exit = child.wait()?;
            if !exit.success() {
                bail!("the server exited with {exit} on SIGTERM");
            }
            Ok(())
        })
        .await?
    }
}

/// A field of a `/proc/<pid>/status` text (`VmRSS`, `RssAnon`, …), in KiB
/// (0 where absent).
pub(crate) fn status_kib(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':')?.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
