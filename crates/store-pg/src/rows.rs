//! Reading packets and claims back into domain types, refusing rows that do
//! not parse (a corrupt row is reported, never trusted).

use hongbao_domain::group::Group;
use hongbao_domain::packet::PacketInfo;
use hongbao_domain::{Amount, Claim, Millis, PacketId, PacketKind, PasswordDigest, UserId};
use hongbao_engine::StoreError;
use hongbao_engine::stored::StoredPacket;
use tokio_postgres::Row;

/// The columns `packet_from_row` reads, in order.
pub(crate) const PACKET_COLUMNS: &str = "id, sender, kind, total_amount, count, remaining_amount, remaining_count, \
     refunded_amount, seed, greeting, password_digest, recipient, created_at, expires_at, group_id, members";

/// The columns `claim_from_row` reads, in order, from `claims c`.
pub(crate) const CLAIM_COLUMNS: &str = "c.packet_id, c.user_id, c.idx, c.amount, c.at";

fn corrupt(what: &str, value: impl std::fmt::Display) -> StoreError {
    StoreError::new(format!("corrupt {what} in PostgreSQL: {value}"))
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, column: usize) -> Result<T, StoreError> {
    row.try_get(column).map_err(|e| corrupt("column", e))
}

pub(crate) fn amount(row: &Row, column: usize) -> Result<Amount, StoreError> {
    let value: i64 = get(row, column)?;
    Amount::from_signed(value).ok_or_else(|| corrupt("amount", value))
}

pub(crate) fn user(row: &Row, column: usize) -> Result<UserId, StoreError> {
    let text: &str = get(row, column)?;
    UserId::parse(text).map_err(|_| corrupt("user", text))
}

pub(crate) fn packet_id(row: &Row, column: usize) -> Result<PacketId, StoreError> {
    let text: &str = get(row, column)?;
    text.parse().map_err(|_| corrupt("packet id", text))
}

pub(crate) fn packet_from_row(row: &Row) -> Result<StoredPacket, StoreError> {
    let kind: &str = get(row, 2)?;
    let count: i32 = get(row, 4)?;
    let remaining_count: i32 = get(row, 6)?;
    let digest: Option<&[u8]> = get(row, 10)?;
    let password = match digest {
        None => None,
        Some(bytes) => Some(PasswordDigest(bytes.try_into().map_err(|_| corrupt("password digest", "length"))?)),
    };
    let recipient: Option<&str> = get(row, 11)?;
    let info = PacketInfo {
        id: packet_id(row, 0)?,
        sender: user(row, 1)?,
        kind: PacketKind::parse(kind).ok_or_else(|| corrupt("kind", kind))?,
        total_amount: amount(row, 3)?,
        count: u32::try_from(count).map_err(|_| corrupt("count", count))?,
        greeting: get(row, 9)?,
        recipient: recipient.map(|name| UserId::parse(name).map_err(|_| corrupt("recipient", name))).transpose()?,
        created_at: Millis(get(row, 12)?),
        expires_at: Millis(get(row, 13)?),
        group: Group::from_stored(get(row, 14)?, get(row, 15)?).map_err(|why| corrupt("group", why))?,
    };
    Ok(StoredPacket {
        info,
        seed: get::<i64>(row, 8)? as u64,
        password,
        remaining_amount: amount(row, 5)?,
        remaining_count: u32::try_from(remaining_count).map_err(|_| corrupt("remaining count", remaining_count))?,
        refunded_amount: amount(row, 7)?,
    })
}

pub(crate) fn claim_from_row(row: &Row) -> Result<(PacketId, Claim), StoreError> {
    let index: i32 = get(row, 2)?;
    let claim = Claim {
        user: user(row, 1)?,
        index: u32::try_from(index).map_err(|_| corrupt("share index", index))?,
        amount: amount(row, 3)?,
        at: Millis(get(row, 4)?),
    };
    Ok((packet_id(row, 0)?, claim))
}
