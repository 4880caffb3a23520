//! Scratch databases, made for one test or one bench run and dropped after.
//!
//! Tests: `HONGBAO_TEST_PG` names a server (a connection string without a
//! database, e.g. `postgres://postgres@127.0.0.1:5432`); each test makes its
//! own database there. Without the variable the tests say they were skipped
//! and pass, so `cargo test --workspace` runs on a machine without
//! PostgreSQL (CI sets it).

use hongbao_engine::StoreError;

use crate::pg::connect;

/// The variable that names the test server.
pub const TEST_SERVER_VAR: &str = "HONGBAO_TEST_PG";

/// A database made on a server, dropped (with its connections) on drop.
#[derive(Debug)]
pub struct ScratchDatabase {
    server: String,
    name: String,
}

/// The connection string of database `name` on `server`, which is a URL
/// (`postgres://user@host:port`) or `key=value` settings without `dbname`.
fn on_server(server: &str, name: &str) -> String {
    if crate::set_map::is_postgres_url(server) {
        format!("{}/{name}", server.trim_end_matches('/'))
    } else {
        format!("{server} dbname={name}")
    }
}

impl ScratchDatabase {
    /// A fresh database `<prefix>_<random>` on `server`. It may be called
    /// anywhere, an async task too: it waits on a thread of its own.
    pub fn create(server: &str, prefix: &str) -> Result<ScratchDatabase, StoreError> {
        let mut nonce = [0u8; 6];
        getrandom::fill(&mut nonce).map_err(|e| StoreError::new(format!("no random bytes: {e}")))?;
        let suffix: String = nonce.iter().map(|byte| format!("{byte:02x}")).collect();
        let name = format!("{prefix}_{suffix}");
        let (admin, statement) = (on_server(server, "postgres"), format!("CREATE DATABASE {name}"));
        std::thread::spawn(move || {
            let admin = connect(&admin, "hongbao-test")?;
            admin
                .block_on(admin.batch_execute(&statement))
                .map_err(|e| StoreError::new(format!("making a database: {e}")))
        })
        .join()
        .map_err(|_| StoreError::new("the thread making a database panicked"))??;
        Ok(ScratchDatabase { server: server.to_owned(), name })
    }

    /// The database's connection string.
    pub fn url(&self) -> String {
        on_server(&self.server, &self.name)
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        // A thread of its own: the drop may run inside an async runtime,
        // where this thread may not wait.
        let (admin, name) = (on_server(&self.server, "postgres"), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let admin = connect(&admin, "hongbao-test")?;
            admin
                .block_on(admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                .map_err(|e| StoreError::new(e.to_string()))
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("the scratch database {} was not dropped: {dropped:?}", self.name);
        }
    }
}

/// A scratch database for one test.
#[derive(Debug)]
pub struct TestDatabase(ScratchDatabase);

impl TestDatabase {
    /// A fresh database on the test server, or `None` (after saying so) when
    /// `HONGBAO_TEST_PG` is not set.
    pub fn create(test: &str) -> Option<TestDatabase> {
        let Ok(server) = std::env::var(TEST_SERVER_VAR) else {
            eprintln!("skipped {test}: {TEST_SERVER_VAR} is not set (it names a PostgreSQL server to test on)");
            return None;
        };
        Some(TestDatabase(ScratchDatabase::create(&server, "hongbao_test").expect("making a test database")))
    }

    /// The test database's connection string.
    pub fn url(&self) -> String {
        self.0.url()
    }
}
