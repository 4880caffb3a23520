//! A hongbao node: what `hongbao serve` runs, and what the bench and the
//! tests drive too: open a data directory, start the engine and the HTTP
//! server, stop them gracefully, and audit a stopped data directory.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use hongbao_domain::SetId;
use hongbao_domain::audit::{AuditReport, SetSnapshot, audit};
use hongbao_engine::{Clock, Engine, EngineConfig, OsEntropy, SystemClock};
use hongbao_server::admission::WRITES_IN_FLIGHT_MAX;
use hongbao_server::rate_limit::{OpenRate, RateLimiter};
use hongbao_server::{AppState, Auth};
use hongbao_store_sqlite::{DataDir, open_set, snapshot};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

/// Sets in a new data directory when `--sets` is not given.
pub const SETS_DEFAULT: u16 = 8;
const LOCK_FILE: &str = "lock";

pub struct ServeOptions {
    pub data: PathBuf,
    pub listen: SocketAddr,
    pub sets: Option<u16>,
    pub engine: EngineConfig,
    pub clock: Arc<dyn Clock>,
    /// The per-user limit on opens.
    pub open_rate: OpenRate,
    /// Writes in flight before more are refused with 503.
    pub writes_in_flight_max: usize,
}

impl ServeOptions {
    pub fn new(data: PathBuf, listen: SocketAddr) -> ServeOptions {
        ServeOptions {
            data,
            listen,
            sets: None,
            engine: EngineConfig::default(),
            clock: Arc::new(SystemClock),
            open_rate: OpenRate::default(),
            writes_in_flight_max: WRITES_IN_FLIGHT_MAX,
        }
    }
}

/// A running server: its address, and how to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub data: DataDir,
    pub admin_token: String,
    pub engine: Engine,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
    _lock: File,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("addr", &self.addr).field("data", &self.data).finish()
    }
}

/// Takes the data directory's lock: two servers on one directory would be
/// two writers for every set.
fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    try_lock(dir, file)
}

/// The lock a reader of a stopped directory takes: the lock file opened for
/// reading (a lock needs no write access), so a read-only copy of a data
/// directory can be audited too.
fn lock_to_read(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    match File::open(&path) {
        Ok(file) => try_lock(dir, file),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => lock(dir),
        Err(error) => Err(error).with_context(|| format!("opening {}", path.display())),
    }
}

fn try_lock(dir: &Path, file: File) -> Result<File> {
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => bail!("{} is in use by another hongbao process", dir.display()),
    }
}

/// Opens (or creates) the data directory, recovers every set and starts
/// serving on `options.listen`.
pub async fn start(options: ServeOptions) -> Result<Running> {
    let data = DataDir::open_or_create(&options.data, options.sets, SETS_DEFAULT)
        .with_context(|| format!("opening data directory {}", options.data.display()))?;
    let lock = lock(&data.path)?;
    let auth =
        Auth::load_or_create(&data.path).with_context(|| format!("loading keys from {}", data.path.display()))?;
    let stores = (0..data.sets)
        .map(|set| open_set(&data.path, SetId(set)))
        .collect::<Result<Vec<_>, _>>()
        .context("opening the sets' databases")?;
    let engine =
        Engine::start(options.engine, stores, options.clock, |_| Box::new(OsEntropy)).context("recovering the sets")?;
    let listener =
        TcpListener::bind(options.listen).await.with_context(|| format!("listening on {}", options.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let admin_token = auth.admin_token().to_owned();
    let opens = Arc::new(RateLimiter::new(options.open_rate));
    let writes = Arc::new(Semaphore::new(options.writes_in_flight_max));
    let state = AppState { engine: engine.clone(), auth: Arc::new(auth), opens, writes };
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(hongbao_server::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Ok(Running { addr, data, admin_token, engine, stop, server, _lock: lock })
}

impl Running {
    /// Stops accepting, lets requests in flight finish, drains every set's
    /// queue, commits, and returns once all is durable.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.server.await.context("server task")?.context("serving")?;
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.shutdown()).await.context("engine shutdown")?;
        Ok(())
    }
}

/// Checks every invariant over a stopped data directory.
pub fn audit_dir(dir: &Path) -> Result<AuditReport> {
    Ok(audit_snapshots(&read_dir(dir)?))
}

/// Every set's rows from a stopped data directory, read once, for callers
/// that check more than the audit does (the bench, chaos).
pub fn read_dir(dir: &Path) -> Result<Vec<SetSnapshot>> {
    let data = DataDir::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    let _lock = lock_to_read(&data.path).context("the audit needs a stopped data directory")?;
    (0..data.sets)
        .map(|set| snapshot(&data.path, SetId(set)))
        .collect::<Result<Vec<_>, _>>()
        .context("reading the sets")
}

/// The audit of rows already read with `read_dir`.
pub fn audit_snapshots(snapshots: &[SetSnapshot]) -> AuditReport {
    audit(snapshots, EngineConfig::default().limits.share_min, SystemClock.now().0)
}

/// A user token for `user`, signed with the data directory's secret.
pub fn user_token(dir: &Path, user: &str) -> Result<String> {
    let user = hongbao_domain::UserId::parse(user).map_err(|_| anyhow::anyhow!("{user:?} is not a valid user name"))?;
    let auth = Auth::load(dir).with_context(|| format!("loading keys from {}", dir.display()))?;
    Ok(auth.token_for(&user))
}
