//! What the PostgreSQL tests share: SQL run beside the store, on a
//! connection of the test's own, as an operator (or a broken node) would.

use tokio_postgres::{NoTls, SimpleQueryMessage};

/// Runs `sql` (one or more statements) on a connection of its own and
/// answers the rows of its queries, each column as text (`None` for NULL),
/// or the database's message. It waits on a current-thread runtime of its
/// own, never the store's, so it may be called from any test thread.
pub fn sql(url: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a test runtime");
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(|e| e.to_string())?;
        let driver = tokio::spawn(connection);
        let messages = client.simple_query(sql).await;
        drop(client);
        let _ = driver.await;
        let messages = messages.map_err(|e| e.as_db_error().map_or_else(|| e.to_string(), |db| db.message().into()))?;
        Ok(messages
            .into_iter()
            .filter_map(|message| match message {
                SimpleQueryMessage::Row(row) => {
                    Some((0..row.len()).map(|column| row.get(column).map(str::to_owned)).collect())
                }
                _ => None,
            })
            .collect())
    })
}

/// The one value `query` answers, as text.
pub fn value(url: &str, query: &str) -> String {
    let rows = sql(url, query).unwrap_or_else(|error| panic!("{query}: {error}"));
    assert_eq!(rows.len(), 1, "{query} answers one row");
    rows[0][0].clone().unwrap_or_else(|| "NULL".into())
}

/// Every row of the tables the materializer writes, and the sets'
/// positions, in a fixed order: two calls compare equal exactly when
/// nothing was written in between.
#[allow(dead_code)] // not every test file reads the tables
pub fn tables(url: &str) -> Vec<String> {
    let mut rows = Vec::new();
    for table in ["hongbao_sets", "accounts", "ledger", "packets", "claims", "outbox", "idempotency"] {
        let query = format!("SELECT '{table}: ' || t::text FROM {table} t ORDER BY 1");
        let found = sql(url, &query).unwrap_or_else(|error| panic!("{query}: {error}"));
        rows.extend(found.into_iter().map(|row| row[0].clone().unwrap_or_default()));
    }
    rows
}
