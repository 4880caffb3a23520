//! Set ownership by lease, for a cluster: several nodes serving one data set
//! on shared databases. A node registers itself (`hongbao_nodes`), takes
//! free or expired sets (`hongbao_leases`), and renews what it holds before
//! it expires; a node that stops renewing (dead, cut off, paused) loses its
//! sets once their leases run out, and another node takes them.
//!
//! Every takeover raises the set's epoch, and the journal's fence
//! (`migrations/0003_leases.sql`) refuses an append at any other epoch: a
//! node that lost a set and does not know it yet cannot append behind its
//! new owner. The fence reads the lease row `FOR SHARE`, so a takeover waits
//! for an append in flight, and the new owner's recovery reads it.
//!
//! Every time is the database's clock (`clock_timestamp()`): expiry is
//! judged by one clock however far the nodes' clocks drift apart. A set's
//! lease lives in the set's own database (where its journal's fence reads
//! it); the nodes' rows live in the database of set 0.
//!
//! The calls are synchronous, each on a dedicated connection per database
//! named `hongbao-lease-<node>`; callers run them off the async runtime. A
//! lost connection (a database restart) fails its call and is reopened by
//! the next.
//!
//! The single-node mode takes a set's advisory lock instead, and raises the
//! set's epoch as its `standalone` owner (`take_standalone`), fencing off
//! anyone who wrote before it.

use std::sync::Mutex;
use std::time::Duration;

use hongbao_domain::SetId;
use hongbao_engine::StoreError;
use tokio_postgres::Client;

use crate::pg::{Connection, connect_serving, failed, in_transaction};
use crate::schema::set_number;
use crate::set_map::SetMap;

/// A set's epoch: raised by every takeover; a journal append carries its
/// writer's, and is refused unless the set's lease is still at it.
pub type Epoch = i64;

/// The owner a single-node writer's lease names; no cluster node may take
/// the name.
pub(crate) const STANDALONE: &str = "standalone";

/// The longest lease: a dead node's sets wait this long for a new owner, so
/// a longer one is a mistake, not a setting.
pub const LEASE_MAX: Duration = Duration::from_secs(3600);

/// Index of the database that holds the nodes' rows in `Leases::databases`:
/// set 0's, the first `SetMap::databases` names.
const HOME: usize = 0;

/// A node's hold on the leases of a data set's sets.
pub struct Leases {
    node: String,
    /// `hongbao-lease-<node>`, in `pg_stat_activity`.
    name: String,
    advertise: String,
    lease_ms: i64,
    databases: Vec<Database>,
    /// For each set, its database's index in `databases`.
    placement: Vec<usize>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases").field("node", &self.node).field("lease_ms", &self.lease_ms).finish()
    }
}

/// One database of the set map, with the sets whose leases it holds.
struct Database {
    url: String,
    sets: Vec<i16>,
    /// Opened on first use, and again after it was found lost.
    connection: Mutex<Option<Connection>>,
}

impl Database {
    /// Runs `work` on the database's lease connection, opening one if there
    /// is none or it is closed. After a failure other than a refusal, a
    /// connection that no longer answers is dropped, for the next call to
    /// open a new one; nothing is retried here (a takeover is not
    /// idempotent: the caller decides).
    fn with<T>(&self, name: &str, work: impl AsyncFn(&Client) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut slot = self.connection.lock().expect("lease connection lock");
        let connection = match slot.take() {
            Some(connection) if !connection.is_closed() => connection,
            _ => connect_serving(&self.url, name)?,
        };
        let result = connection.block_on(work(&connection));
        let lost = result.as_ref().is_err_and(|error| !error.refused)
            && connection.block_on(connection.batch_execute("SELECT 1")).is_err();
        if !lost {
            *slot = Some(connection);
        }
        result
    }
}

/// The cluster as the database sees it, at one moment of its clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    /// Every registered node, by id.
    pub nodes: Vec<NodeRow>,
    /// Every set's lease, by set.
    pub leases: Vec<LeaseRow>,
}

/// A registered node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    pub node: String,
    /// Where the other nodes reach it.
    pub advertise: String,
    /// When it joined, in milliseconds since the Unix epoch.
    pub started_at_ms: i64,
    /// How long ago its last heartbeat was.
    pub heartbeat_age_ms: i64,
}

/// A set's lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    pub set: SetId,
    /// `None` for a free set; `standalone` for a single-node writer's.
    pub owner: Option<String>,
    pub epoch: Epoch,
    /// Until it expires; negative once it has. `i64::MAX` for a lease
    /// without end (a standalone writer's), `i64::MIN` for a released one.
    pub expires_in_ms: i64,
    /// Since its owner took it; `None` for a free set.
    pub held_for_ms: Option<i64>,
}

impl LeaseRow {
    /// The lease's owner if its lease still runs `elapsed_ms` after the
    /// cluster was read: the node that holds the set then.
    pub fn owner_after(&self, elapsed_ms: i64) -> Option<&str> {
        self.owner.as_deref().filter(|_| self.expires_in_ms > elapsed_ms)
    }
}

impl ClusterStatus {
    /// The nodes whose last heartbeat is younger than a lease of `lease`:
    /// those whose leases can still be running.
    pub fn live_nodes(&self, lease: Duration) -> Vec<&NodeRow> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        self.nodes.iter().filter(|node| node.heartbeat_age_ms < lease_ms).collect()
    }
}

/// Extends the caller's unexpired leases among the database's sets.
const RENEW_SQL: &str = "UPDATE hongbao_leases SET expires_at = clock_timestamp() + $2::bigint * interval '1 millisecond' \
     WHERE owner = $1 AND expires_at > clock_timestamp() AND set_id = ANY($3) RETURNING set_id, epoch";

/// Takes a free or expired set at the next epoch; answers whether the
/// set has a lease row at all, to tell "held by another" from a mistake.
const ACQUIRE_SQL: &str = "WITH taken AS (UPDATE hongbao_leases SET epoch = epoch + 1, owner = $2, \
     expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond', acquired_at = clock_timestamp() \
     WHERE set_id = $1 AND (owner IS NULL OR owner = $2 OR expires_at <= clock_timestamp()) RETURNING epoch) \
     SELECT (SELECT epoch FROM taken), EXISTS (SELECT 1 FROM hongbao_leases WHERE set_id = $1)";

/// Frees leases: they expired at once, so the next `acquire` takes them.
const FREE_SQL: &str = "owner = NULL, expires_at = '-infinity', acquired_at = NULL";

/// Registers the node, or refreshes its row: `started_at` is set by a join
/// (`$3`), kept by a heartbeat.
const NODE_SQL: &str = "INSERT INTO hongbao_nodes AS n (node_id, advertise, started_at, heartbeat_at) \
     VALUES ($1, $2, clock_timestamp(), clock_timestamp()) ON CONFLICT (node_id) DO UPDATE \
     SET advertise = EXCLUDED.advertise, heartbeat_at = EXCLUDED.heartbeat_at, \
     started_at = CASE WHEN $3 THEN EXCLUDED.started_at ELSE n.started_at END";

const NODES_SQL: &str = "SELECT node_id, advertise, (extract(epoch FROM started_at) * 1000)::bigint, \
     (extract(epoch FROM clock_timestamp() - heartbeat_at) * 1000)::bigint FROM hongbao_nodes ORDER BY node_id";

/// The leases of the database's sets, each time against one reading of
/// the clock; an endless lease (`±infinity`) is spelled by the extremes.
const LEASES_SQL: &str = "WITH now AS (SELECT clock_timestamp() AS at) \
     SELECT set_id, owner, epoch, \
     (CASE WHEN isfinite(expires_at) THEN extract(epoch FROM expires_at - now.at) * 1000 \
      WHEN expires_at > now.at THEN 9223372036854775807 ELSE -9223372036854775808 END)::bigint, \
     (extract(epoch FROM now.at - acquired_at) * 1000)::bigint \
     FROM hongbao_leases, now WHERE set_id = ANY($1) ORDER BY set_id";

impl Leases {
    /// Joins the cluster serving the data set of `sets` sets on `map`'s
    /// databases: migrates each (as `open_sets` does; idempotent), which
    /// makes every set's lease row, and registers (upserts) the node with
    /// the address others reach it at, its start and a heartbeat, now.
    /// `lease` is how long a lease runs unrenewed (at most `LEASE_MAX`).
    pub fn join(map: &SetMap, sets: u16, node: &str, advertise: &str, lease: Duration) -> Result<Leases, StoreError> {
        if node.is_empty() || node == STANDALONE {
            return Err(StoreError::new(format!("{node:?} cannot name a node")));
        }
        if lease.is_zero() || lease > LEASE_MAX {
            return Err(StoreError::new(format!("a lease of {lease:?} is not between 1 ms and {LEASE_MAX:?}")));
        }
        if sets == 0 {
            return Err(StoreError::new("a data set has at least one set"));
        }
        let urls = map.databases(sets);
        let placement = (0..sets)
            .map(|set| urls.iter().position(|url| *url == map.url(SetId(set))).expect("every set's database is listed"))
            .collect::<Vec<usize>>();
        let databases = urls
            .iter()
            .enumerate()
            .map(|(index, url)| Database {
                url: (*url).to_owned(),
                sets: (0..sets)
                    .filter(|set| placement[usize::from(*set)] == index)
                    .map(|set| set_number(SetId(set)))
                    .collect(),
                connection: Mutex::new(None),
            })
            .collect();
        let leases = Leases {
            node: node.to_owned(),
            name: format!("hongbao-lease-{node}"),
            advertise: advertise.to_owned(),
            lease_ms: i64::try_from(lease.as_millis()).expect("LEASE_MAX fits"),
            databases,
            placement,
        };
        for database in &leases.databases {
            database.with(&leases.name, async |client| crate::schema::migrate(client, sets).await)?;
        }
        leases.databases[HOME].with(&leases.name, async |client| leases.register(client, true).await)?;
        Ok(leases)
    }

    async fn register(&self, client: &Client, joining: bool) -> Result<(), StoreError> {
        client
            .execute(NODE_SQL, &[&self.node, &self.advertise, &joining])
            .await
            .map_err(failed("registering the node"))
            .map(drop)
    }

    /// The heartbeat, and every lease the node holds that has not expired
    /// extended to a lease from now: in one transaction per database (the
    /// heartbeat in the nodes' database's). Answers the sets it still
    /// holds, with their epochs, by set: a set missing from the answer was
    /// lost (it expired, and may have been taken), and its writer must
    /// stop. A lease that expired is not extended even if nobody took it:
    /// `acquire` takes it again, at a new epoch.
    pub fn renew(&self) -> Result<Vec<(SetId, Epoch)>, StoreError> {
        let mut held = Vec::new();
        for (index, database) in self.databases.iter().enumerate() {
            let rows = database.with(&self.name, async |client| {
                in_transaction(client, "renewing the leases", async {
                    if index == HOME {
                        self.register(client, false).await?;
                    }
                    client
                        .query(RENEW_SQL, &[&self.node, &self.lease_ms, &database.sets])
                        .await
                        .map_err(failed("renewing the leases"))
                })
                .await
            })?;
            held.extend(rows.iter().map(|row| (set_id(row.get(0)), row.get::<_, Epoch>(1))));
        }
        held.sort_unstable();
        Ok(held)
    }

    /// Takes `set` if its lease is free, expired, or already this node's
    /// (left by its previous life: a node that restarts after a crash takes
    /// its sets back at once instead of waiting out its own leases; a
    /// process still running under the same name is fenced by the new
    /// epoch, and its keeper sees the epoch change and gives the set up):
    /// the epoch goes up by one, the node owns it for a lease from now. Answers the new epoch, which the set's
    /// writer appends at (`open_leased_set`), or `None` while another node
    /// (or a standalone writer) holds it.
    pub fn acquire(&self, set: SetId) -> Result<Option<Epoch>, StoreError> {
        let database = self.database(set)?;
        let row = database.with(&self.name, async |client| {
            client
                .query_one(ACQUIRE_SQL, &[&set_number(set), &self.node, &self.lease_ms])
                .await
                .map_err(failed("acquiring a set's lease"))
        })?;
        if !row.get::<_, bool>(1) {
            return Err(StoreError::new(format!("set {set} has no lease row: its database was not migrated for it")));
        }
        Ok(row.get(0))
    }

    /// Gives `set` up at once, so another node may take it without waiting
    /// for the lease to run out; only if this node still holds it at
    /// `epoch` (answers whether it did). The set's writer stops first: the
    /// fence stops it only once another node takes the set.
    pub fn release(&self, set: SetId, epoch: Epoch) -> Result<bool, StoreError> {
        let database = self.database(set)?;
        let released = database.with(&self.name, async |client| {
            client
                .execute(
                    &format!("UPDATE hongbao_leases SET {FREE_SQL} WHERE set_id = $1 AND owner = $2 AND epoch = $3"),
                    &[&set_number(set), &self.node, &epoch],
                )
                .await
                .map_err(failed("releasing a set's lease"))
        })?;
        Ok(released == 1)
    }

    /// Leaves the cluster gracefully: gives up every lease the node still
    /// holds (as `release`: its writers stop first), then removes its row.
    pub fn leave(&self) -> Result<(), StoreError> {
        for database in &self.databases {
            database.with(&self.name, async |client| {
                client
                    .execute(
                        &format!("UPDATE hongbao_leases SET {FREE_SQL} WHERE owner = $1 AND set_id = ANY($2)"),
                        &[&self.node, &database.sets],
                    )
                    .await
                    .map_err(failed("releasing the node's leases"))
            })?;
        }
        self.databases[HOME].with(&self.name, async |client| {
            client
                .execute("DELETE FROM hongbao_nodes WHERE node_id = $1", &[&self.node])
                .await
                .map_err(failed("removing the node"))
                .map(drop)
        })
    }

    /// The cluster as the databases see it now: the registered nodes, and
    /// every set's lease.
    pub fn status(&self) -> Result<ClusterStatus, StoreError> {
        let nodes = self.databases[HOME]
            .with(&self.name, async |client| client.query(NODES_SQL, &[]).await.map_err(failed("reading the nodes")))?;
        let nodes = nodes
            .iter()
            .map(|row| NodeRow {
                node: row.get(0),
                advertise: row.get(1),
                started_at_ms: row.get(2),
                heartbeat_age_ms: row.get(3),
            })
            .collect();
        let mut leases = Vec::with_capacity(self.placement.len());
        for database in &self.databases {
            let rows = database.with(&self.name, async |client| {
                client.query(LEASES_SQL, &[&database.sets]).await.map_err(failed("reading the leases"))
            })?;
            leases.extend(rows.iter().map(|row| LeaseRow {
                set: set_id(row.get(0)),
                owner: row.get(1),
                epoch: row.get(2),
                expires_in_ms: row.get(3),
                held_for_ms: row.get(4),
            }));
        }
        leases.sort_unstable_by_key(|lease| lease.set);
        Ok(ClusterStatus { nodes, leases })
    }

    /// Every frozen account of the data set's databases, with its set
    /// (`hongbao_engine::frozen`): a node learns of the freezes kept by
    /// sets other nodes hold.
    pub fn frozen_accounts(&self) -> Result<Vec<(String, SetId)>, StoreError> {
        let mut frozen = Vec::new();
        for database in &self.databases {
            let rows = database.with(&self.name, async |client| {
                client
                    .query("SELECT user_id, set_id FROM frozen_accounts WHERE set_id = ANY($1)", &[&database.sets])
                    .await
                    .map_err(failed("reading the frozen accounts"))
            })?;
            frozen.extend(rows.iter().map(|row| (row.get::<_, String>(0), set_id(row.get(1)))));
        }
        Ok(frozen)
    }

    fn database(&self, set: SetId) -> Result<&Database, StoreError> {
        let index = self.placement.get(usize::from(set.0)).ok_or_else(|| {
            StoreError::new(format!("set {set} is not in the data set of {} sets", self.placement.len()))
        })?;
        Ok(&self.databases[*index])
    }
}

/// A set as the tables spell it, back.
fn set_id(number: i16) -> SetId {
    SetId(u16::try_from(number).expect("set numbers are not negative (a CHECK)"))
}

/// The single-node mode's hold on `set`, on the connection that has just
/// taken its advisory lock: the epoch goes up by one, owned by `standalone`
/// without end, so any writer before it (a cluster node's, an earlier
/// standalone connection's) is fenced. An append in flight is waited for
/// (the fence's `FOR SHARE`). Answers the new epoch.
pub(crate) async fn take_standalone(client: &Client, set: SetId) -> Result<Epoch, StoreError> {
    let row = client
        .query_opt(
            "UPDATE hongbao_leases SET epoch = epoch + 1, owner = $2, expires_at = 'infinity', \
             acquired_at = clock_timestamp() WHERE set_id = $1 RETURNING epoch",
            &[&set_number(set), &STANDALONE],
        )
        .await
        .map_err(failed("fencing the set's earlier writers"))?;
    let row = row.ok_or_else(|| {
        StoreError::new(format!("set {set} has no lease row: its database was not migrated for a data set holding it"))
    })?;
    Ok(row.get(0))
}
