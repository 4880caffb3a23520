//! The alternatives a team would deploy instead, on hongbao's workload:
//! the standard Lua script on Redis (with and without fsync on every
//! write), sent straight from the bench and from behind a web service
//! built like hongbao's own, and a PostgreSQL transaction per open, with a
//! row lock per packet or with optimistic locking. Behind the default cargo
//! feature `baselines`: they bring a Redis and a PostgreSQL client into the
//! binary, which a node built only to serve does not need
//! (`cargo build --release --no-default-features`).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use crate::hongbao::{OpenHttp, connections};
use crate::load::{Mode, WARMUP, drive};
use crate::report::{Conflicts, RunResult};
use crate::target::Tokens;
use crate::{BenchOptions, Suite, pg_optimistic, pg_row_lock, redis_lua, redis_lua_http};

impl Suite {
    /// The alternatives on the same workload; one that cannot run (no
    /// redis-server, no PostgreSQL) is skipped with the reason.
    pub(crate) async fn baselines(&mut self, options: &BenchOptions) {
        for (name, durable) in [("redis-lua", false), ("redis-lua-durable", true)] {
            if self.wants(name)
                && let Err(error) = self.redis_lua(name, durable, options.redis.as_deref()).await
            {
                self.skip(name, &error);
            }
        }
        for (name, durable) in [("redis-lua-http", false), ("redis-lua-http-durable", true)] {
            if self.wants(name)
                && let Err(error) = self.redis_lua_http(name, durable, options.redis.as_deref()).await
            {
                self.skip(name, &error);
            }
        }
        let (packets, count) = (self.sizes.spread_packets, self.sizes.spread_count);
        let pg_hot = self.sizes.hot_count / 4;
        for (name, packets, count) in [("pg-row-lock", packets, count), ("pg-row-lock-hot", 1, pg_hot)] {
            if self.wants(name)
                && let Err(error) = self.pg_row_lock(name, &options.pg, packets, count).await
            {
                self.skip(name, &error);
            }
        }
        for (name, packets, count) in [("pg-optimistic", packets, count), ("pg-optimistic-hot", 1, pg_hot)] {
            if self.wants(name)
                && let Err(error) = self.pg_optimistic(name, &options.pg, packets, count).await
            {
                self.skip(name, &error);
            }
        }
    }

    async fn redis_lua(&mut self, name: &str, durable: bool, url: Option<&str>) -> Result<()> {
        let (packets, count) = (self.sizes.spread_packets, self.sizes.spread_count);
        let redis = redis_lua::load(url, durable, packets, count).await?;
        let script = redis_lua::script();
        let clients = (0..self.sizes.clients)
            .map(|n| redis_lua::OpenRedis {
                connection: redis.pipes[n % redis.pipes.len()].clone(),
                script: script.clone(),
                packets: packets as u64,
            })
            .collect();
        let mode = Mode::Closed { clients: self.sizes.clients };
        let (measured, _) = drive(mode, self.sizes.duration, clients, &self.bar(name)).await;
        self.record(name, self.sizes.clients, &measured);
        Ok(())
    }

    async fn pg_row_lock(&mut self, name: &str, config: &str, packets: usize, count: u32) -> Result<()> {
        let database = pg_row_lock::Database::create(config, name).await?;
        let result = async {
            let setup = pg_row_lock::connect(&database.config).await?;
            pg_row_lock::prepare(&setup, packets, count).await?;
            let mut clients = Vec::new();
            for _ in 0..self.sizes.pg_clients {
                let client = pg_row_lock::connect(&database.config).await?;
                clients.push(pg_row_lock::OpenPg { client, packets: packets as u64 });
            }
            let mode = Mode::Closed { clients: self.sizes.pg_clients };
            let (measured, _) = drive(mode, self.sizes.duration, clients, &self.bar(name)).await;
            self.record(name, self.sizes.pg_clients, &measured);
            anyhow::Ok(())
        }
        .await;
        database.drop_now().await?;
        result
    }

    /// The Redis script behind an HTTP service, driven by `open-http`'s
    /// client on the same workload (see `redis_lua_http.rs`).
    async fn redis_lua_http(&mut self, name: &str, durable: bool, url: Option<&str>) -> Result<()> {
        let (packets, count) = (self.sizes.spread_packets, self.sizes.spread_count);
        let redis = redis_lua::load(url, durable, packets, count).await?;
        let front = redis_lua_http::Front::start(redis.pipes.clone(), packets).await?;
        let result = async {
            let plan = Arc::new(redis_lua_http::plan(packets));
            let tokens = Arc::new(Tokens::Signed(front.auth.clone()));
            let clients = connections(front.addr, self.sizes.clients).await?;
            let clients =
                clients.into_iter().map(|connection| OpenHttp::new(connection, plan.clone(), tokens.clone())).collect();
            let mode = Mode::Closed { clients: self.sizes.clients };
            let (measured, _) = drive(mode, self.sizes.duration, clients, &self.bar(name)).await;
            self.record(name, self.sizes.clients, &measured);
            anyhow::Ok(())
        }
        .await;
        front.stop().await?;
        result
    }

    /// Compare-and-swap opens on PostgreSQL (see `pg_optimistic.rs`); the
    /// share of attempts that conflicted and the opens that gave up are
    /// printed and kept for the report.
    async fn pg_optimistic(&mut self, name: &str, config: &str, packets: usize, count: u32) -> Result<()> {
        let database = pg_row_lock::Database::create(config, name).await?;
        let result = async {
            let setup = pg_row_lock::connect(&database.config).await?;
            pg_optimistic::prepare(&setup, packets, count).await?;
            let mut clients = Vec::new();
            for _ in 0..self.sizes.pg_clients {
                let client = pg_row_lock::connect(&database.config).await?;
                clients.push(pg_optimistic::OpenOptimistic::new(client, packets as u64));
            }
            // The driver records from the end of its warm-up; so do the clients.
            let counted_from = Instant::now() + WARMUP;
            for client in &mut clients {
                client.counted_from = counted_from;
            }
            let mode = Mode::Closed { clients: self.sizes.pg_clients };
            let (measured, clients) = drive(mode, self.sizes.duration, clients, &self.bar(name)).await;
            let mut conflicts = Conflicts::default();
            for client in &clients {
                conflicts.add(&client.conflicts);
            }
            eprintln!("{name}: {}", conflicts.summary(pg_optimistic::RETRIES_MAX));
            let mut run = RunResult::new(name, self.sizes.pg_clients, &measured);
            run.conflicts = Some(conflicts);
            self.runs.push(run);
            anyhow::Ok(())
        }
        .await;
        database.drop_now().await?;
        result
    }
}
