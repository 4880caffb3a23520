//! A connection and the runtime that drives it: each connection has a
//! current-thread Tokio runtime of its own, and a query runs its future and
//! the connection's socket together on the calling thread (an engine thread,
//! or a blocking-pool thread for reads). No hand-off to another thread per
//! query: with one shared i/o thread every query crossed threads twice,
//! which on two cores cost more than the query.

use std::future::Future;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use hongbao_domain::SetId;

use hongbao_engine::StoreError;
use tokio::runtime::Runtime;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

/// One PostgreSQL connection, used by one thread at a time.
pub(crate) struct Connection {
    client: Client,
    /// Always `Some` until dropped.
    runtime: Option<Runtime>,
}

impl Connection {
    /// Runs a query's future to completion on this thread, driving the
    /// connection meanwhile. Never call it from an async task.
    pub(crate) fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.as_ref().expect("a connection's runtime lives as long as it").block_on(future)
    }
}

impl Deref for Connection {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Without waiting: a connection may be dropped anywhere, an async
        // task too. The socket closes with the runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// How long a serving node's session may sit idle inside a transaction
/// before PostgreSQL ends it. A node paused mid-transaction (SIGSTOP, a
/// stalled VM) would otherwise hold its row locks (its set's position, a
/// day's partitions) for as long as it sleeps, and the node that takes its
/// sets over would wait behind them; well under the lease (2 s), so a
/// takeover waits at most this long. A node's own transactions never idle
/// near it: their statements are pipelined.
const IDLE_IN_TRANSACTION_MAX_MS: u32 = 1000;

/// `connect`, for a serving node's sessions (writers, materializers,
/// readers, leases, days): PostgreSQL ends one that idles inside a
/// transaction past `IDLE_IN_TRANSACTION_MAX_MS`.
pub(crate) fn connect_serving(url: &str, name: &str) -> Result<Connection, StoreError> {
    connect_with(url, name, Some(IDLE_IN_TRANSACTION_MAX_MS))
}

/// Opens one connection, named `name` in PostgreSQL's `pg_stat_activity`
/// (`application_name`), so an operator sees which is which.
pub(crate) fn connect(url: &str, name: &str) -> Result<Connection, StoreError> {
    connect_with(url, name, None)
}

fn connect_with(url: &str, name: &str, idle_in_transaction_ms: Option<u32>) -> Result<Connection, StoreError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::new(format!("starting a connection's runtime: {e}")))?;
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|e| StoreError::new(format!("the connection string {}: {e}", redacted(url))))?;
    config.application_name(name);
    if let Some(ms) = idle_in_transaction_ms {
        config.options(format!("-c idle_in_transaction_session_timeout={ms}"));
    }
    let (client, connection) = runtime
        .block_on(config.connect(NoTls))
        .map_err(|e| StoreError::new(format!("connecting to PostgreSQL ({}): {e}", redacted(url))))?;
    runtime.spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "a PostgreSQL connection ended");
        }
    });
    Ok(Connection { client, runtime: Some(runtime) })
}

/// How a set's writer holds its set, which decides the epoch its journal
/// appends at (the journal's fence refuses any other).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hold {
    /// The single-node mode: the set's advisory lock, for the connection's
    /// life; on taking it the writer raises the set's epoch, fencing off
    /// whoever wrote before (`lease::take_standalone`).
    Lock,
    /// The cluster mode: a lease its node acquired at `epoch` and keeps
    /// renewing (`lease::Leases`); no lock is taken.
    Lease { epoch: i64 },
}

/// A set writer's connection, shared by its journal and its prefetches; it
/// holds the set (`Hold`). When it is lost (the database restarted, the
/// network cut), the next use opens a new one and holds the set again
/// (waiting for the lock as a starting node does; a lease's epoch stays the
/// caller's): the set's recovery after a failed append then goes through,
/// instead of the set refusing writes until the node restarts.
pub(crate) struct WriterConnection {
    url: String,
    set: SetId,
    hold: Hold,
    current: Mutex<Current>,
}

/// The live connection of a set's writer.
#[derive(Clone)]
pub(crate) struct Current {
    pub(crate) connection: Arc<Connection>,
    /// Changes with every reopening (statements prepared on an older
    /// connection are prepared again).
    pub(crate) generation: u64,
    /// The epoch the journal appends at on this connection.
    pub(crate) epoch: i64,
}

impl WriterConnection {
    pub(crate) fn open(url: &str, set: SetId, hold: Hold) -> Result<WriterConnection, StoreError> {
        let (connection, epoch) = WriterConnection::held(url, set, hold)?;
        let current = Current { connection: Arc::new(connection), generation: 0, epoch };
        Ok(WriterConnection { url: url.to_owned(), set, hold, current: Mutex::new(current) })
    }

    /// A new connection that holds the set, and its epoch.
    fn held(url: &str, set: SetId, hold: Hold) -> Result<(Connection, i64), StoreError> {
        let connection = connect_serving(url, &format!("hongbao-set-{set}"))?;
        let epoch = connection.block_on(async {
            match hold {
                Hold::Lock => {
                    crate::schema::lock_set(&connection, set).await?;
                    crate::lease::take_standalone(&connection, set).await
                }
                Hold::Lease { epoch } => {
                    crate::schema::make_set_row(&connection, set).await?;
                    Ok(epoch)
                }
            }
        })?;
        Ok((connection, epoch))
    }

    /// The connection, reopened if it is known lost.
    pub(crate) fn get(&self) -> Result<Current, StoreError> {
        self.reopened_if(|connection| connection.is_closed())
    }

    /// As `get`, after asking the server whether the connection still
    /// works: a connection the server ended is only known lost once it is
    /// used. For recoveries, after a failure.
    pub(crate) fn get_checked(&self) -> Result<Current, StoreError> {
        self.reopened_if(|connection| {
            connection.is_closed() || connection.block_on(connection.batch_execute("SELECT 1")).is_err()
        })
    }

    fn reopened_if(&self, lost: impl Fn(&Connection) -> bool) -> Result<Current, StoreError> {
        let mut current = self.current.lock().expect("writer connection lock");
        if lost(&current.connection) {
            let (reopened, epoch) = WriterConnection::held(&self.url, self.set, self.hold)?;
            *current = Current { connection: Arc::new(reopened), generation: current.generation + 1, epoch };
            tracing::warn!(set = %self.set, epoch, "the set's PostgreSQL connection was lost; reopened, the set held again");
        }
        Ok(current.clone())
    }
}

/// A connection string without its password, for messages and logs: a
/// URL's `user:password@` becomes `user@`; a `key=value` string's
/// `password=` value is hidden.
pub fn redacted(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        return match rest.rsplit_once('@') {
            Some((credentials, host)) => {
                let user = credentials.split(':').next().unwrap_or("");
                format!("{scheme}://{user}@{host}")
            }
            None => url.to_owned(),
        };
    }
    url.split_whitespace()
        .map(|pair| if pair.starts_with("password=") { "password=…" } else { pair })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `body` in a transaction on `client`: committed if it succeeds,
/// rolled back if it fails. `what` names the work in errors.
pub(crate) async fn in_transaction<T>(
    client: &Client,
    what: &str,
    body: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    client.batch_execute("BEGIN").await.map_err(failed(what))?;
    let result = body.await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    client.batch_execute(end).await.map_err(failed(what))?;
    result
}

/// A database error as the engine sees it: a constraint's refusal (an
/// engine bug, never retried) or a failure that may pass.
pub(crate) fn failed(context: &str) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
    move |error| {
        let refused = error.code().is_some_and(|code| {
            [
                SqlState::CHECK_VIOLATION,
                SqlState::UNIQUE_VIOLATION,
                SqlState::NOT_NULL_VIOLATION,
                SqlState::FOREIGN_KEY_VIOLATION,
            ]
            .contains(code)
        });
        let message = match error.as_db_error() {
            Some(db) => format!("{context}: {}", db.message()),
            None => format!("{context}: {error}"),
        };
        if refused { StoreError::refused(message) } else { StoreError::new(message) }
    }
}
