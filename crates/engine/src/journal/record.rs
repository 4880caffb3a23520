//! What a journal record holds: one batch's `Effects`, in a compact,
//! versioned binary encoding. This file is the format's one definition; the
//! framing around it (length, position, checksums) is the journal's.
//!
//! | part | encoding |
//! | --- | --- |
//! | version | `u8`, 3 (1 and 2 are read too: a packet of 1 has no group; neither has withdrawals) |
//! | next_seq | `u64` |
//! | ledger | count, then per entry: reference, user, amount `i64`, kind `u8`, packet id (optional), at `i64`, balance after (optional `u64`; from version 3) |
//! | packets | count, then per packet: id, sender, kind `u8`, total `u64`, count `u32`, greeting (optional string), recipient (optional user), created_at, expires_at `i64`, seed `u64`, password digest (optional 32 bytes), group (optional: id, then the members' sorted names joined by commas; from version 2) |
//! | claims | count, then per claim: packet id, user, index `u32`, amount `u64`, at `i64` |
//! | refunds | count, then packet id, amount `u64` |
//! | outbox added | count, then per credit: reference, user, amount `u64`, packet id, at `i64` |
//! | outbox removed | count, then reference |
//! | idempotency | count, then per key: user, key, fingerprint, result tag `u8` (0 deposit: balance `u64`; 1 send: packet id; 2 withdrawal: its id) |
//! | withdrawals | (from version 3) count, then per withdrawal asked for: id, user, amount `u64`, at `i64` |
//! | withdrawals settled | (from version 3) count, then id, status `u8` (1 completed, 2 failed), at `i64` |
//! | accounts frozen | (from version 3) count, then user, frozen `u8` (1 frozen, 0 unfrozen), at `i64` |
//! | deposits reversed | (from version 3) count, then the deposit's reference, user, amount `u64`, at `i64` |
//!
//! Integers are little-endian and fixed-width; a count is a `u32`; a string
//! is a `u32` byte length and UTF-8; an optional value is a `u8` flag (0
//! absent, 1 present) and the value; a packet id is day `u32`, set `u16`,
//! seq `u64`, nonce `u64`, nonce width `u8` (0: 8 hex digits, 1: 16); a
//! withdrawal's id is a packet id's parts (its nonce width always 1); a
//! ledger kind is its index in `EntryKind::ALL`.
//!
//! Written by hand rather than by a serde format: the bytes are a durable
//! contract that must not move when a domain type gains a field or is
//! reordered, and decoding validates every value as the domain does (user
//! names, amounts, kinds), so a record either decodes to valid effects or
//! is refused with its reason. Measured on a 1,024-open batch: see
//! BENCHMARKS.md (encoding is under 2 % of an open's CPU).

use hongbao_domain::group::Group;
use hongbao_domain::id::NonceWidth;
use hongbao_domain::ledger::EntryKind;
use hongbao_domain::packet::{PacketInfo, PacketKind, PasswordDigest};
use hongbao_domain::withdrawal::{Withdrawal, WithdrawalId, WithdrawalStatus};
use hongbao_domain::{Amount, Claim, Millis, Packet, PacketId, SetId, UserId};

use std::sync::Arc;

use crate::journal::{JournalError, Position};
use crate::store::{Credit, Effects, IdempotencyRecord, IdempotencyResult, Journaled, LedgerEntry, Reversal};

/// The version this build writes.
pub const VERSION: u8 = 3;
/// The oldest version this build reads: records of version 1 (before
/// groups) and 2 (before withdrawals) may wait in a journal across the
/// upgrade.
const VERSION_OLDEST: u8 = 1;

/// Appends the encoding of `effects` to `out`.
pub fn encode(effects: &Effects, out: &mut Vec<u8>) {
    let mut e = Encoder(out);
    e.u8(VERSION);
    e.u64(effects.next_seq);
    e.list(&effects.ledger, |e, entry| {
        e.str(&entry.reference);
        e.user(&entry.user);
        e.i64(entry.amount);
        e.u8(entry_kind_tag(entry.kind));
        e.option(entry.packet_id.as_ref(), Encoder::packet_id);
        e.i64(entry.at.0);
        e.option(entry.balance_after.as_ref(), |e, balance| e.u64(balance.fen()));
    });
    e.list(&effects.packets, Encoder::packet);
    e.list(&effects.claims, |e, (id, claim)| {
        e.packet_id(id);
        e.user(&claim.user);
        e.u32(claim.index);
        e.u64(claim.amount.fen());
        e.i64(claim.at.0);
    });
    e.list(&effects.refunds, |e, (id, amount)| {
        e.packet_id(id);
        e.u64(amount.fen());
    });
    e.list(&effects.outbox_added, |e, credit| {
        e.str(&credit.reference);
        e.user(&credit.user);
        e.u64(credit.amount.fen());
        e.packet_id(&credit.packet_id);
        e.i64(credit.at.0);
    });
    e.list(&effects.outbox_removed, |e, reference| e.str(reference));
    e.list(&effects.idempotency, |e, record| {
        e.user(&record.user);
        e.str(&record.key);
        e.str(&record.fingerprint);
        match record.result {
            IdempotencyResult::Deposited(balance) => {
                e.u8(0);
                e.u64(balance.fen());
            }
            IdempotencyResult::Sent(id) => {
                e.u8(1);
                e.packet_id(&id);
            }
            IdempotencyResult::Withdrew(id) => {
                e.u8(2);
                e.packet_id(&id.packet_form());
            }
        }
    });
    encode_wallet(&mut e, effects);
}

/// The lists of version 3: withdrawals asked for and settled, accounts
/// frozen.
fn encode_wallet(e: &mut Encoder<'_>, effects: &Effects) {
    e.list(&effects.withdrawals, |e, withdrawal| {
        e.packet_id(&withdrawal.id.packet_form());
        e.user(&withdrawal.user);
        e.u64(withdrawal.amount.fen());
        e.i64(withdrawal.created_at.0);
    });
    e.list(&effects.withdrawals_settled, |e, (id, status, at)| {
        e.packet_id(&id.packet_form());
        e.u8(match status {
            WithdrawalStatus::Pending => unreachable!("a withdrawal is settled to completed or failed"),
            WithdrawalStatus::Completed => 1,
            WithdrawalStatus::Failed => 2,
        });
        e.i64(at.0);
    });
    e.list(&effects.frozen, |e, (user, frozen, at)| {
        e.user(user);
        e.u8(u8::from(*frozen));
        e.i64(at.0);
    });
    e.list(&effects.reversals, |e, reversal| {
        e.str(&reversal.deposit);
        e.user(&reversal.user);
        e.u64(reversal.amount.fen());
        e.i64(reversal.at.0);
    });
}

/// Decodes a record written by `encode`, or says why it cannot.
pub fn decode(bytes: &[u8]) -> Result<Effects, String> {
    let mut d = Decoder(bytes);
    let version = d.u8()?;
    if !(VERSION_OLDEST..=VERSION).contains(&version) {
        return Err(format!("record version {version}; this build reads {VERSION_OLDEST} to {VERSION}"));
    }
    let next_seq = d.u64()?;
    let ledger = d.list(|d| {
        Ok(LedgerEntry {
            reference: d.string()?,
            user: d.user()?,
            amount: d.i64()?,
            kind: entry_kind(d.u8()?)?,
            packet_id: d.option(Decoder::packet_id)?,
            at: Millis(d.i64()?),
            balance_after: if version < 3 { None } else { d.option(Decoder::amount)? },
        })
    })?;
    let packets = d.list(|d| d.packet(version))?;
    let claims = d.list(|d| {
        let id = d.packet_id()?;
        Ok((id, Claim { user: d.user()?, index: d.u32()?, amount: d.amount()?, at: Millis(d.i64()?) }))
    })?;
    let refunds = d.list(|d| Ok((d.packet_id()?, d.amount()?)))?;
    let outbox_added = d.list(|d| {
        Ok(Credit {
            reference: d.string()?,
            user: d.user()?,
            amount: d.amount()?,
            packet_id: d.packet_id()?,
            at: Millis(d.i64()?),
        })
    })?;
    let outbox_removed = d.list(Decoder::string)?;
    let idempotency = d.list(|d| {
        let (user, key, fingerprint) = (d.user()?, d.string()?, d.string()?);
        let result = match d.u8()? {
            0 => IdempotencyResult::Deposited(d.amount()?),
            1 => IdempotencyResult::Sent(d.packet_id()?),
            2 => IdempotencyResult::Withdrew(d.withdrawal_id()?),
            tag => return Err(format!("idempotency result tag {tag}")),
        };
        Ok(IdempotencyRecord { user, key, fingerprint, result })
    })?;
    let wallet = decode_wallet(&mut d, version)?;
    if !d.0.is_empty() {
        return Err(format!("{} bytes past the end of the record", d.0.len()));
    }
    Ok(Effects {
        next_seq,
        ledger,
        packets,
        claims,
        refunds,
        outbox_added,
        outbox_removed,
        idempotency,
        withdrawals: wallet.withdrawals,
        withdrawals_settled: wallet.settled,
        frozen: wallet.frozen,
        reversals: wallet.reversals,
    })
}

/// The lists of version 3 (none before): withdrawals asked for and
/// settled, accounts frozen, deposits reversed.
#[derive(Default)]
struct Wallet {
    withdrawals: Vec<Withdrawal>,
    settled: Vec<(WithdrawalId, WithdrawalStatus, Millis)>,
    frozen: Vec<(UserId, bool, Millis)>,
    reversals: Vec<Reversal>,
}

fn decode_wallet(d: &mut Decoder<'_>, version: u8) -> Result<Wallet, String> {
    if version < 3 {
        return Ok(Wallet::default());
    }
    let asked = d.list(|d| {
        let (id, user, amount, at) = (d.withdrawal_id()?, d.user()?, d.amount()?, Millis(d.i64()?));
        let status = WithdrawalStatus::Pending;
        Ok(Withdrawal { id, user, amount, status, created_at: at, settled_at: None })
    })?;
    let settled = d.list(|d| {
        let id = d.withdrawal_id()?;
        let status = match d.u8()? {
            1 => WithdrawalStatus::Completed,
            2 => WithdrawalStatus::Failed,
            tag => return Err(format!("withdrawal status tag {tag}")),
        };
        Ok((id, status, Millis(d.i64()?)))
    })?;
    let frozen = d.list(|d| {
        let user = d.user()?;
        let frozen = match d.u8()? {
            0 => false,
            1 => true,
            flag => return Err(format!("frozen flag {flag}")),
        };
        Ok((user, frozen, Millis(d.i64()?)))
    })?;
    let reversals =
        d.list(|d| Ok(Reversal { deposit: d.string()?, user: d.user()?, amount: d.amount()?, at: Millis(d.i64()?) }))?;
    Ok(Wallet { withdrawals: asked, settled, frozen, reversals })
}

impl Journaled {
    /// The batch a journal record at `position` holds.
    pub fn decode(position: Position, payload: &[u8]) -> Result<Journaled, JournalError> {
        let effects = decode(payload).map_err(|why| JournalError::Invalid { position, why })?;
        Ok(Journaled { position, effects: Arc::new(effects) })
    }
}

fn entry_kind_tag(kind: EntryKind) -> u8 {
    EntryKind::ALL.iter().position(|known| *known == kind).expect("every kind is in ALL") as u8
}

fn entry_kind(tag: u8) -> Result<EntryKind, String> {
    EntryKind::ALL.get(usize::from(tag)).copied().ok_or_else(|| format!("ledger kind tag {tag}"))
}

const KINDS: [PacketKind; 3] = [PacketKind::Lucky, PacketKind::Fixed, PacketKind::Exclusive];

struct Encoder<'a>(&'a mut Vec<u8>);

impl Encoder<'_> {
    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }

    fn u16(&mut self, value: u16) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn i64(&mut self, value: i64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn str(&mut self, text: &str) {
        self.u32(u32::try_from(text.len()).expect("a string in a record is under 4 GiB"));
        self.0.extend_from_slice(text.as_bytes());
    }

    fn user(&mut self, user: &UserId) {
        self.str(user.as_str());
    }

    fn list<T>(&mut self, items: &[T], mut each: impl FnMut(&mut Self, &T)) {
        self.u32(u32::try_from(items.len()).expect("a batch holds under 4 billion items"));
        items.iter().for_each(|item| each(self, item));
    }

    fn option<T>(&mut self, value: Option<&T>, put: impl FnOnce(&mut Self, &T)) {
        match value {
            None => self.u8(0),
            Some(value) => {
                self.u8(1);
                put(self, value);
            }
        }
    }

    fn packet_id(&mut self, id: &PacketId) {
        self.u32(id.day);
        self.u16(id.set.0);
        self.u64(id.seq);
        self.u64(id.nonce);
        self.u8(match id.nonce_width {
            NonceWidth::Legacy32 => 0,
            NonceWidth::Secret64 => 1,
        });
    }

    fn packet(&mut self, packet: &Packet) {
        self.packet_v1(packet);
        self.option(packet.info.group.as_ref(), |e, group| {
            e.str(group.id.as_str());
            e.str(group.members.joined());
        });
    }

    /// A packet as version 1 wrote it (no group).
    fn packet_v1(&mut self, packet: &Packet) {
        let info = &packet.info;
        assert!(packet.claims().is_empty() && packet.refunded_amount.is_zero(), "a new packet starts whole");
        self.packet_id(&info.id);
        self.user(&info.sender);
        self.u8(KINDS.iter().position(|kind| *kind == info.kind).expect("a known kind") as u8);
        self.u64(info.total_amount.fen());
        self.u32(info.count);
        self.option(info.greeting.as_ref(), |e, text| e.str(text));
        self.option(info.recipient.as_ref(), Encoder::user);
        self.i64(info.created_at.0);
        self.i64(info.expires_at.0);
        self.u64(packet.seed);
        self.option(packet.password.as_ref(), |e, digest| e.0.extend_from_slice(&digest.0));
    }
}

struct Decoder<'a>(&'a [u8]);

impl Decoder<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or("the record ends early")?;
        self.0 = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.take()?))
    }

    fn amount(&mut self) -> Result<Amount, String> {
        let fen = self.u64()?;
        Amount::from_fen(fen).ok_or_else(|| format!("amount {fen} out of range"))
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.u32()? as usize;
        if len > self.0.len() {
            return Err("a string runs past the record".into());
        }
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(text.to_vec()).map_err(|_| "a string is not UTF-8".into())
    }

    fn user(&mut self) -> Result<UserId, String> {
        let name = self.string()?;
        UserId::parse(&name).map_err(|_| format!("user {name:?} is invalid"))
    }

    fn list<T>(&mut self, mut each: impl FnMut(&mut Self) -> Result<T, String>) -> Result<Vec<T>, String> {
        let count = self.u32()? as usize;
        // Every item takes a byte at least: a count past the record is damage.
        if count > self.0.len() {
            return Err(format!("a count of {count} runs past the record"));
        }
        (0..count).map(|_| each(self)).collect()
    }

    fn option<T>(&mut self, get: impl FnOnce(&mut Self) -> Result<T, String>) -> Result<Option<T>, String> {
        match self.u8()? {
            0 => Ok(None),
            1 => get(self).map(Some),
            flag => Err(format!("option flag {flag}")),
        }
    }

    fn packet_id(&mut self) -> Result<PacketId, String> {
        let (day, set, seq, nonce) = (self.u32()?, self.u16()?, self.u64()?, self.u64()?);
        let nonce_width = match self.u8()? {
            0 if nonce <= u64::from(u32::MAX) => NonceWidth::Legacy32,
            1 => NonceWidth::Secret64,
            tag => return Err(format!("nonce width tag {tag} for nonce {nonce:x}")),
        };
        Ok(PacketId { day, set: SetId(set), seq, nonce, nonce_width })
    }

    fn withdrawal_id(&mut self) -> Result<WithdrawalId, String> {
        let id = self.packet_id()?;
        WithdrawalId::from_packet_form(id).ok_or_else(|| format!("withdrawal id {id} has a 32-bit nonce"))
    }

    fn packet(&mut self, version: u8) -> Result<Packet, String> {
        let id = self.packet_id()?;
        let sender = self.user()?;
        let kind = *KINDS.get(usize::from(self.u8()?)).ok_or("packet kind tag")?;
        let (total_amount, count) = (self.amount()?, self.u32()?);
        let greeting = self.option(Decoder::string)?;
        let recipient = self.option(Decoder::user)?;
        let (created_at, expires_at, seed) = (Millis(self.i64()?), Millis(self.i64()?), self.u64()?);
        let password = self.option(|d| Ok(PasswordDigest(d.take::<32>()?)))?;
        let group = match version {
            1 => None,
            _ => self
                .option(|d| {
                    let (id, members) = (d.string()?, d.string()?);
                    Group::from_stored(Some(&id), Some(&members))
                })?
                .flatten(),
        };
        let info =
            PacketInfo { id, sender, kind, total_amount, count, greeting, recipient, created_at, expires_at, group };
        Ok(Packet::restore(info, seed, password, Amount::ZERO, Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use hongbao_domain::ledger::withdrawal_ref;
    use hongbao_domain::packet::{GroupInput, SpecInput};
    use hongbao_domain::{Limits, PacketSpec};

    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).expect("valid")
    }

    // A fixture: one of everything a record holds, spelled out.
    #[allow(clippy::too_many_lines)]
    fn sample() -> Effects {
        let sender = user("alice");
        let input = SpecInput {
            kind: "lucky".into(),
            total_amount: 1_000,
            count: 3,
            greeting: Some("恭喜发财".into()),
            password: Some("pw".into()),
            group: Some(GroupInput { id: "family@chat".into(), members: vec!["bob".into(), "carol".into()] }),
            ..SpecInput::default()
        };
        let spec = PacketSpec::parse(&input, &sender, &Limits::default()).expect("valid spec");
        let id = PacketId::new(20270128, SetId(3), 17, 0x9f3a_1c2e_77b0_4d15);
        let packet = Packet::new(id, sender.clone(), &spec, 42, Millis(1_000));
        let claim = Claim { user: user("bob"), index: 0, amount: Amount::from_fen(300).expect("fits"), at: Millis(2) };
        let legacy = PacketId { nonce: 0xdead_beef, nonce_width: NonceWidth::Legacy32, ..id };
        let withdrawal = WithdrawalId::new(20270128, SetId(3), 18, 0x1234_5678_9abc_def0);
        Effects {
            next_seq: 18,
            ledger: vec![
                LedgerEntry {
                    reference: "send:x".into(),
                    user: sender.clone(),
                    amount: -1_000,
                    kind: EntryKind::Send,
                    packet_id: Some(id),
                    at: Millis(1_000),
                    balance_after: Some(Amount::from_fen(4_000).expect("fits")),
                },
                LedgerEntry {
                    reference: withdrawal_ref(withdrawal),
                    user: sender.clone(),
                    amount: -70,
                    kind: EntryKind::Withdrawal,
                    packet_id: None,
                    at: Millis(1_500),
                    balance_after: None,
                },
            ],
            packets: vec![packet],
            claims: vec![(id, claim.clone())],
            refunds: vec![(legacy, Amount::from_fen(7).expect("fits"))],
            outbox_added: vec![Credit {
                reference: "claim:x:bob".into(),
                user: claim.user.clone(),
                amount: claim.amount,
                packet_id: id,
                at: claim.at,
            }],
            outbox_removed: vec!["claim:y:carol".into()],
            idempotency: vec![
                IdempotencyRecord {
                    user: sender.clone(),
                    key: "k".into(),
                    fingerprint: "f".into(),
                    result: IdempotencyResult::Sent(id),
                },
                IdempotencyRecord {
                    user: sender.clone(),
                    key: "d".into(),
                    fingerprint: "5".into(),
                    result: IdempotencyResult::Deposited(Amount::from_fen(5).expect("fits")),
                },
                IdempotencyRecord {
                    user: sender.clone(),
                    key: "w".into(),
                    fingerprint: "70".into(),
                    result: IdempotencyResult::Withdrew(withdrawal),
                },
            ],
            withdrawals: vec![Withdrawal {
                id: withdrawal,
                user: sender,
                amount: Amount::from_fen(70).expect("fits"),
                status: WithdrawalStatus::Pending,
                created_at: Millis(1_500),
                settled_at: None,
            }],
            withdrawals_settled: vec![
                (WithdrawalId::new(20270127, SetId(3), 9, 1), WithdrawalStatus::Completed, Millis(1_600)),
                (WithdrawalId::new(20270127, SetId(3), 10, 2), WithdrawalStatus::Failed, Millis(1_700)),
            ],
            frozen: vec![(user("mallory"), true, Millis(1_800)), (user("bob"), false, Millis(1_900))],
            reversals: vec![Reversal {
                deposit: "deposit:alice:key:k1".into(),
                user: user("alice"),
                amount: Amount::from_fen(25).expect("fits"),
                at: Millis(2_000),
            }],
        }
    }

    fn same(a: &Effects, b: &Effects) -> bool {
        let packets = |e: &Effects| -> Vec<(PacketInfo, u64, Option<PasswordDigest>)> {
            e.packets.iter().map(|p| (p.info.clone(), p.seed, p.password)).collect()
        };
        a.next_seq == b.next_seq
            && a.ledger == b.ledger
            && packets(a) == packets(b)
            && a.claims == b.claims
            && a.refunds == b.refunds
            && a.outbox_added == b.outbox_added
            && a.outbox_removed == b.outbox_removed
            && a.idempotency == b.idempotency
            && a.withdrawals == b.withdrawals
            && a.withdrawals_settled == b.withdrawals_settled
            && a.frozen == b.frozen
            && a.reversals == b.reversals
    }

    #[test]
    fn every_field_survives_a_round_trip() {
        let effects = sample();
        let mut bytes = Vec::new();
        encode(&effects, &mut bytes);
        let decoded = decode(&bytes).expect("decodes");
        assert!(same(&effects, &decoded), "{effects:?}\n{decoded:?}");
    }

    #[test]
    fn a_cut_or_altered_record_is_refused_not_misread() {
        let mut bytes = Vec::new();
        encode(&sample(), &mut bytes);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut} decoded");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        bytes[0] = 4;
        assert!(decode(&bytes).unwrap_err().contains("version 4"));
    }

    #[test]
    fn a_version_1_record_still_decodes_its_packets_without_a_group() {
        let effects = sample();
        assert!(effects.packets[0].info.group.is_some());
        let mut bytes = Vec::new();
        let mut e = Encoder(&mut bytes);
        e.u8(1);
        e.u64(effects.next_seq);
        e.list(&[] as &[LedgerEntry], |_, _| {});
        e.list(&effects.packets, Encoder::packet_v1);
        // Claims, refunds, the outbox's two lists and the keys, empty; no
        // withdrawals' lists in version 1.
        for _ in 0..5 {
            e.u32(0);
        }
        let decoded = decode(&bytes).expect("a version 1 record decodes");
        assert_eq!(decoded.packets.len(), 1);
        assert_eq!(decoded.packets[0].info.group, None);
        assert_eq!(decoded.packets[0].info.id, effects.packets[0].info.id);
    }
}
