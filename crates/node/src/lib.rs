//! A hongbao node: what `hongbao serve` runs, and what the bench and the
//! tests drive too: open a data directory, start the engine and the HTTP
//! server, stop them gracefully, and audit a stopped data directory.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use hongbao_domain::audit::{AuditReport, SetSnapshot, audit};
pub use hongbao_engine::ColdDays;
use hongbao_engine::{Clock, Engine, EngineConfig, OsEntropy, SystemClock};
use hongbao_server::{AppState, Auth, ServerConfig, SharedAuth};
use hongbao_store_pg::SetMap;
use hongbao_store_sqlite::{open_set, snapshot};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod cluster;
pub mod data_dir;
pub mod days;
pub mod keys;

pub use data_dir::{DataDir, StoreKind};

/// Sets in a new data directory when `--sets` is not given.
pub const SETS_DEFAULT: u16 = 8;

/// Where the sets live: in the data directory (SQLite and journal segment
/// files), or on PostgreSQL databases named by a set map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreChoice {
    Sqlite,
    Postgres(SetMap),
}

impl StoreChoice {
    pub fn kind(&self) -> StoreKind {
        match self {
            StoreChoice::Sqlite => StoreKind::Sqlite,
            StoreChoice::Postgres(_) => StoreKind::Postgres,
        }
    }
}

pub struct ServeOptions {
    /// Holds the keys and the lock, and the sets themselves on SQLite.
    pub data: PathBuf,
    pub store: StoreChoice,
    pub listen: SocketAddr,
    pub sets: Option<u16>,
    pub engine: EngineConfig,
    pub clock: Arc<dyn Clock>,
    /// Deadlines, rate limits and bounds on writes in flight.
    pub server: ServerConfig,
    /// Days a settled day stays in the hot tables before it goes cold.
    pub retention_days: u32,
    /// One node of several sharing the sets (PostgreSQL only); none: this
    /// node holds every set.
    pub cluster: Option<cluster::ClusterOptions>,
}

impl ServeOptions {
    pub fn new(data: PathBuf, listen: SocketAddr) -> ServeOptions {
        ServeOptions {
            data,
            store: StoreChoice::Sqlite,
            listen,
            sets: None,
            engine: EngineConfig::default(),
            clock: Arc::new(SystemClock),
            server: ServerConfig::default(),
            retention_days: days::RETENTION_DAYS_DEFAULT,
            cluster: None,
        }
    }
}

/// A running server: its address, and how to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub data: DataDir,
    /// The first admin's token, from `admin.token` (none once that file is
    /// removed, as it should be once the token is stored elsewhere).
    pub admin_token: Option<String>,
    pub engine: Engine,
    /// Makes days ahead and moves old ones cold (its pass runs by itself
    /// every minute; `keep_days_now` runs one at once).
    pub day_keeper: days::DayKeeper,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
    keys_watch: JoinHandle<()>,
    days_watch: JoinHandle<()>,
    /// The lease keeper, on one node of several.
    keeper: Option<cluster::Keeper>,
    _lock: File,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("addr", &self.addr).field("data", &self.data).finish()
    }
}

/// Opens (or creates) the data directory, recovers every set and starts
/// serving on `options.listen`.
pub async fn start(options: ServeOptions) -> Result<Running> {
    // Before the engine starts: each set registers its metrics as it does.
    hongbao_server::metrics::handle();
    let data = DataDir::open_or_create(&options.data, options.sets, SETS_DEFAULT, options.store.kind())
        .with_context(|| format!("opening data directory {}", options.data.display()))?;
    let lock = data.lock_to_serve()?;
    let keys =
        keys::load_or_create(&data.path).with_context(|| format!("loading keys from {}", data.path.display()))?;
    let auth = Arc::new(SharedAuth::new(Auth::new(keys).context("the data directory's keys")?));
    let day_keeper = days::DayKeeper {
        store: options.store.clone(),
        data: data.path.clone(),
        sets: data.sets,
        retention_days: options.retention_days,
        clock: options.clock.clone(),
    };
    let (engine, joined) = match (&options.store, options.cluster) {
        (StoreChoice::Postgres(map), Some(cluster)) => {
            let (engine, joined) =
                join_cluster(&data, map.clone(), cluster, options.engine, options.clock, &auth).await?;
            (engine, Some(joined))
        }
        (StoreChoice::Sqlite, Some(_)) => {
            bail!("a node of several needs its sets on PostgreSQL (--store postgres://…)")
        }
        (_, None) => (start_engine(&data, options.store, options.engine, options.clock).await?, None),
    };
    let listener = listen(options.listen).with_context(|| format!("listening on {}", options.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let admin_token =
        std::fs::read_to_string(data.file(data_dir::ADMIN_TOKEN_FILE)).ok().map(|text| text.trim().to_owned());
    let keys_watch = tokio::spawn(keys::watch(data.path.clone(), {
        let auth = auth.clone();
        move |keys| auth.replace(keys)
    }));
    let state = AppState::in_cluster(
        engine.clone(),
        auth,
        options.server,
        joined.as_ref().map(|joined| joined.cluster.clone()),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(hongbao_server::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let days_watch = tokio::spawn(day_keeper.clone().run());
    // Sets are taken once the node answers at its address: the other nodes
    // forward to it as soon as its leases say it holds them.
    let keeper = match joined {
        Some(joined) => Some(joined.start(engine.clone()).await?),
        None => None,
    };
    Ok(Running {
        addr,
        data,
        admin_token,
        engine,
        day_keeper,
        stop,
        server,
        keys_watch,
        days_watch,
        keeper,
        _lock: lock,
    })
}

/// A node that joined its cluster and has not started its keeper yet.
struct Joined {
    cluster: Arc<hongbao_server::cluster::Cluster>,
    leases: hongbao_store_pg::Leases,
    published: Arc<cluster::Published>,
    woken: std::sync::mpsc::Receiver<()>,
    map: SetMap,
    sets: u16,
    options: cluster::ClusterOptions,
}

impl Joined {
    async fn start(self, engine: Engine) -> Result<cluster::Keeper> {
        let Joined { leases, published, woken, map, sets, options, .. } = self;
        tokio::task::spawn_blocking(move || {
            cluster::Keeper::start(leases, published, woken, engine, map, sets, options)
        })
        .await
        .context("the task that starts the lease keeper")?
    }
}

/// Joins the cluster of nodes serving the data set on `map`: registers the
/// node, and starts an engine that holds no set yet (the keeper takes them).
async fn join_cluster(
    data: &DataDir,
    map: SetMap,
    options: cluster::ClusterOptions,
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    auth: &Arc<SharedAuth>,
) -> Result<(Engine, Joined)> {
    if !cluster::valid_node_id(&options.node_id) {
        bail!("--node-id must be 1 to 64 characters from A-Z a-z 0-9 _ . -");
    }
    let sets = data.sets;
    let joining = {
        let (map, options) = (map.clone(), options.clone());
        tokio::task::spawn_blocking(move || -> Result<_> {
            let joined = cluster::Keeper::join(&map, sets, &options)?;
            let readers = hongbao_store_pg::readers(&map, sets).context("opening the readers on PostgreSQL")?;
            Ok((joined, readers))
        })
    };
    let ((leases, published, woken), readers) = joining.await.context("the task that joins the cluster")??;
    let directory: Arc<dyn hongbao_server::cluster::Directory> = published.clone();
    let cluster = Arc::new(hongbao_server::cluster::Cluster::new(directory, auth.clone()));
    let courier = Arc::new(hongbao_server::cluster::Courier::start(cluster.clone()));
    let engine = Engine::shared(config, readers, clock, courier).context("starting the engine")?;
    Ok((engine, Joined { cluster, leases, published, woken, map, sets, options }))
}

/// Opens every set where it lives and starts the engine on them. Off the
/// async runtime: opening and recovering wait on disks and databases.
async fn start_engine(
    data: &DataDir,
    store: StoreChoice,
    config: EngineConfig,
    clock: Arc<dyn Clock>,
) -> Result<Engine> {
    let data = data.clone();
    let started = tokio::task::spawn_blocking(move || -> Result<Engine> {
        let entropy = |_| Box::new(OsEntropy) as Box<dyn hongbao_engine::Entropy>;
        match store {
            StoreChoice::Sqlite => {
                let stores = data
                    .set_ids()
                    .map(|set| open_set(&data.path, set))
                    .collect::<Result<Vec<_>, _>>()
                    .context("opening the sets' databases")?;
                Engine::start(config, stores, clock, entropy).context("recovering the sets")
            }
            StoreChoice::Postgres(map) => {
                let stores = hongbao_store_pg::open_sets(&map, data.sets).context("opening the sets on PostgreSQL")?;
                Engine::start(config, stores, clock, entropy).context("recovering the sets")
            }
        }
    });
    started.await.context("the task that opens the sets")?
}

/// Connections the kernel completes before the server accepts them. The
/// usual 1,024 (tokio's, and many servers') overflowed when 1,100 clients
/// connected at once while the accept loop shared two cores with their
/// requests: the kernel dropped the SYNs past it and clients waited 1 s, then
/// 3 s, to retry. The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

impl Running {
    /// One pass of the day keeper, now.
    pub async fn keep_days_now(&self) -> Result<hongbao_store_pg::DaysKept> {
        let keeper = self.day_keeper.clone();
        tokio::task::spawn_blocking(move || keeper.run_once()).await?
    }

    /// Stops accepting, lets requests in flight finish (for at most the
    /// drain deadline), drains every set's queue, commits, and returns once
    /// all is durable.
    pub async fn stop(self) -> Result<()> {
        self.keys_watch.abort();
        self.days_watch.abort();
        let _ = self.stop.send(());
        self.server.await.context("server task")?.context("serving")?;
        // One node of several hands its sets over: each drained, then its
        // lease released for another node to take.
        if let Some(keeper) = self.keeper {
            tokio::task::spawn_blocking(move || keeper.leave()).await.context("leaving the cluster")??;
        }
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.shutdown()).await.context("engine shutdown")?;
        Ok(())
    }
}

/// Checks every invariant over a stopped data directory on SQLite.
pub fn audit_dir(dir: &Path) -> Result<AuditReport> {
    audit_data(dir, &StoreChoice::Sqlite, ColdDays::Rows)
}

/// Checks every invariant over a stopped data set, wherever its sets live,
/// its cold days counted by their totals or read row by row.
pub fn audit_data(dir: &Path, store: &StoreChoice, cold: ColdDays) -> Result<AuditReport> {
    Ok(audit_snapshots(&read_data_cold(dir, store, cold)?))
}

/// Every set's rows from a stopped data directory on SQLite, read once, for
/// callers that check more than the audit does (the bench, chaos).
pub fn read_dir(dir: &Path) -> Result<Vec<SetSnapshot>> {
    read_data(dir, &StoreChoice::Sqlite)
}

/// Every set's rows from a stopped data set, wherever its sets live, cold
/// days included row by row (call it off the async runtime: it waits on
/// disks and databases).
pub fn read_data(dir: &Path, store: &StoreChoice) -> Result<Vec<SetSnapshot>> {
    read_data_cold(dir, store, ColdDays::Rows)
}

/// Every set's rows, the cold days' as `cold` says.
pub fn read_data_cold(dir: &Path, store: &StoreChoice, cold: ColdDays) -> Result<Vec<SetSnapshot>> {
    let data = DataDir::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    if data.store != store.kind() {
        let path = dir.display().to_string();
        return Err(data_dir::DataDirError::StoreMismatch { path, created: data.store, requested: store.kind() }.into());
    }
    let _lock = data.lock_to_read().context("the audit needs a stopped data directory")?;
    match store {
        StoreChoice::Sqlite => data
            .set_ids()
            .map(|set| snapshot(&data.path, set, cold))
            .collect::<Result<Vec<_>, _>>()
            .context("reading the sets"),
        StoreChoice::Postgres(map) => {
            hongbao_store_pg::snapshot(map, data.sets, cold).context("reading the sets on PostgreSQL")
        }
    }
}

/// The audit of rows already read with `read_dir`.
pub fn audit_snapshots(snapshots: &[SetSnapshot]) -> AuditReport {
    audit(snapshots, EngineConfig::default().limits.share_min, SystemClock.now().0)
}

/// The keys of an existing data directory, ready to sign and verify.
pub fn auth(dir: &Path) -> Result<Auth> {
    let keys = keys::load(dir)?;
    Auth::new(keys).with_context(|| format!("the keys of {}", dir.display()))
}

/// A user token for `user` that expires `ttl` from now, signed with the
/// data directory's current key.
pub fn user_token(dir: &Path, user: &str, ttl: std::time::Duration) -> Result<String> {
    let user = hongbao_domain::UserId::parse(user)
        .map_err(|_| anyhow::anyhow!("{user:?} is not a valid user name: 1 to 64 characters from A-Z a-z 0-9 _ . -"))?;
    Ok(auth(dir)?.issue(&user, hongbao_server::token::expiry(SystemClock.now(), ttl)))
}
