//! Reading packets and claims back into domain types, checking on the way
//! that what the store holds is consistent with what the domain derives.

use hongbao_domain::group::Group;
use hongbao_domain::packet::PacketInfo;
use hongbao_domain::{Amount, Claim, Millis, Packet, PacketId, PacketKind, PasswordDigest, UserId};
use hongbao_engine::StoreError;
use hongbao_engine::stored::{StoredPacket, assemble};
use rusqlite::{Connection, Row, params};

use crate::cold::ColdFiles;
use crate::failed;

/// The columns `packet_from_row` reads, in order.
pub(crate) const PACKET_COLUMNS: &str = "id, sender, kind, total_amount, count, remaining_amount, remaining_count, \
     refunded_amount, seed, greeting, password_digest, recipient, created_at, expires_at, group_id, members";

/// The columns `claim_from_row` reads, in order, from `claims c` joined
/// with `packets p`.
pub(crate) const CLAIM_COLUMNS: &str = "p.id, c.user, c.idx, c.amount, c.at";

fn corrupt(what: &str, value: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnName(format!("corrupt {what}: {value}"))
}

fn amount(row: &Row<'_>, column: usize) -> rusqlite::Result<Amount> {
    let value: i64 = row.get(column)?;
    Amount::from_signed(value).ok_or_else(|| corrupt("amount", value))
}

fn user(row: &Row<'_>, column: usize) -> rusqlite::Result<UserId> {
    let text: String = row.get(column)?;
    UserId::parse(&text).map_err(|_| corrupt("user", text))
}

pub(crate) fn packet_id(row: &Row<'_>, column: usize) -> rusqlite::Result<PacketId> {
    let text: String = row.get(column)?;
    text.parse().map_err(|_| corrupt("packet id", text))
}

pub(crate) fn packet_from_row(row: &Row<'_>) -> rusqlite::Result<StoredPacket> {
    let kind: String = row.get(2)?;
    let count: i64 = row.get(4)?;
    let remaining_count: i64 = row.get(6)?;
    let digest: Option<Vec<u8>> = row.get(10)?;
    let password = match digest {
        None => None,
        Some(bytes) => Some(PasswordDigest(bytes.try_into().map_err(|_| corrupt("password digest", "length"))?)),
    };
    let recipient: Option<String> = row.get(11)?;
    let info = PacketInfo {
        id: packet_id(row, 0)?,
        sender: user(row, 1)?,
        kind: PacketKind::parse(&kind).ok_or_else(|| corrupt("kind", &kind))?,
        total_amount: amount(row, 3)?,
        count: u32::try_from(count).map_err(|_| corrupt("count", count))?,
        greeting: row.get(9)?,
        recipient: recipient.map(|name| UserId::parse(&name).map_err(|_| corrupt("recipient", name))).transpose()?,
        created_at: Millis(row.get(12)?),
        expires_at: Millis(row.get(13)?),
        group: Group::from_stored(row.get_ref(14)?.as_str_or_null()?, row.get_ref(15)?.as_str_or_null()?)
            .map_err(|why| corrupt("group", why))?,
    };
    Ok(StoredPacket {
        info,
        seed: row.get::<_, i64>(8)? as u64,
        password,
        remaining_amount: amount(row, 5)?,
        remaining_count: u32::try_from(remaining_count).map_err(|_| corrupt("remaining count", remaining_count))?,
        refunded_amount: amount(row, 7)?,
    })
}

pub(crate) fn claim_from_row(row: &Row<'_>) -> rusqlite::Result<(PacketId, Claim)> {
    let index: i64 = row.get(2)?;
    let claim = Claim {
        user: user(row, 1)?,
        index: u32::try_from(index).map_err(|_| corrupt("share index", index))?,
        amount: amount(row, 3)?,
        at: Millis(row.get(4)?),
    };
    Ok((packet_id(row, 0)?, claim))
}

/// One packet with all its claims, if it exists: from the hot tables, or
/// from its day's file once that day is cold. The hot rows and the day's
/// state are read in one snapshot, so a day that goes cold meanwhile is
/// read whole from one side or the other.
pub(crate) fn load_packet(
    connection: &Connection,
    cold: &ColdFiles,
    id: &PacketId,
) -> Result<Option<Packet>, StoreError> {
    enum Found {
        Hot(Box<Packet>),
        InColdDay,
        Nowhere,
    }
    let found = in_snapshot(connection, |connection| match packet_in(connection, id)? {
        Some(packet) => Ok(Found::Hot(Box::new(packet))),
        None if is_cold(connection, id.day)? => Ok(Found::InColdDay),
        None => Ok(Found::Nowhere),
    })?;
    match found {
        Found::Hot(packet) => Ok(Some(*packet)),
        Found::InColdDay => cold.read(id.day, |file| packet_in(file, id)),
        Found::Nowhere => Ok(None),
    }
}

/// One packet with its claims, from the tables of `connection` (a set's hot
/// tables or a cold day's file: they have the same names and columns).
fn packet_in(connection: &Connection, id: &PacketId) -> Result<Option<Packet>, StoreError> {
    let text = id.to_string();
    let sql = format!("SELECT {PACKET_COLUMNS} FROM packets WHERE id = ?1");
    let mut statement = connection.prepare_cached(&sql).map_err(failed("preparing a packet read"))?;
    let rows: Vec<StoredPacket> = statement
        .query_map(params![text], packet_from_row)
        .and_then(|rows| rows.collect())
        .map_err(failed("reading a packet"))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut statement = connection
        .prepare_cached(&format!(
            "SELECT {CLAIM_COLUMNS} FROM claims c JOIN packets p ON p.seq = c.packet_seq WHERE p.id = ?1"
        ))
        .map_err(failed("preparing a claims read"))?;
    let claims = statement
        .query_map(params![text], claim_from_row)
        .and_then(|rows| rows.collect())
        .map_err(failed("reading claims"))?;
    Ok(assemble(rows, claims)?.pop())
}

/// Whether `day` has gone cold in this set (its rows are in its file).
pub(crate) fn is_cold(connection: &Connection, day: u32) -> Result<bool, StoreError> {
    connection
        .prepare_cached("SELECT 1 FROM cold_days WHERE day = ?1 AND state = 'cold'")
        .and_then(|mut statement| statement.exists(params![day]))
        .map_err(failed("reading a day's state"))
}

/// Runs `read` in one read transaction (one snapshot of the database),
/// unless the connection is in a transaction already.
pub(crate) fn in_snapshot<T>(
    connection: &Connection,
    read: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    if !connection.is_autocommit() {
        return read(connection);
    }
    connection.execute_batch("BEGIN").map_err(failed("starting a read"))?;
    let result = read(connection);
    // A read transaction changed nothing: ending it either way loses nothing.
    let ended = connection.execute_batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" });
    let value = result?;
    ended.map_err(failed("ending a read"))?;
    Ok(value)
}

pub(crate) fn balance(connection: &Connection, user: &UserId) -> Result<Amount, StoreError> {
    let mut statement = connection
        .prepare_cached("SELECT balance FROM accounts WHERE user = ?1")
        .map_err(failed("preparing a balance read"))?;
    let mut rows = statement.query(params![user.as_str()]).map_err(failed("reading a balance"))?;
    match rows.next().map_err(failed("reading a balance"))? {
        None => Ok(Amount::ZERO),
        Some(row) => amount(row, 0).map_err(failed("reading a balance")),
    }
}
