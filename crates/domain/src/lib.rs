//! The pure domain of hongbao: what money, users, packets and their ids are,
//! how a share is drawn, what an operation can answer, and what the audit
//! requires of a store's contents.
//!
//! Nothing here does IO, reads a clock or keeps random state: time and
//! randomness arrive as arguments, so every decision can be replayed and
//! tested in isolation (DESIGN.md §5).

pub mod audit;
pub mod group;
pub mod hash;
pub mod id;
pub mod ledger;
pub mod limits;
pub mod money;
pub mod outcome;
pub mod packet;
pub mod split;
pub mod time;
pub mod user;
pub mod withdrawal;

pub use id::{NonceWidth, PacketId, SetId};
pub use limits::Limits;
pub use money::Amount;
pub use outcome::{DepositOutcome, GrabOutcome, OpenOutcome, SendOutcome};
pub use packet::{Claim, Packet, PacketKind, PacketSpec, PasswordDigest, ShareDraw, SpecError};
pub use time::Millis;
pub use user::UserId;
