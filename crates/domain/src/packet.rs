//! Packets: what a sender asks for (`PacketSpec`), what is fixed when it is
//! made (`PacketInfo`), and the live state that opens and expiry change
//! (`Packet`). The outcome of every open and grab is decided here.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::group::{GROUP_ID_LEN_MAX, Group, GroupId, Members};
use crate::id::PacketId;
use crate::limits::Limits;
use crate::money::Amount;
use crate::outcome::{GrabOutcome, OpenOutcome};
use crate::split::lucky_share;
use crate::time::Millis;
use crate::user::UserId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// Random shares by the double-mean rule.
    Lucky,
    /// Every share the same.
    Fixed,
    /// One share, for the named recipient only.
    Exclusive,
}

impl PacketKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PacketKind::Lucky => "lucky",
            PacketKind::Fixed => "fixed",
            PacketKind::Exclusive => "exclusive",
        }
    }

    pub fn parse(text: &str) -> Option<PacketKind> {
        [PacketKind::Lucky, PacketKind::Fixed, PacketKind::Exclusive].into_iter().find(|kind| kind.as_str() == text)
    }
}

/// What a packet's share rule needs to give the share at an index: the
/// packet as sent, and what was left before that share.
#[derive(Clone, Copy, Debug)]
pub struct ShareDraw {
    pub kind: PacketKind,
    pub seed: u64,
    pub total_amount: Amount,
    pub count: u32,
    pub index: u32,
    pub remaining_amount: Amount,
    pub share_min: Amount,
}

impl ShareDraw {
    /// The share rule of every kind, the one definition the open and the
    /// audit both call: a lucky share is the double-mean draw for the seed
    /// and index (`split.rs`), a fixed share the total over the count, an
    /// exclusive packet's one share all of it.
    pub fn share(self) -> Amount {
        assert!(self.index < self.count, "share {} of a packet of {}", self.index, self.count);
        match self.kind {
            PacketKind::Lucky => {
                lucky_share(self.seed, self.index, self.remaining_amount, self.count - self.index, self.share_min)
            }
            PacketKind::Fixed => self.total_amount.checked_div(u64::from(self.count)).expect("count > 0"),
            PacketKind::Exclusive => self.remaining_amount,
        }
    }
}

/// Why a send request is refused before it reaches a set. Each has a stable
/// code that the API returns as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecError {
    InvalidKind,
    InvalidAmount,
    InvalidCount,
    AmountNotDivisible,
    ShareTooSmall,
    InvalidGreeting,
    InvalidPassword,
    InvalidRecipient,
    InvalidExpiry,
    InvalidGroup,
}

impl SpecError {
    pub const fn code(&self) -> &'static str {
        match self {
            SpecError::InvalidKind => "invalid_kind",
            SpecError::InvalidAmount => "invalid_amount",
            SpecError::InvalidCount => "invalid_count",
            SpecError::AmountNotDivisible => "amount_not_divisible",
            SpecError::ShareTooSmall => "share_too_small",
            SpecError::InvalidGreeting => "invalid_greeting",
            SpecError::InvalidPassword => "invalid_password",
            SpecError::InvalidRecipient => "invalid_recipient",
            SpecError::InvalidExpiry => "invalid_expiry",
            SpecError::InvalidGroup => "invalid_group",
        }
    }

    pub fn message(&self, limits: &Limits) -> String {
        match self {
            SpecError::InvalidKind => "kind must be one of lucky, fixed, exclusive".into(),
            SpecError::InvalidAmount => {
                format!("total_amount must be an integer number of fen from 1 to {}", limits.total_amount_max.fen())
            }
            SpecError::InvalidCount => {
                format!("count must be from 1 to {} (exactly 1 for exclusive packets)", limits.count_max)
            }
            SpecError::AmountNotDivisible => "a fixed packet's total_amount must be divisible by its count".into(),
            SpecError::ShareTooSmall => {
                format!("total_amount must give every share at least {} fen", limits.share_min.fen())
            }
            SpecError::InvalidGreeting => {
                format!("greeting must be at most {} characters, without control characters", limits.greeting_chars_max)
            }
            SpecError::InvalidPassword => {
                format!("password must be 1 to {} characters, without control characters", limits.password_chars_max)
            }
            SpecError::InvalidRecipient => "exclusive packets need a valid recipient other \
                than the sender; other kinds take none"
                .into(),
            SpecError::InvalidExpiry => {
                format!("expires_in_s must be from {} to {}", limits.expires_in_s_min, limits.expires_in_s_max)
            }
            SpecError::InvalidGroup => format!(
                "group must be {{\"id\", \"members\"}}: an id of 1 to {GROUP_ID_LEN_MAX} of A-Z a-z 0-9 _ . : @ -, \
                 and 1 to {} member names (an exclusive packet's recipient among them)",
                limits.group_members_max
            ),
        }
    }
}

/// A send request as it arrives, before validation.
#[derive(Clone, Debug, Default)]
pub struct SpecInput {
    pub kind: String,
    pub total_amount: i64,
    pub count: i64,
    pub greeting: Option<String>,
    pub password: Option<String>,
    pub recipient: Option<String>,
    pub expires_in_s: Option<i64>,
    pub group: Option<GroupInput>,
}

/// A send request's group, before validation.
#[derive(Clone, Debug, Default)]
pub struct GroupInput {
    pub id: String,
    pub members: Vec<String>,
}

/// A valid send request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketSpec {
    pub kind: PacketKind,
    pub total_amount: Amount,
    pub count: u32,
    pub greeting: Option<String>,
    pub password: Option<String>,
    pub recipient: Option<UserId>,
    pub expires_in_s: u32,
    /// Who may open it; none: anyone with its id.
    pub group: Option<Arc<Group>>,
}

impl PacketSpec {
    /// Validates a request from `sender`, checking in a fixed order so the
    /// same bad request always gets the same code.
    pub fn parse(input: &SpecInput, sender: &UserId, limits: &Limits) -> Result<PacketSpec, SpecError> {
        let kind = PacketKind::parse(&input.kind).ok_or(SpecError::InvalidKind)?;
        let total_amount = Amount::from_signed(input.total_amount)
            .filter(|total| !total.is_zero() && *total <= limits.total_amount_max)
            .ok_or(SpecError::InvalidAmount)?;
        let count = u32::try_from(input.count)
            .ok()
            .filter(|count| (1..=limits.count_max).contains(count))
            .filter(|count| kind != PacketKind::Exclusive || *count == 1)
            .ok_or(SpecError::InvalidCount)?;
        if kind == PacketKind::Fixed && total_amount.fen() % u64::from(count) != 0 {
            return Err(SpecError::AmountNotDivisible);
        }
        let least = limits.share_min.checked_mul(u64::from(count)).ok_or(SpecError::ShareTooSmall)?;
        if total_amount < least {
            return Err(SpecError::ShareTooSmall);
        }
        let greeting = match input.greeting.as_deref() {
            None | Some("") => None,
            Some(text) if is_printable(text, limits.greeting_chars_max) => Some(text.to_owned()),
            Some(_) => return Err(SpecError::InvalidGreeting),
        };
        let password = match input.password.as_deref() {
            None => None,
            Some(text) if !text.is_empty() && is_printable(text, limits.password_chars_max) => Some(text.to_owned()),
            Some(_) => return Err(SpecError::InvalidPassword),
        };
        let recipient = match (kind, input.recipient.as_deref()) {
            (PacketKind::Exclusive, Some(name)) => {
                let recipient = UserId::parse(name).map_err(|_| SpecError::InvalidRecipient)?;
                if &recipient == sender {
                    return Err(SpecError::InvalidRecipient);
                }
                Some(recipient)
            }
            (PacketKind::Exclusive, None) | (_, Some(_)) => {
                return Err(SpecError::InvalidRecipient);
            }
            (_, None) => None,
        };
        let expires_in_s = match input.expires_in_s {
            None => limits.expires_in_s_default,
            Some(seconds) => u32::try_from(seconds)
                .ok()
                .filter(|s| (limits.expires_in_s_min..=limits.expires_in_s_max).contains(s))
                .ok_or(SpecError::InvalidExpiry)?,
        };
        let group = input.group.as_ref().map(|group| parse_group(group, limits)).transpose()?;
        if let (Some(group), Some(recipient)) = (&group, &recipient)
            && !group.members.contains(recipient)
        {
            return Err(SpecError::InvalidGroup);
        }
        Ok(PacketSpec { kind, total_amount, count, greeting, password, recipient, expires_in_s, group })
    }
}

fn parse_group(input: &GroupInput, limits: &Limits) -> Result<Arc<Group>, SpecError> {
    let id = GroupId::parse(&input.id).ok_or(SpecError::InvalidGroup)?;
    if input.members.is_empty() || input.members.len() > limits.group_members_max {
        return Err(SpecError::InvalidGroup);
    }
    let names = input.members.iter().map(|name| UserId::parse(name).map_err(|_| SpecError::InvalidGroup));
    let members = Members::new(names.collect::<Result<_, _>>()?).ok_or(SpecError::InvalidGroup)?;
    Ok(Arc::new(Group { id, members }))
}

impl PacketSpec {
    /// A digest of everything the request asked for, stored with its
    /// idempotency key so a reused key with another request is told apart.
    /// Hashed, so the password never lands in the store in clear.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        let text = format!(
            "{}|{}|{}|{:?}|{:?}|{:?}|{}",
            self.kind.as_str(),
            self.total_amount.fen(),
            self.count,
            self.greeting,
            self.password,
            self.recipient.as_ref().map(UserId::as_str),
            self.expires_in_s
        );
        hasher.update(text.as_bytes());
        // Only a group packet adds to it: a plain one's fingerprint is as
        // it was, so keys remembered before groups still match.
        if let Some(group) = &self.group {
            hasher.update(format!("|group:{}|{}", group.id, group.members.joined()).as_bytes());
        }
        hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

fn is_printable(text: &str, chars_max: usize) -> bool {
    text.chars().count() <= chars_max && !text.chars().any(char::is_control)
}

/// A salted digest of a packet's password; compared in constant time so the
/// password cannot be learned by timing the answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordDigest(pub [u8; 32]);

impl PasswordDigest {
    /// SHA-256 over a domain tag, the packet's seed (the salt) and the text.
    pub fn of(seed: u64, password: &str) -> PasswordDigest {
        let mut hasher = Sha256::new();
        hasher.update(b"hongbao-password-v1\0");
        hasher.update(seed.to_le_bytes());
        hasher.update(password.as_bytes());
        PasswordDigest(hasher.finalize().into())
    }

    pub fn matches(&self, seed: u64, presented: &str) -> bool {
        let candidate = PasswordDigest::of(seed, presented);
        bool::from(self.0.ct_eq(&candidate.0))
    }
}

/// What is fixed when a packet is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    pub id: PacketId,
    pub sender: UserId,
    pub kind: PacketKind,
    pub total_amount: Amount,
    pub count: u32,
    pub greeting: Option<String>,
    pub recipient: Option<UserId>,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// The group it was sent to (shared, not copied, with every clone).
    pub group: Option<Arc<Group>>,
}

impl PacketInfo {
    /// Whether `user` is among those it was sent to: anyone, without a group.
    pub fn in_audience(&self, user: &UserId) -> bool {
        self.group.as_ref().is_none_or(|group| group.members.contains(user))
    }

    /// Whether `user` may read its detail (who got what): its sender, or
    /// anyone in its audience.
    pub fn readable_by(&self, user: &UserId) -> bool {
        self.sender == *user || self.in_audience(user)
    }
}

/// Why `Packet::admits` refuses a user.
enum Refused {
    NotInGroup,
    NotRecipient,
}

/// One opened share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub user: UserId,
    /// The share's index: 0 for the first opener, and so on.
    pub index: u32,
    pub amount: Amount,
    pub at: Millis,
}

/// Where a packet stands at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketStatus {
    Available,
    Empty,
    Expired,
}

impl PacketStatus {
    /// Where a packet with this state stands at `now`: empty once every share
    /// is opened, expired at or after its expiry or once refunded.
    pub fn of(remaining_count: u32, refunded_amount: Amount, expires_at: Millis, now: Millis) -> PacketStatus {
        if remaining_count == 0 {
            PacketStatus::Empty
        } else if now >= expires_at || !refunded_amount.is_zero() {
            PacketStatus::Expired
        } else {
            PacketStatus::Available
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PacketStatus::Available => "available",
            PacketStatus::Empty => "empty",
            PacketStatus::Expired => "expired",
        }
    }
}

/// A packet with its live state: the single writer of its set is the only
/// code that changes it.
///
/// Every live packet is in its set's memory, so its size bounds a node
/// (`hongbao bench --only live-packets`). A claim is found by scanning the
/// claims while there are few (`CLAIMS_SCANNED_MAX`); past that, through an
/// index from user to claim, made then. A map beside every packet cost 48
/// bytes per live packet and a heap table per opened one; scanning alone
/// made a packet of a million shares (the bench's hot packet, a configured
/// limit) quadratic: `open-http-hot` fell from 29k to 8k opens/s.
#[derive(Clone, Debug)]
pub struct Packet {
    pub info: PacketInfo,
    /// The seed of every lucky draw (and the password's salt).
    pub seed: u64,
    pub password: Option<PasswordDigest>,
    pub remaining_amount: Amount,
    pub remaining_count: u32,
    /// What went back to the sender at expiry (zero until then).
    pub refunded_amount: Amount,
    claims: Vec<Claim>,
    /// Where each opener's claim is, once there are more than
    /// `CLAIMS_SCANNED_MAX` claims. Boxed so the packets that never get
    /// one (nearly all) pay 8 bytes for it, not a map's 48.
    #[allow(clippy::box_collection)]
    claim_index: Option<Box<HashMap<UserId, u32>>>,
}

/// Claims found by a scan; past this many, by an index.
const CLAIMS_SCANNED_MAX: usize = 32;

impl Packet {
    /// A new packet for a valid spec, with nothing opened yet.
    pub fn new(id: PacketId, sender: UserId, spec: &PacketSpec, seed: u64, now: Millis) -> Packet {
        let info = PacketInfo {
            id,
            sender,
            kind: spec.kind,
            total_amount: spec.total_amount,
            count: spec.count,
            greeting: spec.greeting.clone(),
            recipient: spec.recipient.clone(),
            created_at: now,
            expires_at: now.plus_seconds(spec.expires_in_s),
            group: spec.group.clone(),
        };
        let password = spec.password.as_deref().map(|text| PasswordDigest::of(seed, text));
        Packet::restore(info, seed, password, Amount::ZERO, Vec::new())
    }

    /// A packet rebuilt from storage: the remaining money and count follow
    /// from the claims and the refund, and are checked against the header.
    pub fn restore(
        info: PacketInfo,
        seed: u64,
        password: Option<PasswordDigest>,
        refunded_amount: Amount,
        mut claims: Vec<Claim>,
    ) -> Packet {
        claims.sort_by_key(|claim| claim.index);
        let claimed =
            claims.iter().try_fold(Amount::ZERO, |sum, claim| sum.checked_add(claim.amount)).expect("claims overflow");
        let remaining_amount = info
            .total_amount
            .checked_sub(claimed)
            .and_then(|left| left.checked_sub(refunded_amount))
            .expect("claims and refund exceed the packet's total");
        let opened = u32::try_from(claims.len()).expect("claim count fits u32");
        let remaining_count = info.count.checked_sub(opened).expect("more claims than shares");
        let mut packet = Packet {
            info,
            seed,
            password,
            remaining_amount,
            remaining_count,
            refunded_amount,
            claims,
            claim_index: None,
        };
        packet.index_claims();
        packet
    }

    pub fn claims(&self) -> &[Claim] {
        &self.claims
    }

    pub fn claim_of(&self, user: &UserId) -> Option<&Claim> {
        match &self.claim_index {
            Some(index) => index.get(user).map(|&position| &self.claims[position as usize]),
            None => self.claims.iter().find(|claim| claim.user == *user),
        }
    }

    /// Builds the index once the claims are too many to scan, and keeps it
    /// up to date after.
    fn index_claims(&mut self) {
        if self.claims.len() <= CLAIMS_SCANNED_MAX {
            return;
        }
        let index = self.claim_index.get_or_insert_with(Box::default);
        for (position, claim) in self.claims.iter().enumerate().skip(index.len()) {
            let position = u32::try_from(position).expect("claims fit u32");
            index.insert(claim.user.clone(), position);
        }
    }

    pub fn is_expired(&self, now: Millis) -> bool {
        now >= self.info.expires_at
    }

    pub fn status(&self, now: Millis) -> PacketStatus {
        PacketStatus::of(self.remaining_count, self.refunded_amount, self.info.expires_at, now)
    }

    /// Whether `user` may open it at all: a group's member, then the
    /// recipient of an exclusive packet.
    fn admits(&self, user: &UserId) -> Result<(), Refused> {
        if !self.info.in_audience(user) {
            return Err(Refused::NotInGroup);
        }
        match &self.info.recipient {
            Some(recipient) if recipient != user => Err(Refused::NotRecipient),
            _ => Ok(()),
        }
    }

    /// The non-binding check: may `user` still open this packet?
    pub fn grab(&self, user: &UserId, now: Millis) -> GrabOutcome {
        if let Err(refused) = self.admits(user) {
            match refused {
                Refused::NotInGroup => GrabOutcome::NotInGroup,
                Refused::NotRecipient => GrabOutcome::NotRecipient,
            }
        } else if self.claim_of(user).is_some() {
            GrabOutcome::Opened
        } else {
            match self.status(now) {
                PacketStatus::Available => GrabOutcome::Available,
                PacketStatus::Empty => GrabOutcome::Empty,
                PacketStatus::Expired => GrabOutcome::Expired,
            }
        }
    }

    /// The binding open. Checks, in this order: the group, the recipient,
    /// an earlier open by the same user (answered with the same share),
    /// password, expiry, shares left; then draws the next share and records
    /// the claim.
    pub fn open(&mut self, user: &UserId, password: Option<&str>, now: Millis, limits: &Limits) -> OpenOutcome {
        match self.admits(user) {
            Err(Refused::NotInGroup) => return OpenOutcome::NotInGroup,
            Err(Refused::NotRecipient) => return OpenOutcome::NotRecipient,
            Ok(()) => {}
        }
        if let Some(claim) = self.claim_of(user) {
            return OpenOutcome::AlreadyOpened { amount: claim.amount };
        }
        if let Some(digest) = &self.password
            && !password.is_some_and(|presented| digest.matches(self.seed, presented))
        {
            return OpenOutcome::WrongPassword;
        }
        match self.status(now) {
            PacketStatus::Empty => return OpenOutcome::Empty,
            PacketStatus::Expired => return OpenOutcome::Expired,
            PacketStatus::Available => {}
        }
        let index = self.info.count - self.remaining_count;
        let amount = self.next_share(index, limits.share_min);
        self.remaining_amount = self.remaining_amount.checked_sub(amount).expect("share within remaining");
        self.remaining_count -= 1;
        assert!(
            self.remaining_count > 0 || self.remaining_amount.is_zero(),
            "the last share must take all that is left"
        );
        let claim = Claim { user: user.clone(), index, amount, at: now };
        self.claims.push(claim.clone());
        self.index_claims();
        OpenOutcome::Opened(claim)
    }

    fn next_share(&self, index: u32, share_min: Amount) -> Amount {
        debug_assert_eq!(self.info.count - index, self.remaining_count, "the next share's index");
        ShareDraw {
            kind: self.info.kind,
            seed: self.seed,
            total_amount: self.info.total_amount,
            count: self.info.count,
            index,
            remaining_amount: self.remaining_amount,
            share_min,
        }
        .share()
    }

    /// At or after expiry, takes what is left for the sender: `Some(amount)`
    /// exactly once, and only when something is left.
    pub fn refund(&mut self, now: Millis) -> Option<Amount> {
        if !self.is_expired(now) || self.remaining_amount.is_zero() || !self.refunded_amount.is_zero() {
            return None;
        }
        let amount = self.remaining_amount;
        self.refunded_amount = amount;
        self.remaining_amount = Amount::ZERO;
        Some(amount)
    }

    /// The best share once every share is opened; ties go to the earliest.
    pub fn best_luck(&self) -> Option<&Claim> {
        if self.remaining_count != 0 {
            return None;
        }
        best_luck(&self.claims)
    }
}

/// The largest claim, the earliest (lowest index) among equals.
pub fn best_luck(claims: &[Claim]) -> Option<&Claim> {
    claims.iter().min_by_key(|claim| (std::cmp::Reverse(claim.amount), claim.index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SetId;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    fn input(kind: &str, total: i64, count: i64) -> SpecInput {
        SpecInput { kind: kind.into(), total_amount: total, count, ..SpecInput::default() }
    }

    fn new_packet(spec: &PacketSpec) -> Packet {
        let id = PacketId::new(20_270_128, SetId(0), 1, 7);
        Packet::new(id, user("alice"), spec, 42, Millis(1_000))
    }

    #[test]
    fn a_group_packet_admits_its_members_only_and_says_so_before_anything_else() {
        let limits = Limits::default();
        let group = GroupInput { id: "family".into(), members: vec!["bob".into(), "carol".into()] };
        let with_password = SpecInput { password: Some("pw".into()), group: Some(group), ..input("fixed", 200, 1) };
        let mut packet = new_packet(&PacketSpec::parse(&with_password, &user("alice"), &limits).unwrap());
        let now = Millis(2_000);
        assert_eq!(packet.grab(&user("dave"), now), GrabOutcome::NotInGroup);
        // Not in the group comes before a wrong password, a spent packet or expiry.
        assert_eq!(packet.open(&user("dave"), None, now, &limits), OpenOutcome::NotInGroup);
        assert_eq!(packet.open(&user("bob"), None, now, &limits), OpenOutcome::WrongPassword);
        assert!(matches!(packet.open(&user("bob"), Some("pw"), now, &limits), OpenOutcome::Opened(_)));
        assert_eq!(packet.open(&user("dave"), Some("pw"), Millis(i64::MAX), &limits), OpenOutcome::NotInGroup);
        assert_eq!(packet.open(&user("carol"), Some("pw"), now, &limits), OpenOutcome::Empty);
        assert!(packet.info.readable_by(&user("alice")), "its sender reads it");
        assert!(packet.info.readable_by(&user("carol")) && !packet.info.readable_by(&user("dave")));
    }

    #[test]
    fn a_group_of_too_many_or_no_members_is_refused() {
        let limits = Limits { group_members_max: 2, ..Limits::default() };
        let spec = |members: &[&str]| SpecInput {
            group: Some(GroupInput { id: "g".into(), members: members.iter().map(|m| (*m).into()).collect() }),
            ..input("lucky", 100, 1)
        };
        assert!(PacketSpec::parse(&spec(&["bob", "carol"]), &user("alice"), &limits).is_ok());
        assert!(
            PacketSpec::parse(&spec(&["bob", "bob", "carol"]), &user("alice"), &limits).is_err(),
            "counted as sent"
        );
        for members in [&[][..], &["a", "b", "c"][..], &["b c"][..]] {
            let refused = PacketSpec::parse(&spec(members), &user("alice"), &limits);
            assert_eq!(refused, Err(SpecError::InvalidGroup), "{members:?}");
        }
    }

    #[test]
    fn specs_are_checked_in_order_with_stable_codes() {
        let limits = Limits::default();
        let alice = user("alice");
        let check = |input: SpecInput| PacketSpec::parse(&input, &alice, &limits).map(|_| ()).map_err(|e| e.code());
        assert_eq!(check(input("lucky", 1000, 10)), Ok(()));
        assert_eq!(check(input("golden", 1000, 10)), Err("invalid_kind"));
        assert_eq!(check(input("lucky", 0, 10)), Err("invalid_amount"));
        assert_eq!(check(input("lucky", -5, 10)), Err("invalid_amount"));
        assert_eq!(check(input("lucky", 20_001, 10)), Err("invalid_amount"));
        assert_eq!(check(input("lucky", 1000, 0)), Err("invalid_count"));
        assert_eq!(check(input("lucky", 1000, 101)), Err("invalid_count"));
        assert_eq!(check(input("lucky", 5, 10)), Err("share_too_small"));
        assert_eq!(check(input("fixed", 1001, 10)), Err("amount_not_divisible"));
        assert_eq!(check(input("exclusive", 100, 1)), Err("invalid_recipient"));
        assert_eq!(check(input("exclusive", 100, 2)), Err("invalid_count"));
        let mut to_self = input("exclusive", 100, 1);
        to_self.recipient = Some("alice".into());
        assert_eq!(check(to_self), Err("invalid_recipient"));
        let mut lucky_with_recipient = input("lucky", 100, 1);
        lucky_with_recipient.recipient = Some("bob".into());
        assert_eq!(check(lucky_with_recipient), Err("invalid_recipient"));
        let mut long_greeting = input("lucky", 100, 1);
        long_greeting.greeting = Some("恭".repeat(101));
        assert_eq!(check(long_greeting), Err("invalid_greeting"));
        let mut expiry = input("lucky", 100, 1);
        expiry.expires_in_s = Some(0);
        assert_eq!(check(expiry.clone()), Err("invalid_expiry"));
        expiry.expires_in_s = Some(7 * 86_400 + 1);
        assert_eq!(check(expiry), Err("invalid_expiry"));
        let mut empty_password = input("lucky", 100, 1);
        empty_password.password = Some(String::new());
        assert_eq!(check(empty_password), Err("invalid_password"));
    }

    #[test]
    fn opens_follow_the_documented_order() {
        let limits = Limits::default();
        let mut spec = PacketSpec::parse(&input("lucky", 300, 3), &user("alice"), &limits).unwrap();
        spec.password = Some("恭喜发财".into());
        let mut packet = new_packet(&spec);
        let now = Millis(2_000);
        assert_eq!(packet.open(&user("bob"), None, now, &limits), OpenOutcome::WrongPassword);
        assert_eq!(packet.open(&user("bob"), Some("x"), now, &limits), OpenOutcome::WrongPassword);
        let first = packet.open(&user("bob"), Some("恭喜发财"), now, &limits);
        let OpenOutcome::Opened(Claim { amount, index: 0, .. }) = first else { panic!("{first:?}") };
        // A repeat answers the same share, even without the password.
        assert_eq!(packet.open(&user("bob"), None, now, &limits), OpenOutcome::AlreadyOpened { amount });
        assert_eq!(packet.grab(&user("bob"), now), GrabOutcome::Opened);
        assert_eq!(packet.grab(&user("carol"), now), GrabOutcome::Available);
        let late = packet.info.expires_at;
        assert_eq!(packet.open(&user("carol"), Some("恭喜发财"), late, &limits), OpenOutcome::Expired);
        assert_eq!(packet.grab(&user("carol"), late), GrabOutcome::Expired);
        let refund = packet.refund(late).unwrap();
        assert_eq!(refund.checked_add(amount).unwrap().fen(), 300);
        assert_eq!(packet.refund(late), None, "a refund happens once");
        assert_eq!(packet.open(&user("bob"), None, late, &limits), OpenOutcome::AlreadyOpened { amount });
    }

    #[test]
    fn exclusive_packets_open_only_for_the_recipient_and_fixed_split_evenly() {
        let limits = Limits::default();
        let mut exclusive = input("exclusive", 888, 1);
        exclusive.recipient = Some("bob".into());
        let mut packet = new_packet(&PacketSpec::parse(&exclusive, &user("alice"), &limits).unwrap());
        let now = Millis(2_000);
        assert_eq!(packet.grab(&user("carol"), now), GrabOutcome::NotRecipient);
        assert_eq!(packet.open(&user("carol"), None, now, &limits), OpenOutcome::NotRecipient);
        assert_eq!(packet.open(&user("alice"), None, now, &limits), OpenOutcome::NotRecipient);
        let opened = packet.open(&user("bob"), None, now, &limits);
        assert!(matches!(opened, OpenOutcome::Opened(Claim { amount, index: 0, .. }) if amount.fen() == 888));

        let mut fixed = new_packet(&PacketSpec::parse(&input("fixed", 300, 3), &user("alice"), &limits).unwrap());
        for name in ["a", "b", "c"] {
            let outcome = fixed.open(&user(name), None, now, &limits);
            assert!(matches!(outcome, OpenOutcome::Opened(Claim { amount, .. }) if amount.fen() == 100));
        }
        assert_eq!(fixed.open(&user("d"), None, now, &limits), OpenOutcome::Empty);
        assert_eq!(fixed.best_luck().unwrap().user, user("a"), "ties go to the earliest");
        assert_eq!(fixed.refund(fixed.info.expires_at), None, "nothing left to refund");
    }

    #[test]
    fn claims_are_found_by_scan_and_past_it_by_index_alike() {
        let spec = PacketSpec::parse(&input("fixed", 100, 100), &user("sender"), &Limits::default()).unwrap();
        let mut packet = new_packet(&spec);
        for n in 0..100 {
            let opener = user(&format!("u{n}"));
            assert!(matches!(packet.open(&opener, None, Millis(1), &Limits::default()), OpenOutcome::Opened(_)));
            for earlier in 0..=n {
                let claim = packet.claim_of(&user(&format!("u{earlier}"))).expect("an opener's claim");
                assert_eq!(claim.index, earlier, "after {n} opens");
            }
            assert!(packet.claim_of(&user("nobody")).is_none());
        }
        let restored = Packet::restore(packet.info.clone(), packet.seed, None, Amount::ZERO, packet.claims().to_vec());
        assert_eq!(restored.claim_of(&user("u77")).map(|claim| claim.index), Some(77), "a restored packet is indexed");
    }

    #[test]
    fn restore_recomputes_the_remaining_state() {
        let limits = Limits::default();
        let spec = PacketSpec::parse(&input("lucky", 1000, 10), &user("alice"), &limits).unwrap();
        let mut live = new_packet(&spec);
        for name in ["b", "c", "d"] {
            live.open(&user(name), None, Millis(2_000), &limits);
        }
        let restored = Packet::restore(live.info.clone(), live.seed, None, Amount::ZERO, live.claims().to_vec());
        assert_eq!(restored.remaining_amount, live.remaining_amount);
        assert_eq!(restored.remaining_count, 7);
        assert_eq!(restored.claim_of(&user("c")), live.claim_of(&user("c")));
    }
}
