//! The JSON the API answers with. Money is integer fen; times are Unix
//! milliseconds.

use hongbao_domain::packet::{PacketInfo, PacketStatus};
use hongbao_domain::{Claim, Millis, Packet};
use hongbao_engine::{ReceivedItem, SentItem};
use serde::Serialize;

#[derive(Serialize)]
pub struct PacketView {
    pub id: String,
    pub sender: String,
    pub kind: &'static str,
    pub total_amount: u64,
    pub count: u32,
    pub greeting: Option<String>,
    pub recipient: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
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
        }
    }
}

#[derive(Serialize)]
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

#[derive(Serialize)]
pub struct PacketDetail {
    #[serde(flatten)]
    pub packet: PacketView,
    pub has_password: bool,
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

#[derive(Serialize)]
pub struct SentView {
    #[serde(flatten)]
    pub packet: PacketView,
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

#[derive(Serialize)]
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

#[derive(Serialize)]
pub struct PageView<T: Serialize> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}
