//! A set's live packets: those not yet settled (unexpired, or waiting for
//! their refund), and the order in which they expire.
//!
//! Every live packet is in memory, so what each costs bounds a node
//! (`hongbao bench --only live-packets`). Keys are the packet's sequence, 8
//! bytes, not its 24-byte id: a sequence is unique within its set (every
//! live packet here is of this set), and a lookup checks the whole id, so a
//! guessed id with the right sequence and a wrong nonce finds nothing.
//! Packets are boxed: a hash map's spare slots (it is a half to seven
//! eighths full) then cost a pointer each, not a packet.

use std::collections::{BTreeSet, HashMap};

use hongbao_domain::{Millis, Packet, PacketId};

#[derive(Default)]
pub(crate) struct LivePackets {
    by_seq: HashMap<u64, Box<Packet>>,
    expiries: BTreeSet<(Millis, u64)>,
}

impl LivePackets {
    pub(crate) fn new(packets: Vec<Packet>) -> LivePackets {
        let mut live = LivePackets::default();
        packets.into_iter().for_each(|packet| live.insert(packet));
        live
    }

    /// The money the live packets still hold, in fen (a walk: at start and
    /// after a recovery only).
    pub(crate) fn locked_fen(&self) -> u64 {
        self.by_seq.values().map(|packet| packet.remaining_amount.fen()).sum()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_seq.len()
    }

    pub(crate) fn get(&self, id: &PacketId) -> Option<&Packet> {
        self.by_seq.get(&id.seq).map(|packet| &**packet).filter(|packet| packet.info.id == *id)
    }

    pub(crate) fn get_mut(&mut self, id: &PacketId) -> Option<&mut Packet> {
        self.by_seq.get_mut(&id.seq).map(|packet| &mut **packet).filter(|packet| packet.info.id == *id)
    }

    pub(crate) fn contains(&self, id: &PacketId) -> bool {
        self.get(id).is_some()
    }

    /// Adds a new packet; its sequence must be new to the set.
    pub(crate) fn insert(&mut self, packet: Packet) {
        let (seq, expires_at) = (packet.info.id.seq, packet.info.expires_at);
        assert!(self.expiries.insert((expires_at, seq)), "packet seq {seq} live twice");
        assert!(self.by_seq.insert(seq, Box::new(packet)).is_none(), "packet seq {seq} live twice");
    }

    /// Takes a packet out as it settles.
    pub(crate) fn remove(&mut self, id: &PacketId) -> Option<Packet> {
        self.get(id)?;
        let packet = self.by_seq.remove(&id.seq)?;
        assert!(self.expiries.remove(&(packet.info.expires_at, id.seq)), "a live packet has its expiry");
        Some(*packet)
    }

    /// The ids of at most `most` packets expired by `now`, soonest first.
    pub(crate) fn due(&self, now: Millis, most: usize) -> Vec<PacketId> {
        let due = self.expiries.iter().take_while(|(expires_at, _)| *expires_at <= now).take(most);
        due.map(|(_, seq)| self.by_seq[seq].info.id).collect()
    }
}

#[cfg(test)]
mod tests {
    use hongbao_domain::packet::SpecInput;
    use hongbao_domain::{Limits, PacketSpec, SetId, UserId};

    use super::*;

    fn packet(seq: u64, nonce: u64, expires_in_s: i64) -> Packet {
        let sender = UserId::parse("sender").expect("valid");
        let input = SpecInput {
            kind: "lucky".into(),
            total_amount: 100,
            count: 2,
            expires_in_s: Some(expires_in_s),
            ..SpecInput::default()
        };
        let spec = PacketSpec::parse(&input, &sender, &Limits::default()).expect("valid");
        Packet::new(PacketId::new(20270128, SetId(0), seq, nonce), sender, &spec, 7, Millis(0))
    }

    #[test]
    fn a_packet_is_found_by_its_whole_id_only_and_expires_in_order() {
        let mut live = LivePackets::new(vec![packet(1, 11, 60), packet(2, 22, 30), packet(3, 33, 90)]);
        let id = packet(2, 22, 30).info.id;
        assert!(live.contains(&id));
        assert!(!live.contains(&PacketId { nonce: 23, ..id }), "a wrong nonce finds nothing");
        assert!(live.remove(&PacketId { nonce: 23, ..id }).is_none(), "nor removes anything");
        let due: Vec<u64> = live.due(Millis(60_000), 10).iter().map(|id| id.seq).collect();
        assert_eq!(due, [2, 1], "soonest first, only those due");
        assert_eq!(live.remove(&id).map(|packet| packet.info.id), Some(id));
        assert_eq!(live.len(), 2);
        assert_eq!(live.due(Millis(60_000), 10).len(), 1);
    }
}
