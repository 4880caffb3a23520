//! What happened, for the chat app: each set's writer publishes the events
//! of a batch once its record is durable (a packet of the user's was
//! opened, finished with its best luck, or refunded; a share reached the
//! user's wallet), and streams read them from here (`GET /v1/events`).
//!
//! **Where an event lives.** Every event of a user comes from the user's own
//! set: a packet lives in its sender's set (opened, finished, refunded), and
//! a credit is a ledger entry in the opener's set. So a user's stream reads
//! one set, and the events' order is that set's journal order.
//!
//! **Cursors.** An event is named by its batch's journal position and its
//! index among the batch's events (`Cursor`, spelled `position.index`).
//! Positions are durable and only grow, across restarts and across nodes
//! (on PostgreSQL the journal is shared), so a cursor means the same thing
//! wherever a client reconnects.
//!
//! **Retention.** Each set keeps its last events in memory: at most
//! `EventsConfig::per_set_max`, none older than `EventsConfig::retention`.
//! A log knows the cursor after which it is complete (`complete_after`):
//! events fall out at the front, and a set starting (or taken over, or
//! recovering from a failed append whose record may have been kept) knows
//! nothing of the events before its journal's end. A reader whose cursor is
//! at or past it misses nothing; one behind it is told so (`Read::missed`),
//! and the stream says `reset`, so the app re-reads its state instead of
//! trusting a stream with a hole. Rejected: rebuilding the log from the
//! tables at start. The tables keep no journal order for credits (a credit's
//! time is its claim's, in another set), so a rebuilt log could not promise
//! the order that resuming by cursor needs.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hongbao_domain::{Amount, Millis, PacketId, SetId, UserId};
use tokio::sync::watch;

use crate::journal::Position;

/// How much of the past each set keeps for streams that reconnect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventsConfig {
    /// The oldest event kept.
    pub retention: Duration,
    /// Events kept per set at most: bounds memory under load, where it is
    /// reached long before `retention` (20,000 events a second at 10,000
    /// opens a second). About 200 bytes each (`tests::an_event_is_small`).
    pub per_set_max: usize,
}

impl Default for EventsConfig {
    fn default() -> EventsConfig {
        EventsConfig { retention: Duration::from_secs(600), per_set_max: 32_768 }
    }
}

/// Where an event is in its set's order: its batch's journal position, then
/// its index among the batch's events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    pub position: Position,
    pub index: u32,
}

impl Cursor {
    /// After every event of the batches up to `position`.
    pub fn after_position(position: Position) -> Cursor {
        Cursor { position, index: u32::MAX }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.position, self.index)
    }
}

/// Only the canonical spelling: decimal digits, no sign, no leading zero.
impl FromStr for Cursor {
    type Err = ();

    fn from_str(text: &str) -> Result<Cursor, ()> {
        let (position, index) = text.split_once('.').ok_or(())?;
        Ok(Cursor { position: canonical(position)?, index: canonical(index)? })
    }
}

fn canonical<T: FromStr>(digits: &str) -> Result<T, ()> {
    let plain = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    if !plain || (digits.len() > 1 && digits.starts_with('0')) {
        return Err(());
    }
    digits.parse().map_err(|_| ())
}

/// One thing that happened to `user`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub cursor: Cursor,
    pub set: SetId,
    /// Whose event it is: the packet's sender, or the wallet credited.
    pub user: UserId,
    pub at: Millis,
    pub what: What,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum What {
    /// A share of the user's packet was opened.
    Opened { packet: PacketId, opener: UserId, amount: Amount, remaining_count: u32 },
    /// The last share of the user's packet was opened; the best luck.
    Finished { packet: PacketId, best_luck: UserId, best_amount: Amount },
    /// What was left of the user's expired packet came back.
    Refunded { packet: PacketId, amount: Amount },
    /// A share the user opened reached the user's wallet.
    Credited { packet: PacketId, amount: Amount },
}

impl What {
    /// Every event's name, each spelled here once (the API's description
    /// lists them).
    pub const NAMES: [&'static str; 4] = ["packet.opened", "packet.finished", "packet.refunded", "share.credited"];

    /// The event's name on the stream (its SSE `event:` field).
    pub fn name(&self) -> &'static str {
        let index = match self {
            What::Opened { .. } => 0,
            What::Finished { .. } => 1,
            What::Refunded { .. } => 2,
            What::Credited { .. } => 3,
        };
        What::NAMES[index]
    }
}

/// One set's recent events (see the module doc).
pub struct SetEvents {
    set: SetId,
    config: EventsConfig,
    log: RwLock<Log>,
    /// The last cursor published or restarted at: streams wait on it.
    head: watch::Sender<Cursor>,
}

struct Log {
    events: VecDeque<Arc<Event>>,
    /// Every event past this cursor is in `events` (or not yet published).
    complete_after: Cursor,
}

/// What a stream read: the events past its cursor that it wanted.
#[derive(Debug)]
pub struct Read {
    /// Events between the reader's cursor and the log's were lost to it
    /// (they fell out, or were before this set started here).
    pub missed: bool,
    /// Where the read began: the reader's cursor, or where the log is
    /// complete from when it missed events.
    pub from: Cursor,
    pub events: Vec<Arc<Event>>,
    /// The cursor to read from next: past everything looked at, wanted or
    /// not.
    pub next: Cursor,
}

impl fmt::Debug for SetEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetEvents").field("set", &self.set).field("head", &*self.head.borrow()).finish()
    }
}

impl SetEvents {
    pub fn new(set: SetId, config: EventsConfig) -> SetEvents {
        let log = Log { events: VecDeque::new(), complete_after: Cursor::default() };
        SetEvents { set, config, log: RwLock::new(log), head: watch::Sender::new(Cursor::default()) }
    }

    pub fn set(&self) -> SetId {
        self.set
    }

    /// The set starts (or starts again) here with its journal at
    /// `position`: what happened up to it is not in this log.
    pub(crate) fn restart(&self, position: Position) {
        let at = Cursor::after_position(position);
        let mut log = self.log.write().expect("events lock");
        log.complete_after = log.complete_after.max(at);
        // Moved under the log's lock, so a reader sees the head and the log
        // agree.
        self.head.send_if_modified(|head| {
            let moved = *head < at;
            *head = (*head).max(at);
            moved
        });
    }

    /// Adds a durable batch's events (in cursor order, past every earlier
    /// one) and lets the oldest fall out.
    pub(crate) fn publish(&self, events: Vec<Event>, now: Millis) {
        let Some(last) = events.last().map(|event| event.cursor) else { return };
        let oldest = Millis(now.0.saturating_sub(i64::try_from(self.config.retention.as_millis()).unwrap_or(i64::MAX)));
        let mut log = self.log.write().expect("events lock");
        assert!(
            log.events.back().is_none_or(|back| back.cursor < events[0].cursor),
            "set {}: events published out of order",
            self.set
        );
        log.events.extend(events.into_iter().map(Arc::new));
        while log.events.len() > self.config.per_set_max || log.events.front().is_some_and(|e| e.at < oldest) {
            let gone = log.events.pop_front().expect("a front event");
            log.complete_after = log.complete_after.max(gone.cursor);
        }
        self.head.send_replace(last);
    }

    /// The cursor a stream starting now begins after.
    pub fn head(&self) -> Cursor {
        *self.head.borrow()
    }

    /// Wakes when `head` moves.
    pub fn watch(&self) -> watch::Receiver<Cursor> {
        self.head.subscribe()
    }

    /// Up to `most` events past `after` that `wanted` keeps.
    pub fn read(&self, after: Cursor, mut wanted: impl FnMut(&Event) -> bool, most: usize) -> Read {
        let log = self.log.read().expect("events lock");
        let head = self.head();
        // A cursor past the head was never answered here (a copy of the
        // data restored from before it, say): it resumes from the head.
        let missed = after < log.complete_after || after > head;
        let from = if after > head { head } else { after.max(log.complete_after) };
        let start = log.events.partition_point(|event| event.cursor <= from);
        let mut read = Read { missed, from, events: Vec::new(), next: from };
        for event in log.events.range(start..) {
            if read.events.len() == most {
                break;
            }
            read.next = event.cursor;
            if wanted(event) {
                read.events.push(event.clone());
            }
        }
        if read.events.len() < most {
            // Everything up to the head was looked at.
            read.next = read.next.max(head);
        }
        read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    fn packet() -> PacketId {
        "20270128-0-1-9f3a1c2e77b04d15".parse().unwrap()
    }

    fn credited(position: Position, index: u32, who: &str, at: i64) -> Event {
        Event {
            cursor: Cursor { position, index },
            set: SetId(0),
            user: user(who),
            at: Millis(at),
            what: What::Credited { packet: packet(), amount: Amount::from_fen(5).unwrap() },
        }
    }

    fn cursors(read: &Read) -> Vec<String> {
        read.events.iter().map(|event| event.cursor.to_string()).collect()
    }

    #[test]
    fn cursors_parse_only_their_canonical_spelling() {
        assert_eq!("12.0".parse::<Cursor>(), Ok(Cursor { position: 12, index: 0 }));
        assert_eq!(Cursor { position: 7, index: 3 }.to_string(), "7.3");
        for bad in ["", "12", "12.", ".3", "012.1", "1.01", "+1.2", "1.-2", "1.2.3", " 1.2", "1.99999999999"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_reader_resumes_exactly_after_its_cursor_and_filters_by_user() {
        let log = SetEvents::new(SetId(0), EventsConfig::default());
        log.restart(10);
        log.publish(vec![credited(11, 0, "bob", 1), credited(11, 1, "carol", 1)], Millis(1));
        log.publish(vec![credited(12, 0, "bob", 2)], Millis(2));
        let all = log.read(Cursor::after_position(10), |_| true, 10);
        assert!(!all.missed);
        assert!(log.read(Cursor { position: 13, index: 0 }, |_| true, 10).missed, "a cursor past the head");
        assert_eq!(cursors(&all), ["11.0", "11.1", "12.0"]);
        let bob = log.read(Cursor { position: 11, index: 0 }, |event| event.user == user("bob"), 10);
        assert_eq!(cursors(&bob), ["12.0"]);
        assert_eq!(bob.next, Cursor { position: 12, index: 0 });
        let some = log.read(Cursor::after_position(10), |_| true, 2);
        assert_eq!(
            (cursors(&some), some.next),
            (vec!["11.0".into(), "11.1".into()], Cursor { position: 11, index: 1 })
        );
        assert_eq!(log.head(), Cursor { position: 12, index: 0 });
    }

    #[test]
    fn a_reader_behind_what_the_log_holds_is_told_it_missed_events() {
        let config = EventsConfig { retention: Duration::from_secs(60), per_set_max: 2 };
        let log = SetEvents::new(SetId(0), config);
        log.restart(10);
        // Before this set started here: unknown to the log.
        assert!(log.read(Cursor { position: 9, index: 0 }, |_| true, 10).missed);
        assert!(!log.read(Cursor::after_position(10), |_| true, 10).missed);
        log.publish(vec![credited(11, 0, "bob", 1_000), credited(12, 0, "bob", 1_000)], Millis(1_000));
        log.publish(vec![credited(13, 0, "bob", 1_000)], Millis(1_000));
        // 11.0 fell out (the count): a reader before it missed it.
        let behind = log.read(Cursor::after_position(10), |_| true, 10);
        assert!(behind.missed);
        assert_eq!(cursors(&behind), ["12.0", "13.0"]);
        assert!(!log.read(Cursor { position: 11, index: 0 }, |_| true, 10).missed);
        // Too old (the retention): everything falls out.
        log.publish(vec![credited(14, 0, "bob", 70_000)], Millis(70_000));
        let late = log.read(Cursor { position: 12, index: 0 }, |_| true, 10);
        assert!(late.missed);
        assert_eq!(cursors(&late), ["14.0"]);
        // A restart further on forgets the past again.
        log.restart(20);
        assert!(log.read(Cursor { position: 14, index: 0 }, |_| true, 10).missed);
        assert_eq!(log.head(), Cursor::after_position(20));
    }

    #[test]
    fn an_event_is_small() {
        // The figure EventsConfig's doc gives: the event, its Arc and its
        // queue slot, plus two user names and their heap blocks.
        let fixed = std::mem::size_of::<Event>() + 2 * std::mem::size_of::<usize>() + std::mem::size_of::<usize>();
        assert!(fixed <= 176, "an event takes {fixed} bytes before its names");
    }
}
