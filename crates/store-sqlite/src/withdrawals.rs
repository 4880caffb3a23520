//! A set's wallet rows beside its ledger: withdrawals
//! (`hongbao_domain::withdrawal`), frozen accounts (`hongbao_engine::frozen`)
//! and deposit reversals, and the deposits a reversal looks up. Withdrawals
//! are written by the materializer (asked for, then settled), loaded
//! pending at recovery, read by id, and read whole for the audit. The
//! triggers that tie each row to its entries are in `schema.rs`.

use hongbao_domain::audit::WithdrawalRow;
use hongbao_domain::withdrawal::{Withdrawal, WithdrawalId, WithdrawalStatus};
use hongbao_domain::{Amount, Millis, UserId};
use hongbao_engine::{Effects, StoreError};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use crate::failed;

const COLUMNS: &str = "id, user, amount, status, created_at, settled_at";

fn corrupt(what: &str, value: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnName(format!("corrupt withdrawal {what}: {value}"))
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<Withdrawal> {
    let (id, user, amount, status): (String, String, i64, String) =
        (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
    Ok(Withdrawal {
        id: id.parse().map_err(|()| corrupt("id", &id))?,
        user: UserId::parse(&user).map_err(|_| corrupt("user", &user))?,
        amount: Amount::from_signed(amount).filter(|a| !a.is_zero()).ok_or_else(|| corrupt("amount", amount))?,
        status: WithdrawalStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        created_at: Millis(row.get(4)?),
        settled_at: row.get::<_, Option<i64>>(5)?.map(Millis),
    })
}

/// Writes a batch's withdrawals, freezes and reversals (after its ledger
/// entries, which the triggers look for).
pub(crate) fn write_wallet(
    tx: &Transaction<'_>,
    effects: &Effects,
    written: impl Fn(rusqlite::Error) -> StoreError,
) -> Result<(), StoreError> {
    write(tx, effects, written)?;
    write_frozen(tx, effects)?;
    write_reversals(tx, effects)
}

/// A batch's withdrawals asked for and settled.
fn write(
    tx: &Transaction<'_>,
    effects: &Effects,
    written: impl Fn(rusqlite::Error) -> StoreError,
) -> Result<(), StoreError> {
    if effects.withdrawals.is_empty() && effects.withdrawals_settled.is_empty() {
        return Ok(());
    }
    let mut insert = tx
        .prepare_cached(
            "INSERT OR ROLLBACK INTO withdrawals (id, user, amount, status, created_at) VALUES (?1, ?2, ?3, 'pending', ?4)",
        )
        .map_err(failed("preparing withdrawal writes"))?;
    for withdrawal in &effects.withdrawals {
        insert
            .execute(params![
                withdrawal.id.to_string(),
                withdrawal.user.as_str(),
                withdrawal.amount.signed(),
                withdrawal.created_at.0
            ])
            .map_err(&written)?;
    }
    let mut settle = tx
        .prepare_cached("UPDATE OR ROLLBACK withdrawals SET status = ?2, settled_at = ?3 WHERE id = ?1")
        .map_err(failed("preparing withdrawal settlements"))?;
    for (id, status, at) in &effects.withdrawals_settled {
        let changed = settle.execute(params![id.to_string(), status.as_str(), at.0]).map_err(&written)?;
        if changed != 1 {
            return Err(StoreError::refused(format!("the settling of {id} matched no withdrawal")));
        }
    }
    Ok(())
}

/// A batch's freezes and unfreezes (each changes its account: the writer
/// sends none that would not).
fn write_frozen(tx: &Transaction<'_>, effects: &Effects) -> Result<(), StoreError> {
    for (user, frozen, at) in &effects.frozen {
        let changed = match frozen {
            true => tx.execute(
                "INSERT OR IGNORE INTO frozen_accounts (user, since) VALUES (?1, ?2)",
                params![user.as_str(), at.0],
            ),
            false => tx.execute("DELETE FROM frozen_accounts WHERE user = ?1", params![user.as_str()]),
        }
        .map_err(failed("writing a freeze"))?;
        if changed != 1 {
            return Err(StoreError::refused(format!("{user}'s account frozen or unfrozen twice")));
        }
    }
    Ok(())
}

/// A batch's reversals of deposits (after their entries).
fn write_reversals(tx: &Transaction<'_>, effects: &Effects) -> Result<(), StoreError> {
    for reversal in &effects.reversals {
        tx.execute(
            "INSERT OR ROLLBACK INTO reversals (deposit, user, amount, at) VALUES (?1, ?2, ?3, ?4)",
            params![reversal.deposit, reversal.user.as_str(), reversal.amount.signed(), reversal.at.0],
        )
        .map_err(|e| StoreError::refused(format!("writing the reversal of {}: {e}", reversal.deposit)))?;
    }
    Ok(())
}

/// A deposit of `user`'s in the hot tables: its amount, and whether it was
/// reversed.
pub(crate) fn deposit(
    connection: &Connection,
    user: &UserId,
    reference: &str,
) -> Result<Option<(Amount, bool)>, StoreError> {
    let found: Option<(i64, bool)> = connection
        .prepare_cached(
            "SELECT amount, EXISTS (SELECT 1 FROM reversals WHERE deposit = ?1) FROM ledger \
             WHERE reference = ?1 AND user = ?2 AND kind = 'deposit'",
        )
        .and_then(|mut statement| {
            statement.query_row(params![reference, user.as_str()], |row| Ok((row.get(0)?, row.get(1)?))).optional()
        })
        .map_err(failed("reading a deposit"))?;
    found
        .map(|(fen, reversed)| {
            let amount =
                Amount::from_signed(fen).ok_or_else(|| StoreError::new(format!("corrupt deposit {reference}")))?;
            Ok((amount, reversed))
        })
        .transpose()
}

/// The set's frozen accounts, for the writer's memory.
pub(crate) fn frozen(connection: &Connection) -> Result<Vec<UserId>, StoreError> {
    let names: Vec<String> = connection
        .prepare("SELECT user FROM frozen_accounts")
        .and_then(|mut statement| statement.query_map([], |row| row.get(0))?.collect())
        .map_err(failed("loading frozen accounts"))?;
    names
        .into_iter()
        .map(|name| UserId::parse(&name).map_err(|_| StoreError::new(format!("corrupt frozen account {name:?}"))))
        .collect()
}

/// The withdrawals not yet settled, for the writer's memory.
pub(crate) fn pending(connection: &Connection) -> Result<Vec<Withdrawal>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM withdrawals WHERE status = 'pending'");
    connection
        .prepare(&sql)
        .and_then(|mut statement| statement.query_map([], from_row)?.collect())
        .map_err(failed("loading pending withdrawals"))
}

pub(crate) fn load(connection: &Connection, id: &WithdrawalId) -> Result<Option<Withdrawal>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM withdrawals WHERE id = ?1");
    connection
        .prepare_cached(&sql)
        .and_then(|mut statement| statement.query_row(params![id.to_string()], from_row).optional())
        .map_err(failed("reading a withdrawal"))
}

/// Every withdrawal, as the audit reads them.
pub(crate) fn audit_rows(connection: &Connection) -> Result<Vec<WithdrawalRow>, StoreError> {
    connection
        .prepare("SELECT id, user, amount, status FROM withdrawals")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| {
                    Ok(WithdrawalRow { id: row.get(0)?, user: row.get(1)?, amount: row.get(2)?, status: row.get(3)? })
                })?
                .collect()
        })
        .map_err(failed("reading withdrawals"))
}
