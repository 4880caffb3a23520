//! Set and packet identifiers. A packet id names the set that owns the packet
//! and the day it was made, so any node can route a request and find the
//! day's partition without a lookup (DESIGN.md §2).

use std::fmt;
use std::str::FromStr;

use crate::hash::fnv1a64;
use crate::time::is_valid_civil_day;
use crate::user::UserId;

/// The most sets a data directory may have. Ids spell the set in decimal, and
/// more writers than this would only contend for the same cores and disk.
pub const SETS_MAX: u16 = 1024;

/// A set: one single-writer shard of the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SetId(pub u16);

impl SetId {
    /// The set that holds `user`'s account (and the packets they send).
    pub fn of_user(user: &UserId, sets: u16) -> SetId {
        assert!(sets > 0 && sets <= SETS_MAX, "set count out of range: {sets}");
        SetId((fnv1a64(user.as_str().as_bytes()) % u64::from(sets)) as u16)
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for SetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A packet id: `yyyymmdd-set-seq-nonce`, e.g.
/// `20270128-3-1742-9f3a1c2e77b04d15`.
///
/// The day and the set stay readable, for routing; `seq` is the set's own
/// sequence (unique per set, ordering its packets), so it is guessable. The
/// secret is the nonce: 64 random bits, 16 hex digits. With grabs, opens
/// and detail reads rate-limited per user (a few dozen a second), finding
/// one live packet of a known `seq` takes ~2^63 tries. Ids made before
/// this carried a 32-bit nonce (8 hex digits); they still parse, and print
/// back the same, so their packets stay reachable under the id their
/// owners were given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PacketId {
    pub day: u32,
    pub set: SetId,
    pub seq: u64,
    /// The secret part; a `Legacy32` nonce fits in 32 bits.
    pub nonce: u64,
    pub nonce_width: NonceWidth,
}

/// How many hex digits an id's nonce is spelled with. A width beside a
/// `u64` rather than an enum holding the nonce keeps an id at 24 bytes,
/// as it was with 32-bit nonces (it is a key of every live packet's map).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NonceWidth {
    /// The ids made before 64-bit nonces: 8 hex digits.
    Legacy32,
    /// 16 hex digits: every id made now.
    Secret64,
}

impl PacketId {
    /// A new packet's id, with a 64-bit nonce.
    pub fn new(day: u32, set: SetId, seq: u64, nonce: u64) -> PacketId {
        PacketId { day, set, seq, nonce, nonce_width: NonceWidth::Secret64 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPacketId;

impl fmt::Display for PacketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}-", self.day, self.set.0, self.seq)?;
        match self.nonce_width {
            NonceWidth::Legacy32 => write!(f, "{:08x}", self.nonce),
            NonceWidth::Secret64 => write!(f, "{:016x}", self.nonce),
        }
    }
}

impl FromStr for PacketId {
    type Err = InvalidPacketId;

    /// Parses the canonical form only: the string must print back exactly,
    /// so one packet never has two spellings.
    fn from_str(text: &str) -> Result<PacketId, InvalidPacketId> {
        if text.len() > 56 {
            return Err(InvalidPacketId);
        }
        let mut parts = text.split('-');
        let mut next = || parts.next().ok_or(InvalidPacketId);
        let day: u32 = next()?.parse().map_err(|_| InvalidPacketId)?;
        let set: u16 = next()?.parse().map_err(|_| InvalidPacketId)?;
        let seq: u64 = next()?.parse().map_err(|_| InvalidPacketId)?;
        let nonce_text = next()?;
        if parts.next().is_some() {
            return Err(InvalidPacketId);
        }
        let nonce_width = match nonce_text.len() {
            8 => NonceWidth::Legacy32,
            16 => NonceWidth::Secret64,
            _ => return Err(InvalidPacketId),
        };
        let nonce = u64::from_str_radix(nonce_text, 16).map_err(|_| InvalidPacketId)?;
        let id = PacketId { day, set: SetId(set), seq, nonce, nonce_width };
        if !is_valid_civil_day(day) || set >= SETS_MAX || id.to_string() != text {
            return Err(InvalidPacketId);
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_other_spellings() {
        let id = PacketId::new(20_270_128, SetId(3), 1742, 0x9f3a_1c2e_77b0_4d15);
        assert_eq!(id.to_string(), "20270128-3-1742-9f3a1c2e77b04d15");
        assert_eq!("20270128-3-1742-9f3a1c2e77b04d15".parse::<PacketId>(), Ok(id));
        let legacy = PacketId {
            day: 20_270_128,
            set: SetId(3),
            seq: 1742,
            nonce: 0x9f3a_1c2e,
            nonce_width: NonceWidth::Legacy32,
        };
        assert_eq!(legacy.to_string(), "20270128-3-1742-9f3a1c2e");
        assert_eq!("20270128-3-1742-9f3a1c2e".parse::<PacketId>(), Ok(legacy), "ids made before 64-bit nonces");
        let wide: PacketId = "20270128-3-1742-000000009f3a1c2e".parse().unwrap();
        assert_eq!(wide, PacketId::new(20_270_128, SetId(3), 1742, 0x9f3a_1c2e));
        assert_ne!(wide.to_string(), legacy.to_string(), "one packet, one spelling: the widths are two ids");
        assert_ne!(wide, legacy);
        assert_eq!(std::mem::size_of::<PacketId>(), 24, "an id is a key of every live packet's map");
        for bad in [
            "20270128-3-1742-9f3a1c2e77b04d1",
            "20270128-3-1742-9f3a1c2e77b04d150",
            "20270128-3-1742-9F3A1C2E77B04D15",
            "20270128-3-1742-00009f3a1c2e",
            "",
            "nope",
            "20270128-03-1742-9f3a1c2e",
            "20270128-3-1742-9F3A1C2E",
            "20270128-3-1742-9f3a1c2",
            "20270132-3-1742-9f3a1c2e",
            "20270128-3-1742-9f3a1c2e-1",
            "20270128-+3-1742-9f3a1c2e",
            "20270128-5000-1742-9f3a1c2e",
        ] {
            assert_eq!(bad.parse::<PacketId>(), Err(InvalidPacketId), "{bad}");
        }
    }

    /// fnv1a64("alice") % 8.
    const PINNED_ALICE_SET: u16 = 7;

    #[test]
    fn users_spread_over_sets_stably() {
        // Where an account lives is part of the data layout: pinned.
        let alice = UserId::parse("alice").unwrap();
        assert_eq!(SetId::of_user(&alice, 8), SetId((fnv1a64(b"alice") % 8) as u16));
        assert_eq!(SetId::of_user(&alice, 8), SetId(PINNED_ALICE_SET));
        let mut seen = [false; 8];
        for i in 0..200 {
            let user = UserId::parse(&format!("user{i}")).unwrap();
            seen[SetId::of_user(&user, 8).index()] = true;
        }
        assert!(seen.iter().all(|&hit| hit), "200 users should touch all 8 sets");
    }
}
