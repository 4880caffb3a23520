//! The alternatives a team would deploy instead, on hongbao's workload:
//! the standard Lua script on Redis (with and without fsync on every
//! write), and a PostgreSQL row lock per packet. Behind the default cargo
//! feature `baselines`: they bring a Redis and a PostgreSQL client into the
//! binary, which a node built only to serve does not need
//! (`cargo build --release --no-default-features`).

use anyhow::Result;

use crate::load::{Mode, drive};
use crate::{BenchOptions, Suite, pg_row_lock, redis_lua};

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
        let (packets, count) = (self.sizes.spread_packets, self.sizes.spread_count);
        let pg_hot = self.sizes.hot_count / 4;
        for (name, packets, count) in [("pg-row-lock", packets, count), ("pg-row-lock-hot", 1, pg_hot)] {
            if self.wants(name)
                && let Err(error) = self.pg_row_lock(name, &options.pg, packets, count).await
            {
                self.skip(name, &error);
            }
        }
    }

    async fn redis_lua(&mut self, name: &str, durable: bool, url: Option<&str>) -> Result<()> {
        let server = match url {
            Some(_) => None,
            None => Some(redis_lua::RedisServer::start(durable).await?),
        };
        let url = url.map_or_else(|| server.as_ref().expect("started").url.clone(), str::to_owned);
        let mut connection = redis_lua::connect(&url).await?;
        if url.contains("127.0.0.1") || url.contains("localhost") {
            let (appendonly, fsync) = if durable { ("yes", "always") } else { ("no", "no") };
            let _: () =
                redis::cmd("CONFIG").arg("SET").arg("appendonly").arg(appendonly).query_async(&mut connection).await?;
            let _: () =
                redis::cmd("CONFIG").arg("SET").arg("appendfsync").arg(fsync).query_async(&mut connection).await?;
        }
        let (packets, count) = (self.sizes.spread_packets, self.sizes.spread_count);
        redis_lua::prepare(&mut connection, packets, count).await?;
        // A few multiplexed connections, each pipelining many clients' scripts.
        let pipes: Vec<_> = {
            let mut pipes = Vec::new();
            for _ in 0..4 {
                pipes.push(redis_lua::connect(&url).await?);
            }
            pipes
        };
        let script = redis_lua::script();
        let clients = (0..self.sizes.clients)
            .map(|n| redis_lua::OpenRedis {
                connection: pipes[n % pipes.len()].clone(),
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
}
