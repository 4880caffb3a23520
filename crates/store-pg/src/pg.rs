//! The process-wide runtime the PostgreSQL connections run on, and how the
//! synchronous store waits for a query. One runtime for all, made once and
//! never dropped: a runtime dropped inside another's task panics, and the
//! stores are dropped wherever the engine is.

use std::future::Future;
use std::sync::OnceLock;

use hongbao_engine::StoreError;
use tokio::runtime::Runtime;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

/// Threads that drive the connections' sockets. The queries' futures run on
/// the callers' threads; these only move bytes, so one is enough on a
/// small machine, and more only add hand-offs.
const IO_THREADS: usize = 1;

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(IO_THREADS)
            .thread_name("hongbao-pg-io")
            .enable_all()
            .build()
            .expect("the PostgreSQL i/o runtime starts")
    })
}

/// Runs a query's future to completion on this thread (an engine thread or
/// a blocking-pool thread, never an async task).
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    runtime().block_on(future)
}

/// Opens one connection; its driver runs on the shared runtime until the
/// client is dropped.
pub(crate) fn connect(url: &str) -> Result<Client, StoreError> {
    let (client, connection) = block_on(tokio_postgres::connect(url, NoTls))
        .map_err(|e| StoreError::new(format!("connecting to PostgreSQL ({}): {e}", redacted(url))))?;
    runtime().spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "a PostgreSQL connection ended");
        }
    });
    Ok(client)
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
