//! The relational red packet with optimistic locking (compare-and-swap),
//! the option the row lock is usually weighed against: no lock is taken to
//! read. Each open reads the packet's `version` and what is left, draws the
//! share, then in one transaction updates the packet only if its version is
//! still the one read (`... WHERE id = $1 AND version = $2`, bumping it) and
//! inserts the claim. An update that matches no row lost the race to
//! another open: it is rolled back and the open starts over, at most
//! `RETRIES_MAX` times, then gives up (an error, as a user would see it).
//!
//! Spread over many packets, races are rare and it costs what the row lock
//! costs; on one hot packet, every open that commits makes every other
//! in-flight read stale, so most attempts conflict and opens give up: what
//! the row lock (which queues them) and hongbao (which orders them in one
//! writer) avoid. Under READ COMMITTED an update still waits for a
//! concurrent update of the same row to end before it sees the new version,
//! so a conflict costs a wait as well as a retry. Same tables as
//! `pg_row_lock.rs`, plus the version column, in a fresh database.

use std::time::Instant;

use anyhow::{Context, Result};
use hongbao_domain::Amount;
use hongbao_domain::split::lucky_share;
use tokio_postgres::Client as PgClient;

use crate::load::Client;
use crate::pg_row_lock;
use crate::report::Conflicts;

/// Retries after a conflict before an open gives up: enough for a spread
/// workload's rare race, and the usual bound of an ORM's retry loop, so a
/// hot packet cannot keep a request spinning.
pub const RETRIES_MAX: u32 = 5;

/// `pg_row_lock`'s tables and packets, and each packet's version.
pub async fn prepare(client: &PgClient, packets: usize, count: u32) -> Result<()> {
    pg_row_lock::prepare(client, packets, count).await?;
    client.batch_execute("ALTER TABLE packets ADD COLUMN version bigint NOT NULL DEFAULT 0").await?;
    Ok(())
}

/// What one attempt came to.
enum Attempt {
    Opened,
    /// The version moved on between the read and the update.
    Conflicted,
    Empty,
}

/// Opens with compare-and-swap, on its own connection.
pub struct OpenOptimistic {
    pub client: PgClient,
    pub packets: u64,
    /// Attempts are counted from here: the driver's warm-up is not.
    pub counted_from: Instant,
    pub conflicts: Conflicts,
}

impl OpenOptimistic {
    pub fn new(client: PgClient, packets: u64) -> OpenOptimistic {
        OpenOptimistic { client, packets, counted_from: Instant::now(), conflicts: Conflicts::default() }
    }

    async fn attempt(&mut self, packet: i64, user: &str) -> Result<Attempt> {
        let row = self
            .client
            .query_one(
                "SELECT count, remaining_amount, remaining_count, seed, version FROM packets WHERE id = $1",
                &[&packet],
            )
            .await?;
        let (count, remaining, left, seed, version): (i32, i64, i32, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        if left == 0 {
            return Ok(Attempt::Empty);
        }
        let remaining_amount = Amount::from_signed(remaining).context("remaining amount")?;
        let index = (count - left) as u32;
        let share = lucky_share(seed as u64, index, remaining_amount, left as u32, Amount::from_fen(1).expect("fen"));
        let share = share.signed();
        let transaction = self.client.transaction().await?;
        let updated = transaction
            .execute(
                "UPDATE packets SET remaining_amount = $3, remaining_count = $4, version = version + 1 \
                 WHERE id = $1 AND version = $2",
                &[&packet, &version, &(remaining - share), &(left - 1)],
            )
            .await?;
        if updated == 0 {
            transaction.rollback().await?;
            return Ok(Attempt::Conflicted);
        }
        transaction
            .execute("INSERT INTO claims (packet_id, user_id, amount) VALUES ($1, $2, $3)", &[&packet, &user, &share])
            .await?;
        transaction.commit().await?;
        Ok(Attempt::Opened)
    }

    /// One open: attempts until one commits, the packet is empty, or the
    /// retries run out.
    async fn open(&mut self, n: u64) -> Result<bool> {
        let packet = (n % self.packets) as i64;
        let user = format!("u{}", n / self.packets);
        let counted = Instant::now() >= self.counted_from;
        let mut tally = Conflicts::default();
        let mut opened = false;
        for _ in 0..=RETRIES_MAX {
            tally.attempts += 1;
            match self.attempt(packet, &user).await? {
                Attempt::Opened => {
                    opened = true;
                    break;
                }
                Attempt::Empty => break,
                Attempt::Conflicted => tally.conflicted += 1,
            }
        }
        tally.gave_up = u64::from(tally.conflicted == u64::from(RETRIES_MAX) + 1);
        if counted {
            self.conflicts.add(&tally);
        }
        Ok(opened)
    }
}

impl Client for OpenOptimistic {
    async fn call(&mut self, n: u64) -> bool {
        self.open(n).await.unwrap_or(false)
    }
}
