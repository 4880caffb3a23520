//! A set's wallet rows beside its ledger in PostgreSQL: withdrawals
//! (`hongbao_domain::withdrawal`), frozen accounts and deposit reversals
//! (and the deposits they look up). All are written by the materializer in
//! its pipelined transaction, each after the ledger entries its triggers
//! look for (`migrations/0005_withdrawals.sql`); withdrawals are loaded
//! pending at recovery and read by id.

use hongbao_domain::SetId;
use hongbao_domain::withdrawal::{Withdrawal, WithdrawalId, WithdrawalStatus};
use hongbao_domain::{Amount, Millis, UserId};
use hongbao_engine::{Journaled, StoreError};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use crate::pg::failed;
use crate::schema::set_number;

pub(crate) const COLUMNS: &str = "id, user_id, amount, status, created_at, settled_at";

pub(crate) const ADD_SQL: &str = "INSERT INTO withdrawals (id, set_id, user_id, amount, status, created_at) \
                 SELECT i, $2, u, a, 'pending', c FROM unnest($1::text[], $3::text[], $4::int8[], $5::int8[]) \
                 AS w(i, u, a, c)";

pub(crate) const SETTLE_SQL: &str = "UPDATE withdrawals w SET status = s.status, settled_at = s.at \
                 FROM unnest($1::text[], $2::text[], $3::int8[]) AS s(id, status, at) WHERE w.id = s.id";

pub(crate) const READ_SQL: &str =
    "SELECT id, user_id, amount, status, created_at, settled_at FROM withdrawals WHERE id = ANY($1)";

fn corrupt(what: &str, value: impl std::fmt::Display) -> StoreError {
    StoreError::new(format!("corrupt withdrawal {what} in PostgreSQL: {value}"))
}

pub(crate) fn from_row(row: &Row) -> Result<Withdrawal, StoreError> {
    let (id, user, amount, status): (&str, &str, i64, &str) = (row.get(0), row.get(1), row.get(2), row.get(3));
    Ok(Withdrawal {
        id: id.parse().map_err(|()| corrupt("id", id))?,
        user: UserId::parse(user).map_err(|_| corrupt("user", user))?,
        amount: Amount::from_signed(amount).filter(|a| !a.is_zero()).ok_or_else(|| corrupt("amount", amount))?,
        status: WithdrawalStatus::parse(status).ok_or_else(|| corrupt("status", status))?,
        created_at: Millis(row.get(4)),
        settled_at: row.get::<_, Option<i64>>(5).map(Millis),
    })
}

/// The withdrawals `batches` asked for.
pub(crate) async fn write_new(
    client: &Client,
    statement: &Statement,
    set: SetId,
    batches: &[Journaled],
) -> Result<(), StoreError> {
    let new: Vec<&Withdrawal> = batches.iter().flat_map(|batch| &batch.effects.withdrawals).collect();
    if new.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = new.iter().map(|w| w.id.to_string()).collect();
    let users: Vec<&str> = new.iter().map(|w| w.user.as_str()).collect();
    let amounts: Vec<i64> = new.iter().map(|w| w.amount.signed()).collect();
    let ats: Vec<i64> = new.iter().map(|w| w.created_at.0).collect();
    let set = set_number(set);
    let params: [&(dyn ToSql + Sync); 5] = [&ids, &set, &users, &amounts, &ats];
    client.execute(statement, &params).await.map_err(failed("writing withdrawals")).map(drop)
}

/// The withdrawals `batches` settled.
pub(crate) async fn write_settled(
    client: &Client,
    statement: &Statement,
    batches: &[Journaled],
) -> Result<(), StoreError> {
    let settled: Vec<_> = batches.iter().flat_map(|batch| &batch.effects.withdrawals_settled).collect();
    if settled.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = settled.iter().map(|(id, ..)| id.to_string()).collect();
    let statuses: Vec<&str> = settled.iter().map(|(_, status, _)| status.as_str()).collect();
    let ats: Vec<i64> = settled.iter().map(|(.., at)| at.0).collect();
    let params: [&(dyn ToSql + Sync); 3] = [&ids, &statuses, &ats];
    let changed = client.execute(statement, &params).await.map_err(failed("settling withdrawals"))?;
    if changed != settled.len() as u64 {
        return Err(StoreError::refused(format!("{} settlings matched {changed} withdrawals", settled.len())));
    }
    Ok(())
}

/// The withdrawals with these ids that exist.
pub(crate) async fn read(
    client: &Client,
    statement: &Statement,
    ids: &[WithdrawalId],
) -> Result<Vec<Withdrawal>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let rows = client.query(statement, &[&ids]).await.map_err(failed("reading withdrawals"))?;
    rows.iter().map(from_row).collect()
}

/// A batch's freezes and unfreezes, one statement each (they are rare);
/// each must change its account.
pub(crate) async fn write_frozen(client: &Client, set: SetId, batches: &[Journaled]) -> Result<(), StoreError> {
    let set = set_number(set);
    for (user, frozen, at) in batches.iter().flat_map(|batch| &batch.effects.frozen) {
        let changed = match frozen {
            true => client
                .execute(
                    "INSERT INTO frozen_accounts (user_id, set_id, since) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[&user.as_str(), &set, &at.0],
                )
                .await,
            false => client.execute("DELETE FROM frozen_accounts WHERE user_id = $1", &[&user.as_str()]).await,
        }
        .map_err(failed("writing a freeze"))?;
        if changed != 1 {
            return Err(StoreError::refused(format!("{user}'s account frozen or unfrozen twice")));
        }
    }
    Ok(())
}

/// A batch's reversals of deposits (after their entries).
pub(crate) async fn write_reversals(client: &Client, batches: &[Journaled]) -> Result<(), StoreError> {
    for reversal in batches.iter().flat_map(|batch| &batch.effects.reversals) {
        client
            .execute(
                "INSERT INTO reversals (deposit, user_id, amount, at) VALUES ($1, $2, $3, $4)",
                &[&reversal.deposit, &reversal.user.as_str(), &reversal.amount.signed(), &reversal.at.0],
            )
            .await
            .map_err(failed("writing a reversal"))?;
    }
    Ok(())
}

/// A deposit of `user`'s in the hot tables: its amount, and whether it was
/// reversed (found through the user's entries: a reference names no day).
pub(crate) async fn deposit(
    client: &Client,
    user: &UserId,
    reference: &str,
) -> Result<Option<(Amount, bool)>, StoreError> {
    let rows = client
        .query(
            "SELECT l.amount, EXISTS (SELECT 1 FROM reversals r WHERE r.deposit = l.reference) FROM ledger l \
             WHERE l.user_id = $1 AND l.reference = $2 AND l.kind = 'deposit'",
            &[&user.as_str(), &reference],
        )
        .await
        .map_err(failed("reading a deposit"))?;
    rows.first()
        .map(|row| {
            let fen: i64 = row.get(0);
            let amount = Amount::from_signed(fen).ok_or_else(|| corrupt("deposit", reference))?;
            Ok((amount, row.get(1)))
        })
        .transpose()
}

/// The set's frozen accounts.
pub(crate) async fn frozen(client: &Client, set: SetId) -> Result<Vec<UserId>, StoreError> {
    let rows = client
        .query("SELECT user_id FROM frozen_accounts WHERE set_id = $1", &[&set_number(set)])
        .await
        .map_err(failed("loading frozen accounts"))?;
    rows.iter()
        .map(|row| {
            let name: &str = row.get(0);
            UserId::parse(name).map_err(|_| StoreError::new(format!("corrupt frozen account {name:?}")))
        })
        .collect()
}

/// The set's withdrawals not yet settled.
pub(crate) async fn pending(client: &Client, set: SetId) -> Result<Vec<Withdrawal>, StoreError> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM withdrawals WHERE set_id = $1 AND status = 'pending'"),
            &[&set_number(set)],
        )
        .await
        .map_err(failed("loading pending withdrawals"))?;
    rows.iter().map(from_row).collect()
}
