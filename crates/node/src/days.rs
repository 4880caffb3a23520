//! The day keeper: once a minute, moves old settled days cold and, on
//! PostgreSQL, makes the coming days' tables ahead of time
//! (`hongbao_store_sqlite::keep_days`, `hongbao_store_pg::keep_days`),
//! judged by the node's clock. A failed pass is logged and tried again at
//! the next one: nothing waits on it, since the stores make a missing day
//! on demand and a day that stays hot longer costs only space.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use hongbao_engine::Clock;
use hongbao_store_pg::DaysKept;

use crate::StoreChoice;

/// How often the keeper runs.
pub const KEEPER_INTERVAL: Duration = Duration::from_secs(60);

/// Days a settled day stays hot by default (`--retention-days`).
pub const RETENTION_DAYS_DEFAULT: u32 = 7;

/// What the keeper needs to know of a node.
#[derive(Clone)]
pub struct DayKeeper {
    pub store: StoreChoice,
    /// The data directory (on SQLite, where the sets and their cold days are).
    pub data: PathBuf,
    pub sets: u16,
    pub retention_days: u32,
    pub clock: Arc<dyn Clock>,
}

impl DayKeeper {
    /// One pass, now (blocking: call it off the async runtime).
    pub fn run_once(&self) -> Result<DaysKept> {
        match &self.store {
            StoreChoice::Sqlite => {
                // SQLite makes nothing ahead: a day is only ever a prefix of ids.
                let cooled =
                    hongbao_store_sqlite::keep_days(&self.data, self.sets, self.clock.now(), self.retention_days)?;
                Ok(DaysKept { made: Vec::new(), cooled })
            }
            StoreChoice::Postgres(map) => {
                Ok(hongbao_store_pg::keep_days(map, self.sets, self.clock.now(), self.retention_days)?)
            }
        }
    }

    /// Runs a pass every `KEEPER_INTERVAL`, the first at once.
    pub async fn run(self) {
        let mut ticks = tokio::time::interval(KEEPER_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let keeper = self.clone();
            match tokio::task::spawn_blocking(move || keeper.run_once()).await {
                Ok(Ok(kept)) if kept != DaysKept::default() => {
                    tracing::info!(made = ?kept.made, cooled = ?kept.cooled, "days kept");
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(%error, "keeping the days failed; trying again later"),
                Err(error) => tracing::warn!(%error, "the day keeper's pass failed"),
            }
        }
    }
}
