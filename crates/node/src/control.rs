//! The control socket of a node serving a data directory on SQLite,
//! `<data>/control.sock`: how `hongbao backup` asks the serving process,
//! which holds the directory's lock and alone can pause its writers, for a
//! consistent copy (`backup.rs`).
//!
//! A Unix socket, mode 0600, whose peers must run as the socket's owner (or
//! as root): the file's permissions and the kernel's peer credentials are
//! the authentication, as for the data directory's own files. One request
//! per connection, one JSON line each way; one backup at a time. A socket
//! left by a process that died is removed at start (the lock says it is
//! stale); a node on PostgreSQL has none (`hongbao backup` copies its keys
//! without it).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hongbao_engine::Engine;
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use crate::backup::{BackupReport, backup_served};
use crate::data_dir::{CONTROL_SOCKET_FILE, DataDir};

/// The longest a request line may be, and may take to arrive.
const REQUEST_BYTES_MAX: u64 = 64 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize)]
enum Request {
    Backup { to: PathBuf, pause_max_ms: u64 },
}

#[derive(Serialize, Deserialize)]
enum Answer {
    Done(BackupReport),
    Failed(String),
}

/// The socket, listening; dropped (or `close`d) it stops and is removed.
pub(crate) struct Control {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl Control {
    /// The socket of a node on SQLite; none on PostgreSQL. Without it the
    /// node serves all the same, and only an online backup is refused (the
    /// cause is in the log).
    pub(crate) fn start(data: &DataDir, engine: &Engine) -> Option<Control> {
        if data.store != crate::StoreKind::Sqlite {
            return None;
        }
        Control::listen(data, engine.clone())
            .inspect_err(|error| tracing::warn!(error = format!("{error:#}"), "no control socket: no online backup"))
            .ok()
    }

    /// Listens on `<data>/control.sock` for `engine`'s node, replacing a
    /// stale socket (the caller holds the directory's lock).
    fn listen(data: &DataDir, engine: Engine) -> Result<Control> {
        let path = data.file(CONTROL_SOCKET_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(path = %path.display(), "removed a stale control socket"),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error).with_context(|| format!("removing {}", path.display())),
        }
        let listener = UnixListener::bind(&path).with_context(|| format!("listening on {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private", path.display()))?;
        let owner = std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?.uid();
        let busy = Arc::new(AtomicBool::new(false));
        let data = data.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of descriptors, most likely: not a busy loop.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let peer = stream.peer_cred().map(|cred| cred.uid());
                let (data, engine, busy) = (data.clone(), engine.clone(), busy.clone());
                let Ok(stream) = stream.into_std() else { continue };
                tokio::task::spawn_blocking(move || {
                    let answer = match peer {
                        Ok(uid) if uid == owner || uid == 0 => answer(&stream, &data, &engine, &busy),
                        Ok(uid) => Answer::Failed(format!("user {uid} may not use this socket")),
                        Err(error) => Answer::Failed(format!("the peer's credentials: {error}")),
                    };
                    reply(&stream, &answer);
                });
            }
        });
        Ok(Control { path, task })
    }

    pub(crate) fn close(self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn answer(stream: &std::os::unix::net::UnixStream, data: &DataDir, engine: &Engine, busy: &AtomicBool) -> Answer {
    let request = match read_request(stream) {
        Ok(request) => request,
        Err(error) => return Answer::Failed(format!("{error:#}")),
    };
    let Request::Backup { to, pause_max_ms } = request;
    if busy.swap(true, Ordering::SeqCst) {
        return Answer::Failed("a backup is already running".into());
    }
    tracing::info!(to = %to.display(), "backup asked on the control socket");
    let done = backup_served(data, engine, &to, Duration::from_millis(pause_max_ms));
    busy.store(false, Ordering::SeqCst);
    match done {
        Ok(report) => {
            tracing::info!(%report, "backup done");
            Answer::Done(report)
        }
        Err(error) => {
            tracing::warn!(error = format!("{error:#}"), "backup failed");
            Answer::Failed(format!("{error:#}"))
        }
    }
}

fn read_request(stream: &UnixStream) -> Result<Request> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(std::io::Read::take(stream, REQUEST_BYTES_MAX)).read_line(&mut line)?;
    serde_json::from_str(&line).context("an unknown request")
}

fn reply(mut stream: &UnixStream, answer: &Answer) {
    if let Ok(mut line) = serde_json::to_string(answer) {
        line.push('\n');
        let _ = stream.write_all(line.as_bytes());
    }
}

/// Asks the server of `data` (which holds its lock) for a backup to
/// `target` (absolute), and waits for its answer.
pub(crate) fn request_backup(data: &DataDir, target: &Path, pause_max: Duration) -> Result<BackupReport> {
    let path = data.file(CONTROL_SOCKET_FILE);
    let mut stream = UnixStream::connect(&path).with_context(|| {
        format!(
            "{} is in use by a running server, and its control socket {} does not answer \
             (a server of an older build has none: stop it, then back the directory up)",
            data.path.display(),
            path.display()
        )
    })?;
    let pause_max_ms = pause_max.as_millis() as u64;
    let mut line = serde_json::to_string(&Request::Backup { to: target.to_owned(), pause_max_ms })?;
    line.push('\n');
    stream.write_all(line.as_bytes()).with_context(|| format!("writing to {}", path.display()))?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).with_context(|| format!("reading from {}", path.display()))?;
    match serde_json::from_str(&answer) {
        Ok(Answer::Done(report)) => Ok(report),
        Ok(Answer::Failed(why)) => bail!("the server of {} did not back it up: {why}", data.path.display()),
        Err(_) => bail!("the server of {} answered no backup (did it stop?)", data.path.display()),
    }
}
