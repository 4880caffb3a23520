//! The classic relational red packet: one transaction per open that locks
//! the packet row (`SELECT ... FOR UPDATE`), draws the share, decrements the
//! packet and inserts the claim. Run in a fresh PostgreSQL database that is
//! dropped afterwards.

use anyhow::{Context, Result};
use hongbao_domain::Amount;
use hongbao_domain::split::lucky_share;
use tokio_postgres::{Client as PgClient, NoTls};

use crate::load::Client;

const SCHEMA: &str = "
CREATE TABLE packets (
    id               bigint PRIMARY KEY,
    count            int NOT NULL,
    remaining_amount bigint NOT NULL CHECK (remaining_amount >= 0),
    remaining_count  int NOT NULL CHECK (remaining_count >= 0),
    seed             bigint NOT NULL
);
CREATE TABLE claims (
    packet_id bigint NOT NULL REFERENCES packets (id),
    user_id   text NOT NULL,
    amount    bigint NOT NULL CHECK (amount >= 1),
    PRIMARY KEY (packet_id, user_id)
);";

pub async fn connect(config: &str) -> Result<PgClient> {
    let (client, connection) = tokio_postgres::connect(config, NoTls).await.context("connecting to PostgreSQL")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A database made for one run and dropped after it.
pub struct Database {
    admin: PgClient,
    pub name: String,
    pub config: String,
}

impl Database {
    pub async fn create(admin_config: &str, run: &str) -> Result<Database> {
        let admin = connect(admin_config).await?;
        let name = format!("hongbao_bench_{}_{}", std::process::id(), run.replace('-', "_"));
        // Separate statements: a multi-statement string runs as one transaction.
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).await?;
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await?;
        let config = format!("{admin_config} dbname={name}");
        Ok(Database { admin, name, config })
    }

    pub async fn drop_now(self) -> Result<()> {
        self.admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).await?;
        Ok(())
    }
}

pub async fn prepare(client: &PgClient, packets: usize, count: u32) -> Result<()> {
    client.batch_execute(SCHEMA).await?;
    let total = i64::from(count) * 2;
    client
        .execute(
            "INSERT INTO packets SELECT g, $1::int, $2::bigint, $1::int, g * 7919 \
             FROM generate_series(0::bigint, $3::bigint - 1) AS g",
            &[&(count as i32), &total, &(packets as i64)],
        )
        .await?;
    Ok(())
}

/// One transaction per open, on its own connection.
pub struct OpenPg {
    pub client: PgClient,
    pub packets: u64,
}

impl OpenPg {
    async fn open(&mut self, n: u64) -> Result<bool> {
        let packet = (n % self.packets) as i64;
        let user = format!("u{}", n / self.packets);
        let transaction = self.client.transaction().await?;
        let row = transaction
            .query_one(
                "SELECT count, remaining_amount, remaining_count, seed FROM packets WHERE id = $1 FOR UPDATE",
                &[&packet],
            )
            .await?;
        let (count, remaining, left, seed): (i32, i64, i32, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
        if left == 0 {
            return Ok(false);
        }
        let remaining_amount = Amount::from_signed(remaining).context("remaining amount")?;
        let index = (count - left) as u32;
        let share = lucky_share(seed as u64, index, remaining_amount, left as u32, Amount::from_fen(1).expect("fen"));
        let share = share.signed();
        transaction
            .execute(
                "UPDATE packets SET remaining_amount = remaining_amount - $2, remaining_count = remaining_count - 1 \
                 WHERE id = $1",
                &[&packet, &share],
            )
            .await?;
        transaction
            .execute("INSERT INTO claims (packet_id, user_id, amount) VALUES ($1, $2, $3)", &[&packet, &user, &share])
            .await?;
        transaction.commit().await?;
        Ok(true)
    }
}

impl Client for OpenPg {
    async fn call(&mut self, n: u64) -> bool {
        self.open(n).await.unwrap_or(false)
    }
}
