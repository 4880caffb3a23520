//! The business limits. Every one is configuration; the defaults follow
//! WeChat (one packet at most 200.00, at most 100 shares, each share at
//! least 0.01, expiry one day).

use crate::money::Amount;

/// The most shares any configuration may allow a packet: every claim of a
/// live packet is in memory and in one journal record per batch, so a
/// packet's size must stay bounded whatever an operator asks for.
pub const COUNT_MAX_CEILING: u32 = 10_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most money one packet may hold.
    pub total_amount_max: Amount,
    /// The most shares one packet may have.
    pub count_max: u32,
    /// The least money one share may hold.
    pub share_min: Amount,
    /// Expiry when the sender names none.
    pub expires_in_s_default: u32,
    /// The shortest expiry (short, so tests can expire packets quickly).
    pub expires_in_s_min: u32,
    /// The longest expiry.
    pub expires_in_s_max: u32,
    /// The longest greeting, in characters.
    pub greeting_chars_max: usize,
    /// The longest packet password, in characters.
    pub password_chars_max: usize,
    /// The most one deposit may add.
    pub deposit_max: Amount,
    /// The most any balance may hold after a deposit; credits and refunds
    /// are never refused (the money is already in flight).
    pub balance_max: Amount,
    /// The most members a group packet's list may name (at most
    /// `group::GROUP_MEMBERS_CEILING`).
    pub group_members_max: usize,
    /// The most packets one user may send in a (UTC) day.
    pub daily_send_count_max: u32,
    /// The most money one user may send in packets in a (UTC) day.
    pub daily_send_amount_max: Amount,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            total_amount_max: Amount::from_fen(20_000).expect("a constant within range"),
            count_max: 100,
            share_min: Amount::from_fen(1).expect("a constant within range"),
            expires_in_s_default: 86_400,
            expires_in_s_min: 1,
            expires_in_s_max: 7 * 86_400,
            greeting_chars_max: 100,
            password_chars_max: 64,
            // 10,000,000.00 a deposit, 1,000,000,000.00 a balance: far beyond a
            // red-packet wallet, far below any overflow.
            deposit_max: Amount::from_fen(1_000_000_000).expect("a constant within range"),
            balance_max: Amount::from_fen(100_000_000_000).expect("a constant within range"),
            // WeChat's groups hold up to 500.
            group_members_max: 500,
            // WeChat caps a day's red packets too; these leave a person
            // (and a busy shop) room, and stop a stolen token's spree.
            daily_send_count_max: 1_000,
            daily_send_amount_max: Amount::from_fen(5_000_000).expect("a constant within range"),
        }
    }
}
