//! What every store does alike when it reads packets back: joins a packet's
//! row with its claims and checks that what is stored agrees with what the
//! domain derives (remaining = total − claimed − refunded). One definition
//! for SQLite and PostgreSQL.

use std::collections::HashMap;

use hongbao_domain::packet::PacketInfo;
use hongbao_domain::{Amount, Claim, Packet, PacketId, PasswordDigest};

use crate::store::StoreError;

/// A packet row as stored, before its claims are attached.
#[derive(Clone, Debug)]
pub struct StoredPacket {
    pub info: PacketInfo,
    pub seed: u64,
    pub password: Option<PasswordDigest>,
    pub remaining_amount: Amount,
    pub remaining_count: u32,
    pub refunded_amount: Amount,
}

/// Joins rows and claims into packets, and checks that the stored remaining
/// amount and count agree with the claims and the refund.
pub fn assemble(rows: Vec<StoredPacket>, claims: Vec<(PacketId, Claim)>) -> Result<Vec<Packet>, StoreError> {
    let mut by_packet: HashMap<PacketId, Vec<Claim>> = HashMap::new();
    for (id, claim) in claims {
        by_packet.entry(id).or_default().push(claim);
    }
    rows.into_iter()
        .map(|row| {
            let claims = by_packet.remove(&row.info.id).unwrap_or_default();
            let claimed = claims.iter().try_fold(Amount::ZERO, |sum, claim| sum.checked_add(claim.amount));
            let consistent = claimed
                .and_then(|sum| sum.checked_add(row.remaining_amount))
                .and_then(|sum| sum.checked_add(row.refunded_amount))
                == Some(row.info.total_amount)
                && claims.len() as u64 + u64::from(row.remaining_count) == u64::from(row.info.count);
            if !consistent {
                return Err(StoreError::new(format!("packet {} disagrees with its claims", row.info.id)));
            }
            Ok(Packet::restore(row.info, row.seed, row.password, row.refunded_amount, claims))
        })
        .collect()
}
