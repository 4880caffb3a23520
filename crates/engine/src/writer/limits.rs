//! Daily limits on sending (`Limits::daily_send_*`): a user's packets of
//! the (UTC) day, counted and summed in the sender's set, which makes every
//! send of theirs.
//!
//! Memory decides, as for balances: a sender's count of the day is loaded
//! from the tables on their first send of the day since the set last loaded
//! its memory (the tables then hold every send before it: a set loads its
//! memory only once they hold its whole journal), and kept until the day
//! ends; every later send of theirs counts in memory first.

use std::collections::HashMap;

use hongbao_domain::{Amount, UserId};

use crate::store::Store;

use super::Writer;

/// The sends of one user on one day.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SentToday {
    pub(crate) count: u32,
    pub(crate) amount: Amount,
}

/// Every sender's count of the day the set's last batch ran in.
#[derive(Debug, Default)]
pub(crate) struct SentTodays {
    day: u32,
    senders: HashMap<UserId, SentToday>,
}

impl SentTodays {
    /// Starts a new day's counts when `day` is a new day.
    pub(crate) fn on(&mut self, day: u32) {
        if day != self.day {
            self.day = day;
            self.senders.clear();
        }
    }

    pub(crate) fn day(&self) -> u32 {
        self.day
    }

    pub(crate) fn knows(&self, user: &UserId) -> bool {
        self.senders.contains_key(user)
    }

    pub(crate) fn load(&mut self, user: UserId, count: u32, amount: Amount) {
        self.senders.entry(user).or_insert(SentToday { count, amount });
    }
}

impl<S: Store> Writer<S> {
    /// Whether one more packet of `total` would take `sender` past a daily
    /// limit.
    pub(super) fn past_daily_limit(&self, sender: &UserId, total: Amount) -> bool {
        let limits = &self.config.limits;
        let sent = self.state.sent_today.senders.get(sender).expect("the sender's day is loaded for the batch");
        sent.count >= limits.daily_send_count_max
            || sent.amount.checked_add(total).is_none_or(|amount| amount > limits.daily_send_amount_max)
    }

    /// Counts a packet `sender` sent today.
    pub(super) fn count_sent(&mut self, sender: &UserId, total: Amount) {
        let sent = self.state.sent_today.senders.get_mut(sender).expect("the sender's day is loaded for the batch");
        sent.count += 1;
        sent.amount = sent.amount.checked_add(total).expect("a day's sends fit");
    }
}
