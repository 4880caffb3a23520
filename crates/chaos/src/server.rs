//! The server under test: the real `hongbao serve` binary as a child process,
//! on a loopback port 0 it reports on stdout. Killing it is SIGKILL: no
//! shutdown handler runs, only what was durable survives.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

pub struct Server {
    binary: PathBuf,
    data: PathBuf,
    state: Mutex<State>,
}

struct State {
    child: Option<Child>,
    addr: SocketAddr,
    restarts: u64,
}

fn spawn(binary: &Path, data: &Path) -> Result<(Child, SocketAddr)> {
    let mut child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--sets", "4", "--data"])
        .arg(data)
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
    pub async fn start(binary: &Path, data: &Path) -> Result<Server> {
        let (binary, data) = (binary.to_owned(), data.to_owned());
        let (child, addr) = {
            let (binary, data) = (binary.clone(), data.clone());
            tokio::task::spawn_blocking(move || spawn(&binary, &data)).await??
        };
        Ok(Server { binary, data, state: Mutex::new(State { child: Some(child), addr, restarts: 0 }) })
    }

    /// The current address, and how many restarts it has seen.
    pub fn addr(&self) -> (SocketAddr, u64) {
        let state = self.state.lock().expect("server lock");
        (state.addr, state.restarts)
    }

    /// SIGKILL, wait for the process to be gone, start it again.
    pub async fn kill_and_restart(&self) -> Result<()> {
        let child = self.state.lock().expect("server lock").child.take();
        let (binary, data) = (self.binary.clone(), self.data.clone());
        let (child, addr) = tokio::task::spawn_blocking(move || {
            if let Some(mut child) = child {
                child.kill().context("SIGKILL")?;
                child.wait().context("waiting for the killed server")?;
            }
            spawn(&binary, &data)
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
