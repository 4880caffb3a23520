//! Where the sets live, as `serve` and `audit` are told: nothing (SQLite in
//! the data directory), or `--store postgres://…` with, for sets placed on
//! other databases, `--set-store FIRST-LAST=postgres://…`.

use anyhow::{Result, bail};
use hongbao::StoreChoice;
use hongbao_store_pg::SetMap;
use hongbao_store_pg::set_map::is_postgres_url;

#[derive(clap::Args, Clone, Debug, Default)]
pub struct StoreFlags {
    /// The PostgreSQL database of the sets (postgres://user:password@host:port/db);
    /// without it the sets live in the data directory (SQLite). A data
    /// directory keeps the choice it was made with.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Sets placed on another database than --store's, as N=URL or
    /// FIRST-LAST=URL; may be repeated (a later placement wins).
    #[arg(long, value_name = "SETS=URL")]
    set_store: Vec<String>,
}

impl StoreFlags {
    pub fn new(store: Option<String>, set_store: Vec<String>) -> StoreFlags {
        StoreFlags { store, set_store }
    }

    pub fn url(&self) -> Option<&str> {
        self.store.as_deref()
    }

    pub fn placements(&self) -> &[String] {
        &self.set_store
    }

    pub fn choice(&self) -> Result<StoreChoice> {
        let Some(url) = &self.store else {
            if !self.set_store.is_empty() {
                bail!("--set-store places sets on other databases than --store's: it needs --store");
            }
            return Ok(StoreChoice::Sqlite);
        };
        if !is_postgres_url(url) {
            bail!("--store takes a postgres:// URL (without it the sets live in the data directory)");
        }
        let mut map = SetMap::single(url.clone());
        for placed in &self.set_store {
            map = map.place_spelled(placed).map_err(|why| anyhow::anyhow!("--set-store: {why}"))?;
        }
        Ok(StoreChoice::Postgres(map))
    }
}
