//! The JSON the API answers with, and its schemas (`utoipa::ToSchema`, for
//! the OpenAPI spec). Money is integer fen; times are Unix milliseconds.
//! A field whose values are a domain type's names (a packet's kind, its
//! status, a grab's outcome) has its schema made from those names, so each
//! is spelled once, in the domain.

use hongbao_domain::ledger::EntryKind;
use hongbao_domain::packet::{PacketInfo, PacketKind, PacketStatus};
use hongbao_domain::user::USER_LEN_MAX;
use hongbao_domain::withdrawal::{Withdrawal, WithdrawalStatus};
use hongbao_domain::{Amount, Claim, GrabOutcome, Millis, OpenOutcome, Packet};
use hongbao_engine::events::{Event, What};
use hongbao_engine::{LedgerEntry, ReceivedItem, SentItem};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, Type};

/// A string schema whose values are `names`.
pub(crate) fn one_of(names: impl IntoIterator<Item = &'static str>) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names))
}

/// A user name, as `UserId::parse` takes it.
pub(crate) fn user_name() -> ObjectBuilder {
    let pattern = format!("^[A-Za-z0-9_.-]{{1,{USER_LEN_MAX}}}$");
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern))
}

pub(crate) fn kinds() -> ObjectBuilder {
    one_of([PacketKind::Lucky, PacketKind::Fixed, PacketKind::Exclusive].map(PacketKind::as_str))
}

fn statuses() -> ObjectBuilder {
    one_of([PacketStatus::Available, PacketStatus::Empty, PacketStatus::Expired].map(PacketStatus::as_str))
}

/// What a grab answers with 200 (its other outcomes are errors).
fn grab_statuses() -> ObjectBuilder {
    one_of(
        [GrabOutcome::Available, GrabOutcome::Opened, GrabOutcome::Empty, GrabOutcome::Expired].map(GrabOutcome::code),
    )
}

/// What an open answers with 200: its outcome's code, "opened" whether
/// the share is new or opened before.
fn opened() -> ObjectBuilder {
    one_of([OpenOutcome::AlreadyOpened { amount: Amount::ZERO }.code()])
}

#[derive(Serialize, ToSchema)]
pub struct PacketView {
    pub id: String,
    pub sender: String,
    #[schema(schema_with = kinds)]
    pub kind: &'static str,
    pub total_amount: u64,
    pub count: u32,
    pub greeting: Option<String>,
    pub recipient: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    /// The group it was sent to (absent: anyone with its id may open it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupView>,
}

/// A packet's group: its id and how many members it names.
#[derive(Serialize, ToSchema)]
pub struct GroupView {
    pub id: String,
    pub member_count: usize,
}

impl From<&PacketInfo> for PacketView {
    fn from(info: &PacketInfo) -> PacketView {
        PacketView {
            id: info.id.to_string(),
            sender: info.sender.to_string(),
            kind: info.kind.as_str(),
            total_amount: info.total_amount.fen(),
            count: info.count,
            greeting: info.greeting.clone(),
            recipient: info.recipient.as_ref().map(ToString::to_string),
            created_at: info.created_at.0,
            expires_at: info.expires_at.0,
            group: info
                .group
                .as_ref()
                .map(|group| GroupView { id: group.id.to_string(), member_count: group.members.len() }),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ClaimView {
    pub user: String,
    pub amount: u64,
    pub at: i64,
}

impl From<&Claim> for ClaimView {
    fn from(claim: &Claim) -> ClaimView {
        ClaimView { user: claim.user.to_string(), amount: claim.amount.fen(), at: claim.at.0 }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PacketDetail {
    #[serde(flatten)]
    pub packet: PacketView,
    pub has_password: bool,
    #[schema(schema_with = statuses)]
    pub status: &'static str,
    pub remaining_amount: u64,
    pub remaining_count: u32,
    pub refunded_amount: u64,
    pub claims: Vec<ClaimView>,
    pub best_luck: Option<ClaimView>,
}

impl PacketDetail {
    pub fn of(packet: &Packet, now: Millis) -> PacketDetail {
        PacketDetail {
            packet: PacketView::from(&packet.info),
            has_password: packet.password.is_some(),
            status: packet.status(now).as_str(),
            remaining_amount: packet.remaining_amount.fen(),
            remaining_count: packet.remaining_count,
            refunded_amount: packet.refunded_amount.fen(),
            claims: packet.claims().iter().map(ClaimView::from).collect(),
            best_luck: packet.best_luck().map(ClaimView::from),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SentView {
    #[serde(flatten)]
    pub packet: PacketView,
    #[schema(schema_with = statuses)]
    pub status: &'static str,
    pub remaining_amount: u64,
    pub remaining_count: u32,
    pub refunded_amount: u64,
}

impl SentView {
    pub fn of(item: &SentItem, now: Millis) -> SentView {
        let status = PacketStatus::of(item.remaining_count, item.refunded_amount, item.info.expires_at, now).as_str();
        SentView {
            packet: PacketView::from(&item.info),
            status,
            remaining_amount: item.remaining_amount.fen(),
            remaining_count: item.remaining_count,
            refunded_amount: item.refunded_amount.fen(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ReceivedView {
    pub packet_id: String,
    pub sender: String,
    pub greeting: Option<String>,
    pub amount: u64,
    pub at: i64,
}

impl From<&ReceivedItem> for ReceivedView {
    fn from(item: &ReceivedItem) -> ReceivedView {
        ReceivedView {
            packet_id: item.packet_id.to_string(),
            sender: item.sender.to_string(),
            greeting: item.greeting.clone(),
            amount: item.amount.fen(),
            at: item.at.0,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PageView<T: Serialize> {
    pub items: Vec<T>,
    /// Set when the page is full: pass it back as `?cursor=` for the next.
    pub next_cursor: Option<String>,
}

/// `GET /v1/account`, and a deposit's answer.
#[derive(Serialize, ToSchema)]
pub struct BalanceView {
    /// In fen.
    pub balance: u64,
    pub user: String,
}

/// A grab's answer.
#[derive(Serialize, ToSchema)]
pub struct GrabView {
    #[schema(schema_with = grab_statuses)]
    pub status: &'static str,
}

/// An open's answer: the share, the same on a repeat.
#[derive(Serialize, ToSchema)]
pub struct OpenView {
    /// In fen.
    pub amount: u64,
    #[schema(schema_with = opened)]
    pub status: &'static str,
}

/// An event's `data` on the event streams (`routes/events.rs`).
#[derive(Serialize, ToSchema)]
pub struct EventView {
    /// The event's name, as its SSE `event:` field.
    #[serde(rename = "type")]
    #[schema(schema_with = event_names)]
    pub kind: &'static str,
    /// Whose event it is: the packet's sender, or the wallet credited.
    pub user: String,
    pub packet_id: String,
    /// When it happened: the open, the refund or the credit.
    pub at: i64,
    /// The share opened or credited, or the money refunded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<u64>,
    /// `packet.opened`: who opened it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opener: Option<String>,
    /// `packet.opened`: the shares still unopened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_count: Option<u32>,
    /// `packet.finished`: the largest share, the earliest among equals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_luck: Option<LuckView>,
}

#[derive(Serialize, ToSchema)]
pub struct LuckView {
    pub user: String,
    pub amount: u64,
}

fn event_names() -> ObjectBuilder {
    one_of(What::NAMES)
}

impl EventView {
    pub fn of(event: &Event) -> EventView {
        let (packet, mut view) = match &event.what {
            What::Opened { packet, .. }
            | What::Finished { packet, .. }
            | What::Refunded { packet, .. }
            | What::Credited { packet, .. } => (
                packet,
                EventView {
                    kind: event.what.name(),
                    user: event.user.to_string(),
                    packet_id: String::new(),
                    at: event.at.0,
                    amount: None,
                    opener: None,
                    remaining_count: None,
                    best_luck: None,
                },
            ),
        };
        view.packet_id = packet.to_string();
        match &event.what {
            What::Opened { opener, amount, remaining_count, .. } => {
                view.opener = Some(opener.to_string());
                view.amount = Some(amount.fen());
                view.remaining_count = Some(*remaining_count);
            }
            What::Finished { best_luck, best_amount, .. } => {
                view.best_luck = Some(LuckView { user: best_luck.to_string(), amount: best_amount.fen() });
            }
            What::Refunded { amount, .. } | What::Credited { amount, .. } => view.amount = Some(amount.fen()),
        }
        view
    }
}

/// A withdrawal (`POST /v1/withdrawals`, `GET /v1/withdrawals/{id}`, the
/// admin's settling).
#[derive(Serialize, ToSchema)]
pub struct WithdrawalView {
    pub id: String,
    pub user: String,
    pub amount: u64,
    #[schema(schema_with = withdrawal_statuses)]
    pub status: &'static str,
    pub created_at: i64,
    /// When an admin settled it (completed or failed); null while pending.
    pub settled_at: Option<i64>,
}

fn withdrawal_statuses() -> ObjectBuilder {
    one_of(WithdrawalStatus::ALL.map(WithdrawalStatus::as_str))
}

impl From<&Withdrawal> for WithdrawalView {
    fn from(withdrawal: &Withdrawal) -> WithdrawalView {
        WithdrawalView {
            id: withdrawal.id.to_string(),
            user: withdrawal.user.to_string(),
            amount: withdrawal.amount.fen(),
            status: withdrawal.status.as_str(),
            created_at: withdrawal.created_at.0,
            settled_at: withdrawal.settled_at.map(|at| at.0),
        }
    }
}

/// One entry of a bill (`GET /v1/ledger`).
#[derive(Serialize, ToSchema)]
pub struct LedgerItemView {
    pub reference: String,
    #[schema(schema_with = entry_kinds)]
    pub kind: &'static str,
    /// Signed: what left the balance is negative.
    pub amount: i64,
    /// The balance right after it (null for entries made before balances were kept with them).
    pub balance_after: Option<u64>,
    pub packet_id: Option<String>,
    pub at: i64,
}

fn entry_kinds() -> ObjectBuilder {
    one_of(EntryKind::ALL.map(EntryKind::as_str))
}

impl From<&LedgerEntry> for LedgerItemView {
    fn from(entry: &LedgerEntry) -> LedgerItemView {
        LedgerItemView {
            reference: entry.reference.clone(),
            kind: entry.kind.as_str(),
            amount: entry.amount,
            balance_after: entry.balance_after.map(Amount::fen),
            packet_id: entry.packet_id.map(|id| id.to_string()),
            at: entry.at.0,
        }
    }
}

/// How many, and how much in fen.
#[derive(Serialize, ToSchema)]
pub struct TotalView {
    pub count: u64,
    pub amount: u64,
}

/// A user's year in red packets (`GET /v1/summary`).
#[derive(Serialize, ToSchema)]
pub struct SummaryView {
    pub year: u32,
    /// Packets sent.
    pub sent: TotalView,
    /// Shares credited.
    pub received: TotalView,
    /// Packets (fully opened) where the caller's share was the best luck.
    pub best_luck_count: u64,
}
